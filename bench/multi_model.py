#!/usr/bin/env python3
"""Several models in one arbiter: a flood on one model against the others' latency, and memory.

Run through `scripts/bench --models [--seconds 10] [--clients 32]`, which runs scripts/setup and
`cargo build --release` first (or `python3 bench/multi_model.py` after them). Every arbiter it
starts runs on a config written into a temporary folder from etc/models.toml's [[model]]
entries (paths made absolute), on a free loopback port, with its own pidfile and control
socket, `[memory] limit = "16GiB"` (so that the admission check does not depend on what else
the shared machine holds) and otherwise the file's settings and the defaults.

1. Flood. One arbiter with the three models (1 worker unless --flood-workers). Idle: one client
   at a time posts the photo to each other model (efficientnet-lite0, then
   torchvision-classifier) sequentially on a keep-alive connection for `seconds` seconds.
   Flooded: `clients` concurrent clients post to the flooded model (resnet50, the default) with
   oha (var/tools/bin/oha) or, without it, Python threads, while the same sequential client
   measures each other model again. Reported: each model's p50/p99 idle and flooded and their
   ratio (the target: flooded p50 within 1.5 x idle p50), the flooded model's 200s, 503s and
   req/s, and the cores the arbiter and oha used. Done three times, each on a fresh arbiter:
   etc/models.toml as written (the flooded model at `nice = 19`); every model at `nice = 0`
   (no priority between them); and the flooded model at `nice = 10`, below the HTTP thread's
   priority (`server.http_nice = 19`): what a user can do when one model's load must not take
   the machine's cores from the others.
2. Memory. For 1 and 2 workers: one arbiter with the three models, then (once it has stopped)
   three arbiters with one model each running side by side; after a warm-up (2 x workers
   concurrent requests to every model, twice), the PSS (/proc/PID/smaps_rollup) of every
   arbiter and all its workers, summed, once they are idle; the prepared weights in a cache
   folder of the run's own, so that no other program's mapping splits their PSS.

JSON results go to var/bench/models/results-TIME.json (and var/bench/models/results.json); the
report, docs/benchmarks-models.md by default (--md), is written from them alone
(`--report RESULTS.json` renders it again, measuring nothing). Every process it starts is
stopped by pid; every load loop is bounded in time.
"""

import argparse
import http.client
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import tomllib

from harness.machine import machine
from harness.probes import free_port, multipart
from harness.processes import cleanup, spawn, stop, tree
from harness.servers import toml_value
from harness.usage import CLK_TCK, Quiet, cpu_jiffies, machine_busy, memory, settle

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "arbiter")
OHA = os.path.join(ROOT, "var", "tools", "bin", "oha")
MODELS_TOML = os.path.join(ROOT, "etc", "models.toml")
OUT_DIR = os.path.join(ROOT, "var", "bench", "models")
MD = os.path.join(ROOT, "docs", "benchmarks-models.md")
# The photo every client posts (var/photos), the 512 x 600 one the other benchmarks post.
PHOTO = "grace_hopper.jpg"
# The model flooded; the others are measured.
FLOODED = "resnet50"
# The flooded model's nice value in the runs beside etc/models.toml's.
NICE_RUNS = (0, 10)
# Keys whose values are paths, relative to the config file's folder.
PATH_KEYS = ("path", "labels", "runtime_library", "cache_dir")
# The target of issue 22: a flooded neighbour's p50 within this factor of its idle p50.
TARGET = 1.5


# --- configs -------------------------------------------------------------------------------------
def models_of(toml_path=MODELS_TOML):
    """etc/models.toml's [[model]] entries, with their paths made absolute."""
    with open(toml_path, "rb") as f:
        doc = tomllib.load(f)
    base = os.path.dirname(os.path.abspath(toml_path))
    models = []
    for entry in doc["model"]:
        entry = dict(entry)
        for key in PATH_KEYS:
            if key in entry:
                entry[key] = os.path.normpath(os.path.join(base, entry[key]))
        # Relative to etc/ as in etc/models.toml, not to the temporary folder.
        entry.setdefault("cache_dir", os.path.join(ROOT, "var", "cache", "prepared"))
        models.append(entry)
    return models


