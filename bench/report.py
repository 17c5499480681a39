"""Turns a run's results.json (bench/harness.py) into docs/benchmarks.md and its PNG plots.

Every figure in the report is computed here from the figures the harness printed and saved:
medians with (min-max) over the repetitions. The markdown is also printed on stdout.

    python bench/report.py RESULTS.json --md docs/benchmarks.md --plots docs/benchmarks
"""

import argparse
import json
import math
import statistics
from pathlib import Path

SERVERS = ["arbiter", "arbiter+nginx", "arbiter-fast-jpeg", "peer"]
MiB = 2**20
# Targets (SPEC section 5, the worker issue and the benchmark issue).
TARGET_CEILING = 0.95
TARGET_P50 = 1.15
TARGET_PEER_12MP = 1.5
TARGET_MEMORY = 0.5


def tri(values):
    """(min, median, max) of the values that are not None, or None."""
    v = [x for x in values if x is not None]
    if not v:
        return None
    return min(v), statistics.median(v), max(v)


def med(values):
    """The median of the values that are not None, or None."""
    t = tri(values)
    return None if t is None else t[1]


def num(x, digits=1):
    """A number with digits after the point, or '-'."""
    return "-" if x is None else f"{x:.{digits}f}"


def fmt(t, digits=1):
    """'median (min-max)' of a tri, or just the median when all are equal or there is one."""
    if t is None:
        return "-"
    lo, mid, hi = t
    if f"{lo:.{digits}f}" == f"{hi:.{digits}f}":
        return num(mid, digits)
    return f"{num(mid, digits)} ({num(lo, digits)}–{num(hi, digits)})"


def ratio(a, b, digits=2):
    """a / b as 'x.xx×', or '-'."""
    if a is None or not b:
        return "-"
    return f"{a / b:.{digits}f}×"


def verdict(ok):
    """A word for a target check."""
    return "-" if ok is None else ("met" if ok else "**missed**")


def repo_path(path):
    """path relative to the repository when it lies inside it."""
    root = Path(__file__).resolve().parent.parent
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        return path


