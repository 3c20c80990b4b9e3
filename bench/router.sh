#!/usr/bin/env bash
# The router on the test bed (tests/testbed up first), each variant in the
# same round:
#  1. requests lost while `pier apply` replaces both replicas of a service
#     (stop-first, one at a time), with `ab` asking all along:
#     - through the router (Caddy on n1, replicas on n2 and n3, overlay),
#       retrying for 10s (the default);
#     - the same with `retry_for: 0s` (a proxy that does not retry);
#     - HAProxy instead, as an ordinary service on n1 (Debian's 2.6, FROM
#       scratch like the bed's Caddy): replicas found through the engine's
#       DNS (`server-template`), health-checked every 500 ms, and a failed
#       connection retried on another replica (`retry-on`, `redispatch`);
#     - without a router: one replica per node on a published host port,
#       `ab` asking n2 directly (what a fixed host port gives);
#  2. latency: 2,000 requests, 4 at a time, through the router and through
#     HAProxy against the same requests straight to a replica's published
#     port.
#
#   bench/router.sh [ROUNDS]     (default 3; needs the bed, `docker`, `ab`;
#                                 installs Debian's haproxy for its image)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
eval "$(tests/testbed env)"
cargo build --release --quiet
pier=$PWD/target/release/pier
node() { echo "$PIER_TB_NODES" | tr ',' '\n' | sed -n "s/^$1=//p"; }
n1=$(node n1) n2=$(node n2) n3=$(node n3)
addr() { echo "$1" | sed -E 's#tcp://([^:]+):.*#\1#'; }
image="$PIER_TB_BASE_IMAGE"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PIER_INSECURE_REGISTRIES="$PIER_TB_REGISTRY"
ROUTER_PORT=18090
DIRECT_PORT=18091
HAPROXY_PORT=18092
HAPROXY_IMAGE="$PIER_TB_REGISTRY/pier-bench/haproxy:1"

# HAProxy's image: the binary and the libraries it links, FROM scratch, with
# its configuration.
haproxy_image_up() {
  command -v haproxy >/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
    systemctl disable --now haproxy >/dev/null 2>&1 || true
  }
  local ctx="$work/haproxy" bin lib
  bin=$(command -v haproxy)
  mkdir -p "$ctx/root$(dirname "$bin")"
  cp "$bin" "$ctx/root$bin"
  for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
    mkdir -p "$ctx/root$(dirname "$lib")" && cp -L "$lib" "$ctx/root$lib"
  done
  cat >"$ctx/root/haproxy.cfg" <<'EOF'
global
  maxconn 4096
resolvers docker
  nameserver dns 127.0.0.11:53
  hold valid 1s
  hold other 1s
  hold refused 1s
  hold nx 1s
  hold timeout 1s
  hold obsolete 1s
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  retries 20
  option redispatch 1
  retry-on all-retryable-errors
frontend web
  bind :80
  default_backend app
backend app
  balance roundrobin
  option httpchk GET /
  default-server inter 500ms fall 1 rise 1
  server-template s 4 app:8080 check resolvers docker init-addr none resolve-prefer ipv4
EOF
  printf 'FROM scratch\nCOPY root/ /\nCMD ["haproxy", "-db", "-f", "/haproxy.cfg"]\n' >"$ctx/Dockerfile"
  docker -H "$n1" build -q -t "$HAPROXY_IMAGE" "$ctx" >/dev/null 2>&1
  docker -H "$n1" push -q "$HAPROXY_IMAGE" >/dev/null
}

manifest() { # $1: version, $2: router (10s, 0s), haproxy or direct
  cat <<EOF
nodes:
  n1: { endpoint: "$n1", tags: [edge] }
  n2: { endpoint: "$n2", tags: [app] }
  n3: { endpoint: "$n3", tags: [app] }
services:
  app:
    image: $image
    command: ["sh", "-c", "mkdir -p /www && echo $1 > /www/index.html && exec httpd -f -p 8080 -h /www"]
    tags: [app]
    stop_grace_period: 1s
EOF
  if [ "$2" = direct ]; then
    cat <<EOF
    deployment_strategy: every_node
    ports: ["$DIRECT_PORT:8080"]
EOF
  elif [ "$2" = haproxy ]; then
    cat <<EOF
    deploy: { replicas: 2 }
    deployment_strategy: high_availability
    ports: ["8080"]
  lb:
    image: $HAPROXY_IMAGE
    tags: [edge]
    ports: ["$HAPROXY_PORT:80"]
    stop_grace_period: 1s
networks:
  default: { driver: overlay }
EOF
  else
    cat <<EOF
    deploy: { replicas: 2 }
    deployment_strategy: high_availability
    route: { host: app.test, port: 8080 }
    ports: ["8080"]
router:
  tags: [edge]
  ports: ["$ROUTER_PORT:80"]
  image: $PIER_TB_ROUTER_IMAGE
  retry_for: $2
networks:
  default: { driver: overlay }
EOF
  fi
}

commit() { # $1: repo, $2: manifest text
  mkdir -p "$1/pier"
  echo "$2" > "$1/pier/stack.yml"
  [ -d "$1/.git" ] || git -C "$1" init -q
  git -C "$1" add -A
  git -C "$1" -c user.name=bench -c user.email=bench@pier.invalid commit -qm bench
}

