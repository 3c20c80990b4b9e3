#!/usr/bin/env bash
# The daemon at rest and on a webhook, on its own test bed (3 nodes):
#   - idle: a daemon with its default intervals watching 100 services on 3
#     nodes (10 of them autoredeploy over 5 distinct tags), 120 s: CPU share of
#     one core and resident memory; the nodes' dockerd over the same window as
#     a point of comparison;
#   - requests: with 2 s git and registry intervals over 60 s, registry
#     requests per interval per distinct followed tag, remote checks per git
#     interval, and fetches while nothing changed;
#   - webhook → first container started: a commit adding a service is pushed
#     to the remote, then a GitLab webhook is sent; time until the engine
#     reports the new container started (the image is already on the node).
#     Baseline: `docker run -d` of the same container on the same node, timed
#     the same way (request sent → engine's start event). 7 runs each.
#
#   bench/daemon.sh      (as root)
set -euo pipefail
cd "$(dirname "$0")/.."
export PIER_TB_DIR=/tmp/pier-daemonbed PIER_TB_PREFIX=pbd PIER_TB_NET=10.213.80
cargo build --release --quiet
work=$(mktemp -d)
trap 'tests/testbed down >/dev/null 2>&1; rm -rf "$work"' EXIT
eval "$(tests/testbed up --nodes 3)"
export PIER_INSECURE_REGISTRIES=$PIER_TB_REGISTRY DOCKER_API_VERSION=1.41 NO_COLOR=1
python3 bench/daemon.py "$work" "$PWD/target/release/pier"
