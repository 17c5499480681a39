"""Lookups over one results.json: the points, the ceiling, the figures beside each point, the
memory, by server, photo, concurrency and repetition."""

import math
import statistics

from .cells import div, num, tri
from .judging import DRIFT


SERVERS = ["arbiter", "arbiter+nginx", "arbiter-fast-jpeg", "peer"]


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