remove_stack() { # $1: stack
  for host in "$n1" "$n2" "$n3"; do
    ids=$(docker -H "$host" ps -aq --filter "label=pier.stack=$1")
    [ -z "$ids" ] || docker -H "$host" rm -f $ids >/dev/null
  done
}

leave_swarm() {
  for host in "$n3" "$n2" "$n1"; do docker -H "$host" swarm leave --force >/dev/null 2>&1 || true; done
}

# ab's failed plus non-2xx answers, and the requests made, as "LOST MADE".
lost_of() {
  awk '/^Complete requests:/ {made=$3} /^Failed requests:/ {failed=$3} /^Non-2xx responses:/ {non2xx=$3}
       END {print failed + non2xx, made}' "$1"
}

# The published port of the replica on n2, for the latency baseline.
direct_port() { # $1: stack
  docker -H "$n2" port "$(docker -H "$n2" ps -q --filter "label=pier.stack=$1" --filter label=pier.service=app | head -1)" 8080/tcp | head -1 | sed 's/.*://'
}

leave_swarm
haproxy_image_up
results="$work/results"
for round in $(seq "$rounds"); do
  for variant in 10s 0s haproxy direct; do
    repo="$work/$variant-$round"
    stack="bench-router-$variant-$round-$$"
    commit "$repo" "$(manifest v1 "$variant")"
    (cd "$repo" && "$pier" apply --stack "$stack" >>"$work/apply.log" 2>&1) || { cat "$work/apply.log"; exit 1; }
    if [ "$variant" = direct ]; then
      url="http://$(addr "$n2"):$DIRECT_PORT/"
      host=()
    elif [ "$variant" = haproxy ]; then
      url="http://$(addr "$n1"):$HAPROXY_PORT/"
      host=()
    else
      url="http://$(addr "$n1"):$ROUTER_PORT/"
      host=(-H "Host: app.test")
    fi
    # Wait until the first answer, so the rollout is what is measured.
    until curl -fs "${host[@]}" "$url" >/dev/null 2>&1; do sleep 0.2; done
    if [ "$variant" = 10s ]; then
      ab -q -n 2000 -c 4 "${host[@]}" "$url" > "$work/ab-latency-router" 2>&1
      port=$(direct_port "$stack")
      ab -q -n 2000 -c 4 "http://$(addr "$n2"):$port/" > "$work/ab-latency-direct" 2>&1
      echo "latency router $(awk '/^Time per request:.*\(mean\)$/ {print $4}' "$work/ab-latency-router")" >> "$results"
      echo "latency direct $(awk '/^Time per request:.*\(mean\)$/ {print $4}' "$work/ab-latency-direct")" >> "$results"
    fi
    if [ "$variant" = haproxy ]; then
      ab -q -n 2000 -c 4 "$url" > "$work/ab-latency-haproxy" 2>&1
      echo "latency haproxy $(awk '/^Time per request:.*\(mean\)$/ {print $4}' "$work/ab-latency-haproxy")" >> "$results"
    fi
    ab -r -t 12 -c 2 "${host[@]}" "$url" > "$work/ab-rollout" 2>&1 &
    ab_pid=$!
    sleep 1
    commit "$repo" "$(manifest v2 "$variant")"
    (cd "$repo" && "$pier" apply --stack "$stack" >>"$work/apply.log" 2>&1) || { cat "$work/apply.log"; exit 1; }
    wait "$ab_pid" || true
    echo "rollout $variant $(lost_of "$work/ab-rollout")" >> "$results"
    remove_stack "$stack"
    docker -H "$n1" network rm "pier-$stack-overlay" >/dev/null 2>&1 || true
  done
done
# The swarm is formed by the first apply and kept until here: forming one
# again right after leaving it is slow on the engines, and not what is measured.
leave_swarm
python3 - "$results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
def rollout(variant):
    lost = [int(r[2]) for r in rows if r[0] == "rollout" and r[1] == variant]
    made = [int(r[3]) for r in rows if r[0] == "rollout" and r[1] == variant]
    return statistics.median(lost), statistics.median(made), len(lost), lost
for variant, what in [("10s", "router, retry_for 10s"), ("0s", "router, retry_for 0s"), ("haproxy", "HAProxy, DNS and retries"), ("direct", "host port, no router")]:
    lost, made, n, each = rollout(variant)
    print(f"rollout of 2 replicas, {what}: median {lost:g} of {made:g} requests lost (each round: {each})")
router = statistics.median(float(r[2]) for r in rows if r[:2] == ["latency", "router"])
direct = statistics.median(float(r[2]) for r in rows if r[:2] == ["latency", "direct"])
haproxy = statistics.median(float(r[2]) for r in rows if r[:2] == ["latency", "haproxy"])
print(f"latency, 4 at a time: router {router:.2f} ms, haproxy {haproxy:.2f} ms, direct {direct:.2f} ms, router/direct {router/direct:.2f}, haproxy/direct {haproxy/direct:.2f}")
PY
