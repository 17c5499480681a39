#!/usr/bin/env python3
"""What a worker killed mid-request costs clients, direct and through nginx, measured together.

Clients post the seed's request in a loop, some straight to the arbiter's TCP port and as many
through nginx, all at once, so both kinds share the same workers and the same kills. Every
`--every` seconds, once all workers are ready (per `arbiter status --json`), one worker gets
SIGKILL while requests are queued in it. Every request opens its own connection, so a failure is
a request the killed worker held, never a stale keep-alive connection. Kills go on past `--kills`
(up to `--max-kills`) until the kills have provably hit requests of both kinds: a direct request
failed, and nginx retried one (its access log shows two upstream statuses, like "502, 200").

Prints the figures as JSON on stdout (and a summary on stderr); exits 1 when any request failed
through nginx, or when the kills never hit both kinds (then the run proved nothing).
Standard library only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter


def multipart(image: bytes) -> tuple[bytes, str]:
    """The body curl -F image=@photo.jpg sends, and its Content-Type."""
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="image"; filename="photo.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode() + image + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class Client(threading.Thread):
    """Posts the image to one address until stopped, recording each outcome."""

    def __init__(self, kind: str, addr: str, body: bytes, ctype: str, expected: dict, stop: threading.Event):
        super().__init__(daemon=True)
        host, port = addr.rsplit(":", 1)
        self.kind, self.host, self.port = kind, host, int(port)
        self.body, self.ctype, self.expected, self.stop = body, ctype, expected, stop
        self.latencies: list[float] = []
        self.failures: Counter[str] = Counter()

    def run(self) -> None:
        headers = {"Content-Type": self.ctype, "Connection": "close"}
        while not self.stop.is_set():
            started = time.monotonic()
            conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                conn.request("POST", "/model_predict", self.body, headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    self.failures[f"HTTP {resp.status}"] += 1
                elif json.loads(data) != self.expected:
                    self.failures["wrong answer"] += 1
                else:
                    self.latencies.append(time.monotonic() - started)
            except (OSError, http.client.HTTPException) as e:
                self.failures[type(e).__name__] += 1
            finally:
                conn.close()


def status(arbiter: str, config: str) -> dict:
    out = subprocess.run([arbiter, "status", "--json", "-c", config], capture_output=True, text=True, timeout=10)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def wait_ready(arbiter: str, config: str, timeout: float) -> tuple[list[dict], float]:
    """Waits until every worker is ready; returns them and how long it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        st = status(arbiter, config)
        workers = st.get("workers", [])
        if workers and len(workers) == st.get("target_workers") and all(w["state"] == "ready" for w in workers):
            return workers, time.monotonic() - started
        time.sleep(0.05)
    raise SystemExit(f"retry_load: workers not all ready within {timeout} s")


def nginx_retries(log: str | None) -> int | None:
    """Requests nginx sent to a second upstream try (two statuses in `up=`)."""
    if not log:
        return None
    with open(log) as f:
        return sum(1 for line in f if " up=" in line and "," in line.rsplit(" up=", 1)[1])


def hit_both(clients: list[Client], log: str | None) -> bool:
    direct = sum(sum(c.failures.values()) for c in clients if c.kind == "direct")
    return direct > 0 and (log is None or bool(nginx_retries(log)))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arbiter", required=True, help="the arbiter binary (for `status`)")
    ap.add_argument("--config", required=True)
    ap.add_argument("--direct", required=True, help="HOST:PORT of the arbiter")
    ap.add_argument("--nginx", required=True, help="HOST:PORT of nginx")
    ap.add_argument("--image", required=True)
    ap.add_argument("--expected", required=True, help="the JSON answer expected")
    ap.add_argument("--clients", type=int, default=2, help="clients per kind")
    ap.add_argument("--kills", type=int, default=4, help="kill at least this many workers")
    ap.add_argument("--max-kills", type=int, default=12)
    ap.add_argument("--nginx-log", help="nginx's access log, whose format ends with up=$upstream_status")
    ap.add_argument("--every", type=float, default=1.0, help="seconds of load between ready and a kill")
    args = ap.parse_args()

    body, ctype = multipart(open(args.image, "rb").read())
    expected = json.loads(args.expected)
    wait_ready(args.arbiter, args.config, 60)
    stop = threading.Event()
    clients = [
        Client(kind, addr, body, ctype, expected, stop)
        for kind, addr in (("direct", args.direct), ("nginx", args.nginx))
        for _ in range(args.clients)
    ]
    started = time.monotonic()
    for c in clients:
        c.start()
    replaced = []
    k = 0
    while k < args.kills or (not hit_both(clients, args.nginx_log) and k < args.max_kills):
        workers, _ = wait_ready(args.arbiter, args.config, 60)
        time.sleep(args.every)
        victim = workers[k % len(workers)]
        os.kill(victim["pid"], signal.SIGKILL)
        # A replacement is ready when a worker in the victim's slot has another pid.
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            st = status(args.arbiter, args.config)
            slot = [w for w in st.get("workers", []) if w["slot"] == victim["slot"]]
            if slot and slot[0]["pid"] != victim["pid"] and slot[0]["state"] == "ready":
                replaced.append(time.monotonic() - t0)
                break
            time.sleep(0.05)
        else:
            raise SystemExit("retry_load: the killed worker was not replaced within 60 s")
        k += 1
    time.sleep(args.every)
    stop.set()
    for c in clients:
        c.join(timeout=35)
    elapsed = time.monotonic() - started

    retried = nginx_retries(args.nginx_log)
    report = {"kills": k, "nginx_retried": retried, "seconds": round(elapsed, 1), "replacement_s": [round(r, 2) for r in replaced]}
    for kind in ("direct", "nginx"):
        mine = [c for c in clients if c.kind == kind]
        lat = [x for c in mine for x in c.latencies]
        fails: Counter[str] = sum((c.failures for c in mine), Counter())
        report[kind] = {
            "ok": len(lat),
            "failed": sum(fails.values()),
            "failures": dict(fails),
            "p50_ms": round(percentile(lat, 0.5) * 1e3, 1),
            "p99_ms": round(percentile(lat, 0.99) * 1e3, 1),
            "max_ms": round(max(lat, default=float("nan")) * 1e3, 1),
            "mean_ms": round(statistics.fmean(lat) * 1e3, 1) if lat else None,
        }
    print(json.dumps(report))
    d, n = report["direct"], report["nginx"]
    print(
        f"retry: {k} workers SIGKILLed under load in {elapsed:.1f} s "
        f"(replaced in {', '.join(f'{r:.2f}' for r in replaced)} s)\n"
        f"  direct: {d['failed']} failed of {d['ok'] + d['failed']} {d['failures'] or ''} "
        f"p50 {d['p50_ms']} ms p99 {d['p99_ms']} ms max {d['max_ms']} ms\n"
        f"  nginx : {n['failed']} failed of {n['ok'] + n['failed']} {n['failures'] or ''} "
        f"p50 {n['p50_ms']} ms p99 {n['p99_ms']} ms max {n['max_ms']} ms; nginx retried {retried}",
        file=sys.stderr,
    )
    if n["failed"]:
        print("retry_load: FAIL: requests failed through nginx despite its retry", file=sys.stderr)
        return 1
    if not d["failed"] or (args.nginx_log and not retried):
        print(f"retry_load: FAIL: after {k} kills, {d['failed']} direct requests failed and nginx retried "
              f"{retried}: the kills did not hit requests of both kinds", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
