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
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin pier --example sim_engines
work=$(mktemp -d)
trap 'pkill -f "sim_engines serve $work" 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n "$(ulimit -Hn)"
python3 bench/fleet.py "$work" "$PWD/target/release/pier" "$PWD/target/release/examples/sim_engines" "$@"
