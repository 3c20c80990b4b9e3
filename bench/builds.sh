# Sourced by the benchmarks that compare this tree's pier with the one
# built at $PIER_BASELINE, side by side in one invocation.
#
#   pier_builds [CARGO BUILD ARGS...]
#
# sets $this to a copy of this tree's release pier and $baseline to the
# baseline's (empty without PIER_BASELINE); extra arguments go to this
# tree's `cargo build` (e.g. `--example sim_engines`).
pier_builds() {
  baseline=""
  if [ -n "${PIER_BASELINE:-}" ]; then
    local tree
    tree=$(mktemp -d)
    git worktree add -q --detach "$tree" "$PIER_BASELINE"
    # Built in this target folder, so only pier itself recompiles.
    CARGO_TARGET_DIR="$PWD/target" cargo build --release --quiet --bin pier \
      --manifest-path "$tree/Cargo.toml"
    baseline=$(mktemp)
    cp target/release/pier "$baseline"
    chmod +x "$baseline"
    git worktree remove --force "$tree"
  fi
  # A baseline just built in this target folder has newer files than this
  # tree: touching the crate roots makes cargo rebuild this tree's pier
  # instead of taking the baseline's for it.
  touch src/lib.rs src/main.rs
  cargo build --release --quiet "$@"
  this=$(mktemp)
  cp target/release/pier "$this"
  chmod +x "$this"
}
