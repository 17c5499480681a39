"""Numbers and markdown: medians with (min-max) over the repetitions, ratios, tables."""

import statistics


MiB = 2**20


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


def div(a, b):
    """a / b, or None."""
    return None if a is None or not b else a / b


def mib(t):
    """A tri of bytes in MiB."""
    return None if t is None else tuple(x / MiB for x in t)


def table(header, rows):
    """A markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)
