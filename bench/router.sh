#!/usr/bin/env bash
# Rolling redeploys under load on the test bed (tests/testbed up first). For
# each variant, a service of two replicas (busybox `httpd`) on n2 and n3:
#  1. steady state: `wrk` with 4 connections for 10 s, nothing changing;
#  2. REDEPLOYS successive redeploys to a new version, one after the other,
#     while the same `wrk` asks all along;
# and for each, the requests served and failed (socket errors and
# non-2xx), and the median and 99th percentile of their time.
#
# Variants, all in the same run:
#  - router:    pier's router (Caddy on n1, overlay), `pier apply`, retrying
#               a failed connection on another replica for 10 s, replacing
#               start-first (the defaults for a routed service);
#  - router-stop-first: the same with `update_config.order: stop-first`;
#  - router-graceful: the router, start-first, in front of replicas that
#               stop gracefully: on SIGTERM the server stops listening and
#               the requests under way finish (`httpd` as PID 1 ignores
#               SIGTERM, and is killed mid-request when the grace period
#               ends, as an application without a handler is);
#  - router-0s: the router with `retry_for: 0s` (a proxy that does not
#               retry), start-first;
#  - haproxy:   HAProxy 2.6 instead, as an ordinary service on n1 (Debian's,
#               FROM scratch like the bed's Caddy): replicas found through
#               the engine's DNS (`server-template`), health-checked every
#               500 ms, a failed connection retried on another replica;
#  - direct:    no router: one replica per node on a published host port,
#               asked on n2 (what a fixed host port gives; stop-first).
# Docker Swarm's routing mesh is not among them: on the bed's namespace
# engines its published port does not answer (a service of two running
# replicas, `*:PORT->8080/tcp`, refused connections on every node).
#
#   bench/router.sh [REDEPLOYS]   (default 20; needs the bed and `docker`;
#                                  installs Debian's wrk, and haproxy for
#                                  its image)
#   VARIANTS="router haproxy" bench/router.sh   (some of them only)
set -euo pipefail
cd "$(dirname "$0")/.."
redeploys=${1:-20}
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
SERVE='mkdir -p /www && echo $V > /www/index.html && exec httpd -f -p 8080 -h /www'
# An application that stops gracefully: on SIGTERM the listener goes
# (busybox httpd serves each connection in a child of its own, which
# finishes), and the container ends a second later.
SERVE_GRACEFUL="mkdir -p /www && echo \$V > /www/index.html && httpd -f -p 8080 -h /www & trap 'kill \$! && sleep 1 && exit 0' TERM; wait"
# The same in a manifest, where `$$` is a `$` the container's shell sees.
SERVE_YAML=${SERVE//\$/\$\$}
SERVE_GRACEFUL_YAML=${SERVE_GRACEFUL//\$/\$\$}

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

manifest() { # $1: version, $2: variant (router, router-0s, haproxy, direct)
  cat <<EOF
nodes:
  n1: { endpoint: "$n1", tags: [edge] }
  n2: { endpoint: "$n2", tags: [app] }
  n3: { endpoint: "$n3", tags: [app] }
services:
  app:
    image: $image
    command: ["sh", "-c", "$([ "$2" = router-graceful ] && echo "$SERVE_GRACEFUL_YAML" || echo "$SERVE_YAML")"]
    environment: { V: "$1" }
    tags: [app]
    stop_grace_period: $([ "$2" = router-graceful ] && echo 3s || echo 1s)
EOF
  case "$2" in
    direct) cat <<EOF
    deployment_strategy: every_node
    ports: ["$DIRECT_PORT:8080"]
EOF
      ;;
    haproxy) cat <<EOF
    deploy: { replicas: 2 }
    deployment_strategy: high_availability
  lb:
    image: $HAPROXY_IMAGE
    tags: [edge]
    ports: ["$HAPROXY_PORT:80"]
    stop_grace_period: 1s
networks:
  default: { driver: overlay }
EOF
      ;;
    router*) cat <<EOF
    deploy: { replicas: 2$([ "$2" = router-stop-first ] && echo ", update_config: { order: stop-first }") }
    deployment_strategy: high_availability
    route: { host: app.test, port: 8080 }
