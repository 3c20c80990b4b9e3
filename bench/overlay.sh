#!/usr/bin/env bash
# Overlay networking on the test bed (tests/testbed up first):
#  1. the one-time cost of forming a swarm: `pier apply` of a 3-service stack
#     from scratch on an overlay network (swarm init + join + network + 3
#     containers) beside the same stack on the bridge default, in the same
#     round; the swarm is left again after each round;
#  2. request latency across hosts against the same host: 200 HTTP requests
#     (busybox nc) to a service on n2, from a container on n1 and from one
#     on n2, over the overlay network.
#
#   bench/overlay.sh [ROUNDS]     (default 5; needs the bed and `docker`)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
eval "$(tests/testbed env)"
cargo build --release --quiet
pier=$PWD/target/release/pier
n1=$(echo "$PIER_TB_NODES" | tr ',' '\n' | sed -n 's/^n1=//p')
n2=$(echo "$PIER_TB_NODES" | tr ',' '\n' | sed -n 's/^n2=//p')
image="$PIER_TB_REGISTRY/pier-test/busybox:1"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PIER_INSECURE_REGISTRIES="$PIER_TB_REGISTRY"

manifest() { # $1: bridge or overlay
  cat <<EOF
nodes:
  n1: { endpoint: "$n1", tags: [a] }
  n2: { endpoint: "$n2", tags: [b] }
services:
  cache:
    image: $image
    command: ["sh", "-c", "mkdir -p /www && echo hi > /www/index.html && exec httpd -f -p 6379 -h /www"]
    tags: [b]
    expose: ["6379"]
    stop_grace_period: 1s
  far:
    image: $image
    command: sleep 3600
    tags: [a]
    links: [cache]
    stop_grace_period: 1s
  near:
    image: $image
    command: sleep 3600
    tags: [b]
    links: [cache]
    stop_grace_period: 1s
networks:
  default: { driver: $1 }
EOF
}

now() { date +%s.%N; }

remove_stack() { # $1: stack
  for host in "$n1" "$n2"; do
    ids=$(docker -H "$host" ps -aq --filter "label=pier.stack=$1")
    [ -z "$ids" ] || docker -H "$host" rm -f $ids >/dev/null
  done
}

leave_swarm() {
  docker -H "$n2" swarm leave --force >/dev/null 2>&1 || true
  docker -H "$n1" swarm leave --force >/dev/null 2>&1 || true
}

requests() { # $1: host, $2: container; prints seconds for 200 requests
  local start end
  start=$(now)
  docker -H "$1" exec "$2" sh -c 'i=0; while [ $i -lt 200 ]; do printf "GET / HTTP/1.0\r\n\r\n" | nc -w 5 cache 6379 >/dev/null || exit 1; i=$((i+1)); done'
  end=$(now)
  echo "$end - $start" | bc
}

leave_swarm
results="$work/results"
for round in $(seq "$rounds"); do
  for driver in bridge overlay; do
    repo="$work/$driver-$round"
    mkdir -p "$repo/pier"
    manifest "$driver" > "$repo/pier/stack.yml"
    git -C "$repo" init -q && git -C "$repo" add -A
    git -C "$repo" -c user.name=bench -c user.email=bench@pier.invalid commit -qm bench
    stack="bench-$driver-$round-$$"
    start=$(now)
    (cd "$repo" && "$pier" apply --stack "$stack" >>"$work/apply.log" 2>&1) || { cat "$work/apply.log"; exit 1; }
    end=$(now)
    echo "apply $driver $(echo "$end - $start" | bc)" >> "$results"
    if [ "$driver" = overlay ]; then
      echo "cross $(requests "$n1" "$stack-far-1")" >> "$results"
      echo "same $(requests "$n2" "$stack-near-1")" >> "$results"
    fi
    remove_stack "$stack"
    if [ "$driver" = overlay ]; then
      docker -H "$n1" network rm "pier-$stack-overlay" >/dev/null 2>&1 || true
      leave_swarm
    fi
  done
done
python3 - "$results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
def median(kind, name=None):
    values = [float(r[-1]) for r in rows if r[0] == kind and (name is None or r[1] == name)]
    return statistics.median(values), len(values)
bridge, n = median("apply", "bridge")
overlay, _ = median("apply", "overlay")
cross, _ = median("cross")
same, _ = median("same")
print(f"rounds: {n}")
print(f"pier apply from scratch, 3 services on 2 nodes: bridge {bridge:.2f} s, overlay (swarm formed) {overlay:.2f} s, overlay/bridge {overlay/bridge:.2f}, swarm cost {overlay-bridge:.2f} s")
print(f"200 HTTP requests over the overlay: across hosts {cross:.2f} s ({cross/200*1000:.2f} ms each), same host {same:.2f} s ({same/200*1000:.2f} ms each), across/same {cross/same:.2f}")
PY
