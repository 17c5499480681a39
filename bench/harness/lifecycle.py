"""A server's start and recovery, and its answers: the time to the first 200 after a start,
the answers checked against the Python reference, and a worker's SIGKILL timed to the first 200
from its replacement."""

import json
import os
import signal
import threading
import time

from .common import log
from .probes import Probe


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


def check_answers(port, reference, photos, same=None):
    """{photo: True if the answer is the Python reference's}: equal, or as `same(got, want)`
    judges."""
    same = same or (lambda got, want: got == want)
    out = {}
    for photo in photos:
        status, headers, body = Probe(port, photo).post()
        try:
            got = json.loads(body) if status == 200 else None
        except ValueError:
            got = None
        out[photo] = same(got, reference.get(photo))
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
