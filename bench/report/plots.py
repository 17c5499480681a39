"""The report's PNG plots (matplotlib): throughput, latency percentiles and memory by server."""

from .cells import MiB


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
