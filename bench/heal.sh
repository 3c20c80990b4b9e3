#!/usr/bin/env bash
# Heal time with and without a hung registry, at default settings: a
# daemon keeps one replica of `other` on a node; the replica is removed
# (`docker rm -f`), and the time until the engine runs its successor is
# measured, 7 times. Beside it the same stack also holds `stuck`, whose
# image is on a registry that accepts connections and never answers.
# The daemon's own default intervals and timeouts are used throughout.
#
#   bench/heal.sh                     (as root; brings up its own bed)
#   PIER_BASELINE=<commit> bench/heal.sh
#                                     also runs pier as built at <commit>
set -euo pipefail
cd "$(dirname "$0")/.."
export PIER_TB_DIR=/tmp/pier-healbed PIER_TB_PREFIX=phb PIER_TB_NET=10.213.81
. bench/builds.sh
pier_builds
builds=("this=$this")
[ -n "$baseline" ] && builds+=("baseline=$baseline")
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; tests/testbed down >/dev/null 2>&1; rm -rf "$work"' EXIT
eval "$(tests/testbed up --nodes 1)"
node=${PIER_TB_NODES#*=}; node=${node%%,*}
# A registry that accepts connections and never answers.
python3 -c "
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', 5999)); s.listen(64); held = []
while True:
    c, _ = s.accept(); held.append(c)" &
export DOCKER_API_VERSION=1.41 NO_COLOR=1
export PIER_INSECURE_REGISTRIES="$PIER_TB_REGISTRY,127.0.0.1:5999"

run_variant() { # pier, with_stuck (0/1) -> prints the 7 heal times in ms
  local pier=$1 stuck=$2 repo="$work/repo-$RANDOM" stack="heal$RANDOM"
  mkdir -p "$repo/pier"; git -C "$repo" init -q -b main
  {
    printf 'nodes:\n  n1: { endpoint: "%s" }\nservices:\n' "$node"
    printf '  other:\n    image: %s\n    command: sleep 3600\n    stop_grace_period: 1s\n' "$PIER_TB_BASE_IMAGE"
    if [ "$stuck" = 1 ]; then
      printf '  stuck:\n    image: 127.0.0.1:5999/team/stuck:1\n    command: sleep 3600\n'
    fi
  } > "$repo/pier/stack.yml"
  git -C "$repo" add -A; git -C "$repo" -c user.email=b@b -c user.name=b commit -qm heal
  local state="$work/state-$stack"; mkdir -p "$state"
  "$pier" daemon --repo "$repo" --stack "$stack" --state-dir "$state" --listen 127.0.0.1:0 >"$state/log" 2>&1 &
  local daemon=$!
  running() { docker -H "$node" ps -q --filter "label=pier.stack=$stack" --filter label=pier.service=other --filter status=running; }
  until [ -n "$(running)" ]; do sleep 0.05; done
  # Past the first pass's wait for the new tag, as a daemon in service is.
  sleep 12
  local times=()
  for _ in 1 2 3 4 5 6 7; do
    local old; old=$(running)
    local start; start=$(date +%s%N)
    docker -H "$node" rm -f "$old" >/dev/null
    until [ -n "$(running)" ] && [ "$(running)" != "$old" ]; do sleep 0.02; done
    times+=($(( ($(date +%s%N) - start) / 1000000 )))
    sleep 1
  done
  kill "$daemon"; wait "$daemon" 2>/dev/null || true
  docker -H "$node" rm -f $(docker -H "$node" ps -aq --filter "label=pier.stack=$stack") >/dev/null 2>&1 || true
  echo "${times[*]}"
}

median() { printf '%s\n' "$@" | sort -n | sed -n 4p; }
echo "| pier | stack | heal times (ms) | median (ms) |"
echo "|---|---|---|---|"
for build in "${builds[@]}"; do
  label=${build%%=*}; pier=${build#*=}
  for stuck in 0 1; do
    times=$(run_variant "$pier" "$stuck")
    what=$([ "$stuck" = 1 ] && echo "with a hung registry" || echo "without")
    # shellcheck disable=SC2086
    echo "| $label | $what | $times | $(median $times) |"
  done
done
