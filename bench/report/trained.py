"""The trained model's report (`scripts/bench --trained`, docs/benchmarks-trained.md): the recipe
families' cost per image, then Arbiter serving the trained model beside its two yardsticks
measured in the same run on the same cores, ONNX Runtime alone and preprocessing alone.

A request costs one preprocessing and one inference, and both run on the same cores: at full
load the best the cores can do is `1 / (1/model + 1/preprocessing)` images per second, under
min(model alone, preprocessing alone). Preprocessing's share is its part of that cost per image.
"""

from .cells import div, fmt, med, num, table, tri
from .markdown import repo_path


def rows_of(data, key, **match):
    """The entries of data[key] whose fields equal `match`."""
    return [r for r in data.get(key, []) if all(r.get(k) == v for k, v in match.items())]


def model_alone(data, rep):
    """(images/s, label) of the fastest ONNX Runtime shape of a repetition's ceiling."""
    found = [r for r in data["ceiling"] if r["rep"] == rep]
    if not found:
        return None, None
    best = max(found, key=lambda r: r["images_per_s"])
    return best["images_per_s"], best["label"]


def yardsticks(data, photo, c, rep):
    """(ONNX Runtime alone, preprocessing alone) in images/s for one point of the trained model:
    the mean of those measured just before and just after it, or else those of its repetition's
    start."""
    mean = lambda rs: None if not rs else sum(r["images_per_s"] for r in rs) / len(rs)  # noqa: E731
    near = dict(server="arbiter", photo=photo, concurrency=c, rep=rep)
    model = mean(rows_of(data, "beside", **near))
    if model is None:
        model, _ = model_alone(data, rep)
    pre = mean(rows_of(data, "preprocess", **near))
    if pre is None:
        pre = mean([p for p in rows_of(data, "preprocess", photo=photo, rep=rep) if "when" not in p])
    return model, pre


def recipes_section(data):
    """The recipe families' table, per photo."""
    rows = data.get("recipes") or []
    if not rows:
        return []
    out = [
        "## Recipe families: decode + resize per image\n",
        f"`bench/src/bin/preprocess.rs --recipes`, {rows[0]['runs']} runs taken in turn (run i of every family, "
        "then run i + 1), on one thread: decode + resize (and crop) by `decode_resized_with`, then the "
        "recipe's normalization into the model's input (`normalize_into`, or `pixels_into` for a `uint8` "
        "input), in ms, best / median; the ratio is each family's decode + resize to the seed's in this run.\n",
    ]
    for photo in dict.fromkeys(r["photo"] for r in rows):
        mine = [r for r in rows if r["photo"] == photo]
        seed = mine[0]
        out.append(f"**{photo}**\n")
        out.append(
            table(
                ["recipe", "input", "decode + resize (ms)", "normalize (ms)", "to the seed's (best / median)"],
                [
                    [
                        r["recipe"],
                        f"{r['size']} × {r['size']}",
                        f"{num(r['decode_resize_ms_best'], 2)} / {num(r['decode_resize_ms_median'], 2)}",
                        f"{num(r['normalize_ms_best'], 3)} / {num(r['normalize_ms_median'], 3)}",
                        f"{div(r['decode_resize_ms_best'], seed['decode_resize_ms_best']):.2f} / "
                        f"{div(r['decode_resize_ms_median'], seed['decode_resize_ms_median']):.2f}",
                    ]
                    for r in mine
                ],
            )
            + "\n"
        )
    return out


