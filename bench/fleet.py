"""Driver of bench/fleet.sh: see there for what is measured."""
import json, os, signal, statistics, subprocess, sys, time, urllib.request

work, pier, sim = sys.argv[1], sys.argv[2], sys.argv[3]
sizes = [int(n) for n in sys.argv[4:]] or [100, 1000]
SERVICES, TOKEN = 30, "fleet-bench-token"
DIGEST = "sha256:" + "5b0d59026729b68570d99bc4f3f7c31a2e4f2a5736435641565d93e7c25bd2c3"


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def git(repo, *args):
    sh("git", "-C", repo, "-c", "user.name=bench", "-c", "user.email=bench@pier.invalid", *args)


def wait(what, check, limit=900):
    deadline = time.time() + limit
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    sys.exit(f"timed out waiting for {what}")


def manifest(folder, n, version):
    out = "nodes:\n" + "".join(
        f'  n{i:04}: {{ endpoint: "unix://{folder}/n{i:04}.sock" }}\n' for i in range(1, n + 1)
    )
    out += "services:\n"
    for s in range(SERVICES):
        env = f"    environment: {{ VERSION: \"{version}\" }}\n" if s == 0 else ""
        out += (
            f"  s{s:02}:\n    image: busybox@{DIGEST}\n    command: sleep 86400\n"
            f"    deployment_strategy: every_node\n    stop_grace_period: 1s\n{env}"
        )
    return out


def proc(pid):
    fields = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    fds = os.listdir(f"/proc/{pid}/fd")
    sockets = 0
    for fd in fds:
        try:
            sockets += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return int(fields["VmRSS"].split()[0]) // 1024, int(fields["VmHWM"].split()[0]) // 1024, len(fds), sockets


def run(n):
    folder = f"{work}/engines-{n}"
    os.makedirs(folder)
    engines = subprocess.Popen([sim, "serve", folder, str(n)])
    wait("the simulated engines", lambda: os.path.exists(f"{folder}/ready"))
    repo, state = f"{work}/repo-{n}", f"{work}/state-{n}"
    os.makedirs(f"{repo}/pier")
    git(repo, "init", "-q", "-b", "main")
    version = 0
    open(f"{repo}/pier/stack.yml", "w").write(manifest(folder, n, version))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "fleet")
    env = dict(os.environ, PIER_API_TOKEN=TOKEN, NO_COLOR="1", PIER_LOG="warn")
    started = time.time()
    daemon = subprocess.Popen(
        [pier, "daemon", "--repo", repo, "--stack", "fleet", "--state-dir", state,
         "--listen", "127.0.0.1:0", "--git-interval", "1h", "--registry-interval", "1h",
         "--resync-interval", "1h", "--debounce", "50ms"],
        env=env, stderr=open(f"{work}/daemon-{n}.log", "w"))
    address = wait("the API address", lambda: os.path.exists(f"{state}/listen") and open(f"{state}/listen").read())

    def status():
        with urllib.request.urlopen(f"http://{address}/api/v1/status", timeout=60) as r:
            return json.load(r)

    def converged(head):
        s = status()
        return s["revision"] == head and s["last_pass"] and s["last_pass"]["result"] == "ok" and all(
            v["running"] == n and v["condition"] == "Ready" for v in s["services"])

    head = sh("git", "-C", repo, "rev-parse", "HEAD").strip()
    wait("the first deploy", lambda: converged(head))
    first_deploy = time.time() - started

    def reconcile():
        before = status()["last_pass"]["finished_at"], status()["last_pass"]["duration_ms"]
        request = urllib.request.Request(f"http://{address}/api/v1/reconcile", method="POST",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        urllib.request.urlopen(request, timeout=60).read()
        return wait("a pass", lambda: (lambda p: p if (p["finished_at"], p["duration_ms"]) != before else None)(
            status()["last_pass"]))

    noop = []
    for _ in range(7):
        time.sleep(1.1)  # finished_at has one-second resolution
        noop.append(reconcile()["duration_ms"])
    rollouts = []
    for _ in range(3):
        version += 1
        open(f"{repo}/pier/stack.yml", "w").write(manifest(folder, n, version))
        git(repo, "commit", "-q", "-am", f"version {version}")
        head = sh("git", "-C", repo, "rev-parse", "HEAD").strip()
        t0 = time.time()
        wait("the rollout", lambda: converged(head))
        rollouts.append(time.time() - t0)
    rss, peak, fds, sockets = proc(daemon.pid)
    baseline = int(sh(sim, "list", folder, str(n), "7").strip())
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=60)
    engines.kill()
    return {
        "hosts": n, "containers": n * SERVICES,
        "first_deploy_s": round(first_deploy, 1),
        "noop_pass_ms": statistics.median(noop), "noop_range": (min(noop), max(noop)),
        "list_baseline_ms": baseline,
        "rollout_s": round(statistics.median(rollouts), 1), "rollout_range": (round(min(rollouts), 1), round(max(rollouts), 1)),
        "rss_mb": rss, "peak_rss_mb": peak, "fds": fds, "sockets": sockets,
    }


results = [run(n) for n in sizes]
print(json.dumps(results, indent=1))
print("\n| hosts (containers) | first deploy | no-op pass, median (range) | baseline: bare list of every engine | rollout of one service to every host, median (range) | RSS (peak) | fds (sockets) |")
print("|---|---|---|---|---|---|---|")
for r in results:
    print(f"| {r['hosts']} ({r['containers']}) | {r['first_deploy_s']} s | {r['noop_pass_ms']} ms ({r['noop_range'][0]}–{r['noop_range'][1]}) | "
          f"{r['list_baseline_ms']} ms | {r['rollout_s']} s ({r['rollout_range'][0]}–{r['rollout_range'][1]}) | "
          f"{r['rss_mb']} MB ({r['peak_rss_mb']} MB) | {r['fds']} ({r['sockets']}) |")
