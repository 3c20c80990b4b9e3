#!/usr/bin/env bash
# What a branch push of huge files costs the daemon: peak RSS (VmHWM) of a
# `pier daemon` that reads a commit holding a 32 MiB blob (a few KiB once
# compressed) under 16 manifest names, beside the same daemon reading an
# ordinary commit, and the same for `pier validate`. No test bed is needed:
# the manifests declare no node.
#
#   bench/huge-push.sh            (needs GNU time: apt-get install time)
#   PIER_BASELINE=<commit> bench/huge-push.sh
#                                 also runs pier as built at <commit>
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/builds.sh
pier_builds
binaries=("$this")
[ -n "$baseline" ] && binaries+=("$baseline")
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

make_repo() { # folder, huge (0/1)
  mkdir -p "$1/pier"
  git -C "$1" init -q -b main
  printf 'services:\n  web: { image: nginx }\n' > "$1/pier/app.yml"
  if [ "$2" = 1 ]; then
    python3 -c "
d = b'#' * (32 << 20)
for n in range(16): open('$1/pier/huge-%02d.yml' % n, 'wb').write(d)"
  fi
  git -C "$1" add -A
  git -C "$1" -c user.email=b@b -c user.name=b commit -q -m commit
}
make_repo "$work/ordinary" 0
make_repo "$work/huge" 1
echo "repository sizes: $(du -sh "$work/ordinary/.git" | cut -f1) ordinary, $(du -sh "$work/huge/.git" | cut -f1) huge"

daemon_peak() { # pier, repo -> VmHWM in MB once the commit was read
  local state="$work/state-$RANDOM"
  mkdir -p "$state"
  PIER_LOG=info,pier=debug "$1" daemon --repo "$2" --stack bench --state-dir "$state" --listen 127.0.0.1:0 \
    --git-interval 1h --registry-interval 1h --resync-interval 1h >"$state/log" 2>&1 &
  local pid=$!
  for _ in $(seq 600); do
    grep -q "pass finished" "$state/log" 2>/dev/null && break
    sleep 0.1
  done
  local kb
  kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo $((kb / 1024))
}

echo "| pier | commit | daemon peak RSS (MB) | validate peak RSS (MB) |"
echo "|---|---|---|---|"
for pier in "${binaries[@]}"; do
  for kind in ordinary huge; do
    runs=()
    for _ in 1 2 3; do runs+=("$(daemon_peak "$pier" "$work/$kind")"); done
    median=$(printf '%s\n' "${runs[@]}" | sort -n | sed -n 2p)
    validate=$( (cd "$work/$kind" && /usr/bin/time -f %M "$pier" validate 2>&1 >/dev/null || true) | tail -1)
    label=$([ "$pier" = "${binaries[0]}" ] && echo this || echo baseline)
    echo "| $label | $kind | $median (runs: ${runs[*]}) | $((validate / 1024)) |"
  done
done
