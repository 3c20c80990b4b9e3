"""Driver of bench/webhook.sh: see there for what is measured."""
import json, os, statistics, subprocess, sys, time, urllib.request

work, builds = sys.argv[1], [b.split("=", 1) for b in sys.argv[2:]]
env = os.environ
nodes = [n.split("=") for n in env["PIER_TB_NODES"].split(",")]
base = env["PIER_TB_BASE_IMAGE"]
n1 = nodes[0][1]
TOKEN = "bench-token"


def sh(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def git(repo, *args):
    sh("git", "-C", repo, "-c", "user.name=bench", "-c", "user.email=bench@pier.invalid", *args)


def manifest(stack, extra=""):
    out = "nodes:\n" + "".join(
        f'  {n}: {{ endpoint: "{e}"{", tags: [probe]" if i == 0 else ""} }}\n' for i, (n, e) in enumerate(nodes)
    ) + "services:\n"
    for i in range(100):
        out += f"  s{i:03}:\n    image: {base}\n    command: sleep 86400\n    stop_grace_period: 1s\n"
    return out + extra


def get(url):
    return urllib.request.urlopen(url, timeout=10).read().decode()


def wait_ready(api, services):
    while True:
        try:
            status = json.loads(get(api + "/api/v1/status"))
            if len(status["services"]) == services and all(s["condition"] == "Ready" for s in status["services"]):
                return
        except Exception:
            pass
        time.sleep(0.5)


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


class Daemon:
    def __init__(self, label, binary):
        self.label, self.stack = label, f"wb{label}"
        self.src, self.remote = f"{work}/{label}/src", f"{work}/{label}/remote.git"
        os.makedirs(f"{self.src}/pier")
        self.extra = ""
        open(f"{self.src}/pier/stack.yml", "w").write(manifest(self.stack))
        sh("git", "init", "-q", "-b", "main", self.src)
        git(self.src, "add", "-A")
        git(self.src, "commit", "-qm", "100 services")
        sh("git", "clone", "-q", "--bare", self.src, self.remote)
        git(self.src, "remote", "add", "origin", self.remote)
        state = f"{work}/{label}/state"
        os.makedirs(state)
        log = open(f"{state}/log", "w")
        self.proc = subprocess.Popen(
            [binary, "daemon", "--repo", f"file://{self.remote}", "--stack", self.stack, "--state-dir", state,
             "--cache-dir", f"{state}/cache", "--listen", "127.0.0.1:0"],
            stdout=log, stderr=log, env={**env, "PIER_GITLAB_TOKEN": TOKEN})
        while not os.path.exists(f"{state}/listen"):
            time.sleep(0.05)
        self.api = "http://" + open(f"{state}/listen").read().strip()
        self.times = []

    def probe(self, k):
        self.extra += f"  probe{k}:\n    image: {base}\n    command: sleep 86400\n    stop_grace_period: 1s\n    tags: [probe]\n"
        open(f"{self.src}/pier/stack.yml", "w").write(manifest(self.stack, self.extra))
        git(self.src, "commit", "-qam", f"probe {k}")
        git(self.src, "push", "-q", "origin", "main")
        head = sh("git", "-C", self.src, "rev-parse", "HEAD").strip()
        body = json.dumps({"object_kind": "push", "ref": "refs/heads/main", "after": head}).encode()
        t0 = time.time()
        req = urllib.request.Request(self.api + "/hooks/gitlab", data=body,
                                     headers={"X-Gitlab-Token": TOKEN, "Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(req, timeout=10).read()
        self.times.append(started_after(t0, f"{self.stack}-probe{k}-1"))


daemons = [Daemon(label, binary) for label, binary in builds]
for d in daemons:
    wait_ready(d.api, 100)
time.sleep(5)  # the first rollouts' events settle
docker_times = []
for k in range(7):
    for d in daemons:
        d.probe(k)
        time.sleep(1)
    t0 = time.time()
    sh("docker", "-H", n1, "run", "-d", "--name", f"baseline{k}", base, "sleep", "86400")
    docker_times.append(started_after(t0, f"baseline{k}"))
    time.sleep(1)
for d in daemons:
    d.proc.terminate()
    d.proc.wait()

dm = statistics.median(docker_times)
print(f"\nwebhook -> first container started, 7 interleaved rounds, 100 services on 3 nodes:")
print(f"  docker run -d: median {dm*1000:.0f} ms (range {min(docker_times)*1000:.0f}-{max(docker_times)*1000:.0f} ms)")
for d in daemons:
    m = statistics.median(d.times)
    print(f"  pier {d.label}: median {m*1000:.0f} ms (range {min(d.times)*1000:.0f}-{max(d.times)*1000:.0f} ms); ratio to docker run {m/dm:.2f}")
