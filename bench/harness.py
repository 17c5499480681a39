"""The benchmark harness: runs every server and workload in one go and records the figures.

Started by scripts/bench (which installs oha and the peer's venv and builds arbiter first).
Everything runs on this machine, on loopback, in one run:

1. The ceiling (bench/ceiling.py): ONNX Runtime alone in-process, shaped like the Arbiter under
   test (its workers x intra-op threads), at batch 1 and at its max batch size; plus one batch-1
   inference on all cores, and the Python peer's shape (cores processes x 1 thread).
2. For each repetition, each server in turn: start it and time the first 200; check its answers
   against the Python reference; warm it up; measure its memory at rest; drive each photo at each
   concurrency with oha for a fixed time while sampling memory; SIGKILL one worker and time the
   first 200 from its replacement; stop it. The points the targets compare have ONNX Runtime
   alone measured again just before and just after them ("beside"): on a shared machine, the
   speed of the cores drifts within minutes. Those are Arbiter with the 512x600 photo at 1 and
   8 clients (compared with ONNX Runtime alone), and each server at 8 clients on the 512x600 and
   the 12-megapixel photos (compared with each other, each as a share of the cores' speed then).

Servers: `arbiter` (its TCP socket), `arbiter+nginx` (arbiter on a unix socket behind an nginx
generated for the run on a free loopback port), `peer` (bench/peer: gunicorn + Flask +
onnxruntime + Pillow). Each server's processes are found as the descendants of the processes the
harness started; memory is summed over them: RSS from /proc/PID/status, PSS from
/proc/PID/smaps_rollup (which counts shared pages, such as mapped model weights, once in all).

Every process is started in its own session and stopped by its pid (process group) at the end,
whatever happens. Results go to OUT/results.json; bench/report.py turns them into the report.
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
PHOTOS = ["grace_hopper.jpg", "chelsea.png", "big_12mp.jpg"]
# The photo used for start, kill and warm-up probes.
PROBE_PHOTO = "grace_hopper.jpg"
# What a phone sends: the peer comparison's second photo.
BIG_PHOTO = "big_12mp.jpg"
# Config keys that hold paths (relative to the config file), by how their names end.
PATH_KEYS = ("path", "labels", "library", "dir", "file", "pidfile", "socket")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(msg):
    """Progress on stderr, so stdout carries only the figures."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def say(msg=""):
    """A figure line on stdout (the report is made of the same figures)."""
    print(msg, flush=True)


# --- processes -----------------------------------------------------------------------------------

STARTED = []  # every Popen the harness started, stopped in cleanup()


def spawn(cmd, logfile, env=None, cwd=None):
    """Starts cmd in its own session (so its whole tree can be stopped by its pid)."""
    out = open(logfile, "ab")
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    out.close()
    STARTED.append(proc)
    return proc


def stop(proc, sig=signal.SIGTERM, grace=20.0):
    """Stops a started process: sig to its pid, then SIGKILL to its process group."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # Whatever is left of its group (workers whose parent died first).
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    if proc in STARTED:
        STARTED.remove(proc)


def cleanup():
    """Stops every process the harness started, last started first."""
    for proc in list(reversed(STARTED)):
        stop(proc, signal.SIGTERM, grace=5.0)


def children_map():
    """ppid -> [pid] for every process on the machine."""
    kids = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree(roots):
    """The live pids of roots and all their descendants."""
    kids = children_map()
    out, todo = [], [p for p in roots if Path(f"/proc/{p}").exists()]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def memory(pids):
    """(summed RSS bytes, summed PSS bytes, process count) of pids."""
    rss = pss = n = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) * 1024
                        break
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
                        break
            n += 1
        except (OSError, ValueError):
            continue
    return rss, pss, n


def cpu_jiffies(pids):
    """Summed utime + stime (clock ticks) of pids."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            fields = stat[stat.rfind(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            continue
    return total


def machine_busy():
    """Busy clock ticks of all CPUs since boot (from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice
    return fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7]


def settle(roots, limit=60.0):
    """Waits until the server's processes are idle (below 5% of a core for 300 ms)."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        pids = tree(roots)
        before = cpu_jiffies(pids)
        time.sleep(0.3)
        if (cpu_jiffies(pids) - before) / CLK_TCK / 0.3 < 0.05:
            return time.monotonic() - start
    return time.monotonic() - start