def load_section(data):
    """Arbiter on the trained model beside its yardsticks, per photo and client count."""
    meta = data["meta"]
    reps = sorted({r["rep"] for r in data["runs"] if r["server"] == "arbiter"})
    out = [
        "## The trained model under load\n",
        "ONNX Runtime alone (`bench/ceiling.py` on the same model file, in the Arbiter shape fastest at "
        "the repetition's start, below) and preprocessing alone (`preprocess --throughput`, the config's "
        f"recipe on {meta['machine']['cores']} threads, on the same photo) were measured just before and "
        "just after each point, and their mean is the point's yardstick; Arbiter ran under oha for "
        f"{meta['duration_s']:g} s per point. Figures are the median (min–max) over "
        f"{len(reps)} repetition(s). \"Both\" is `1 / (1/model + 1/preprocessing)`: model and preprocessing "
        "share the cores, so that is the most a server can do. At 1 client the requests come one at a time "
        "(one request's decode, then its inference), so neither bound applies there; 8 and 64 clients are "
        "the points to read. The yardsticks drift with the other load of a shared machine (the last table): "
        "a ratio above 1 means the cores were faster during the point than when its yardstick ran.\n",
    ]
    header = [
        "clients", "Arbiter req/s", "cores used", "p50 / p99 ms", "ORT alone img/s", "preprocessing alone img/s",
        "min(model, preprocessing)", "Arbiter / min", "both", "Arbiter / both", "preprocessing's share",
    ]
    for photo in meta["photos"]:
        rows = []
        for c in meta["concurrencies"]:
            runs = rows_of(data, "runs", server="arbiter", photo=photo, concurrency=c)
            if not runs:
                continue
            per_rep = []
            for r in runs:
                model, pre = yardsticks(data, photo, c, r["rep"])
                bound = None if model is None or pre is None else min(model, pre)
                both = None if model is None or pre is None else 1 / (1 / model + 1 / pre)
                share = None if model is None or pre is None else (1 / pre) / (1 / pre + 1 / model)
                per_rep.append((r["rps"], model, pre, bound, div(r["rps"], bound), both, div(r["rps"], both), share))
            col = lambda i: tri(x[i] for x in per_rep)  # noqa: E731
            p50, p99 = med(r["p50_ms"] for r in runs), med(r["p99_ms"] for r in runs)
            rows.append(
                [
                    c, fmt(col(0)), fmt(tri(r["cpu"]["server_cores"] for r in runs), 2), f"{num(p50, 0)} / {num(p99, 0)}", fmt(col(1)), fmt(col(2)), fmt(col(3)),
                    fmt(col(4), 2), fmt(col(5)), fmt(col(6), 2),
                    "-" if col(7) is None else f"{col(7)[1] * 100:.0f} %",
                ]
            )
        out.append(f"**{photo}**\n")
        out.append(table(header, rows) + "\n")
    shapes = {}
    for r in data["ceiling"]:
        shapes.setdefault((r["label"], r["procs"], r.get("sessions", 1), r["threads"], r["batch"]), []).append(r)
    out.append("ONNX Runtime alone, by shape (img/s, ms per batch p50), at the start of each repetition:\n")
    out.append(
        table(
            ["shape", "processes × sessions × threads", "batch", "img/s", "ms per batch"],
            [
                [label, f"{p} × {s} × {t}", b, fmt(tri(r["images_per_s"] for r in rs)), fmt(tri(r["batch_ms_p50"] for r in rs), 2)]
                for (label, p, s, t, b), rs in shapes.items()
            ],
        )
        + "\n"
    )
    pre = [p for p in data.get("preprocess", []) if "when" in p]
    if pre:
        out.append("Preprocessing alone just before and after each point (img/s):\n")
        out.append(
            table(
                ["point", "before", "after"],
                [
                    [
                        f"{p['server']} {p['photo']} c={p['concurrency']} rep {p['rep']}",
                        num(p["images_per_s"]),
                        num(next((a["images_per_s"] for a in pre if a["when"] == "after" and
                                  (a["server"], a["photo"], a["concurrency"], a["rep"]) ==
                                  (p["server"], p["photo"], p["concurrency"], p["rep"])), None)),
                    ]
                    for p in pre
                    if p["when"] == "before"
                ],
            )
            + "\n"
        )
    beside = data.get("beside") or []
    if beside:
        out.append(
            "ONNX Runtime alone again just before and after some of the points (the cores' speed drifts on "
            "a shared machine):\n"
        )
        out.append(
            table(
                ["point", "shape", "before img/s", "after img/s"],
                [
                    [
                        f"{r['server']} {r['photo']} c={r['concurrency']} rep {r['rep']}",
                        r["label"],
                        num(r["images_per_s"]),
                        num(next((a["images_per_s"] for a in beside if a["when"] == "after" and
                                  (a["server"], a["photo"], a["concurrency"], a["rep"], a["label"]) ==
                                  (r["server"], r["photo"], r["concurrency"], r["rep"], r["label"])), None)),
                    ]
                    for r in beside
                    if r["when"] == "before"
                ],
            )
            + "\n"
        )
    return out


