"""The judging rules: the targets, when a repetition is quiet, and the headline table that holds
each judged figure against its target."""

import statistics

from .cells import div, table


# Targets (SPEC section 5, the worker issue and the benchmark issue).
TARGET_CEILING = 0.95


TARGET_P50 = 1.15

TARGET_PEER_12MP = 1.5

TARGET_MEMORY = 0.5

QUIET = 0.25  # cores used by everything else, under which a measurement counts as quiet

DRIFT = 1.2  # ONNX Runtime alone before ÷ after a point (or after ÷ before) beyond which it is noisy


def verdict(ok):
    """A word for a target check."""
    return "-" if ok is None else ("met" if ok else "**missed**")


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