class Quiet:
    """Waits, before each measured point, for the rest of the machine to be quiet.

    Other jobs share these cores. Before a point, up to `per_point` seconds are spent waiting
    until everything else (all CPU time but the server's and the harness's) uses under
    `threshold` cores over half a second, within a `budget` for the whole run. The load that
    remains is measured during the point anyway and reported.
    """

    def __init__(self, per_point, budget, threshold=0.15):
        self.per_point = per_point
        self.budget = budget
        self.threshold = threshold
        self.waited = 0.0

    def other_load(self, roots, window=0.5):
        """Cores used by everything but the server and the harness over window seconds."""
        pids = tree(roots)
        busy0, srv0 = machine_busy(), cpu_jiffies(pids)
        self0 = resource.getrusage(resource.RUSAGE_SELF)
        time.sleep(window)
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        mine = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
        busy = (machine_busy() - busy0 - (cpu_jiffies(pids) - srv0)) / CLK_TCK - mine
        return max(0.0, busy) / window

    def wait(self, roots):
        """Seconds waited; the other load last seen."""
        start = time.monotonic()
        load = self.other_load(roots)
        while (
            load >= self.threshold
            and time.monotonic() - start < self.per_point
            and self.waited + (time.monotonic() - start) < self.budget
        ):
            load = self.other_load(roots)
        waited = time.monotonic() - start
        self.waited += waited
        return waited, load


def free_port():
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- HTTP probes ---------------------------------------------------------------------------------


def multipart(photo):
    """(body, content type) of a multipart form with the photo in field `image`."""
    boundary = uuid.uuid4().hex
    data = (VAR / "photos" / photo).read_bytes()
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{photo}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class Probe:
    """Posts one photo to /model_predict; one fresh connection per request."""

    def __init__(self, port, photo=PROBE_PHOTO):
        self.port = port
        self.body, self.ctype = multipart(photo)

    def post(self, timeout=60.0):
        """(status or None on a connection error, headers dict, body bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(
                "POST",
                "/model_predict",
                body=self.body,
                headers={"Content-Type": self.ctype, "Connection": "close"},
            )
            resp = conn.getresponse()
            body = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
        except (OSError, http.client.HTTPException):
            return None, {}, b""
        finally:
            conn.close()


def http_get(port, path, timeout=10.0):
    """(status, body) of a GET, (None, b"") on a connection error."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException):
        return None, b""
    finally:
        conn.close()


# --- servers -------------------------------------------------------------------------------------


def toml_value(v):
    """A TOML literal for the simple values arbiter's config holds."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML for {v!r}")


def toml_dump(doc):
    """TOML text of a dict of tables (and arrays of tables) of simple values."""
    lines = []
    for table, values in doc.items():
        items = values if isinstance(values, list) else [values]
        for item in items:
            lines.append(f"[[{table}]]" if isinstance(values, list) else f"[{table}]")
            for k, v in item.items():
                if isinstance(v, dict):
                    continue
                lines.append(f"{k} = {toml_value(v)}")
            lines.append("")
    return "\n".join(lines)


class Arbiter:
    """Arbiter from a given config file, bound on TCP or (for nginx) on a unix socket."""

    name = "arbiter"

    def __init__(self, binary, base, run_dir, cores, unix=False, fast_jpeg=False):
        self.binary = binary
        self.fast_jpeg = fast_jpeg
        if fast_jpeg:
            # The opt-in only changes big JPEGs: it is measured on the 12-megapixel photo.
            self.name = "arbiter-fast-jpeg"
            self.photos = [p for p in PHOTOS if "12mp" in p] or list(PHOTOS)
        self.dir = run_dir / ("arbiter-unix" if unix else self.name)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.unix = unix
        self.socket = self.dir / "http.sock"
        self.port = None if unix else free_port()
        base_config, text = base
        doc = tomllib.loads(text)
        base_dir = Path(base_config).resolve().parent
        doc.pop("program", None)  # supervised side programs are not part of the benchmark
        server = doc.setdefault("server", {})
        server["bind"] = [f"unix:{self.socket}" if unix else f"127.0.0.1:{self.port}"]
        server["pidfile"] = str(self.dir / "arbiter.pid")
        server["control_socket"] = str(self.dir / "control.sock")
        if os.geteuid() == 0:
            server.pop("user", None)
            server.pop("group", None)
            server["allow_root"] = True
        model = doc.setdefault("model", {})
        if fast_jpeg:
            model["fast_jpeg"] = True
        doc.get("log", {}).pop("file", None)
        # Paths are relative to the config file's folder: make them absolute for the copy.
        for table in doc.values():
            if not isinstance(table, dict):
                continue
            for key, value in table.items():
                if isinstance(value, str) and key.endswith(PATH_KEYS) and not value.startswith(("unix:", "fd:")):
                    table[key] = str((base_dir / value).resolve())
        self.config = self.dir / "arbiter.toml"
        self.config.write_text(
            f"# Generated by bench/harness.py from {base_config}\n\n" + toml_dump(doc)
        )
        self.workers = int(server.get("workers", 1))
        threads = int(model.get("threads", 0))
        self.threads = threads or max(1, cores // self.workers)
        batching = doc.get("batching", {})
        self.max_batch = int(batching.get("max_batch_size", 1))
        # Lanes: one single-thread session per thread, batches side by side under load.
        self.lanes = bool(model.get("parallel_batches", True)) and self.threads > 1 and model.get("device", "cpu") == "cpu"
        self.settings = {
            "workers": self.workers,
            "threads": self.threads,
            "max_batch_size": self.max_batch,
            "max_delay": batching.get("max_delay"),
            "queue_size": batching.get("queue_size"),
            "preprocess_threads": batching.get("preprocess_threads"),
            "share_weights": model.get("share_weights"),
            "fast_jpeg": bool(model.get("fast_jpeg", False)),
            "parallel_batches": self.lanes,
        }
        self.proc = None

    def start(self):
        """Starts `arbiter start` in the foreground."""
        self.proc = spawn(
            [str(self.binary), "start", "-c", str(self.config)], self.dir / "arbiter.log"
        )

    def exited(self):
        """Whether the arbiter has exited."""
        return self.proc is not None and self.proc.poll() is not None

    def roots(self):
        """The processes to sum: the arbiter and (through the tree) its workers."""
        return [self.proc.pid] if self.proc else []

    def worker_pids(self):
        """The workers: the arbiter's children."""
        return sorted(children_map().get(self.proc.pid, []))

    def status(self):
        """`arbiter status --json`, or None."""
        try:
            out = subprocess.run(
                [str(self.binary), "status", "--json", "-c", str(self.config)],
                capture_output=True,
                timeout=10,
                check=True,
            ).stdout
            return json.loads(out)
        except (subprocess.SubprocessError, ValueError, OSError):
            return None

    def served_by_new(self, headers, old):
        """Whether a 200 came from a worker not in old (pids)."""
        if len(old) == 1:
            return True  # the only worker was killed: any answer is the replacement's
        st = self.status() or {}
        return any(w["pid"] not in old and w.get("requests", 0) > 0 for w in st.get("workers", []))

    def metrics_port(self):
        """The TCP port where /metrics is reachable, or None."""
        return self.port

    def stop(self):
        """TERM to the arbiter (its graceful stop, as `arbiter stop` sends), then by pid."""
        if self.proc:
            stop(self.proc, signal.SIGTERM, grace=30.0)
        self.proc = None