def seed_section(data):
    """The seed's config at 8 clients in the same run, beside a binary from before the recipes
    (when the run had one) and the trained model's."""
    seed = [r for r in data["runs"] if r["server"] == "arbiter-seed"]
    if not seed:
        return []
    before = data["meta"].get("before")
    rows = []
    for photo in dict.fromkeys(r["photo"] for r in seed):
        for c in sorted({r["concurrency"] for r in seed if r["photo"] == photo}):
            runs = rows_of(data, "runs", server="arbiter-seed", photo=photo, concurrency=c)
            old = rows_of(data, "runs", server="arbiter-before", photo=photo, concurrency=c)
            trained = rows_of(data, "runs", server="arbiter", photo=photo, concurrency=c)
            latency = lambda rs: f"{num(med(r['p50_ms'] for r in rs), 0)} / {num(med(r['p99_ms'] for r in rs), 0)}"  # noqa: E731
            per_core = lambda rs: tri(div(r["rps"], r["cpu"]["server_cores"]) for r in rs)  # noqa: E731
            row = [photo, c, fmt(tri(r["rps"] for r in runs)), fmt(per_core(runs)), latency(runs)]
            if before:
                ratio = div(med(r["rps"] for r in runs), med(r["rps"] for r in old))
                ratio_core = div((per_core(runs) or (0, None))[1], (per_core(old) or (0, None))[1])
                row += [
                    fmt(tri(r["rps"] for r in old)), fmt(per_core(old)), latency(old),
                    "-" if ratio is None else f"{ratio:.2f}", "-" if ratio_core is None else f"{ratio_core:.2f}",
                ]
            rows.append(row + [fmt(tri(r["rps"] for r in trained))])
    header = ["photo", "clients", "seed's req/s", "per core used", "p50 / p99 ms"]
    if before:
        header += ["before's req/s", "per core used", "p50 / p99 ms", "now / before (req/s)", "now / before (per core)"]
    text = (
        "Arbiter on `etc/arbiter.toml` (the seed's ResNet50 and recipe: bilinear squash, ImageNet "
        "mean/std, the raw threshold) at 8 clients, on the same cores"
    )
    if before:
        text += (
            f", beside the binary from before the recipes (`{before}`, the same config without its "
            "`[model.preprocess]` and `[model.postprocess]` tables, which it does not know; their "
            "defaults are its recipe); each repetition runs the seed's, then the one before"
        )
    text += (
        ". \"Per core used\" is the requests per second of CPU time the server's processes used (req/s "
        "over the cores they kept busy): on a machine shared with other work, a server gets whatever "
        "cores the others leave, and this figure depends less on that"
    )
    return ["## The seed's recipe in the same run\n", text + ":\n", table(header + ["trained model's req/s"], rows) + "\n"]