def table(header, rows):
    """A markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


class Results:
    """Lookups over one results.json."""

    def __init__(self, data):
        self.data = data
        self.meta = data["meta"]
        self.photos = self.meta["photos"]
        self.concurrencies = self.meta["concurrencies"]
        self.servers = [s for s in SERVERS if s in self.meta["servers"]]
        self.cores = self.meta["machine"]["cores"]

    def runs(self, server, photo, c):
        """The repetitions of one point."""
        return [
            r
            for r in self.data["runs"]
            if r["server"] == server and r["photo"] == photo and r["concurrency"] == c
        ]

    def point(self, server, photo, c, key):
        """tri of one figure of one point over its repetitions."""
        return tri(r[key] for r in self.runs(server, photo, c))

    def ceiling_shape(self, procs, threads, batch, sessions=1):
        """tri of images/s and of ms per batch of one ceiling shape, or (None, None)."""
        rs = [
            r
            for r in self.data["ceiling"]
            if (r["procs"], r.get("sessions", 1), r["threads"], r["batch"]) == (procs, sessions, threads, batch)
        ]
        if not rs:
            return None, None
        return tri(r["images_per_s"] for r in rs), tri(r["batch_ms_p50"] for r in rs)

    def ceiling(self):
        """(images/s median, label) of the best arbiter-shaped ceiling."""
        s = self.meta["arbiter_settings"]
        w, t = s["workers"], s["threads"]
        shapes = [(t, 1, f"{w} × {t} threads")]
        if s.get("parallel_batches"):
            shapes.append((1, t, f"{w} × {t} lanes of 1 thread"))
        best = None
        for threads, sessions, name in shapes:
            for batch in sorted({1, s["max_batch_size"]}):
                v, _ = self.ceiling_shape(w, threads, batch, sessions)
                if v and (best is None or v[1] > best[0]):
                    best = (v[1], f"{name}, batch {batch}")
        return best or (None, "-")

    def one_inference_ms(self):
        """Median ms of one batch-1 inference on all cores."""
        _, t = self.ceiling_shape(1, self.cores, 1)
        return None if t is None else t[1]

    def rep_value(self, server, photo, c, key, rep):
        """One figure of one point in one repetition, or None."""
        for r in self.runs(server, photo, c):
            if r["rep"] == rep:
                return r[key]
        return None

    def rep_noise(self, server, photo, c, rep):
        """Cores used by everything else during one point of one repetition, or None."""
        for r in self.runs(server, photo, c):
            if r["rep"] == rep:
                return r["cpu"]["other_cores"]
        return None

    def rep_ceiling_noise(self, rep):
        """The highest other load during the ceiling's measurements of one repetition, or None."""
        v = [r.get("other_cores") for r in self.data["ceiling"] if r["rep"] == rep]
        return None if not v or None in v else max(v)

    def rep_ceiling(self, rep):
        """The best Arbiter-shaped ceiling (images/s) measured in one repetition, or None: one
        session of all its threads per worker, or, with lanes, one single-thread session per thread."""
        a = self.meta["arbiter_settings"]
        w, t = a["workers"], a["threads"]
        shapes = {(w, 1, t, 1), (w, 1, t, a["max_batch_size"])}
        if a.get("parallel_batches"):
            shapes |= {(w, t, 1, 1), (w, t, 1, a["max_batch_size"])}
        v = [r["images_per_s"] for r in self.data["ceiling"] if r["rep"] == rep and (r["procs"], r.get("sessions", 1), r["threads"], r["batch"]) in shapes]
        return max(v) if v else None

    def rep_one_inference(self, rep):
        """ms of one batch-1 inference on all cores, in one repetition, or None."""
        v = [r["batch_ms_p50"] for r in self.data["ceiling"] if r["rep"] == rep and (r["procs"], r.get("sessions", 1), r["threads"], r["batch"]) == (1, 1, self.cores, 1)]
        return v[0] if v else None

    def beside(self, server, photo, c, rep):
        """ONNX Runtime alone measured just before and just after one point of one repetition."""
        return [
            r
            for r in self.data.get("beside", [])
            if r["rep"] == rep
            and r["concurrency"] == c
            and r.get("server", "arbiter") == server
            and r.get("photo", "grace_hopper.jpg") == photo
        ]

    def rep_beside(self, server, photo, c, rep, key):
        """(mean, highest other load) of `key` of ONNX Runtime alone measured just before and
        just after one point of one repetition; (None, None) if it was not."""
        rs = self.beside(server, photo, c, rep)
        if not rs:
            return None, None
        loads = [r.get("other_cores") for r in rs]
        load = None if None in loads else max(loads)
        values = [r[key] for r in rs]
        if min(values) > 0 and max(values) / min(values) > DRIFT:
            # The cores' speed changed during the point: neither figure is its yardstick.
            load = math.inf
        return statistics.fmean(values), load

    def beside_cell(self, server, photo, c, rep, key):
        """"before / after" of one point's ONNX Runtime figures, or "-"."""
        rs = {r["when"]: r[key] for r in self.beside(server, photo, c, rep)}
        return " / ".join(num(rs.get(w)) for w in ("before", "after")) if rs else "-"

    def rep_share(self, server, photo, c, rep):
        """(req/s ÷ the images/s of ONNX Runtime alone beside the point, highest other load of
        both), or (None, None)."""
        speed, load = self.rep_beside(server, photo, c, rep, "images_per_s")
        rps = self.rep_value(server, photo, c, "rps", rep)
        other = self.rep_noise(server, photo, c, rep)
        return div(rps, speed), (None if load is None or other is None else max(load, other))

    def rep_memory(self, server, key, rep):
        """Bytes of idle_rss/idle_pss (at rest) or peak_rss/peak_pss (highest over the points) in one repetition."""
        if key.startswith("idle"):
            v = [s[key] for s in self.data["starts"] if s["server"] == server and s["rep"] == rep]
        else:
            v = [r[key] for r in self.data["runs"] if r["server"] == server and r["rep"] == rep]
        return max(v) if v else None

    def memory(self, server):
        """tris of (at rest RSS, at rest PSS, peak RSS, peak PSS, processes)."""
        starts = [s for s in self.data["starts"] if s["server"] == server]
        runs = [r for r in self.data["runs"] if r["server"] == server]
        peak_by_rep = {}
        for r in runs:
            rss, pss, n = peak_by_rep.get(r["rep"], (0, 0, 0))
            peak_by_rep[r["rep"]] = (
                max(rss, r["peak_rss"]),
                max(pss, r["peak_pss"]),
                max(n, r["processes"]),
            )
        return (
            tri(s["idle_rss"] for s in starts),
            tri(s["idle_pss"] for s in starts),
            tri(v[0] for v in peak_by_rep.values()),
            tri(v[1] for v in peak_by_rep.values()),
            tri(s["processes"] for s in starts),
        )


def mib(t):
    """A tri of bytes in MiB."""
    return None if t is None else tuple(x / MiB for x in t)


QUIET = 0.25  # cores used by everything else, under which a measurement counts as quiet
DRIFT = 1.2  # ONNX Runtime alone before ÷ after a point (or after ÷ before) beyond which it is noisy


def per_rep(res, fn):
    """[(value, other load)] of fn(rep) over the repetitions, Nones left out."""
    out = []
    for rep in range(1, res.meta["reps"] + 1):
        v = fn(rep)
        if v is not None and v[0] is not None:
            out.append(v)
    return out


def judged(values):
    """(the values judged, whether they are the quiet ones): the quiet repetitions if any."""
    quiet = [v for v, load in values if load is not None and load < QUIET]
    return (quiet, True) if quiet else ([v for v, _ in values], False)


def ratio_cell(values, digits=2):
    """The judged median, then every repetition's ratio (noisy ones marked)."""
    if not values:
        return "-"
    chosen, quiet = judged(values)
    each = ", ".join(
        f"{v:.{digits}f}×" + ("" if load is not None and load < QUIET else "†") for v, load in values
    )
    note = "" if quiet else " (no quiet repetition)"
    return f"**{statistics.median(chosen):.{digits}f}×**{note}; each: {each}"


