#!/usr/bin/env bash
# Builds local stand-ins for the public images the compose stack uses, for machines that cannot
# pull from a registry (this project's CI among them). Each stand-in is made from what such a
# machine does have: binaries built here from the Go module proxy, this machine's Go toolchain,
# and Debian packages in a root filesystem made with debootstrap. It also builds the `docker
# compose` plugin the same way when the machine lacks it.
#
# It then writes the variables that point docker-compose.yml at the stand-ins (standins.env) where
# `docker compose` reads them by itself: the repository's .env (gitignored), or the env file given
# as its argument; the compose file itself names the usual public images. In an existing file
# only those variables are replaced. Its own output is progress on stderr, so that
# `build.sh > build.log 2>&1` keeps the whole log. Images already present are kept, so a second
# run takes seconds. Usage: tools/standins/build.sh [env-file]
set -euo pipefail

cd "$(dirname "$0")"
here=$PWD
cache=${XDG_CACHE_HOME:-$HOME/.cache}/meshmart
mkdir -p "$cache/bin"
export DOCKER_BUILDKIT=0 # the classic builder: no buildx plugin is needed

CONSUL_VERSION=v1.21.0
JAEGER_MODULE_VERSION=v1.76.0 # Jaeger v2.13.0 lives in the module's v1.76.0 tag
PROMETHEUS_MODULE_VERSION=v0.316.0 # Prometheus v3.16.0
COMPOSE_VERSION=v2.40.3

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# go_build MODULE VERSION PACKAGE OUT [TAGS]: builds PACKAGE of a module from the proxy in a copy
# of its directory, where its own go.mod (replace directives included) governs the build. Local
# path replaces, which `go install` refuses and a module zip cannot satisfy, are dropped first.
go_build() {
  local module=$1 version=$2 pkg=$3 out=$4 tags=${5:-}
  [ -x "$out" ] && return
  local src="$cache/src/${module//\//_}@$version"
  if [ ! -f "$src/go.mod" ]; then
    local dir
    dir=$(go mod download -json "$module@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
    rm -rf "$src.tmp" && mkdir -p "$(dirname "$src")" && cp -r "$dir" "$src.tmp" && chmod -R u+w "$src.tmp"
    sed -i -e '/^replace (/,/^)/{/=> \.\{1,2\}\//d}' -e '/^replace .* => \.\{1,2\}\//d' -e '/^exclude (/,/^)/d' "$src.tmp/go.mod"
    mv "$src.tmp" "$src"
  fi
  echo "building $module@$version $pkg (minutes the first time)" >&2
  (cd "$src" && GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -tags "$tags" -o "$out.tmp" "$pkg") && mv "$out.tmp" "$out"
}

# image TAG DOCKERFILE-DIR [FILE...]: builds TAG from a Dockerfile here plus the given files.
image() {
  local tag=$1 dockerfile=$2; shift 2
  have_image "$tag" && return
  local ctx
  ctx=$(mktemp -d)
  cp "$here/$dockerfile" "$ctx/Dockerfile"
  [ $# -gt 0 ] && cp -r "$@" "$ctx/"
  echo "building image $tag" >&2
  docker build -q -t "$tag" "$ctx" >/dev/null
  rm -rf "$ctx"
}

# rootfs NAME PACKAGES: a Debian bookworm root filesystem (debootstrap minbase), imported as an
# image. The machine's CA bundle replaces Debian's, so that TLS through the machine's proxy works.
rootfs() {
  local tag=$1 packages=$2
  have_image "$tag" && return
  command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
  local dir
  dir=$(mktemp -d)
  echo "debootstrap $tag ($packages)" >&2
  debootstrap --variant=minbase --include="$packages" bookworm "$dir" http://deb.debian.org/debian >/dev/null
  cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  tar -C "$dir" -c . | docker import - "$tag" >/dev/null
  rm -rf "$dir"
}

# docker compose v2, when the machine has only docker (or only the old docker-compose).
if ! docker compose version >/dev/null 2>&1; then
  go_build github.com/docker/compose/v2 "$COMPOSE_VERSION" ./cmd "$cache/bin/docker-compose"
  mkdir -p "${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
  install -m 755 "$cache/bin/docker-compose" "${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins/docker-compose"
fi

# golang:1.26-bookworm: Debian plus this machine's Go toolchain.
rootfs meshmart-standin/debian:bookworm ca-certificates,git
if ! have_image meshmart-standin/golang:1.26; then
  ctx=$(mktemp -d)
  cp "$here/golang.Dockerfile" "$ctx/Dockerfile"
  tar -C "$ctx" -c Dockerfile -C "$(go env GOROOT)/.." "$(basename "$(go env GOROOT)")" --transform "s,^$(basename "$(go env GOROOT)"),go," |
    docker build -q -t meshmart-standin/golang:1.26 - >/dev/null
  rm -rf "$ctx"
fi

# postgres:17-bookworm: Debian's PostgreSQL with an entrypoint that follows the official image's
# conventions (POSTGRES_PASSWORD, /docker-entrypoint-initdb.d, PGDATA).
rootfs meshmart-standin/debian-postgresql:bookworm ca-certificates,postgresql,postgresql-client
image meshmart-standin/postgres:bookworm postgres.Dockerfile postgres-entrypoint.sh

# hashicorp/consul, jaegertracing/jaeger and prom/prometheus: their binaries, built here.
bin=$cache/bin
# Consul: the one `make consul` provides (PATH or bin/), else built here.
if [ ! -x "$bin/consul" ]; then
  for c in "$(command -v consul || true)" "$here/../../bin/consul"; do
    if [ -n "$c" ] && [ -x "$c" ]; then cp "$c" "$bin/consul"; break; fi
  done
fi
go_build github.com/hashicorp/consul "$CONSUL_VERSION" . "$bin/consul"
go_build github.com/jaegertracing/jaeger "$JAEGER_MODULE_VERSION" ./cmd/jaeger "$bin/jaeger"
go_build github.com/prometheus/prometheus "$PROMETHEUS_MODULE_VERSION" ./cmd/prometheus "$bin/prometheus" remove_all_sd,enable_consul_sd
image meshmart-standin/consul:1.21 consul.Dockerfile "$bin/consul"
image meshmart-standin/jaeger:2.13 jaeger.Dockerfile "$bin/jaeger"
image meshmart-standin/prometheus:v3.16 prometheus.Dockerfile "$bin/prometheus"

# The variables into the env file: other lines of an existing file are kept, ours replaced.
env_file=${1:-$here/../../.env}
names=$(sed -n 's/^\([A-Z_][A-Z0-9_]*\)=.*/\1/p' standins.env | paste -sd'|')
{
  [ -f "$env_file" ] && grep -Ev "^($names)=" "$env_file" | grep -v '^# meshmart stand-ins' || true
  echo "# meshmart stand-ins (tools/standins/build.sh):"
  grep -E "^($names)=" standins.env
} > "$env_file.tmp"
mv "$env_file.tmp" "$env_file"
if [ $# -eq 0 ]; then
  echo "stand-in images ready; their variables are in $(realpath "$env_file"), which docker compose reads by itself" >&2
else
  echo "stand-in images ready; their variables are in $(realpath "$env_file") (docker compose --env-file $1)" >&2
fi
