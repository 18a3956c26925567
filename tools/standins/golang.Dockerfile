# Stand-in for golang:1.26-bookworm: Debian (debootstrap) plus this machine's Go toolchain.
FROM meshmart-standin/debian:bookworm
COPY go /usr/local/go
ENV GOPATH=/go GOTOOLCHAIN=local \
    PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /go
