# Stand-in for postgres:17-bookworm: Debian's PostgreSQL (15) with an entrypoint that honours the
# official image's interface: POSTGRES_USER/POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE)/
# POSTGRES_DB, PGDATA, and the *.sql and *.sh files of /docker-entrypoint-initdb.d run once on a
# new cluster. The postgres user is uid and gid 999, as in the official image, so that a secrets
# volume made for one (devsetup -owner postgres=999) serves both.
FROM meshmart-standin/debian-postgresql:bookworm
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PGDATA=/var/lib/postgresql/data PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN old=$(id -u postgres) && groupmod -g 999 postgres && usermod -u 999 -g 999 postgres \
 && find / -xdev -uid "$old" -exec chown -h 999:999 {} + \
 && mkdir -p /docker-entrypoint-initdb.d /var/run/postgresql "$PGDATA" \
 && chown -R postgres:postgres /var/run/postgresql "$PGDATA" && chmod 755 /usr/local/bin/docker-entrypoint.sh
EXPOSE 5432
# postgres' fast shutdown, as the official image: SIGTERM would wait for every client to leave.
STOPSIGNAL SIGINT
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