NGINX_SITE = ROOT / "deploy" / "nginx" / "arbiter.conf"


def nginx_site(port, sock):
    """The shipped nginx site (deploy/nginx/arbiter.conf) on port and sock; a plain one if absent."""
    if NGINX_SITE.exists():
        site = NGINX_SITE.read_text()
        site = re.sub(r"\blisten\s+8999\s*;", f"listen 127.0.0.1:{port};", site)
        site = site.replace("unix:/run/arbiter/arbiter.sock", f"unix:{sock}")
        if f"127.0.0.1:{port}" not in site or str(sock) not in site:
            raise RuntimeError(f"{NGINX_SITE}: no 'listen 8999;' or upstream unix:/run/arbiter/arbiter.sock to rewrite")
        return site
    return f"""
    client_max_body_size 20m;
    upstream arbiter {{ server unix:{sock}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://arbiter;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
"""


class ArbiterNginx:
    """Arbiter on a unix socket behind nginx on a free loopback port."""

    name = "arbiter+nginx"

    def __init__(self, binary, base, run_dir, cores):
        self.arbiter = Arbiter(binary, base, run_dir, cores, unix=True)
        self.dir = run_dir / "nginx"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.settings = self.arbiter.settings
        self.conf = self.dir / "nginx.conf"
        temp = self.dir / "tmp"
        temp.mkdir(exist_ok=True)
        # Master and workers run as the invoking user (root here) so they can reach the socket.
        user = "user root;\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"""# Generated by bench/harness.py for one benchmark run: {NGINX_SITE.relative_to(ROOT)}
# on a free loopback port and the run's unix socket.
{user}worker_processes auto;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
    access_log {self.dir}/access.log combined buffer=64k flush=1s;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
{nginx_site(self.port, self.arbiter.socket)}
}}
"""
        )
        self.nginx = None

    def start(self):
        """Starts nginx, then arbiter."""
        self.nginx = spawn(
            ["nginx", "-c", str(self.conf), "-p", str(self.dir)], self.dir / "nginx.log"
        )
        self.arbiter.start()

    def exited(self):
        """Whether arbiter or nginx has exited."""
        return self.arbiter.exited() or (self.nginx is not None and self.nginx.poll() is not None)

    def roots(self):
        """Arbiter, its workers, nginx's master and workers."""
        return self.arbiter.roots() + ([self.nginx.pid] if self.nginx else [])

    def worker_pids(self):
        """Arbiter's workers (the ones the kill test picks from)."""
        return self.arbiter.worker_pids()

    def served_by_new(self, headers, old):
        """As Arbiter's."""
        return self.arbiter.served_by_new(headers, old)

    def metrics_port(self):
        """/metrics through nginx."""
        return self.port

    def stop(self):
        """Arbiter, then nginx (QUIT: graceful)."""
        self.arbiter.stop()
        if self.nginx:
            stop(self.nginx, signal.SIGQUIT, grace=10.0)
        self.nginx = None


