#!/usr/bin/env bash
# `pier logs --tail 100` over 10 replicas on 3 nodes against `docker logs
# --tail 100` of one of them, and `pier exec -- true` against `docker exec
# … true`, in the same invocation (hyperfine, 15 runs each). Runs its own
# test bed (names and addresses apart from the default one).
#
#   bench/operate.sh        (as root; needs hyperfine: apt-get install hyperfine)
set -euo pipefail
cd "$(dirname "$0")/.."
export PIER_TB_DIR=/tmp/pier-opbed PIER_TB_PREFIX=pop PIER_TB_NET=10.213.84
touch src/lib.rs src/main.rs
cargo build --release --quiet
work=$(mktemp -d)
trap 'tests/testbed down >/dev/null 2>&1; rm -rf "$work"' EXIT
eval "$(tests/testbed up --nodes 3)"
IFS=, read -r a b c <<<"$PIER_TB_NODES"
n1=${a#*=}; n2=${b#*=}; n3=${c#*=}
export DOCKER_API_VERSION=1.41 NO_COLOR=1 PIER_INSECURE_REGISTRIES="$PIER_TB_REGISTRY"
mkdir -p "$work/repo/pier"
cat >"$work/repo/pier/stack.yml" <<YAML
nodes:
  n1: { endpoint: "$n1" }
  n2: { endpoint: "$n2" }
  n3: { endpoint: "$n3" }
services:
  talker:
    image: $PIER_TB_BASE_IMAGE
    command: ["sh", "-c", "i=0; while [ \$\$i -lt 500 ]; do echo line \$\$i of a talkative replica; i=\$\$((i+1)); done; exec sleep 3600"]
    stop_grace_period: 1s
    target_num_containers: 10
YAML
git -C "$work/repo" init -q
git -C "$work/repo" add -A
git -C "$work/repo" -c user.name=bench -c user.email=bench@pier.invalid commit -qm bench
pier="target/release/pier"
(cd "$work/repo" && "$OLDPWD/$pier" apply --stack bench >/dev/null)
one=$(docker -H "$n1" ps -q --filter label=pier.stack=bench --filter label=pier.service=talker | head -1)
until [ "$(docker -H "$n1" logs "$one" 2>&1 | wc -l)" -ge 500 ]; do sleep 0.1; done
hyperfine --warmup 2 --runs 15 --export-json "$work/logs.json" \
  -n "pier logs talker --tail 100 (10 replicas, 3 nodes)" "cd $work/repo && $PWD/$pier logs talker --tail 100 --stack bench" \
  -n "docker logs --tail 100 (1 container)" "docker -H $n1 logs --tail 100 $one"
hyperfine --warmup 2 --runs 15 --export-json "$work/exec.json" \
  -n "pier exec talker.1 -- true" "cd $work/repo && $PWD/$pier exec -T talker.1 --stack bench -- true" \
  -n "docker exec true" "docker -H $n1 exec $one true"
python3 - "$work/logs.json" "$work/exec.json" <<'PY'
import json, sys
for path in sys.argv[1:]:
    r = json.load(open(path))["results"]
    pier, docker = r[0]["median"], r[1]["median"]
    print(f"{r[0]['command']}: pier {pier*1000:.0f} ms, docker {docker*1000:.0f} ms, ratio {pier/docker:.2f}")
PY
