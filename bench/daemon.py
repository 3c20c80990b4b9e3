"""Driver of bench/daemon.sh: see there for what is measured."""
import json, os, statistics, subprocess, sys, time, urllib.request

work, pier = sys.argv[1], sys.argv[2]
env = os.environ
nodes = [n.split("=") for n in env["PIER_TB_NODES"].split(",")]
registry, base = env["PIER_TB_REGISTRY"], env["PIER_TB_BASE_IMAGE"]
n1 = nodes[0][1]
CLK = os.sysconf("SC_CLK_TCK")


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def git(repo, *args):
    sh("git", "-C", repo, "-c", "user.name=bench", "-c", "user.email=bench@pier.invalid", *args)


# Five followed tags (same bits, distinct references).
followed = []
for i in range(5):
    ref = f"{registry}/pier-test/follow{i}:1"
    sh("docker", "-H", n1, "tag", base, ref)
    sh("docker", "-H", n1, "push", ref)
    followed.append(ref)


def manifest(extra=""):
    out = "nodes:\n" + "".join(f'  {n}: {{ endpoint: "{e}" }}\n' for n, e in nodes) + "services:\n"
    for i in range(100):
        image = followed[i % 5] if i < 10 else base
        auto = "    autoredeploy: true\n" if i < 10 else ""
        out += f"  s{i:03}:\n    image: {image}\n    command: sleep 86400\n    stop_grace_period: 1s\n{auto}"
    return out + extra


src, remote = f"{work}/src", f"{work}/remote.git"
os.makedirs(f"{src}/pier")
open(f"{src}/pier/stack.yml", "w").write(manifest())
sh("git", "init", "-q", "-b", "main", src)
git(src, "add", "-A")
git(src, "commit", "-qm", "100 services")
sh("git", "clone", "-q", "--bare", src, remote)
git(src, "remote", "add", "origin", remote)


def start_daemon(name, *args, extra_env=None):
    state = f"{work}/{name}"
    os.makedirs(state)
    log = open(f"{state}/log", "w")
    proc = subprocess.Popen(
        [pier, "daemon", "--repo", f"file://{remote}", "--stack", "bench", "--state-dir", state,
         "--cache-dir", f"{state}/cache", "--listen", "127.0.0.1:0", *args],
        stdout=log, stderr=log, env={**env, **(extra_env or {})})
    while not os.path.exists(f"{state}/listen"):
        time.sleep(0.05)
    return proc, "http://" + open(f"{state}/listen").read().strip()


def get(url):
    return urllib.request.urlopen(url, timeout=10).read().decode()


def metric(api, name):
    for line in get(api + "/metrics").splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            if line.startswith(name + " ") or "{" in name:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def metric_sum(api, prefix):
    return sum(float(l.rsplit(" ", 1)[1]) for l in get(api + "/metrics").splitlines() if l.startswith(prefix))


def wait_ready(api, services=100):
    while True:
        try:
            status = json.loads(get(api + "/api/v1/status"))
            if len(status["services"]) == services and all(s["condition"] == "Ready" and s["running"] == 1 for s in status["services"]):
                return
        except Exception:
            pass
        time.sleep(0.5)


def cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_kb(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])


def dockerd_pids():
    return [int(open(f"{env['PIER_TB_DIR']}/n{i+1}/docker.pid").read()) for i in range(3)]


# --- idle, default intervals -------------------------------------------------
proc, api = start_daemon("idle")
wait_ready(api)
time.sleep(5)  # let the events of the first rollout settle
window = 120
pier0, docker0 = cpu_ticks(proc.pid), [cpu_ticks(p) for p in dockerd_pids()]
time.sleep(window)
pier_cpu = (cpu_ticks(proc.pid) - pier0) / CLK / window * 100
docker_cpu = statistics.median((cpu_ticks(p) - d) / CLK / window * 100 for p, d in zip(dockerd_pids(), docker0))
rss, hwm = rss_kb(proc.pid, "VmRSS") / 1024, rss_kb(proc.pid, "VmHWM") / 1024
proc.terminate(); proc.wait()

# --- requests per interval ----------------------------------------------------
proc, api = start_daemon("requests", "--git-interval", "2s", "--registry-interval", "2s")
wait_ready(api)
r0 = metric_sum(api, "pier_registry_requests_total")
g0, f0 = metric(api, "pier_git_checks_total"), metric(api, "pier_git_fetches_total")
window = 60
time.sleep(window)
registry_per_interval_per_ref = (metric_sum(api, "pier_registry_requests_total") - r0) / (window / 2) / len(followed)
checks_per_interval = (metric(api, "pier_git_checks_total") - g0) / (window / 2)
fetches = metric(api, "pier_git_fetches_total") - f0
proc.terminate(); proc.wait()


# --- webhook -> first container started --------------------------------------
def started_after(t0, name):
    """Seconds from t0 to the engine's start event of container `name`."""
    deadline = time.time() + 60
    while time.time() < deadline:
        out = sh("docker", "-H", n1, "events", "--since", f"{t0:.3f}", "--until", f"{time.time():.3f}",
                 "--filter", "event=start", "--filter", f"container={name}", "--format", "{{.TimeNano}}")
        if out.strip():
            return int(out.split()[0]) / 1e9 - t0
        time.sleep(0.1)
    raise SystemExit(f"{name} never started")


token = "bench-token"
proc, api = start_daemon("webhook", extra_env={"PIER_GITLAB_TOKEN": token})
wait_ready(api)
pier_times, docker_times = [], []
extra = ""
for k in range(7):
    extra += f"  probe{k}:\n    image: {base}\n    command: sleep 86400\n    stop_grace_period: 1s\n    tags: [probe]\n"
    body = manifest(extra).replace(f'  {nodes[0][0]}: {{ endpoint: "{nodes[0][1]}" }}',
                                   f'  {nodes[0][0]}: {{ endpoint: "{nodes[0][1]}", tags: [probe] }}')
    open(f"{src}/pier/stack.yml", "w").write(body)
    git(src, "commit", "-qam", f"probe {k}")
    git(src, "push", "-q", "origin", "main")
    t0 = time.time()
    req = urllib.request.Request(api + "/hooks/gitlab", data=b"{}", headers={"X-Gitlab-Token": token}, method="POST")
    urllib.request.urlopen(req, timeout=10).read()
    pier_times.append(started_after(t0, f"bench-probe{k}-1"))
    t0 = time.time()
    sh("docker", "-H", n1, "run", "-d", "--name", f"baseline{k}", base, "sleep", "86400")
    docker_times.append(started_after(t0, f"baseline{k}"))
    time.sleep(1)
proc.terminate(); proc.wait()

pm, dm = statistics.median(pier_times), statistics.median(docker_times)
print(f"""
idle daemon, 100 services on 3 nodes, default intervals, {120} s:
  pier CPU {pier_cpu:.2f} % of one core; RSS {rss:.1f} MB (peak {hwm:.1f} MB)
  dockerd CPU over the same window (median of 3 nodes): {docker_cpu:.2f} %
requests, 2 s intervals over 60 s:
  registry requests per interval per distinct followed tag: {registry_per_interval_per_ref:.2f}
  remote checks per git interval: {checks_per_interval:.2f}; fetches while nothing changed: {fetches:.0f}
webhook -> first container started (7 runs):
  pier median {pm*1000:.0f} ms (range {min(pier_times)*1000:.0f}-{max(pier_times)*1000:.0f} ms)
  docker run -d median {dm*1000:.0f} ms (range {min(docker_times)*1000:.0f}-{max(docker_times)*1000:.0f} ms)
  ratio {pm/dm:.2f}
""")
