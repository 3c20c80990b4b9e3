#!/usr/bin/env bash
# What a change of routes costs the router's clients: Caddy (the host's,
# Debian's 2.6) proxying to two local backends, `wrk` asking all along
# while the configuration is reloaded RELOADS times (one backend, then
# two, alternately: what pier's `caddy reload` does when routes change).
# Twice: with keep-alive connections, then with a new connection for each
# request (`Connection: close`). Prints the requests served and the
# socket errors of each.
#
#   bench/router-reload.sh [RELOADS]   (default 40; installs Debian's caddy
#                                       and wrk; no test bed needed)
set -euo pipefail
reloads=${1:-40}
for tool in caddy wrk; do
  command -v "$tool" >/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null
    systemctl disable --now "$tool" >/dev/null 2>&1 || true
  }
done
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT
cat >"$work/backends" <<'EOF'
{
	admin localhost:2029
	auto_https off
}
http://:9101 {
	respond "one"
}
http://:9102 {
	respond "two"
}
EOF
for n in 1 2; do
  upstreams=127.0.0.1:9101
  if [ "$n" = 2 ]; then upstreams="$upstreams 127.0.0.1:9102"; fi
  cat >"$work/proxy-$n" <<EOF
{
	admin localhost:2019
	auto_https off
}
http://:9100 {
	reverse_proxy {
		to $upstreams
		lb_policy round_robin
		lb_try_duration 10s
	}
}
EOF
done
caddy run --config "$work/backends" --adapter caddyfile >"$work/backends.log" 2>&1 &
pids+=($!)
caddy run --config "$work/proxy-1" --adapter caddyfile >"$work/proxy.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -fs http://127.0.0.1:9100/ >/dev/null 2>&1 && break; sleep 0.1; done

measure() { # $1: label, then wrk's extra arguments
  local label=$1 seconds=$((reloads / 2 + 10)) i
  shift
  wrk -t 2 -c 4 -d "${seconds}s" --timeout 2s "$@" http://127.0.0.1:9100/ >"$work/wrk" 2>&1 &
  local load=$!
  sleep 2
  for i in $(seq "$reloads"); do
    caddy reload --config "$work/proxy-$((i % 2 + 1))" --adapter caddyfile 2>/dev/null
    sleep 0.3
  done
  wait "$load"
  local served errors
  served=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$work/wrk")
  errors=$(sed -n 's/^ *Socket errors: //p' "$work/wrk")
  echo "$label: $reloads reloads, $served requests, socket errors: ${errors:-none}"
}
measure "keep-alive"
measure "a connection per request" -H "Connection: close"