def headline(res):
    """The target checks: the median ratio over the quiet repetitions (all, if none was quiet)."""
    rows = []
    photo = "grace_hopper.jpg" if "grace_hopper.jpg" in res.photos else res.photos[0]
    big = next((p for p in res.photos if "12mp" in p), None)

    def checked(label, values, target, ok):
        chosen, quiet = judged(values)
        word = verdict(None if not chosen else ok(statistics.median(chosen)))
        rows.append([label, ratio_cell(values), target, word if quiet or word == "-" else f"{word} (noisy)"])

    def noise(*loads):
        return None if any(x is None for x in loads) else max(loads)

    def over(a, b):
        """(value, other load) a ÷ (value, other load) b: the ratio, and the worse load."""
        return div(a[0], b[0]), noise(a[1], b[1])

    def reference(label, values):
        rows.append([label, ratio_cell(values), "for reference", ""])

    beside = bool(res.data.get("beside"))

    def versus_ort(c, key, start_value, label, start_label, target, ok):
        """Arbiter's `key` at c clients ÷ ONNX Runtime alone: judged against it as measured just
        before and just after the point when it was (the ratio to the repetition's start kept
        for reference), else against the repetition's start."""
        served = lambda rep: res.rep_value("arbiter", photo, c, key, rep)  # noqa: E731
        at_start = per_rep(
            res,
            lambda rep: (
                div(served(rep), start_value(rep)),
                noise(res.rep_noise("arbiter", photo, c, rep), res.rep_ceiling_noise(rep)),
            ),
        )
        if not beside:
            checked(start_label, at_start, target, ok)
            return
        ort = "images_per_s" if key == "rps" else "batch_ms_p50"
        values = per_rep(
            res,
            lambda rep: over(
                (served(rep), res.rep_noise("arbiter", photo, c, rep)),
                res.rep_beside("arbiter", photo, c, rep, ort),
            ),
        )
        checked(label, values, target, ok)
        reference(start_label, at_start)

    if 8 in res.concurrencies and "arbiter" in res.servers:
        a = res.meta["arbiter_settings"]
        shapes = "one session on all threads" + (" or its lanes" if a.get("parallel_batches") else "")
        batches = "" if a["max_batch_size"] == 1 else f", batch 1 or {a['max_batch_size']}"
        versus_ort(
            8, "rps", res.rep_ceiling,
            f"Arbiter req/s at 8 clients ({photo}) ÷ ONNX Runtime alone just before and just "
            f"after it (the mean of the two; the shape that was fastest at the repetition's start)",
            f"Arbiter req/s at 8 clients ({photo}) ÷ ONNX Runtime alone at the start of the same "
            f"repetition (the best of its shapes: {shapes}{batches})",
            f"≥ {TARGET_CEILING}×", lambda v: v >= TARGET_CEILING,
        )
    if 1 in res.concurrencies and "arbiter" in res.servers:
        versus_ort(
            1, "p50_ms", res.rep_one_inference,
            f"Arbiter p50 at 1 client ({photo}) ÷ one batch-1 inference on {res.cores} cores "
            f"(p50) just before and just after it (the mean of the two)",
            f"Arbiter p50 at 1 client ({photo}) ÷ one batch-1 inference on {res.cores} cores at the "
            f"start of the same repetition",
            f"≤ {TARGET_P50}×", lambda v: v <= TARGET_P50,
        )

    def versus_peer(server, p, label, target):
        """The peer comparison of `server` on photo p at 8 clients: judged as shares of the
        cores' speed measured beside each point when it was, the raw ratio beside it."""
        raw = per_rep(
            res,
            lambda rep: (
                div(res.rep_value(server, p, 8, "rps", rep), res.rep_value("peer", p, 8, "rps", rep)),
                noise(res.rep_noise(server, p, 8, rep), res.rep_noise("peer", p, 8, rep)),
            ),
        )
        shares = per_rep(
            res, lambda rep: over(res.rep_share(server, p, 8, rep), res.rep_share("peer", p, 8, rep))
        )
        word = f"≥ {target}×" if target > 1 else "> 1×"
        ok = (lambda v: v >= target) if target > 1 else (lambda v: v > 1.0)
        if shares:
            checked(
                f"{label}, req/s at 8 clients ({p}), each as a share of ONNX Runtime alone just "
                f"before and just after it (the mean of the two)",
                shares, word, ok,
            )
            reference(f"{label}, req/s at 8 clients ({p}), as measured", raw)
        else:
            checked(f"{label}, req/s at 8 clients ({p})", raw, word, ok)

    if "peer" in res.servers and "arbiter" in res.servers and 8 in res.concurrencies:
        for p, target in [(photo, 1.0), (big, TARGET_PEER_12MP)]:
            if p is not None:
                versus_peer("arbiter", p, "Arbiter ÷ Python peer", target)
        if big is not None and "arbiter-fast-jpeg" in res.servers:
            versus_peer(
                "arbiter-fast-jpeg", big,
                "Arbiter with `fast_jpeg` (opt-in, not the seed's exact pixels) ÷ Python peer",
                TARGET_PEER_12MP,
            )
    if "peer" in res.servers and "arbiter" in res.servers:
        for key, what in [("peak_rss", "peak summed RSS under load"), ("peak_pss", "peak summed PSS under load"), ("idle_rss", "summed RSS at rest"), ("idle_pss", "summed PSS at rest")]:
            # Memory does not depend on the other load: every repetition counts.
            values = per_rep(res, lambda rep, k=key: (div(res.rep_memory("arbiter", k, rep), res.rep_memory("peer", k, rep)), 0.0))
            checked(f"Arbiter ÷ Python peer, {what}", values, f"≤ {TARGET_MEMORY}×", lambda v: v <= TARGET_MEMORY)
    return table(["figure", "ratio: judged median; each repetition († = noisy)", "target", ""], rows)


