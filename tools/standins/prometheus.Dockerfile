# Stand-in for prom/prometheus: the prometheus binary built from the Go module proxy (with only
# Consul service discovery compiled in), on the official image's path. The web UI's assets are
# not built; the HTTP API is all there.
FROM meshmart-standin/debian:bookworm
COPY prometheus /bin/prometheus
RUN mkdir -p /prometheus /etc/prometheus && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
