"""Arbiter's own /metrics, read before and after a point: the mean time per request of each
stage and the mean batch size over the point."""

from .probes import http_get


def parse_metrics(text):
    """{(name, stage-or-route): (sum, count)} of arbiter's histograms, summed over workers."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith("arbiter_"):
            continue
        try:
            head, value = line.rsplit(" ", 1)
            value = float(value)
        except ValueError:
            continue
        name, _, labels = head.partition("{")
        for suffix in ("_sum", "_count"):
            if name.endswith(suffix):
                base = name[: -len(suffix)]
                key = ""
                for part in labels.rstrip("}").split(","):
                    k, _, v = part.partition("=")
                    if k in ("stage", "route"):
                        key = v.strip('"')
                s, c = out.get((base, key), (0.0, 0.0))
                out[(base, key)] = (s + value, c) if suffix == "_sum" else (s, c + value)
    return out


def metrics_snapshot(port):
    """Parsed /metrics, or None."""
    if port is None:
        return None
    status, body = http_get(port, "/metrics")
    return parse_metrics(body.decode(errors="replace")) if status == 200 else None


def metrics_delta(before, after):
    """Mean per observation of each histogram between two snapshots: {name/key: mean, ...}."""
    if not before or not after:
        return None
    out = {}
    for key, (s1, c1) in after.items():
        s0, c0 = before.get(key, (0.0, 0.0))
        if c1 - c0 > 0:
            label = key[0].removeprefix("arbiter_") + (f"/{key[1]}" if key[1] else "")
            out[label] = {"mean": (s1 - s0) / (c1 - c0), "count": c1 - c0}
    return out
