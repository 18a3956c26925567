#!/bin/bash
# The stand-in postgres image's entrypoint: the official image's behaviour, reduced to what the
# compose stack uses. Started as root, it prepares the data directory and re-executes itself as
# the postgres user with setpriv, which execs rather than forks (runuser forks and keeps the
# signal to itself); it then execs postgres, so that postgres is PID 1 and gets `docker stop`'s
# SIGINT (STOPSIGNAL): a fast shutdown, and no crash recovery at the next start.
set -euo pipefail
# POSTGRES_PASSWORD_FILE (a Docker secret, the swarm stack's), read as root as the official image
# does, so the file may be readable by root only.
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
  POSTGRES_PASSWORD=$(cat "$POSTGRES_PASSWORD_FILE") && export POSTGRES_PASSWORD && unset POSTGRES_PASSWORD_FILE
fi
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" && chown -R postgres:postgres "$PGDATA" /var/run/postgresql && chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$0" "$@"
fi

# file_env VAR: VAR, or the content of the file VAR_FILE names (Docker and Kubernetes secrets), as
# the official image reads POSTGRES_PASSWORD_FILE; both set is an error.
file_env() {
  local var=$1 file=${1}_FILE
  if [ -n "${!var:-}" ] && [ -n "${!file:-}" ]; then
    echo "both $var and $file are set (they are exclusive)" >&2; exit 1
  fi
  if [ -n "${!file:-}" ]; then
    export "$var"="$(< "${!file}")"
  fi
  unset "$file"
}
file_env POSTGRES_PASSWORD

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE must be set}"
  user=${POSTGRES_USER:-postgres}
  initdb -D "$PGDATA" -U "$user" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" -w start >/dev/null
  export PGPASSWORD=$POSTGRES_PASSWORD
  db=${POSTGRES_DB:-$user}
  [ "$db" = postgres ] || psql -v ON_ERROR_STOP=1 -h /var/run/postgresql -U "$user" -d postgres -c "CREATE DATABASE \"$db\""
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sql) echo "running $f"; psql -v ON_ERROR_STOP=1 -h /var/run/postgresql -U "$user" -d "$db" -f "$f" ;;
      *.sh) echo "running $f"; . "$f" ;;
      *) echo "ignoring $f" ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  unset PGPASSWORD
fi
unset POSTGRES_PASSWORD
exec "$@" -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql
