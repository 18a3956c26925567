# Stand-in for postgres:17-bookworm: Debian's PostgreSQL (15) with an entrypoint that honours the
# official image's interface: POSTGRES_USER/POSTGRES_PASSWORD/POSTGRES_DB, PGDATA, and the
# *.sql and *.sh files of /docker-entrypoint-initdb.d run once on a new cluster.
FROM meshmart-standin/debian-postgresql:bookworm
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PGDATA=/var/lib/postgresql/data PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# uid and gid 999, the official image's, so that files given to its postgres user (the swarm
# stack's init script, a Docker secret) are this one's too.
RUN groupmod -g 999 postgres && usermod -u 999 -g 999 postgres \
 && mkdir -p /docker-entrypoint-initdb.d /var/run/postgresql "$PGDATA" \
 && chown -R postgres:postgres /var/run/postgresql "$PGDATA" && chmod 755 /usr/local/bin/docker-entrypoint.sh
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