router:
  tags: [edge]
  ports: ["$ROUTER_PORT:80"]
  image: $PIER_TB_ROUTER_IMAGE
  retry_for: $([ "$2" = router-0s ] && echo 0s || echo 10s)
networks:
  default: { driver: overlay }
EOF
      ;;
  esac
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
  docker -H "$n1" network rm "pier-$1-overlay" "pier-$1-overlay-routes" >/dev/null 2>&1 || true
}

leave_swarm() {
  for host in "$n3" "$n2" "$n1"; do docker -H "$host" swarm leave --force >/dev/null 2>&1 || true; done
}

# "SERVED FAILED P50 P99" (milliseconds) of a `wrk --latency` output; failed:
# socket errors (connect, read, write, timeout) and non-2xx answers.
figures() {
  awk 'function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
       / requests in / {made = $1}
       /Socket errors:/ {gsub(/,/, ""); errors = $4 + $6 + $8 + $10}
       /Non-2xx or 3xx responses:/ {non2xx = $5}
       $1 == "50%" {p50 = ms($2)} $1 == "99%" {p99 = ms($2)}
       END {printf "%d %d %.1f %.1f\n", made - non2xx, errors + non2xx, p50, p99}' "$1"
}

# Measure one variant: steady state, then `$redeploy VERSION` REDEPLOYS times
# under load. $1: variant, $2: URL, $3: redeploy command, then the headers
# to send (curl and wrk take the same `-H`).
measure() {
  local variant=$1 url=$2 redeploy=$3 i load
  shift 3
  for i in $(seq 600); do curl -fs "$@" "$url" >/dev/null 2>&1 && break; sleep 0.2; done
  wrk -t 2 -c 4 -d 10s --latency "$@" "$url" > "$work/steady" 2>&1
  echo "$variant steady $(figures "$work/steady")" >> "$results"
  wrk -t 2 -c 4 -d 3600s --latency "$@" "$url" > "$work/deploys" 2>&1 &
  load=$!
  local started=$SECONDS
  for i in $(seq "$redeploys"); do "$redeploy" "$(printf 'v%03d' "$i")"; done
  kill -INT "$load" 2>/dev/null || true
  wait "$load" || true
  echo "$variant deploys $(figures "$work/deploys") $((SECONDS - started))" >> "$results"
}

pier_redeploy() { # $1: version (repo, stack and variant from the caller)
  commit "$repo" "$(manifest "$1" "$variant")"
  (cd "$repo" && "$pier" apply --stack "$stack" >>"$work/apply.log" 2>&1) || { cat "$work/apply.log"; exit 1; }
}


command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
leave_swarm
variants=${VARIANTS:-router router-stop-first router-graceful router-0s haproxy direct}
case " $variants " in *" haproxy "*) haproxy_image_up ;; esac
results="$work/results"
for variant in $variants; do
  repo="$work/$variant"
  stack="bench-rollouts-$variant-$$"
  pier_redeploy v000
  case "$variant" in
    router*) measure "$variant" "http://$(addr "$n1"):$ROUTER_PORT/" pier_redeploy -H "Host: app.test" ;;
    haproxy) measure "$variant" "http://$(addr "$n1"):$HAPROXY_PORT/" pier_redeploy ;;
    direct) measure "$variant" "http://$(addr "$n2"):$DIRECT_PORT/" pier_redeploy ;;
  esac
  remove_stack "$stack"
done

leave_swarm

python3 - "$results" "$redeploys" <<'PY'
import sys
rows = [line.split() for line in open(sys.argv[1])]
print(f"{sys.argv[2]} redeploys of 2 replicas, 4 connections asking all along:")
print("variant           | steady: served, p50/p99 ms | during redeploys: served, failed, p50/p99 ms, seconds")
steady = {r[0]: r for r in rows if r[1] == "steady"}
for r in rows:
    if r[1] != "deploys":
        continue
    s = steady[r[0]]
    print(f"{r[0]:17} | {s[2]:>6}, {s[4]}/{s[5]} | {r[2]:>6}, {r[3]}, {r[4]}/{r[5]}, {r[6]}")
PY