def div(a, b):
    """a / b, or None."""
    return None if a is None or not b else a / b


def ceiling_table(res):
    """ONNX Runtime alone."""
    rows = []
    seen = []
    for r in res.data["ceiling"]:
        sessions = r.get("sessions", 1)
        key = (r["label"], r["procs"], sessions, r["threads"], r["batch"])
        if key in seen:
            continue
        seen.append(key)
        ips, ms = res.ceiling_shape(r["procs"], r["threads"], r["batch"], sessions)
        rows.append([r["label"], r["procs"], sessions, r["threads"], r["batch"], fmt(ips), fmt(ms)])
    return table(
        ["shape", "processes", "sessions each", "threads each", "batch", "images/s", "ms per batch (p50)"], rows
    )


def beside_table(res):
    """ONNX Runtime alone just before / just after each compared point, per repetition. Its
    shape is the repetition's fastest at its start, so it may differ between repetitions: then
    each cell names its own."""
    points = []
    for r in res.data.get("beside", []):
        key = (r.get("server", "arbiter"), r.get("photo", "grace_hopper.jpg"), r["concurrency"])
        if key not in points:
            points.append(key)
    reps = range(1, res.meta["reps"] + 1)
    rows = []
    for server, photo, c in points:
        key = "batch_ms_p50" if c == 1 else "images_per_s"
        unit = "ms per inference (p50)" if c == 1 else "images/s"
        labels = {rep: {r["label"] for r in res.beside(server, photo, c, rep)} for rep in reps}
        shapes = set().union(*labels.values())
        same = len(shapes) == 1
        row = [server, photo, c, f"{next(iter(shapes))}: {unit}" if same else f"the repetition's fastest shape: {unit}"]
        for rep in reps:
            cell = res.beside_cell(server, photo, c, rep, key)
            if not same and labels[rep]:
                cell += f" ({', '.join(sorted(labels[rep]))})"
            row.append(cell)
        rows.append(row)
    return table(
        ["server", "photo", "clients", "ONNX Runtime alone"] + [f"repetition {rep}: before / after" for rep in reps],
        rows,
    )


def throughput_table(res):
    """req/s per server, with the ceiling and the ratios."""
    ceil, _ = res.ceiling()
    header = ["photo", "clients"] + [f"{s} req/s" for s in res.servers]
    ratios = []
    if "arbiter" in res.servers:
        ratios.append(("arbiter", None))
        if "peer" in res.servers:
            ratios.append(("arbiter", "peer"))
    if "arbiter+nginx" in res.servers:
        ratios.append(("arbiter+nginx", None))
        if "peer" in res.servers:
            ratios.append(("arbiter+nginx", "peer"))
    if "arbiter-fast-jpeg" in res.servers and "peer" in res.servers:
        ratios.append(("arbiter-fast-jpeg", "peer"))
    if "peer" in res.servers:
        ratios.append(("peer", None))
    header += [f"{a} ÷ {b or 'ceiling'}" for a, b in ratios]
    rows = []
    for photo in res.photos:
        for c in res.concurrencies:
            meds = {s: med(r["rps"] for r in res.runs(s, photo, c)) for s in res.servers}
            row = [photo, c] + [fmt(res.point(s, photo, c, "rps")) for s in res.servers]
            for a, b in ratios:
                row.append(ratio(meds[a], meds[b] if b else ceil))
            rows.append(row)
    return table(header, rows)


