#!/usr/bin/env bash
# Prints, for each meshmart image of a running compose stack, its size and how long each of its
# containers took from start to healthy: from the container's .State.StartedAt (docker inspect) to
# its first passing health check (the engine's health_status event, else the health log).
# .ci/platform runs it once the stack is up; so can anyone:
#   tools/compose/figures.sh [compose project, default meshmart]
set -euo pipefail
project=${1:-meshmart}

printf '%-22s %-9s %-12s %s\n' IMAGE SIZE CONTAINER START-TO-HEALTHY
for image in meshmart/user:dev meshmart/order:dev meshmart/payment:dev meshmart/gateway:dev meshmart/devsetup:dev; do
  size=$(docker image inspect -f '{{.Size}}' "$image" 2>/dev/null) || { printf '%-22s %s\n' "$image" "(not built)"; continue; }
  size=$(awk -v b="$size" 'BEGIN { printf "%.1f MB", b / 1e6 }')
  containers=$(docker ps -q --filter "label=com.docker.compose.project=$project" --filter "ancestor=$image")
  if [ -z "$containers" ]; then
    printf '%-22s %-9s %s\n' "$image" "$size" "(no running container: a one-shot)"
    continue
  fi
  for c in $containers; do
    name=$(docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}}' "$c")
    started=$(docker inspect -f '{{.State.StartedAt}}' "$c")
    since=$(date -d "$started" +%s.%N)
    # The engine's first "healthy" event since the start; the health log (which keeps only the
    # last five checks, so forgets the first ones of a container up for long) when there is none.
    healthy=$(docker events --since "$since" --until "$(date +%s.%N)" --filter "container=$c" \
      --filter event=health_status --format '{{.TimeNano}} {{.Status}}' | awk '/: healthy$/ { printf "%.3f\n", $1 / 1e9; exit }')
    if [ -z "$healthy" ]; then
      end=$(docker inspect -f '{{if .State.Health}}{{range .State.Health.Log}}{{if eq .ExitCode 0}}{{.End}}{{"\n"}}{{end}}{{end}}{{end}}' "$c" | head -1)
      [ -n "$end" ] && healthy=$(date -d "$end" +%s.%N)
    fi
    if [ -z "$healthy" ]; then
      took="not healthy"
    else
      took=$(awk -v a="$since" -v b="$healthy" 'BEGIN { printf "%.1f s", b - a }')
    fi
    printf '%-22s %-9s %-12s %s\n' "$image" "$size" "$name" "$took"
  done
done