class Peer:
    """The Python peer: gunicorn sync workers = cores, one ONNX Runtime thread each."""

    name = "peer"

    def __init__(self, venv, run_dir, cores, model, labels):
        self.dir = run_dir / "peer"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.venv = venv
        self.workers = cores
        self.env = dict(
            os.environ,
            PEER_BIND=f"127.0.0.1:{self.port}",
            PEER_WORKERS=str(cores),
            PEER_THREADS="1",
            PEER_MODEL=str(model),
            PEER_LABELS=str(labels),
        )
        self.settings = {"workers": cores, "threads": 1, "worker_class": "sync"}
        self.proc = None

    def start(self):
        """Starts gunicorn in the foreground."""
        self.proc = spawn(
            [str(self.venv / "bin" / "gunicorn"), "-c", "gunicorn.conf.py", "app:app"],
            self.dir / "gunicorn.log",
            env=self.env,
            cwd=ROOT / "bench" / "peer",
        )

    def exited(self):
        """Whether gunicorn has exited."""
        return self.proc is not None and self.proc.poll() is not None

    def roots(self):
        """gunicorn's master (and through the tree its workers)."""
        return [self.proc.pid] if self.proc else []

    def worker_pids(self):
        """The master's children."""
        return sorted(children_map().get(self.proc.pid, []))

    def served_by_new(self, headers, old):
        """The peer names the answering worker in X-Worker-Pid."""
        pid = headers.get("x-worker-pid")
        return pid is not None and int(pid) not in old

    def metrics_port(self):
        """The peer has no /metrics."""
        return None

    def stop(self):
        """TERM to the master (graceful), then by pid."""
        if self.proc:
            stop(self.proc, signal.SIGTERM, grace=30.0)
        self.proc = None


# --- measurements --------------------------------------------------------------------------------


def time_to_first_200(server, port, limit):
    """Starts the server; seconds from the start to the first 200 on /model_predict."""
    probe = Probe(port)
    t0 = time.monotonic()
    server.start()
    while time.monotonic() - t0 < limit:
        status, _, _ = probe.post(timeout=limit)
        if status == 200:
            return time.monotonic() - t0
        if server.exited():
            log(f"  {server.name} exited before answering (see its log in {server.dir})")
            return None
        time.sleep(0.02)
    return None


def check_answers(port, reference, photos):
    """{photo: True if the answer equals the Python reference's}."""
    out = {}
    for photo in photos:
        status, headers, body = Probe(port, photo).post()
        try:
            got = json.loads(body) if status == 200 else None
        except ValueError:
            got = None
        out[photo] = got == reference.get(photo)
        if not out[photo]:
            log(f"  answer for {photo}: {status} {body[:200]!r} (expected {reference.get(photo)})")
    return out


def kill_worker(server, port, limit=60.0):
    """SIGKILLs one worker under light load (one client per worker); seconds to the first 200
    from its replacement, and the requests that failed meanwhile."""
    old = set(server.worker_pids())
    if not old:
        return {"seconds": None, "failed": None, "note": "no worker found"}
    victim = min(old)
    clients = max(1, len(old))
    probe = Probe(port)
    done = threading.Event()
    lock = threading.Lock()
    result = {"seconds": None, "failed": 0, "ok": 0}
    t0 = [0.0]

    def client():
        while not done.is_set():
            sent = time.monotonic()
            status, headers, _ = probe.post(timeout=limit)
            now = time.monotonic()
            with lock:
                failed = status != 200
                if failed:
                    result["failed"] += 1
                else:
                    result["ok"] += 1
                if not failed and sent >= t0[0] and result["seconds"] is None and server.served_by_new(headers, old):
                    result["seconds"] = now - t0[0]
                    done.set()
            if failed:
                time.sleep(0.01)

    # The clients run before the kill so that the victim dies with a request in hand, as in
    # real life; t0 is set far ahead until then so no answer counts as the replacement's.
    t0[0] = time.monotonic() + 3600.0
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    with lock:
        t0[0] = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    done.wait(timeout=limit)
    done.set()
    for t in threads:
        t.join(timeout=limit)
    result["clients"] = clients
    return result