def config_text(dir, name, port, workers, models):
    """A config: [server] on `port` with its pidfile and socket in `dir`, then the models."""
    lines = [
        "[server]",
        f'bind = ["127.0.0.1:{port}"]',
        f"workers = {workers}",
        f'pidfile = "{dir}/{name}.pid"',
        f'control_socket = "{dir}/{name}.sock"',
        f"allow_root = {toml_value(os.geteuid() == 0)}",
        "",
        "[memory]",
        'limit = "16GiB"',
    ]
    for m in models:
        lines += ["", "[[model]]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in m.items() if not isinstance(v, dict)]
        for k, v in m.items():
            if isinstance(v, dict):
                lines += ["", f"[model.{k}]"] + [f"{kk} = {toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def at_nice(models, nice):
    """The models with every one at `nice` 0 but the flooded one at `nice`."""
    out = []
    for m in models:
        m = dict(m)
        m["nice"] = nice if m["name"] == FLOODED else 0
        out.append(m)
    return out


# --- arbiters ------------------------------------------------------------------------------------
class Arbiter:
    """One arbiter on a config written into `dir`, started in the foreground, stopped by pid."""

    def __init__(self, dir, name, workers, models):
        self.dir, self.name, self.workers = dir, name, workers
        self.port = free_port()
        self.cfg = os.path.join(dir, f"{name}.toml")
        self.text = config_text(dir, name, self.port, workers, models)
        with open(self.cfg, "w") as f:
            f.write(self.text)
        self.log = os.path.join(dir, f"{name}.log")
        self.proc = spawn([BIN, "start", "-c", self.cfg], self.log)

    def status(self):
        cmd = [BIN, "status", "--json", "-c", self.cfg]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return json.loads(out.stdout) if out.returncode == 0 else None

    def wait_ready(self, limit=180.0):
        deadline = time.monotonic() + limit
        while True:
            st = self.status()
            ws = (st or {}).get("workers", [])
            if len(ws) == self.workers and all(w["state"] == "ready" for w in ws):
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                with open(self.log) as f:
                    raise RuntimeError(f"{self.name} did not become ready:\n{f.read()[-4000:]}")
            time.sleep(0.2)

    def pids(self):
        return tree([self.proc.pid])

    def stop(self):
        stop(self.proc)


# --- clients -------------------------------------------------------------------------------------
class Client:
    """Posts the photo to /model_predict/MODEL on one keep-alive connection (reopened on error)."""

    def __init__(self, port, model, photo=PHOTO):
        self.port, self.path = port, f"/model_predict/{model}"
        self.body, self.ctype = multipart(photo)
        self.conn = None

    def post(self, timeout=60.0):
        """(status or None on a connection error, seconds)."""
        t0 = time.perf_counter()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
            self.conn.request("POST", self.path, body=self.body, headers={"Content-Type": self.ctype})
            resp = self.conn.getresponse()
            resp.read()
            if resp.getheader("Connection", "").lower() == "close":
                self.close()
            return resp.status, time.perf_counter() - t0
        except (OSError, http.client.HTTPException):
            self.close()
            return None, time.perf_counter() - t0

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def pct(values, q):
    """The q-quantile (0..1) of values, nearest rank; None when empty."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def sequential(port, model, seconds):
    """One client posting to model back to back for `seconds`: (latencies of the 200s, statuses)."""
    client = Client(port, model)
    lat, statuses = [], {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, dt = client.post()
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        if status == 200:
            lat.append(dt)
    client.close()
    return lat, statuses


def summarize(lat, statuses, rounds):
    """A measured model's figures over every round (rounds: each round's p50 in ms)."""
    return {
        "requests": sum(statuses.values()),
        "statuses": statuses,
        "p50_ms": ms(pct(lat, 0.50)),
        "p99_ms": ms(pct(lat, 0.99)),
        "mean_ms": ms(sum(lat) / len(lat)) if lat else None,
        "round_p50_ms": rounds,
    }


def ms(seconds):
    return None if seconds is None else seconds * 1000.0


class Flood:
    """`clients` concurrent clients posting to `model` for `seconds`: oha, else Python threads."""

    def __init__(self, port, model, clients, seconds, out_json):
        self.port, self.model, self.clients, self.seconds = port, model, clients, seconds
        self.out_json = out_json
        self.tool = "oha" if os.access(OHA, os.X_OK) else "python threads"
        self.result = None
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self):
        self.thread.start()

    def join(self):
        self.thread.join(self.seconds + 240)
        if self.result is None:
            raise RuntimeError("the flood gave no result")
        return self.result

    def run(self):
        try:
            kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            self.result = self.oha() if self.tool == "oha" else self.threads()
            kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            if self.tool == "oha":
                cpu = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
                self.result["oha_cores"] = cpu / self.result["elapsed_s"]
        except Exception as e:  # reported by join()
            print(f"flood failed: {e}", file=sys.stderr, flush=True)

    def oha(self):
        cmd = [
            OHA, "-z", f"{self.seconds}s", "-c", str(self.clients), "-t", "120s", "--no-tui",
            "--output-format", "json", "-m", "POST",
            "-F", f"image=@{os.path.join(ROOT, 'var', 'photos', PHOTO)}",
            f"http://127.0.0.1:{self.port}/model_predict/{self.model}",
        ]
        with open(self.out_json, "wb") as out:
            p = subprocess.run(
                cmd, stdout=out, stderr=subprocess.PIPE, timeout=self.seconds + 180, check=False
            )
        if p.returncode != 0:
            raise RuntimeError(f"oha exited {p.returncode}: {p.stderr.decode(errors='replace')[-2000:]}")
        with open(self.out_json) as f:
            data = json.load(f)
        elapsed = float(data.get("summary", {}).get("total") or self.seconds)
        statuses = {str(k): int(v) for k, v in data.get("statusCodeDistribution", {}).items()}
        errors = {str(k): int(v) for k, v in data.get("errorDistribution", {}).items()}
        aborted = sum(v for k, v in errors.items() if "deadline" in k.lower())
        errors = {k: v for k, v in errors.items() if "deadline" not in k.lower()}
        return self.summary(elapsed, statuses, errors, aborted)

    def threads(self):
        statuses, lock = {}, threading.Lock()
        deadline = time.monotonic() + self.seconds

        def one():
            client = Client(self.port, self.model)
            while time.monotonic() < deadline:
                status, _ = client.post(timeout=120)
                with lock:
                    statuses[str(status)] = statuses.get(str(status), 0) + 1
            client.close()

        ts = [threading.Thread(target=one, daemon=True) for _ in range(self.clients)]
        t0 = time.monotonic()
        for t in ts:
            t.start()
        for t in ts:
            t.join(self.seconds + 180)
        return self.summary(time.monotonic() - t0, statuses, {}, 0)

    def summary(self, elapsed, statuses, errors, aborted):
        ok, busy = statuses.get("200", 0), statuses.get("503", 0)
        return {
            "tool": self.tool,
            "clients": self.clients,
            "elapsed_s": elapsed,
            "statuses": statuses,
            "errors": errors,
            "aborted_at_deadline": aborted,
            "ok": ok,
            "busy_503": busy,
            "ok_per_s": ok / elapsed if elapsed else 0.0,
            "answers_per_s": sum(statuses.values()) / elapsed if elapsed else 0.0,
        }


# --- the two figures -----------------------------------------------------------------------------
def flood_run(label, models, workers, clients, seconds, rounds, out_dir, quiet):
    """Idle, then flooded, latency of every model but FLOODED on one arbiter, in `rounds` rounds.

    Each round measures every other model idle, then floods FLOODED and measures them again, so
    that what else runs on the machine weighs on both sides alike; the figures pool the rounds.
    """
    others = [m["name"] for m in models if m["name"] != FLOODED]
    idle = {n: ([], {}, []) for n in others}
    flooded = {n: ([], {}, []) for n in others}
    floods, waits = [], []

    def add(acc, lat, statuses):
        acc[0].extend(lat)
        for k, v in statuses.items():
            acc[1][k] = acc[1].get(k, 0) + v
        acc[2].append(ms(pct(lat, 0.5)))

    with tempfile.TemporaryDirectory() as dir:
        arb = Arbiter(dir, "models", workers, models)
        try:
            arb.wait_ready()
            for name in [m["name"] for m in models]:
                warm(arb.port, name, workers)
            loadavg = open("/proc/loadavg").read().split()[:3]
            for r in range(rounds):
                settle([arb.proc.pid])
                waits.append(quiet.wait([arb.proc.pid]))
                for name in others:
                    add(idle[name], *sequential(arb.port, name, seconds))
                out_json = os.path.join(out_dir, f"oha-{slug(label)}-{r + 1}.json")
                flood = Flood(arb.port, FLOODED, clients, len(others) * seconds + 3, out_json)
                pids = arb.pids()
                cpu0, busy0, wall0 = cpu_jiffies(pids), machine_busy(), time.monotonic()
                flood.start()
                time.sleep(2)  # the flood fills the queue first
                for name in others:
                    if flood.thread.is_alive():
                        add(flooded[name], *sequential(arb.port, name, seconds))
                fl = flood.join()
                wall = time.monotonic() - wall0
                fl["server_cores"] = (cpu_jiffies(pids) - cpu0) / CLK_TCK / wall
                fl["machine_busy_cores"] = (machine_busy() - busy0) / CLK_TCK / wall
                floods.append(fl)
            return {
                "label": label,
                "workers": workers,
                "rounds": rounds,
                "config": arb.text,
                "quiet": [{"waited_s": w, "other_load_cores": load} for w, load in waits],
                "loadavg_before": loadavg,
                "idle": {n: summarize(*idle[n]) for n in others},
                "flooded": {n: summarize(*flooded[n]) for n in others},
                "flood": merge_floods(floods),
            }
        finally:
            arb.stop()


def merge_floods(floods):
    """One flood's figures from the rounds' (sums, and averages weighted by time)."""
    elapsed = sum(f["elapsed_s"] for f in floods)
    statuses, errors = {}, {}
    for f in floods:
        for k, v in f["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
        for k, v in f["errors"].items():
            errors[k] = errors.get(k, 0) + v
    out = {k: floods[0][k] for k in ("tool", "clients")}
    out.update(
        rounds=floods,
        elapsed_s=elapsed,
        statuses=statuses,
        errors=errors,
        ok=statuses.get("200", 0),
        busy_503=statuses.get("503", 0),
        aborted_at_deadline=sum(f["aborted_at_deadline"] for f in floods),
        ok_per_s=statuses.get("200", 0) / elapsed,
        answers_per_s=sum(statuses.values()) / elapsed,
    )
    for k in ("server_cores", "machine_busy_cores", "oha_cores"):
        if all(k in f for f in floods):
            out[k] = sum(f[k] * f["elapsed_s"] for f in floods) / elapsed
    return out


def slug(label):
    return "".join(c if c.isalnum() else "-" for c in label).strip("-")


def warm(port, model, workers):
    """2 x workers concurrent requests to model, twice (every worker's lanes see some load)."""
    for _ in range(2):
        ts = [
            threading.Thread(target=lambda: Client(port, model).post(timeout=60))
            for _ in range(2 * workers)
        ]
        for t in ts:
            t.start()
        for t in ts:
            t.join(90)


def memory_run(models, workers):
    """Summed PSS of one arbiter with every model, then of one arbiter per model side by side."""
    out = {"workers": workers}
    # The prepared weights in a cache of this run's own: PSS splits a page between every process
    # that maps it, and other programs on the machine (another benchmark, a test) may map the
    # files of var/cache/prepared. One side at a time for the same reason: pages both sides map
    # (the ONNX Runtime library, a model's prepared weights) would have their PSS split.
    with tempfile.TemporaryDirectory() as cache:
        models = [{**m, "cache_dir": cache} for m in models]
        with tempfile.TemporaryDirectory() as dir:
            arb = Arbiter(dir, "all", workers, models)
            try:
                arb.wait_ready()
                for m in models:
                    warm(arb.port, m["name"], workers)
                # Until the lanes loaded in the background are done.
                settle([arb.proc.pid], limit=30)
                rss, pss, n = memory(arb.pids())
                out["one_arbiter"] = {"pss": pss, "rss": rss, "processes": n}
            finally:
                arb.stop()
        with tempfile.TemporaryDirectory() as dir:
            arbs = []
            try:
                for m in models:
                    arbs.append(Arbiter(dir, f"only-{m['name']}", workers, [m]))
                for a in arbs:
                    a.wait_ready()
                for a, m in zip(arbs, models):
                    warm(a.port, m["name"], workers)
                settle([a.proc.pid for a in arbs], limit=30)
                out["per_model"] = {}
                for a, m in zip(arbs, models):
                    rss, pss, n = memory(a.pids())
                    out["per_model"][m["name"]] = {"pss": pss, "rss": rss, "processes": n}
                out["separate"] = {
                    k: sum(v[k] for v in out["per_model"].values()) for k in ("pss", "rss", "processes")
                }
            finally:
                for a in reversed(arbs):
                    a.stop()
    return out


# --- the report ----------------------------------------------------------------------------------
def fmt(x, digits=1):
    return "-" if x is None else f"{x:.{digits}f}"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def mib(b):
    return b / 2**20


def render(res):
    """docs/benchmarks-models.md from a results dict."""
    m = res["meta"]
    mach = m["machine"]
    lines = [
        "# Several models in one arbiter: a flood on one, and memory",
        "",
        f"Made by `{m['command']}` (`bench/multi_model.py`; the raw figures are in "
        f"`{m['results']}`, and `python3 bench/multi_model.py --report FILE` renders this page again "
        "from them).",
        "",
        f"Machine: {mach['cores']} cores ({mach['cpu_model']}), {mach['memory_bytes'] / 2**30:.1f} GiB, "
        f"{mach['os']}, kernel {mach['kernel']}; load average at start {' '.join(mach['loadavg_at_start'])}. "
        f"Arbiter {m['arbiter']}, git {m['git']}. Photo: `var/photos/{m['photo']}` (512 x 600 JPEG).",
        "",
        "Every arbiter runs on a config written from `etc/models.toml`'s three `[[model]]` entries "
        "(paths made absolute) with `[server]` on a free loopback port, its own pidfile and control "
        'socket, and `[memory] limit = "16GiB"`; every other setting is the file\'s or the default '
        "(each model's `threads = 0`: cores / workers ONNX Runtime threads; spinning off with several "
        "models; resnet50's and torchvision-classifier's `queue_size` 64, efficientnet-lite0's 32).",
        "",
    ]
    if res.get("flood"):
        f0 = res["flood"][0]
        lines += [
            f"## A flood on `{FLOODED}`",
            "",
            f"One arbiter per config, {f0['workers']} worker(s), {m['rounds']} rounds each. A round: idle, "
            f"one client at a time posts to each other model back to back on a keep-alive connection "
            f"for {m['seconds']:.0f} s; then {f0['flood']['clients']} concurrent clients "
            f"({f0['flood']['tool']}) post to `{FLOODED}` (2 s ahead) while the same client measures "
            f"each other model again for {m['seconds']:.0f} s each. Alternating the two sides "
            "round by round makes what else runs on the shared machine weigh on both alike; the "
            "p50 and p99 pool the rounds, and each round's p50 is given. Target (issue 22): "
            f"flooded p50 within {TARGET} x idle p50.",
            "",
            "| config | model | idle p50 / p99 (ms) | flooded p50 / p99 (ms) | p50 ratio | target "
            "| rounds' p50 idle -> flooded (ms) |",
            "|---|---|---|---|---|---|---|",
        ]
        for run in res["flood"]:
            for name, idle in run["idle"].items():
                fl = run["flooded"].get(name, {})
                r = ratio(fl.get("p50_ms"), idle["p50_ms"])
                met = "-" if r is None else ("met" if r <= TARGET else "missed")
                lines.append(
                    f"| {run['label']} | {name} | {fmt(idle['p50_ms'])} / {fmt(idle['p99_ms'])} "
                    f"({idle['requests']} req) | {fmt(fl.get('p50_ms'))} / {fmt(fl.get('p99_ms'))} "
                    f"({fl.get('requests', 0)} req) | {fmt(r, 2)} x | {met} | "
                    + ", ".join(
                        f"{fmt(a)} -> {fmt(b)}"
                        for a, b in zip(idle["round_p50_ms"], fl.get("round_p50_ms", []))
                    )
                    + " |"
                )
        lines += [
            "",
            f"The flooded model, `{FLOODED}`:",
            "",
            "| config | clients | 200 | 503 | other | in flight at the end | 200/s | answers/s "
            "| arbiter cores | oha cores | machine busy cores |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for run in res["flood"]:
            fl = run["flood"]
            other = sum(v for k, v in fl["statuses"].items() if k not in ("200", "503"))
            other += sum(fl["errors"].values())
            lines.append(
                f"| {run['label']} | {fl['clients']} | {fl['ok']} | {fl['busy_503']} | {other} | "
                f"{fl['aborted_at_deadline']} | "
                f"{fl['ok_per_s']:.1f} | {fl['answers_per_s']:.0f} | {fmt(fl.get('server_cores'), 2)} | "
                f"{fmt(fl.get('oha_cores'), 2)} | {fmt(fl.get('machine_busy_cores'), 2)} |"
            )
        lines += [
            "",
            "Cores are CPU time over the flood's wall time: the arbiter's processes, oha's, and the "
            "whole machine's (others' jobs included). In flight at the end: the flood's requests "
            "still unanswered when oha's time was up.",
            "",
            "The configs' differences:",
            "",
        ]
        for run in res["flood"]:
            lines.append(
                f"- **{run['label']}**: {run['describe']}. Load average at its start "
                f"{' '.join(run['loadavg_before'])}; before each round, the rest of the machine used "
                + ", ".join(f"{q['other_load_cores']:.2f}" for q in run["quiet"])
                + " cores."
            )
        lines.append("")
    if res.get("memory"):
        lines += [
            "## Memory: one arbiter with three models against three arbiters",
            "",
            "Summed PSS (`/proc/PID/smaps_rollup`) of every arbiter and all its workers, in the same "
            "run: first the one arbiter with the three models alone, then, once it has stopped, the "
            "three single-model arbiters side by side (so that no page is shared between the two "
            "sides), each after a warm-up of 2 x workers concurrent requests to every model, twice, "
            "once its processes are idle, the prepared weights in a cache of the run's own (no other "
            "program maps them). "
            "The three single-model arbiters each hold one "
            "`[[model]]` entry of `etc/models.toml` (so spinning is on there: the default for one "
            "model).",
            "",
            "| workers | one arbiter, 3 models | 3 arbiters, 1 model each | sum of those | one / three |",
            "|---|---|---|---|---|",
        ]
        for mem in res["memory"]:
            per = ", ".join(f"{k} {mib(v['pss']):.1f}" for k, v in mem["per_model"].items())
            lines.append(
                f"| {mem['workers']} | {mib(mem['one_arbiter']['pss']):.1f} MiB "
                f"({mem['one_arbiter']['processes']} processes) | {per} MiB | "
                f"{mib(mem['separate']['pss']):.1f} MiB ({mem['separate']['processes']} processes) | "
                f"{mem['one_arbiter']['pss'] / mem['separate']['pss']:.2f} |"
            )
        lines.append("")
    if res.get("notes"):
        lines += [
            "## What this shows",
            "",
            "Written after the run from the figures above; it is kept in the results file's `notes`.",
            "",
        ] + res["notes"] + [""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--seconds", type=float, default=5.0, help="each latency measurement, per round (default 5)"
    )
    ap.add_argument(
        "--rounds", type=int, default=3, help="the flood runs' rounds of idle, then flooded (default 3)"
    )
    ap.add_argument("--clients", type=int, default=32, help="the flood's concurrent clients (default 32)")
    ap.add_argument("--flood-workers", type=int, default=1, help="the flood run's workers (default 1)")
    ap.add_argument("--memory-workers", default="1,2", help="the memory runs' workers (default 1,2)")
    ap.add_argument("--only", choices=["flood", "memory"], help="one figure only")
    ap.add_argument("--md", default=MD, help=f"the report (default {os.path.relpath(MD, ROOT)})")
    ap.add_argument(
        "--report", metavar="RESULTS.json", help="render the report from a run's results, measuring nothing"
    )
    args = ap.parse_args()
    if args.report:
        with open(args.report) as f:
            res = json.load(f)
        with open(args.md, "w") as f:
            f.write(render(res))
        print(args.md)
        return
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release")
    os.makedirs(OUT_DIR, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results_path = os.path.join(OUT_DIR, f"results-{stamp}.json")
    version = subprocess.run([BIN, "--version"], capture_output=True, text=True).stdout.strip()
    describe = ["git", "-C", ROOT, "describe", "--always", "--dirty"]
    git = subprocess.run(describe, capture_output=True, text=True).stdout.strip()
    command = os.environ.get("BENCH_COMMAND") or "python3 bench/multi_model.py " + " ".join(sys.argv[1:])
    res = {
        "meta": {
            "command": command.strip(),
            "machine": machine(),
            "arbiter": version,
            "git": git,
            "photo": PHOTO,
            "seconds": args.seconds,
            "rounds": args.rounds,
            "results": os.path.relpath(results_path, ROOT),
        },
        "flood": [],
        "memory": [],
        "notes": [],
    }
    models = models_of()
    quiet = Quiet(per_point=10, budget=90)
    try:
        if args.only in (None, "flood"):
            written = next(m.get("nice", 0) for m in models if m["name"] == FLOODED)
            runs = [
                (
                    "etc/models.toml",
                    models,
                    f"the three entries as written (`{FLOODED}` at `nice = {written}`)",
                )
            ] + [
                (
                    f"{FLOODED} nice = {nice}",
                    at_nice(models, nice),
                    f"`{FLOODED}` at `nice = {nice}`, the others at 0"
                    + (" (no priority between the models)" if nice == 0 else ""),
                )
                for nice in NICE_RUNS
            ]
            for label, ms_, describe in runs:
                run = flood_run(
                    label, ms_, args.flood_workers, args.clients, args.seconds, args.rounds, OUT_DIR, quiet
                )
                run["describe"] = describe
                res["flood"].append(run)
                for name, idle in run["idle"].items():
                    fl = run["flooded"].get(name, {})
                    r = ratio(fl.get("p50_ms"), idle["p50_ms"])
                    print(
                        f"{label:>20}  {name:<24} idle p50 {fmt(idle['p50_ms']):>7} ms"
                        f" p99 {fmt(idle['p99_ms']):>7}   flooded p50 {fmt(fl.get('p50_ms')):>7} ms"
                        f" p99 {fmt(fl.get('p99_ms')):>7}   {fmt(r, 2)} x",
                        flush=True,
                    )
                fl = run["flood"]
                print(
                    f"{label:>20}  {FLOODED} flood: {fl['ok']} x 200, {fl['busy_503']} x 503,"
                    f" {fl['ok_per_s']:.1f} 200/s ({fl['clients']} clients, {fl['tool']})",
                    flush=True,
                )
        if args.only in (None, "memory"):
            for w in [int(x) for x in args.memory_workers.split(",")]:
                mem = memory_run(models, w)
                res["memory"].append(mem)
                per = ", ".join(f"{k} {mib(v['pss']):.1f}" for k, v in mem["per_model"].items())
                print(f"{w} worker(s): one arbiter with 3 models {mib(mem['one_arbiter']['pss']):.1f} MiB PSS,"
                      f" 3 arbiters {mib(mem['separate']['pss']):.1f} MiB ({per})", flush=True)
    finally:
        cleanup()
        with open(results_path, "w") as f:
            json.dump(res, f, indent=1)
        with open(os.path.join(OUT_DIR, "results.json"), "w") as f:
            json.dump(res, f, indent=1)
    with open(args.md, "w") as f:
        f.write(render(res))
    print(f"results: {os.path.relpath(results_path, ROOT)}, report: {os.path.relpath(args.md, ROOT)}")


if __name__ == "__main__":
    main()
