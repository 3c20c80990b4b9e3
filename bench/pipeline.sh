#!/usr/bin/env bash
# The overhead of a pipeline script stage: `pier pipeline run` of a pipeline
# whose one stage runs `true` on a node, beside `docker run --rm <base> true`
# on the same node, in the same invocation (hyperfine, 15 runs each).
# Runs its own test bed (names and addresses apart from the default one).
#
#   bench/pipeline.sh        (as root; needs hyperfine: apt-get install hyperfine)
set -euo pipefail
cd "$(dirname "$0")/.."
export PIER_TB_DIR=/tmp/pier-pipebed PIER_TB_PREFIX=pbp PIER_TB_NET=10.213.81
cargo build --release --quiet
work=$(mktemp -d)
trap 'tests/testbed down >/dev/null 2>&1; rm -rf "$work"' EXIT
eval "$(tests/testbed up --nodes 1)"
n1=${PIER_TB_NODES%%,*}; n1=${n1#n1=}
export DOCKER_API_VERSION=1.41 NO_COLOR=1
mkdir -p "$work/repo/pier"
cat >"$work/repo/pier/stack.yml" <<YAML
nodes:
  n1: { endpoint: "$n1", tags: [ci] }
pipeline:
  runner_tags: [ci]
  stages:
    - name: noop
      image: $PIER_TB_BASE_IMAGE
      script: ["true"]
YAML
git -C "$work/repo" init -q
git -C "$work/repo" add -A
git -C "$work/repo" -c user.name=bench -c user.email=bench@pier.invalid commit -qm bench
hyperfine --warmup 2 --runs 15 --export-json "$work/stage.json" \
  -n "pier pipeline run (one stage: true)" "target/release/pier pipeline run --repo $work/repo" \
  -n "docker run --rm base true" "docker -H $n1 run --rm $PIER_TB_BASE_IMAGE true"
python3 - "$work/stage.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
pier, docker = r[0]["median"], r[1]["median"]
print(f"median: pier {pier*1000:.0f} ms, docker run {docker*1000:.0f} ms, "
      f"overhead {(pier-docker)*1000:.0f} ms ({(pier/docker-1)*100:.0f} %)")
PY