def latency_table(res):
    """p50, p90, p99 per server."""
    rows = []
    for photo in res.photos:
        for c in res.concurrencies:
            for s in res.servers:
                rows.append(
                    [photo, c, s]
                    + [fmt(res.point(s, photo, c, k), 0) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms")]
                )
    return table(["photo", "clients", "server", "p50 ms", "p90 ms", "p99 ms", "mean ms"], rows)


def errors_table(res):
    """Every answer that was not a 200, by status, summed over the repetitions."""
    rows = []
    for s in res.servers:
        for photo in res.photos:
            for c in res.concurrencies:
                runs = res.runs(s, photo, c)
                statuses, errors, aborted, ok = {}, {}, 0, 0
                for r in runs:
                    ok += r["ok"]
                    aborted += r["aborted_at_deadline"]
                    for k, v in r["statuses"].items():
                        if k != "200":
                            statuses[k] = statuses.get(k, 0) + v
                    for k, v in r["errors"].items():
                        errors[k] = errors.get(k, 0) + v
                if statuses or errors:
                    rows.append(
                        [
                            s,
                            photo,
                            c,
                            ok,
                            ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())) or "-",
                            ", ".join(f"{k}: {v}" for k, v in sorted(errors.items())) or "-",
                            aborted,
                        ]
                    )
    if not rows:
        return "No answer other than 200 and no connection error, on any server, at any point."
    return table(
        ["server", "photo", "clients", "200s", "other statuses", "connection errors", "cut at the deadline"],
        rows,
    )


def memory_table(res):
    """Summed RSS and PSS per server."""
    rows = []
    peer = res.memory("peer") if "peer" in res.servers else None
    for s in res.servers:
        rest_rss, rest_pss, peak_rss, peak_pss, procs = res.memory(s)
        row = [s, fmt(procs, 0), fmt(mib(rest_rss), 0), fmt(mib(rest_pss), 0), fmt(mib(peak_rss), 0), fmt(mib(peak_pss), 0)]
        if peer:
            row.append(ratio(peak_rss and peak_rss[1], peer[2] and peer[2][1]))
            row.append(ratio(peak_pss and peak_pss[1], peer[3] and peer[3][1]))
        rows.append(row)
    header = ["server", "processes", "RSS at rest MiB", "PSS at rest MiB", "peak RSS MiB", "peak PSS MiB"]
    if peer:
        header += ["peak RSS ÷ peer", "peak PSS ÷ peer"]
    return table(header, rows)


def lifecycle_table(res):
    """Start to first 200; SIGKILL of a worker to the replacement's first 200."""
    rows = []
    for s in res.servers:
        starts = [x["seconds"] for x in res.data["starts"] if x["server"] == s]
        kills = [x for x in res.data["kills"] if x["server"] == s]
        rows.append(
            [
                s,
                fmt(tri(starts), 2),
                fmt(tri(k["seconds"] for k in kills), 2),
                ", ".join(str(k["failed"]) for k in kills) or "-",
                ", ".join(str(k.get("clients", "-")) for k in kills[:1]) or "-",
            ]
        )
    return table(
        [
            "server",
            "start to first 200 (s)",
            "SIGKILL of a worker to its replacement's first 200 (s)",
            "failed requests per kill",
            "clients during the kill",
        ],
        rows,
    )


def stages_table(res):
    """Arbiter's own /metrics: mean time per request in each stage, per point."""
    rows = []
    for photo in res.photos:
        for c in res.concurrencies:
            entries = [e for e in res.data["stages"] if e["server"] == "arbiter" and e["photo"] == photo and e["concurrency"] == c]
            if not entries:
                continue

            def m(key, scale=1000.0):
                v = med(e["stages"].get(key, {}).get("mean") for e in entries)
                return None if v is None else v * scale

            rows.append(
                [
                    photo,
                    c,
                    num(m("request_duration_seconds/model_predict")),
                    num(m("stage_duration_seconds/decode")),
                    num(m("stage_duration_seconds/preprocess")),
                    num(m("stage_duration_seconds/queue_wait")),
                    num(m("stage_duration_seconds/inference")),
                    num(m("batch_size", 1.0), 2),
                ]
            )
    if not rows:
        return "Arbiter's /metrics gave no stage histograms in this run."
    return table(
        ["photo", "clients", "request ms", "decode ms", "preprocess ms", "queue wait ms", "inference ms", "mean batch"],
        rows,
    )


def load_table(res):
    """CPU used by everything else on the machine during the runs."""
    rows = []
    for s in res.servers:
        runs = [r for r in res.data["runs"] if r["server"] == s]
        if not runs:
            continue
        rows.append(
            [
                s,
                fmt(tri(r["cpu"]["server_cores"] for r in runs), 2),
                fmt(tri(r["cpu"]["oha_cores"] for r in runs), 2),
                fmt(tri(r["cpu"]["other_cores"] for r in runs), 2),
            ]
        )
    return table(["server", "server's CPU (cores)", "oha's CPU (cores)", "everything else (cores)"], rows)


def log_axes(ax, cs, log_y):
    """Log x axis ticked at the concurrencies only; plain numbers on a log y axis."""
    from matplotlib.ticker import LogLocator, NullFormatter, NullLocator, ScalarFormatter

    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(cs, [str(c) for c in cs])
    if log_y:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3, which="both")


def reps_table(res):
    """Per repetition: the ceiling measured, and the other load while each server ran."""
    rows = []
    for rep in range(1, res.meta["reps"] + 1):
        row = [rep, num(res.rep_ceiling(rep)), num(res.rep_one_inference(rep)), num(res.rep_ceiling_noise(rep), 2)]
        for s in res.servers:
            runs = [r for r in res.data["runs"] if r["server"] == s and r["rep"] == rep]
            row.append(num(med(r["cpu"]["other_cores"] for r in runs), 2))
        rows.append(row)
    return table(
        ["repetition", "ceiling images/s", "one inference ms", "other load during the ceiling (cores)"] + [f"other load during {s} (cores)" for s in res.servers],
        rows,
    )


