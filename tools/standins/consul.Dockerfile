# Stand-in for hashicorp/consul: the consul binary built from the Go module proxy. As in the
# official image, `docker run IMAGE agent -dev ...` runs `consul agent -dev ...`.
FROM scratch
COPY consul /bin/consul
ENTRYPOINT ["/bin/consul"]
CMD ["agent", "-dev", "-client", "0.0.0.0"]
