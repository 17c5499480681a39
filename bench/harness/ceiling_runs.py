"""ONNX Runtime alone, run through bench/ceiling.py: the ceiling at the start of each repetition,
and again just before and just after the points the targets compare ("beside"), since the speed
of shared cores drifts within minutes."""

import json
import os
import resource
import signal
import sys
import time

from .common import BIG_PHOTO, PROBE_PHOTO, ROOT, say
from .processes import spawn, stop
from .usage import CLK_TCK, machine_busy


def ceiling(model, shapes, seconds, rep, quiet, out_dir, tag=""):
    """ONNX Runtime alone, for each (label, procs, threads, batch, sessions) shape, once; `model`
    is ceiling.py's arguments that name the model (`--model PATH [--size H,W]`), `tag` names the
    output files of measurements taken beside a server's point."""
    results = []
    for label, procs, threads, batch, sessions in shapes:
        waited, load = quiet.wait([])
        out = out_dir / f"ceiling-p{procs}-s{sessions}-t{threads}-b{batch}-r{rep}{tag}.json"
        out.unlink(missing_ok=True)
        proc = spawn(
            [
                sys.executable, str(ROOT / "bench" / "ceiling.py"),
                *model, "--procs", str(procs), "--threads", str(threads),
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
        return fastest_arbiter_shape(shapes, measured, rep)
    return []


def fastest_arbiter_shape(shapes, measured, rep):
    """The Arbiter shape fastest in this repetition's ceiling, as a list of one."""
    fastest = {r["label"]: r["images_per_s"] for r in measured if r["rep"] == rep}
    arbiter = [s for s in shapes if s[0].startswith("arbiter")]
    return sorted(arbiter, key=lambda s: -fastest.get(s[0], 0.0))[:1]


def measure_beside(model, shapes, seconds, rep, quiet, out_dir, point, when):
    """ONNX Runtime alone in `shapes`, tagged as measured `when` ("before"/"after") the point
    (server, photo, concurrency)."""
    server, photo, c = point
    tag = f"-{server.replace('+', '-')}-{photo.split('.')[0]}-c{c}-{when}"
    found = ceiling(model, shapes, seconds, rep, quiet, out_dir, tag=tag)
    for r in found:
        r.update(server=server, photo=photo, concurrency=c, when=when)
    return found


def ceiling_shapes(arbiter, cores):
    """The (label, procs, threads, batch, sessions) shapes of the ceiling, duplicates dropped:
    the Arbiter under test (its workers x threads, or its lanes, at batch 1 and at its max batch
    size), one batch-1 inference on all cores, and the peer's shape (cores processes x 1 thread)."""
    w, t, b = arbiter.workers, arbiter.threads, arbiter.max_batch
    shapes, seen = [], set()
    lanes = [("arbiter lanes, batch 1", w, 1, 1, t)] if arbiter.lanes else []
    if arbiter.lanes and b > 1:
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
    return shapes
