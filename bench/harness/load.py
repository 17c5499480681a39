"""Load generation: one bounded oha run against a server, with its memory sampled and the CPU of
the server, of oha and of everything else counted meanwhile."""

import json
import resource
import subprocess
import threading
import time
from pathlib import Path

from .common import VAR
from .processes import tree
from .usage import CLK_TCK, cpu_jiffies, machine_busy, memory


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