def summary(data):
    """The figures to read first, in sentences: the trained model at 8 clients against its
    bounds, and the seed's recipe now against before."""
    lines = []
    for photo in data["meta"]["photos"]:
        runs = rows_of(data, "runs", server="arbiter", photo=photo, concurrency=8)
        if not runs:
            continue
        ys = [yardsticks(data, photo, 8, r["rep"]) for r in runs]
        if any(m is None or p is None for m, p in ys):
            continue
        rps = med(r["rps"] for r in runs)
        both = med(1 / (1 / m + 1 / p) for m, p in ys)
        low = med(min(m, p) for m, p in ys)
        share = med((1 / p) / (1 / p + 1 / m) for m, p in ys)
        lines.append(
            f"- {photo}, 8 clients: Arbiter {num(rps)} req/s; min(model alone, preprocessing alone) "
            f"{num(low)} img/s ({rps / low:.2f} of it); both on the same cores {num(both)} img/s "
            f"({rps / both:.2f} of it); preprocessing is {share * 100:.0f} % of the CPU time per image."
        )
    for photo in dict.fromkeys(r["photo"] for r in data["runs"] if r["server"] == "arbiter-before"):
        now = rows_of(data, "runs", server="arbiter-seed", photo=photo, concurrency=8)
        old = rows_of(data, "runs", server="arbiter-before", photo=photo, concurrency=8)
        if now and old:
            per_core = lambda rs: med(div(r["rps"], r["cpu"]["server_cores"]) for r in rs)  # noqa: E731
            lines.append(
                f"- The seed's recipe, {photo}, 8 clients: {num(med(r['rps'] for r in now))} req/s now, "
                f"{num(med(r['rps'] for r in old))} before ({div(med(r['rps'] for r in now), med(r['rps'] for r in old)):.2f}; "
                f"per core used {div(per_core(now), per_core(old)):.2f})."
            )
    return ["## In short\n", *lines, ""] if lines else []


def render_trained(res):
    """The whole trained-model report."""
    data = res.data
    m = data["meta"]
    mach = m["machine"]
    v = m["versions"]
    parts = [
        "# Benchmarks: the trained model and the recipe families\n",
        f"Generated by `scripts/bench --trained` ({m['mode']} mode) on {m['started']}, in "
        f"{m.get('wall_s', 0) / 60:.1f} min, at commit `{v['git']}`, from `{repo_path(m['arbiter_config'])}` "
        f"(model `{repo_path(m['model'])}`). Machine: {mach['cores']} cores, {mach['cpu_model']}; load "
        f"average at the start {' '.join(mach['loadavg_at_start'])}; other load measured during the points: "
        f"{', '.join(num(r['cpu']['other_cores'], 2) for r in data['runs'])} cores. Arbiter's settings: "
        + ", ".join(f"{k} {v}" for k, v in m["arbiter_settings"].items() if v is not None)
        + f". {m['reps']} repetition(s), {m['duration_s']:g} s per point, ONNX Runtime "
        f"alone and preprocessing alone {m['ceiling_seconds']:g} s each.\n",
    ]
    options = (f" --reps {m['reps']}" if m["reps"] != 1 else "") + (f" --duration {m['duration_s']:g}" if m["duration_s"] != 10 else "")
    if m.get("before"):
        options += " --before BIN"
    built = f" (BIN: `{m['before']}`)" if m.get("before") else ""
    parts.append(
        f"This run: `scripts/bench --trained{options}`{built}. `scripts/bench --trained` alone (one repetition, "
        "10 s per point) writes this file; with options, the report goes to the run's folder under "
        "`var/bench/`. `--before BIN` adds an arbiter built at an earlier commit, for the seed's recipe "
        "before and now.\n"
    )
    answers = data.get("answers") or []
    if answers:
        wrong = [f"{a['server']} {p} (rep {a['rep']})" for a in answers for p, ok in a["match"].items() if not ok]
        checked = sorted({a["server"] for a in answers if a["match"]})
        parts.append(
            f"Answers checked against the Python reference before each server's points ({', '.join(checked)}): "
            + ("every one matched." if not wrong else "WRONG: " + ", ".join(wrong) + ".")
            + "\n"
        )
    parts += summary(data)
    parts += recipes_section(data)
    parts += load_section(data)
    parts += seed_section(data)
    if m.get("failures"):
        parts.append("## Failures\n")
        parts += [f"- {f}" for f in m["failures"]]
        parts.append("")
    return "\n".join(parts) + "\n"