def plots(res, out):
    """throughput.png, latency.png, memory.png under out; returns their names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    colors = {"arbiter": "tab:blue", "arbiter+nginx": "tab:green", "arbiter-fast-jpeg": "tab:purple", "peer": "tab:orange"}
    ceil, ceil_label = res.ceiling()
    cs = res.concurrencies
    n = len(res.photos)

    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4), sharey=False)
    axes = axes if n > 1 else [axes]
    for ax, photo in zip(axes, res.photos):
        for s in res.servers:
            ts = [res.point(s, photo, c, "rps") for c in cs]
            x = [c for c, t in zip(cs, ts) if t]
            y = [t[1] for t in ts if t]
            lo = [t[1] - t[0] for t in ts if t]
            hi = [t[2] - t[1] for t in ts if t]
            ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, label=s, color=colors[s])
        if ceil:
            ax.axhline(ceil, color="black", linestyle="--", label=f"ONNX Runtime alone ({ceil_label})")
        log_axes(ax, cs, log_y=False)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("requests/s (200s)")
        ax.set_ylim(bottom=0)
        ax.set_title(photo)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Throughput by concurrency (median, bars: min–max)")
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=100)
    plt.close(fig)

    keys = [("p50_ms", "p50"), ("p90_ms", "p90"), ("p99_ms", "p99")]
    fig, grid = plt.subplots(len(keys), n, figsize=(5 * n, 3.2 * len(keys)), squeeze=False)
    one = res.one_inference_ms()
    for row, (key, title) in enumerate(keys):
        for col, photo in enumerate(res.photos):
            ax = grid[row][col]
            for s in res.servers:
                ts = [res.point(s, photo, c, key) for c in cs]
                x = [c for c, t in zip(cs, ts) if t]
                y = [t[1] for t in ts if t]
                lo = [t[1] - t[0] for t in ts if t]
                hi = [t[2] - t[1] for t in ts if t]
                ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, color=colors[s], label=s)
            if one:
                ax.axhline(one, color="black", linestyle="--", linewidth=0.8, label="one inference, all cores")
            log_axes(ax, cs, log_y=True)
            ax.set_title(f"{photo}: {title}")
            ax.set_xlabel("concurrent clients")
            ax.set_ylabel(f"{title} latency (ms)")
    grid[0][0].legend(fontsize=7)
    fig.suptitle("Latency percentiles by concurrency (median, bars: min–max)")
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    labels = ["RSS at rest", "PSS at rest", "peak RSS", "peak PSS"]
    width = 0.8 / max(1, len(res.servers))
    for i, s in enumerate(res.servers):
        m = res.memory(s)[:4]
        y = [0 if t is None else t[1] / MiB for t in m]
        x = [j + i * width for j in range(len(labels))]
        ax.bar(x, y, width, label=s, color=colors[s])
        for xi, yi in zip(x, y):
            ax.text(xi, yi, f"{yi:.0f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks([j + width * (len(res.servers) - 1) / 2 for j in range(len(labels))], labels)
    ax.set_ylabel("MiB, summed over the server's processes")
    ax.set_title("Memory by server (median of the repetitions)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(out / "memory.png", dpi=100)
    plt.close(fig)
    return ["throughput.png", "latency.png", "memory.png"]


def render(res, plot_dir_rel):
    """The whole markdown report."""
    m = res.meta
    mach = m["machine"]
    v = m["versions"]
    a = m["arbiter_settings"]
    p = m["peer_settings"]
    parts = []
    parts.append("# Benchmarks\n")
    parts.append(
        f"Generated by `scripts/bench` ({m['mode']} mode) on {m['started']}, in {m.get('wall_s', 0) / 60:.1f} "
        f"minutes, at `{v['git']}`. Every figure below is computed from that run's own measurements "
        f"(`{plot_dir_rel}/results.json`), the ones it printed; medians with (min–max) over "
        f"{m['reps']} repetition(s). The ceiling is measured in each repetition, just before the "
        f"servers.\n"
    )
    parts.append(
        "**These machines are shared and noisy.** Other jobs (compilers, tests) may run on the same "
        "cores during a run; the last table shows how much CPU everything else used while each "
        "server was measured. Compare figures within one run, not across runs.\n"
    )
    if m["mode"] == "smoke":
        parts.append(
            "**Smoke mode**: short runs and one repetition, to check that every server answers; "
            "its figures are not measurements to quote.\n"
        )
    if m.get("failures"):
        parts.append("**This run reported failures:** " + "; ".join(m["failures"]) + "\n")
    parts.append("## Targets\n")
    parts.append(
        "Each ratio is taken within a repetition. The speed of these shared cores drifts within "
        "minutes (by a quarter, in some runs), so ONNX Runtime alone is measured again just "
        "before and just after each point a target compares, and the mean of the two is the "
        "yardstick: the ratios to ONNX Runtime alone divide by it, and Arbiter and the peer are "
        "compared as shares of it (the Arbiter shape fastest at the repetition's start, for both). "
        "The same ratios as measured (against the ceiling at the repetition's start, or raw "
        "req/s) are shown for reference. "
        f"A repetition's ratio is noisy (†) when everything else on the machine used {QUIET} cores "
        "or more during either of its two measurements, or when ONNX Runtime alone just before "
        f"and just after a point differ by more than {round((DRIFT - 1) * 100)}% (the cores' speed "
        "changed during it, so that neither is its yardstick); the median of the quiet ones is "
        "judged, or of all when none was quiet.\n"
    )
    parts.append(headline(res) + "\n")
    parts.append("## The machine\n")
    parts.append(
        table(
            ["", ""],
            [
                ["CPU", f"{mach['cpu_model']} ({'AVX-512' if mach['avx512'] else 'no AVX-512'})"],
                ["cores", mach["cores"]],
                ["memory", f"{mach['memory_bytes'] / 2**30:.1f} GiB"],
                ["OS", f"{mach['os']}, Linux {mach['kernel']}"],
                ["load average at start", " ".join(mach["loadavg_at_start"])],
                ["arbiter", v["arbiter"]],
                ["ONNX Runtime", f"1.32.0 (Arbiter: the shared library; peer and ceiling: Python's {v['onnxruntime_python']})"],
                ["peer", f"{v['gunicorn']}, Python {v['python']}"],
                ["nginx", v["nginx"]],
                ["load generator", v["oha"]],
            ],
        )
        + "\n"
    )
    shared = f", share_weights {str(a['share_weights']).lower()}" if a.get("share_weights") is not None else ""
    priming = m.get("priming_start_s")
    priming = f" (that start took {priming:.2f} s)" if priming else ""
    lanes_note = (
        f", and its lanes: {a['threads']} single-thread sessions per worker run side by side"
        if a.get("parallel_batches")
        else ""
    )
    parts.append("## Method\n")
    parts.append(
        f"""One run of `scripts/bench` measures, on this machine, with the same model file
