#!/usr/bin/env bash
# The daemon against a simulated fleet: 100 and 1,000 Docker engines (an
# in-memory Engine API per unix socket, examples/sim_engines.rs), each
# running 30 containers (30 `every_node` services). For each size:
#   - the first deploy, from the daemon's start to every service Ready;
#   - the no-op pass (7 reconcile calls, the pass's own duration), beside a
#     baseline: a bare client listing every engine's containers at once
#     (the observation a pass cannot do without);
#   - a rollout of one service to every host (its environment changed),
#     commit to converged, 3 times;
#   - the daemon's resident memory, open file descriptors and sockets.
#
#   bench/fleet.sh [SIZES...]      default: 100 1000
#   PIER_BASELINE=<commit> [RUNS=3] bench/fleet.sh [SIZES...]
#                                  runs this build and the one at <commit>
#                                  in turn, RUNS times each
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/builds.sh
pier_builds --bin pier --example sim_engines
work=$(mktemp -d)
trap 'pkill -f "sim_engines serve $work" 2>/dev/null || true; rm -rf "$work" "$this" "$baseline"' EXIT
ulimit -n "$(ulimit -Hn)"
sim=$PWD/target/release/examples/sim_engines
if [ -z "$baseline" ]; then
  python3 bench/fleet.py "$work" "$this" "$sim" "$@"
  exit
fi
for run in $(seq "${RUNS:-3}"); do
  for build in this baseline; do
    echo "== run $run: $build"
    mkdir -p "$work/$run-$build"
    python3 bench/fleet.py "$work/$run-$build" "${!build}" "$sim" "$@"
  done
done
