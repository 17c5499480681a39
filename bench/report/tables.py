"""The report's tables, one function each, from a Results."""

from .cells import fmt, med, mib, num, ratio, table, tri


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