def parse_metrics(text):
    """{(name, stage-or-route): (sum, count)} of arbiter's histograms, summed over workers."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith("arbiter_"):
            continue
        try:
            head, value = line.rsplit(" ", 1)
            value = float(value)
        except ValueError:
            continue
        name, _, labels = head.partition("{")
        for suffix in ("_sum", "_count"):
            if name.endswith(suffix):
                base = name[: -len(suffix)]
                key = ""
                for part in labels.rstrip("}").split(","):
                    k, _, v = part.partition("=")
                    if k in ("stage", "route"):
                        key = v.strip('"')
                s, c = out.get((base, key), (0.0, 0.0))
                out[(base, key)] = (s + value, c) if suffix == "_sum" else (s, c + value)
    return out


def metrics_snapshot(port):
    """Parsed /metrics, or None."""
    if port is None:
        return None
    status, body = http_get(port, "/metrics")
    return parse_metrics(body.decode(errors="replace")) if status == 200 else None


def metrics_delta(before, after):
    """Mean per observation of each histogram between two snapshots: {name/key: mean, ...}."""
    if not before or not after:
        return None
    out = {}
    for key, (s1, c1) in after.items():
        s0, c0 = before.get(key, (0.0, 0.0))
        if c1 - c0 > 0:
            label = key[0].removeprefix("arbiter_") + (f"/{key[1]}" if key[1] else "")
            out[label] = {"mean": (s1 - s0) / (c1 - c0), "count": c1 - c0}
    return out


def run_oha(oha, port, photo, concurrency, duration, roots, out_json, wait_ongoing=False):
    """One bounded oha run; returns its figures, with memory and CPU sampled meanwhile.

    With wait_ongoing (smoke mode), the requests in flight at the deadline are waited for, so
    every run has answers to check even on a loaded machine.
    """
    cmd = [
        str(oha),
        "-z", f"{duration}s",
        "-c", str(concurrency),
        "-t", "120s",
        "--no-tui",
        "--output-format", "json",
        "-m", "POST",
        "-F", f"image=@{VAR / 'photos' / photo}",
        f"http://127.0.0.1:{port}/model_predict",
    ] + (["--wait-ongoing-requests-after-deadline"] if wait_ongoing else [])
    peak = [0, 0, 0]
    stop_sampling = threading.Event()

    def sampler():
        while not stop_sampling.is_set():
            rss, pss, n = memory(tree(roots))
            peak[0], peak[1], peak[2] = max(peak[0], rss), max(peak[1], pss), max(peak[2], n)
            stop_sampling.wait(0.5)

    pids = tree(roots)
    cpu0, busy0 = cpu_jiffies(pids), machine_busy()
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.monotonic()
    sampler_thread = threading.Thread(target=sampler, daemon=True)
    sampler_thread.start()
    with open(out_json, "wb") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, timeout=duration + 180, check=False)
    stop_sampling.set()
    sampler_thread.join()
    wall = time.monotonic() - wall0
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    server_cpu = (cpu_jiffies(pids) - cpu0) / CLK_TCK
    busy = (machine_busy() - busy0) / CLK_TCK
    oha_cpu = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    self_cpu = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"oha exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-2000:]}")
    data = json.loads(Path(out_json).read_text())
    summary = data.get("summary", {})
    statuses = {str(k): int(v) for k, v in data.get("statusCodeDistribution", {}).items()}
    errors = {str(k): int(v) for k, v in data.get("errorDistribution", {}).items()}
    aborted = sum(v for k, v in errors.items() if "deadline" in k.lower())
    errors = {k: v for k, v in errors.items() if "deadline" not in k.lower()}
    elapsed = float(summary.get("total") or duration)
    ok = statuses.get("200", 0)
    pct = data.get("latencyPercentiles", {})
    return {
        "elapsed_s": elapsed,
        "ok": ok,
        "rps": ok / elapsed if elapsed else 0.0,
        "p50_ms": ms(pct.get("p50")),
        "p90_ms": ms(pct.get("p90")),
        "p99_ms": ms(pct.get("p99")),
        "mean_ms": ms(summary.get("average")),
        "statuses": statuses,
        "errors": errors,
        "aborted_at_deadline": aborted,
        "peak_rss": peak[0],
        "peak_pss": peak[1],
        "processes": peak[2],
        "cpu": {
            "server_cores": server_cpu / wall,
            "oha_cores": oha_cpu / wall,
            "harness_cores": self_cpu / wall,
            "other_cores": max(0.0, busy - server_cpu - oha_cpu - self_cpu) / wall,
        },
    }


def ms(seconds):
    """Seconds (or None) to milliseconds."""
    return None if seconds is None else float(seconds) * 1000.0


def machine():
    """The machine, described."""
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    flags = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = line
                break
    mem_total = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * 1024
    os_name = platform.platform()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "avx512": " avx512f" in flags,
        "memory_bytes": mem_total,
        "os": os_name,
        "kernel": platform.release(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def versions(binary, oha):
    """Versions of what is compared."""

    def first_line(cmd):
        try:
            p = subprocess.run(cmd, capture_output=True, timeout=10, check=False)
            return (p.stdout or p.stderr).decode(errors="replace").strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "unknown"

    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True, timeout=10, check=False,
        ).stdout.decode().strip()
    except OSError:
        commit = "unknown"
    import onnxruntime  # the peer venv's, also used by the ceiling

    return {
        "arbiter": first_line([str(binary), "--version"]),
        "git": commit,
        "oha": first_line([str(oha), "--version"]),
        "nginx": first_line(["nginx", "-v"]),
        "python": platform.python_version(),
        "onnxruntime_python": onnxruntime.__version__,
        "gunicorn": first_line([sys.executable, "-m", "gunicorn", "--version"]),
    }


def ceiling(model, shapes, seconds, rep, quiet, out_dir, tag=""):
    """ONNX Runtime alone, for each (label, procs, threads, batch, sessions) shape, once (`tag`
    names the output files of measurements taken beside a server's point)."""
    results = []
    for label, procs, threads, batch, sessions in shapes:
        waited, load = quiet.wait([])
        out = out_dir / f"ceiling-p{procs}-s{sessions}-t{threads}-b{batch}-r{rep}{tag}.json"
        out.unlink(missing_ok=True)
        proc = spawn(
            [
                sys.executable, str(ROOT / "bench" / "ceiling.py"),
                "--model", str(model), "--procs", str(procs), "--threads", str(threads),
                "--batch", str(batch), "--seconds", str(seconds), "--sessions", str(sessions),
                "--out", str(out),
            ],
            out_dir / "ceiling.log",
        )
        busy0 = machine_busy()
        kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self0 = resource.getrusage(resource.RUSAGE_SELF)
        wall0 = time.monotonic()
        try:
            code = proc.wait(timeout=seconds + 300)
        finally:
            stop(proc, signal.SIGTERM, grace=5.0)
        wall = time.monotonic() - wall0
        kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        mine = (kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime) + (
            self1.ru_utime + self1.ru_stime - self0.ru_utime - self0.ru_stime
        )
        other = max(0.0, (machine_busy() - busy0) / CLK_TCK - mine) / wall
        if code != 0 or not out.exists():
            raise RuntimeError(f"ceiling.py exited {code}; see {out_dir / 'ceiling.log'}")
        r = json.loads(out.read_text())
        r.update(label=label, rep=rep, quiet_wait_s=waited, other_load_before=load, other_cores=other)
        results.append(r)
        say(
            f"ceiling{tag:<10} {label:<28} procs={procs} sessions={sessions} threads={threads} batch={batch} rep={rep}: "
            f"{r['images_per_s']:.1f} img/s, {r['batch_ms_p50']:.1f} ms/batch (p50)  "
            f"other load {other:.2f} cores"
        )
    return results


def beside_shapes(server, photo, c, shapes, measured, rep, smoke):
    """The ceiling shapes to measure beside one point, for the points the targets compare:
    Arbiter on its own socket with the small photo at 1 client (against one batch-1 inference on
    all cores) and at 8 (against the Arbiter shape fastest in this repetition's ceiling); and, but
    in smoke mode, each server at 8 clients on the small and the 12-megapixel photo (the same
    shape, as the yardstick of the cores' speed for the comparison with the peer)."""
    if c == 1 and server == "arbiter" and photo == PROBE_PHOTO:
        cores = os.cpu_count() or 1
        return [s for s in shapes if s[1:] == (1, cores, 1, 1)]
    judged = server == "arbiter" and photo == PROBE_PHOTO
    compared = not smoke and server in ("arbiter", "arbiter-fast-jpeg", "peer") and photo in (PROBE_PHOTO, BIG_PHOTO)
    if c == 8 and (judged or compared):
        fastest = {r["label"]: r["images_per_s"] for r in measured if r["rep"] == rep}
        arbiter = [s for s in shapes if s[0].startswith("arbiter")]
        return sorted(arbiter, key=lambda s: -fastest.get(s[0], 0.0))[:1]
    return []


def measure_beside(model, shapes, seconds, rep, quiet, out_dir, point, when):
    """ONNX Runtime alone in `shapes`, tagged as measured `when` ("before"/"after") the point
    (server, photo, concurrency)."""
    server, photo, c = point
    tag = f"-{server.replace('+', '-')}-{photo.split('.')[0]}-c{c}-{when}"
    found = ceiling(model, shapes, seconds, rep, quiet, out_dir, tag=tag)
    for r in found:
        r.update(server=server, photo=photo, concurrency=c, when=when)
    return found


def fmt_run(r):
    """One line for a measured point."""
    codes = ",".join(f"{k}:{v}" for k, v in sorted(r["statuses"].items()))
    errs = sum(r["errors"].values())
    p = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
    return (
        f"{r['server']:<14} {r['photo']:<17} c={r['concurrency']:<3} rep={r['rep']}: "
        f"{r['rps']:6.2f} req/s  p50 {p(r['p50_ms'])} p90 {p(r['p90_ms'])} p99 {p(r['p99_ms'])} ms  "
        f"status {codes or '-'}  errors {errs}  aborted {r['aborted_at_deadline']}  "
        f"RSS {r['peak_rss'] / 2**20:.0f} MiB PSS {r['peak_pss'] / 2**20:.0f} MiB  "
        f"other load {r['cpu']['other_cores']:.2f} cores"
    )


def main():
    """Runs the benchmark; exits non-zero when a server did not answer."""
    parser = argparse.ArgumentParser(description="Arbiter's benchmark harness (run by scripts/bench).")
    parser.add_argument("--arbiter", required=True, help="the arbiter binary")
    parser.add_argument("--oha", required=True, help="the oha binary")
    parser.add_argument("--config", default=str(ROOT / "etc" / "arbiter.toml"), help="arbiter config to benchmark")
    parser.add_argument("--out", required=True, help="run directory (results.json, logs)")
    parser.add_argument("--mode", default="full", choices=["full", "smoke"])
    parser.add_argument("--duration", type=float, help="seconds per load point")
    parser.add_argument("--reps", type=int, help="repetitions")
    parser.add_argument("--concurrency", help="comma-separated client counts")
    parser.add_argument("--servers", default="arbiter,arbiter+nginx,arbiter-fast-jpeg,peer")
    parser.add_argument("--photos", help="comma-separated photos under var/photos (default: all three)")
    parser.add_argument("--quiet-wait", type=float, default=20.0, help="seconds per point to wait for a quiet machine")
    parser.add_argument("--quiet-budget", type=float, default=300.0, help="seconds in all to wait for a quiet machine")
    args = parser.parse_args()
    if args.photos:
        PHOTOS[:] = [p for p in args.photos.split(",") if p]

    smoke = args.mode == "smoke"
    duration = args.duration or (1.0 if smoke else 10.0)
    reps = args.reps or (1 if smoke else 5)
    concurrencies = [int(c) for c in (args.concurrency or ("1,8" if smoke else "1,8,64")).split(",")]
    warmup = 0.5 if smoke else 3.0
    ceiling_seconds = 1.0 if smoke else 5.0
    quiet = Quiet(per_point=0.0 if smoke else args.quiet_wait, budget=0.0 if smoke else args.quiet_budget)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    model = VAR / "models" / "resnet50-voc20.onnx"
    labels = ROOT / "etc" / "class_name.json"
    venv = Path(sys.executable).parent.parent
    manifest = json.loads((VAR / "reference" / "manifest.json").read_text())
    reference = {i["file"]: i["prediction"] for i in manifest["images"] if i["file"] in PHOTOS}
    # What fast_jpeg must answer: Python's after Pillow's draft (the same for small photos).
    reference_draft = {
        i["file"]: i.get("draft_prediction", i["prediction"]) for i in manifest["images"] if i["file"] in PHOTOS
    }

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    wall0 = time.monotonic()
    started = datetime.datetime.now(datetime.timezone.utc)
    # The binary and the config are taken once, at the start: others may rebuild or edit them
    # while the run goes on.
    binary = out_dir / "arbiter.bin"
    shutil.copy2(args.arbiter, binary)
    base = (args.config, Path(args.config).read_text())
    servers = {
        "arbiter": lambda: Arbiter(binary, base, out_dir, cores),
        "arbiter+nginx": lambda: ArbiterNginx(binary, base, out_dir, cores),
        "arbiter-fast-jpeg": lambda: Arbiter(binary, base, out_dir, cores, fast_jpeg=True),
        "peer": lambda: Peer(venv, out_dir, cores, model, labels),
    }
    names = [s for s in args.servers.split(",") if s]
    probe_arbiter = Arbiter(binary, base, out_dir, cores)
    results = {
        "meta": {
            "mode": args.mode,
            "started": started.isoformat(timespec="seconds"),
            "duration_s": duration,
            "reps": reps,
            "concurrencies": concurrencies,
            "photos": PHOTOS,
            "servers": names,
            "warmup_s": warmup,
            "ceiling_seconds": ceiling_seconds,
            "machine": machine(),
            "versions": versions(args.arbiter, args.oha),
            "arbiter_config": args.config,
            "arbiter_settings": probe_arbiter.settings,
            "peer_settings": {"workers": cores, "threads": 1, "worker_class": "sync"},
            "oha_command": (
                f"oha -z {duration:g}s -c C -t 120s --no-tui --output-format json -m POST "
                f"-F image=@var/photos/PHOTO http://127.0.0.1:PORT/model_predict"
                + (" --wait-ongoing-requests-after-deadline" if smoke else "")
            ),
        },
        "ceiling": [],
        "beside": [],
        "runs": [],
        "starts": [],
        "kills": [],
        "answers": [],
        "stages": [],
    }
    failures = []

    def save():
        results["meta"]["wall_s"] = time.monotonic() - wall0
        results["meta"]["quiet_waited_s"] = quiet.waited
        results["meta"]["quiet"] = {"per_point_s": quiet.per_point, "budget_s": quiet.budget, "threshold_cores": quiet.threshold}
        (out_dir / "results.json").write_text(json.dumps(results, indent=1))

    try:
        w, t, b = probe_arbiter.workers, probe_arbiter.threads, probe_arbiter.max_batch
        shapes, seen = [], set()
        lanes = [("arbiter lanes, batch 1", w, 1, 1, t)] if probe_arbiter.lanes else []
        if probe_arbiter.lanes and b > 1:
            lanes.append((f"arbiter lanes, batch {b}", w, 1, b, t))
        for shape in [
            ("arbiter shape, batch 1", w, t, 1, 1),
            (f"arbiter shape, batch {b}", w, t, b, 1),
            *lanes,
            ("one inference, all cores", 1, cores, 1, 1),
            ("peer shape, batch 1", cores, 1, 1, 1),
        ]:
            if shape[1:] not in seen:
                seen.add(shape[1:])
                shapes.append(shape)
        if any(n.startswith("arbiter") for n in names):
            # One start before the measured ones, not recorded as such: it builds whatever the
            # arbiter caches on its first start (the prepared weights), as a deployment would.
            server = Arbiter(binary, base, out_dir / "priming", cores)
            try:
                first = time_to_first_200(server, server.port, limit=300.0)
            finally:
                server.stop()
            results["meta"]["priming_start_s"] = first
            say(f"priming start of arbiter (fills its caches; not in the figures): {first if first is None else f'{first:.2f} s'}")
        for rep in range(1, reps + 1):
            say(f"== ceiling: ONNX Runtime alone ({ceiling_seconds:g} s per point), repetition {rep}/{reps}")
            results["ceiling"] += ceiling(model, shapes, ceiling_seconds, rep, quiet, out_dir)
            save()
            for name in names:
                server = servers[name]()
                port = server.port
                say(f"== {name}, repetition {rep}/{reps}")
                try:
                    first = time_to_first_200(server, port, limit=120.0)
                    if first is None:
                        failures.append(f"{name}: no 200 after its start (exited, or 120 s passed; see its log)")
                        say(f"{name:<14} start: no 200 (exited, or 120 s passed)")
                        continue
                    time.sleep(0.5)
                    photos = getattr(server, "photos", PHOTOS)
                    fast = getattr(server, "fast_jpeg", False)
                    answers = check_answers(port, reference_draft if fast else reference, photos)
                    results["answers"].append({"server": name, "rep": rep, "match": answers})
                    for photo, good in answers.items():
                        if not good:
                            failures.append(f"{name}: wrong answer for {photo}")
                    # Warm-up (not recorded), then memory at rest.
                    run_oha(args.oha, port, PROBE_PHOTO, 2, warmup, server.roots(), out_dir / "warmup.json")
                    settle(server.roots())
                    rss, pss, nproc = memory(tree(server.roots()))
                    results["starts"].append(
                        {"server": name, "rep": rep, "seconds": first, "idle_rss": rss, "idle_pss": pss, "processes": nproc}
                    )
                    say(
                        f"{name:<14} start to first 200: {first:.2f} s; at rest: {nproc} processes, "
                        f"RSS {rss / 2**20:.0f} MiB, PSS {pss / 2**20:.0f} MiB"
                    )
                    for photo in photos:
                        for c in concurrencies:
                            # ONNX Runtime alone just before and just after the points the
                            # targets compare (beside_shapes says which), on the same cores.
                            beside = beside_shapes(name, photo, c, shapes, results["ceiling"], rep, smoke)
                            point = (name, photo, c)
                            results["beside"] += measure_beside(model, beside, ceiling_seconds, rep, quiet, out_dir, point, "before")
                            waited, load = quiet.wait(server.roots())
                            before = metrics_snapshot(server.metrics_port())
                            tag = f"{name.replace('+', '-')}-{photo.split('.')[0]}-c{c}-r{rep}"
                            r = run_oha(
                                args.oha, port, photo, c, duration, server.roots(),
                                out_dir / f"oha-{tag}.json", wait_ongoing=smoke,
                            )
                            after = metrics_snapshot(server.metrics_port())
                            r.update(server=name, photo=photo, concurrency=c, rep=rep,
                                     quiet_wait_s=waited, other_load_before=load)
                            results["runs"].append(r)
                            stages = metrics_delta(before, after)
                            if stages:
                                results["stages"].append(
                                    {"server": name, "photo": photo, "concurrency": c, "rep": rep, "stages": stages}
                                )
                            say(fmt_run(r))
                            results["beside"] += measure_beside(model, beside, ceiling_seconds, rep, quiet, out_dir, point, "after")
                            if r["ok"] == 0:
                                failures.append(f"{name}: no 200 for {photo} at {c} clients")
                            if any(k.startswith("5") and k != "503" for k in r["statuses"]):
                                failures.append(f"{name}: 5xx other than 503 for {photo} at {c} clients")
                            settle(server.roots())
                            save()
                    k = kill_worker(server, port)
                    k.update(server=name, rep=rep)
                    results["kills"].append(k)
                    if k["seconds"] is None:
                        failures.append(f"{name}: no 200 from a replacement within 60 s of a worker's SIGKILL")
                        say(f"{name:<14} SIGKILL of a worker: no 200 from its replacement ({k})")
                    else:
                        say(
                            f"{name:<14} SIGKILL of a worker to the first 200 from its replacement: "
                            f"{k['seconds']:.2f} s; failed requests meanwhile: {k['failed']} "
                            f"({k['clients']} clients)"
                        )
                finally:
                    server.stop()
                save()
    except KeyboardInterrupt as e:
        failures.append(f"interrupted: {e}")
        log(f"interrupted: {e}")
    finally:
        cleanup()
        results["meta"]["failures"] = failures
        results["meta"]["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        save()
    for f in failures:
        say(f"FAILED: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
