"""The results chart: grouped bars, one group per workload, one bar per server."""

import matplotlib

matplotlib.use("Agg")  # no display on a server or in CI
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402,F401

# One fixed colour per server, so charts of different runs read alike.
COLOURS = {"ferrogate": "#d95f02", "granian": "#1b9e77", "uvicorn": "#7570b3",
           "nginx+gunicorn": "#666666"}


def _grouped(ax, rows, workloads, servers, field, ylabel, fmt, log=False, slots=3):
    width = 0.8 / max(len(servers), 1)
    values = [r.get(field) for r in rows if r["status"] == "ok" and r.get(field)
              and r["workload"] in {w.key for w in workloads}]
    top = max(values + [1])
    bottom = min(values + [top]) / 3 if log else 0  # where "n/a" labels sit
    for i, server in enumerate(servers):
        xs, ys, lows, highs = [], [], [], []
        for j, w in enumerate(workloads):
            row = next((r for r in rows if r["workload"] == w.key and r["server"] == server), None)
            x = j - 0.4 + width * (i + 0.5)
            if row is None:
                continue
            value = row.get(field) if row["status"] == "ok" else None
            if value is None:
                # Say why a bar is missing rather than leave a silent gap.
                ax.text(x, bottom if log else top * 0.01, row["status"], rotation=90,
                        ha="center", va="bottom",
                        fontsize=7, color=COLOURS.get(server, "black"))
                continue
            xs.append(x)
            ys.append(value)
            # The bar is the median; the whisker spans every round (min to max).
            lows.append(value - row.get(f"{field}_min", value))
            highs.append(row.get(f"{field}_max", value) - value)
            ax.text(x, row.get(f"{field}_max", value), fmt(value), rotation=90, ha="center", va="bottom", fontsize=7)
        ax.bar(xs, ys, width, label=server, color=COLOURS.get(server),
               yerr=[lows, highs], error_kw={"elinewidth": 0.8, "capsize": 1.5, "ecolor": "black"})
    # Keep bar widths alike across panels: a panel with one group (idle)
    # would otherwise stretch its bars across the whole figure. `slots` is
    # how many groups' worth of room the axis spans.
    pad = max(0, slots - len(workloads)) / 2
    ax.set_xlim(-0.5 - pad, len(workloads) - 0.5 + pad)
    ax.set_xticks(range(len(workloads)))
    ax.set_xticklabels([w.key for w in workloads], fontsize=8)
    ax.set_ylabel(ylabel)
    if log:
        # Per-request CPU spans 10 µs (tiny responses) to 1000 µs (1 MiB
        # files): a log axis keeps the small bars readable.
        ax.set_yscale("log")
        ax.set_ylim(bottom, top * 4)
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    else:
        ax.set_ylim(0, top * 1.25)  # room for the value labels
    ax.grid(axis="y", alpha=0.3)


def plot(rows, workloads, servers, path, subtitle=""):
    rate = [w for w in workloads if w.kind in ("http", "ws", "handshake")]
    idle = [w for w in workloads if w.kind == "idle"]
    panels = (2 if rate else 0) + (1 if idle else 0)
    if panels == 0:
        return None
    heights = ([1, 1] if rate else []) + ([0.7] if idle else [])
    fig, axes = plt.subplots(panels, 1, figsize=(max(8, 1.4 * len(rate) + 3), 3.4 * sum(heights) + 0.4),
                             squeeze=False, gridspec_kw={"height_ratios": heights})
    axes = list(axes[:, 0])
    if rate:
        _grouped(axes.pop(0), rows, rate, servers, "rps",
                 "requests/s (ws: messages/s;\ntls-*: handshakes/s)", lambda v: f"{v:,.0f}")
        _grouped(axes.pop(0), rows, rate, servers, "cpu_us_per_req",
                 "server CPU µs per request\n(ws: per message; tls-*: per\nhandshake; log scale)", lambda v: f"{v:.0f}",
                 log=True)
    if idle:
        _grouped(axes.pop(0), rows, idle, servers, "kib_per_conn",
                 "RSS KiB per idle\nkeep-alive connection", lambda v: f"{v:.1f}",
                 slots=max(3, len(rate)))
    first = fig.axes[0]
    first.legend(ncol=len(servers), fontsize=8, loc="upper right")
    first.set_title("ferrogate benchmark" + (f" — {subtitle}" if subtitle else "")
                    + "\nbars: median of the rounds; whiskers: every round's range (min–max)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
