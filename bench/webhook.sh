#!/usr/bin/env bash
# A commit announced by a webhook until its new container runs, on a
# remote repository (`file://`, so the fetch protocol is used), beside the
# same container started by `docker run -d`, timed the same way (request
# sent -> the engine's start event). Each build under test runs its own
# daemon (its own remote and stack, 100 services on 3 nodes); the runs
# are interleaved: one probe of each build, then one `docker run`, 7
# rounds.
#
#   bench/webhook.sh                           (as root; its own bed)
#   PIER_BASELINE=<commit> bench/webhook.sh    also pier as built at <commit>
set -euo pipefail
cd "$(dirname "$0")/.."
export PIER_TB_DIR=/tmp/pier-webhookbed PIER_TB_PREFIX=pwb PIER_TB_NET=10.213.82
touch src/lib.rs src/main.rs
cargo build --release --quiet
this=$(mktemp); cp target/release/pier "$this"; chmod +x "$this"
builds=("this=$this")
if [ -n "${PIER_BASELINE:-}" ]; then
  tree=$(mktemp -d)
  git worktree add -q --detach "$tree" "$PIER_BASELINE"
  CARGO_TARGET_DIR="$PWD/target" cargo build --release --quiet --manifest-path "$tree/Cargo.toml"
  baseline=$(mktemp); cp target/release/pier "$baseline"; chmod +x "$baseline"
  git worktree remove --force "$tree"
  builds+=("baseline=$baseline")
fi
work=$(mktemp -d)
trap 'tests/testbed down >/dev/null 2>&1; rm -rf "$work"' EXIT
eval "$(tests/testbed up --nodes 3)"
export PIER_INSECURE_REGISTRIES=$PIER_TB_REGISTRY DOCKER_API_VERSION=1.41 NO_COLOR=1
python3 bench/webhook.py "$work" "${builds[@]}"
