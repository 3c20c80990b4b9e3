#!/usr/bin/env bash
# Time from asking for a rollback until every replica runs the old digest
# again: 2 services x 2 nodes, through one daemon, 5 runs of each way,
# interleaved. `pier rollback` (one commit, pinned digests, no pipeline run)
# against `git revert HEAD` of the release (a new commit: the pipeline runs
# again, here the cheapest one there is, one `true` stage).
#
#   bench/rollback.sh                 (as root; brings up its own bed)
set -euo pipefail
cd "$(dirname "$0")/.."
export PIER_TB_DIR=/tmp/pier-rbbed PIER_TB_PREFIX=prb PIER_TB_NET=10.213.83
touch src/lib.rs src/main.rs
cargo build --release --quiet
pier=$(mktemp); cp target/release/pier "$pier"; chmod +x "$pier"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; tests/testbed down >/dev/null 2>&1; rm -rf "$work"' EXIT
eval "$(tests/testbed up --nodes 2)"
export DOCKER_API_VERSION=1.41 NO_COLOR=1 PIER_INSECURE_REGISTRIES="$PIER_TB_REGISTRY"
IFS=, read -r first second <<<"$PIER_TB_NODES"
n1=${first#*=}; n2=${second#*=}

# Two versions of two images, pushed once.
declare -A digest
for service in web api; do
  for version in 1 2; do
    image="$PIER_TB_REGISTRY/bench/$service:$version"
    printf 'FROM %s\nLABEL bench=%s-%s\n' "$PIER_TB_BASE_IMAGE" "$service" "$version" \
      | docker -H "$n1" build -q -t "$image" - >/dev/null 2>&1
    docker -H "$n1" push -q "$image" >/dev/null
    digest[$service$version]=$(docker -H "$n1" inspect --format '{{index .RepoDigests 0}}' "$image")
    digest[$service$version]=${digest[$service$version]#*@}
  done
done

manifest() { # version -> stack.yml
  printf 'nodes:\n  n1: { endpoint: "%s", tags: [app] }\n  n2: { endpoint: "%s", tags: [app, ci] }\n' "$n1" "$n2"
  printf 'pipeline:\n  branches: [main]\n  runner_tags: [ci]\n  stages:\n    - name: test\n      image: %s\n      script: ["true"]\n' "$PIER_TB_BASE_IMAGE"
  printf 'services:\n'
  for service in web api; do
    printf '  %s:\n    image: %s/bench/%s:%s\n    command: sleep 3600\n    stop_grace_period: 1s\n' "$service" "$PIER_TB_REGISTRY" "$service" "$1"
    printf '    target_num_containers: 2\n    deployment_strategy: high_availability\n    environment: { VERSION: "%s" }\n' "$1"
  done
}

start_stack() { # name -> starts a daemon on a new repository at version 1
  local stack=$1 repo="$work/$1"
  mkdir -p "$repo/pier"; git -C "$repo" init -q -b main
  git -C "$repo" config user.email b@b; git -C "$repo" config user.name bench
  manifest 1 >"$repo/pier/stack.yml"; git -C "$repo" add -A; git -C "$repo" commit -qm v1
  mkdir -p "$work/state-$stack"
  "$pier" daemon --repo "$repo" --stack "$stack" --state-dir "$work/state-$stack" \
    --listen 127.0.0.1:0 --cache-dir "$work/cache-$stack" >"$work/state-$stack/log" 2>&1 &
}

runs_version() { # stack version -> true once all 4 replicas run that version's digests
  local stack=$1 version=$2 seen
  seen=$(for node in "$n1" "$n2"; do
    docker -H "$node" ps --filter "label=pier.stack=$stack" --filter status=running \
      --format '{{.Label "pier.service"}} {{.Label "pier.image-digest"}}'
  done | sort)
  [ "$seen" = "$(printf 'api %s\napi %s\nweb %s\nweb %s' "${digest[api$version]}" "${digest[api$version]}" "${digest[web$version]}" "${digest[web$version]}")" ]
}

wait_version() { until runs_version "$1" "$2"; do sleep 0.02; done; }

release() { # stack version message
  manifest "$2" >"$work/$1/pier/stack.yml"
  git -C "$work/$1" commit -q --allow-empty -am "$3"
  wait_version "$1" "$2"
}

start_stack rollback; start_stack revert
wait_version rollback 1; wait_version revert 1
declare -A times
for _ in 1 2 3 4 5; do
  for way in rollback revert; do
    release "$way" 2 "release 2"
    start=$(date +%s%N)
    if [ "$way" = rollback ]; then
      (cd "$work/rollback" && "$pier" rollback --state-dir "$work/state-rollback" --stack rollback >/dev/null)
    else
      git -C "$work/revert" revert --no-edit HEAD >/dev/null
    fi
    wait_version "$way" 1
    times[$way]+="$(( ($(date +%s%N) - start) / 1000000 )) "
    # Back to an unpinned version 1 for the next release.
    release "$way" 1 "version 1 again"
  done
done
median() { printf '%s\n' "$@" | sort -n | sed -n 3p; }
echo "| way | times (ms) | median (ms) |"
echo "|---|---|---|"
for way in rollback revert; do
  # shellcheck disable=SC2086
  echo "| $way | ${times[$way]}| $(median ${times[$way]}) |"
done
