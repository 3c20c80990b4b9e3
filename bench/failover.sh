#!/usr/bin/env bash
# Failover of `pier daemon --ha`, at the default lease (15 s) and renew
# (5 s): two daemons follow one stack of one replica on one node; the
# leader is killed (SIGKILL) and the replica removed at the same instant,
# and the time until the engine runs the replica's successor is measured,
# 10 times (the killed daemon is started again as the next standby).
# Side by side in the same run:
#   - the same heal with the leader alive (what failover adds to it);
#   - one daemon without --ha, killed and started again at once (a
#     supervisor's restart: what --ha is instead of).
# Then the idle cost over 60 s of a leader, a standby and a daemon
# without --ha: CPU seconds used and resident memory.
#
#   bench/failover.sh               (as root; brings up its own bed)
set -euo pipefail
cd "$(dirname "$0")/.."
export PIER_TB_DIR=/tmp/pier-failbed PIER_TB_PREFIX=pfb PIER_TB_NET=10.213.83
cargo build --release --quiet
pier=$(mktemp); cp target/release/pier "$pier"; chmod +x "$pier"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; tests/testbed down >/dev/null 2>&1; rm -rf "$work"' EXIT
eval "$(tests/testbed up --nodes 1)"
node=${PIER_TB_NODES#*=}; node=${node%%,*}
export DOCKER_API_VERSION=1.41 NO_COLOR=1 PIER_INSECURE_REGISTRIES="$PIER_TB_REGISTRY"

new_stack() { # -> sets repo and stack
  stack="fail$RANDOM"; repo="$work/repo-$stack"
  mkdir -p "$repo/pier"; git -C "$repo" init -q -b main
  printf 'nodes:\n  n1: { endpoint: "%s" }\nservices:\n  web:\n    image: %s\n    command: sleep 3600\n    stop_grace_period: 1s\n' \
    "$node" "$PIER_TB_BASE_IMAGE" > "$repo/pier/stack.yml"
  git -C "$repo" add -A; git -C "$repo" -c user.email=b@b -c user.name=b commit -qm fail
}
start() { # name, extra flags... -> pid in $started
  local name=$1; shift
  mkdir -p "$work/$stack-$name"; rm -f "$work/$stack-$name/listen"
  "$pier" daemon --repo "$repo" --stack "$stack" --state-dir "$work/$stack-$name" \
    --listen 127.0.0.1:0 "$@" >>"$work/$stack-$name/log" 2>&1 &
  started=$!
}
role() { # name -> leader / standby / ...
  local address; address=$(cat "$work/$stack-$1/listen" 2>/dev/null) || return 0
  curl -s "http://$address/api/v1/status" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("ha",{}).get("role",""))' 2>/dev/null || true
}
running() { docker -H "$node" ps -q --filter "label=pier.stack=$stack" --filter label=pier.service=web --filter status=running; }
wait_running() { until [ -n "$(running)" ]; do sleep 0.05; done; }
# Remove the replica now; print the ms until its successor runs.
heal_ms() {
  local old start; old=$(running); start=$(date +%s%N)
  "$@"
  docker -H "$node" rm -f "$old" >/dev/null
  until [ -n "$(running)" ] && [ "$(running)" != "$old" ]; do sleep 0.02; done
  echo $(( ($(date +%s%N) - start) / 1000000 ))
}
cleanup_stack() {
  docker -H "$node" rm -f $(docker -H "$node" ps -aq --filter "label=pier.stack=$stack") >/dev/null 2>&1 || true
  docker -H "$node" config rm "pier-lease-$stack" >/dev/null 2>&1 || true
}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# --ha: a pair; kill the leader, remove the replica, time the heal.
new_stack
declare -A pid
start a --ha; pid[a]=$started
until [ "$(role a)" = leader ]; do sleep 0.1; done
start b --ha; pid[b]=$started
until [ "$(role b)" = standby ]; do sleep 0.1; done
wait_running; sleep 2
alive=(); for _ in 1 2 3 4 5 6 7 8 9 10; do alive+=("$(heal_ms true)"); sleep 1; done
leader=a; standby=b; failover=()
for _ in 1 2 3 4 5 6 7 8 9 10; do
  failover+=("$(heal_ms kill -9 "${pid[$leader]}")")
  wait "${pid[$leader]}" 2>/dev/null || true
  until [ "$(role "$standby")" = leader ]; do sleep 0.1; done
  start "$leader" --ha; pid[$leader]=$started
  until [ "$(role "$leader")" = standby ]; do sleep 0.1; done
  tmp=$leader; leader=$standby; standby=$tmp
  sleep 2
done
# Idle: 60 s with nothing to do.
cpu_s() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$1/stat"; }
rss_mb() { awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
declare -A cpu0
for name in a b; do cpu0[$name]=$(cpu_s "${pid[$name]}"); done
sleep 60
idle_leader="$(awk -v a="$(cpu_s "${pid[$leader]}")" -v b="${cpu0[$leader]}" 'BEGIN {printf "%.2f", a - b}') s, $(rss_mb "${pid[$leader]}") MB"
idle_standby="$(awk -v a="$(cpu_s "${pid[$standby]}")" -v b="${cpu0[$standby]}" 'BEGIN {printf "%.2f", a - b}') s, $(rss_mb "${pid[$standby]}") MB"
kill "${pid[a]}" "${pid[b]}"; wait 2>/dev/null || true
cleanup_stack

# Without --ha: one daemon, killed and started again at once.
new_stack
start solo; solo=$started
wait_running; sleep 2
restart=()
for _ in 1 2 3 4 5 6 7 8 9 10; do
  old=$(running); t0=$(date +%s%N)
  kill -9 "$solo"; wait "$solo" 2>/dev/null || true
  docker -H "$node" rm -f "$old" >/dev/null
  start solo; solo=$started
  until [ -n "$(running)" ] && [ "$(running)" != "$old" ]; do sleep 0.02; done
  restart+=($(( ($(date +%s%N) - t0) / 1000000 )))
  until curl -sf "http://$(cat "$work/$stack-solo/listen" 2>/dev/null)/readyz" >/dev/null 2>&1; do sleep 0.1; done
  sleep 2
done
c0=$(cpu_s "$solo"); sleep 60
idle_solo="$(awk -v a="$(cpu_s "$solo")" -v b="$c0" 'BEGIN {printf "%.2f", a - b}') s, $(rss_mb "$solo") MB"
kill "$solo"; wait 2>/dev/null || true
cleanup_stack

echo "| case | heal times (ms) | median (ms) |"
echo "|---|---|---|"
echo "| --ha, leader alive | ${alive[*]} | $(median "${alive[@]}") |"
echo "| --ha, leader killed (SIGKILL) | ${failover[*]} | $(median "${failover[@]}") |"
echo "| no --ha, daemon killed and restarted at once | ${restart[*]} | $(median "${restart[@]}") |"
echo
echo "| idle for 60 s | CPU used, resident memory |"
echo "|---|---|"
echo "| --ha leader | $idle_leader |"
echo "| --ha standby | $idle_standby |"
echo "| no --ha | $idle_solo |"
