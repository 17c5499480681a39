#!/usr/bin/env python3
"""Shared weights benchmark: total PSS and throughput for 1, 2 and 4 workers, shared and unshared.

Run through `scripts/bench --shared-weights [--seconds 8] [--clients 8]`, which runs
scripts/setup and `cargo build --release` first (or `python3 bench/shared_memory.py` after them).

For each (sharing, workers) it starts the real arbiter on a free loopback port with one ONNX
Runtime thread per worker, waits until every worker is ready, sends a few warm-up requests, sums
the PSS (/proc/PID/smaps_rollup) of the arbiter and all its workers, then measures requests/s
with `clients` concurrent clients posting var/photos/grace_hopper.jpg for `seconds` seconds.
Every process it starts is stopped by pid; every load loop is bounded in time.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

from harness.probes import Probe, free_port
from harness.usage import memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "arbiter")
# Posted by every client (Probe's photo): var/photos/grace_hopper.jpg.
PHOTO = "grace_hopper.jpg"


def config(dir, port, workers, share):
    return f"""[server]
bind = ["127.0.0.1:{port}"]
workers = {workers}
pidfile = "{dir}/arbiter.pid"
control_socket = "{dir}/arbiter.sock"
allow_root = true

[model]
path = "{ROOT}/var/models/resnet50-voc20.onnx"
labels = "{ROOT}/etc/class_name.json"
runtime_library = "{ROOT}/var/onnxruntime/libonnxruntime.so.1.32.0"
threads = 1
share_weights = {"true" if share else "false"}
cache_dir = "{dir}/cache"

[memory]
limit = "16GiB"
"""


def status(cfg):
    out = subprocess.run([BIN, "status", "--json", "-c", cfg], capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else None


def throughput(port, clients, seconds):
    probe = Probe(port, PHOTO)
    counts = [0] * clients
    errors = [0] * clients
    deadline = time.monotonic() + seconds

    def client(i):
        while time.monotonic() < deadline:
            # A connection error answers None: counted as an error, as a non-200 is.
            if probe.post(timeout=30)[0] == 200:
                counts[i] += 1
            else:
                errors[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - start), sum(errors)


def measure(workers, share, clients, seconds):
    with tempfile.TemporaryDirectory() as dir:
        port = free_port()
        cfg = os.path.join(dir, "arbiter.toml")
        with open(cfg, "w") as f:
            f.write(config(dir, port, workers, share))
        log = open(os.path.join(dir, "log"), "w")
        proc = subprocess.Popen([BIN, "start", "-c", cfg], stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 120
            while True:
                st = status(cfg)
                if st and len(st["workers"]) == workers and all(w["state"] == "ready" for w in st["workers"]):
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(open(os.path.join(dir, "log")).read())
                time.sleep(0.1)
            probe = Probe(port, PHOTO)
            for _ in range(2 * workers):
                probe.post(timeout=30)
            pids = [proc.pid] + [w["pid"] for w in status(cfg)["workers"]]
            total = memory(pids)[1]
            rate, errors = throughput(port, clients, seconds)
            return total, rate, errors
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release")
    results = {}
    for share in (False, True):
        for workers in (1, 2, 4):
            total, rate, errors = measure(workers, share, args.clients, args.seconds)
            results[(share, workers)] = (total, rate)
            print(f"{'shared' if share else 'unshared':>8}  {workers} workers: total PSS {total / 2**20:7.1f} MiB"
                  f"   {rate:6.1f} req/s ({args.clients} clients, {args.seconds:.0f} s, {errors} errors)", flush=True)
    print()
    for share in (False, True):
        one = results[(share, 1)][0]
        four = results[(share, 4)][0]
        print(f"{'shared' if share else 'unshared':>8}: 4 workers = {four / one:.2f} x the PSS of 1")
    for workers in (1, 2, 4):
        print(f"{workers} workers: shared throughput = {results[(True, workers)][1] / results[(False, workers)][1]:.3f} x unshared")


if __name__ == "__main__":
    main()