(`var/models/resnet50-voc20.onnx`, ResNet50 with 20 outputs) and the same photos:

- **ONNX Runtime alone** (`bench/ceiling.py`): the ceiling. No HTTP, no decoding: a constant
  batch fed to a session in a loop for {m['ceiling_seconds']:g} s after a warm-up, shaped like the
  Arbiter under test ({a['workers']} worker(s) × {a['threads']} intra-op thread(s){lanes_note}; at batch 1 and at
  its max batch size {a['max_batch_size']}), plus one batch-1 inference on all {mach['cores']} cores
  (the latency target's yardstick) and the peer's shape ({mach['cores']} processes × 1 thread). It
  runs ONNX Runtime 1.32.0 through its Python binding, the same release as the library Arbiter
  loads, with the same session settings (optimization level ALL, spinning on). It is measured
  at the start of each repetition, and again just before and just after each point a target
  compares, with the server under test running idle: Arbiter with the 512 × 600 photo at 1 client
  (one inference on all cores) and every server at 8 clients with the 512 × 600 and the
  12-megapixel photos (the Arbiter shape fastest at the repetition's start; smoke mode measures
  it beside Arbiter's 512 × 600 points only).
- **arbiter**: `target/release/arbiter start` with `{repo_path(m['arbiter_config'])}` as shipped, except
  the bind address (a free loopback port), pid file and control socket (in the run folder), and
  `allow_root` (the run is root): {a['workers']} worker(s), {a['threads']} ONNX Runtime thread(s)
  each, max batch {a['max_batch_size']}, max delay {a['max_delay']}, queue {a['queue_size']},
  {a.get('preprocess_threads') or 'default'} preprocessing thread(s){shared}, parallel_batches
  {str(bool(a.get('parallel_batches'))).lower()}.
  Clients connect to its TCP socket.
- **arbiter+nginx**: the same Arbiter bound on a unix socket, behind nginx
  ({v['nginx'].split(':')[-1].strip()}, `worker_processes auto`) running the shipped site
  `deploy/nginx/arbiter.conf` (request buffering, upstream keep-alive, one retry of a request
  whose worker died), rewritten only to listen on a free loopback port and to reach the run's
  socket.
- **arbiter-fast-jpeg**: the first Arbiter with the opt-in `model.fast_jpeg = true` (big JPEGs
  decoded at a reduced scale, as Pillow's `draft`; answers checked against Python's after
  `draft`), measured on the 12-megapixel photo only (it changes nothing for the small ones).
- **peer**: the seed's Flask service as a careful Python team would run it (`bench/peer/app.py`):
  the seed's route and preprocessing (Pillow `convert("RGB")`, `resize((224, 224), BILINEAR)`,
  /255, normalize, CHW), the seed's `thresh_sort` at 0.5, on onnxruntime with the same model
  file instead of torch. **Tuning**: gunicorn {p['worker_class']} workers = cores
  ({p['workers']}), one ONNX Runtime intra-op thread each (workers × threads = cores; more
  oversubscribes the CPU), the model loaded in each worker after the fork
  (`bench/peer/gunicorn.conf.py`); everything else gunicorn's defaults.

Arbiter is started once before the repetitions, unrecorded, so that what it caches on a first
start (its prepared weights) exists, as in any deployment after its first start{priming}. For each
repetition, the ceiling is measured, then each server in turn is started; the time from the start command to the first
200 on `POST /model_predict` is taken; its answers for the three photos are checked against the
Python reference (`var/reference`); it is warmed up ({m['warmup_s']:g} s at 2 clients, not
recorded) and its memory at rest is read. Then each photo at each concurrency is driven by
`{m['oha_command']}` (C = {', '.join(str(c) for c in m['concurrencies'])}), one bounded run of
{m['duration_s']:g} s per point, waiting between points until the server's processes are idle.
Requests/s counts 200 answers only, over the run's duration; latency percentiles are oha's, over
the answers received; requests still in flight at the deadline are cut and counted apart.
Memory is summed over every process of the server (for arbiter+nginx, nginx's too): RSS from
`/proc/PID/status`, PSS from `/proc/PID/smaps_rollup` (shared pages, such as the model's
weights mapped by several workers, counted once in all), sampled every 0.5 s; "peak" is the
highest sum over all points of a repetition. Last, one worker is killed with SIGKILL while one
client per worker keeps posting, and the time from the kill to the first 200 from its
replacement is taken (the peer names the answering worker in an `X-Worker-Pid` header; a
single-worker Arbiter can only answer from the replacement). Every process the harness starts
runs in its own session and is stopped by its pid at the end.

Photos: `grace_hopper.jpg` (512 × 600 JPEG, 60 KiB), `chelsea.png` (451 × 300 PNG, 235 KiB),
`big_12mp.jpg` (4000 × 3000 JPEG, 2.0 MiB: what a phone sends).
"""
    )
    parts.append("## ONNX Runtime alone (the ceiling)\n")
    parts.append(ceiling_table(res) + "\n")
    if res.data.get("beside"):
        parts.append(
            "Measured again just before and just after each point a target compares (the yardstick "
            "of the cores' speed at that moment):\n"
        )
        parts.append(beside_table(res) + "\n")
    parts.append("## Throughput\n")
    parts.append(
        f"Requests/s answered with 200. Ratios are of medians; the ceiling is the best Arbiter-shaped "
        f"ONNX Runtime figure ({num(res.ceiling()[0])} images/s).\n"
    )
    parts.append(throughput_table(res) + "\n")
    parts.append(f"![throughput]({plot_dir_rel}/throughput.png)\n")
    parts.append("## Latency\n")
    parts.append(latency_table(res) + "\n")
    parts.append(f"![latency]({plot_dir_rel}/latency.png)\n")
    parts.append("## Errors by status\n")
    parts.append(errors_table(res) + "\n")
    parts.append(
        "Requests cut at the deadline are the ones in flight when a bounded run ended; they are not "
        "errors of the server.\n"
    )
    parts.append("## Memory\n")
    parts.append(memory_table(res) + "\n")
    parts.append(f"![memory]({plot_dir_rel}/memory.png)\n")
    parts.append("## Start and recovery\n")
    parts.append(lifecycle_table(res) + "\n")
    parts.append("## Where Arbiter's time goes\n")
    parts.append(
        "From Arbiter's own `/metrics` (direct server), read before and after each point: the mean "
        "time per request of the whole request and of each stage, and the mean batch size.\n"
    )
    parts.append(stages_table(res) + "\n")
    parts.append("## Noise\n")
    parts.append(
        "CPU time over each point's run, in cores (of "
        f"{mach['cores']}): the server's processes, oha's, and everything else on the machine.\n"
    )
    parts.append(load_table(res) + "\n")
    parts.append("Per repetition (medians over its points):\n")
    parts.append(reps_table(res) + "\n")
    q = m.get("quiet")
    if q and q["budget_s"] > 0:
        parts.append(
            f"Before each point the run waited up to {q['per_point_s']:g} s (at most "
            f"{q['budget_s']:g} s in all) for everything else to use under {q['threshold_cores']:g} "
            f"cores; it waited {m.get('quiet_waited_s', 0):.0f} s in all.\n"
        )
    parts.append(
        "Reproduce with `scripts/bench` (about 25 minutes; `scripts/bench --smoke` checks in under "
        "two that every server answers).\n"
    )
    return "\n".join(parts)


def main():
    """Reads results.json, writes the markdown and the plots, prints the markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("--md", required=True, help="the markdown file to write")
    parser.add_argument("--plots", required=True, help="folder for the PNG plots")
    args = parser.parse_args()
    res = Results(json.loads(Path(args.results).read_text()))
    md = Path(args.md)
    plot_dir = Path(args.plots)
    plots(res, plot_dir)
    try:
        rel = plot_dir.resolve().relative_to(md.resolve().parent).as_posix()
    except ValueError:
        rel = plot_dir.resolve().as_posix()
    text = render(res, rel)
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
