# Stand-in for hashicorp/consul: the consul binary built from the Go module proxy. As in the
# official image, `docker run IMAGE agent -dev ...` runs `consul agent -dev ...`, as the consul
# user (uid 100, gid 1000), which owns /consul/data and /consul/config (a volume mounted there
# starts out owned by it). The official image starts as root and drops to that user; this one
# starts as it, so a configuration volume must be readable by uid 100 (devsetup -owner consul=100).
FROM meshmart-standin/debian:bookworm
COPY consul /bin/consul
RUN groupadd -g 1000 consul && useradd -u 100 -g consul -d /consul -M -s /usr/sbin/nologin consul \
 && mkdir -p /consul/data /consul/config && chown -R consul:consul /consul
USER 100:1000
ENTRYPOINT ["/bin/consul"]
CMD ["agent", "-dev", "-client", "0.0.0.0"]
