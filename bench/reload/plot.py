#!/usr/bin/env python3
"""Latency over time across reloads, for bench/reload/run.

usage: plot.py OUT.png SERIES.json [SERIES.json ...]

Each SERIES.json is written by `reloadbench reloads -plot`: per 100 ms bucket
the p50, p99 and max latency of the requests that started in it, the failed
requests' start times and the SIGHUP times. One panel per series, one shared
log-scale latency axis.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, paths = sys.argv[1], sys.argv[2:]
    series = [json.load(open(p)) for p in paths]
    fig, axes = plt.subplots(len(series), 1, figsize=(11, 2.6 * len(series)), sharey=True, squeeze=False)
    ymin, ymax = 0.1, 1.0
    for s in series:
        vals = [v for v in s["max_ms"] if v > 0]
        if vals:
            ymax = max(ymax, max(vals))
            ymin = min(ymin, min(v for v in s["p50_ms"] if v > 0))
    for ax, s in zip(axes[:, 0], series):
        ax.axvspan(s["baseline"][0], s["baseline"][1], color="#d8ecd8", zorder=0, label="baseline window (no reloads)")
        for i, t in enumerate(s["reload_t"]):
            ax.axvline(t, color="#999999", lw=0.5, zorder=1, label="SIGHUP" if i == 0 else None)
        ax.plot(s["t"], s["max_ms"], color="#f2b36b", lw=0.8, drawstyle="steps-post", label="max", zorder=2)
        ax.plot(s["t"], s["p99_ms"], color="#d62728", lw=1.0, drawstyle="steps-post", label="p99", zorder=3)
        ax.plot(s["t"], s["p50_ms"], color="#1f77b4", lw=1.0, drawstyle="steps-post", label="p50", zorder=3)
        fails = s.get("fail_t") or []
        if fails:
            ax.plot(fails, [ymin * 1.3] * len(fails), "|", color="black", ms=8, mew=0.6,
                    label="failed request (when it started)", zorder=4)
        ax.set_yscale("log")
        ax.set_ylim(ymin, ymax * 1.5)
        ax.set_xlim(0, s["t"][-1] + s["bucket_ms"] / 1000 if s["t"] else 1)
        ax.set_title(f"{s['label']}: {len(s['reload_t'])} reloads, {len(fails)} failed requests "
                     f"(latency per {s['bucket_ms']:.0f} ms bucket)", fontsize=10, loc="left")
        ax.set_ylabel("latency (ms)")
        ax.grid(axis="y", which="major", color="#eeeeee", lw=0.5)
    axes[-1, 0].set_xlabel("time since the load began (s)")
    legend = {}
    for ax in axes[:, 0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(lab, h)
    fig.legend(list(legend.values()), list(legend.keys()), loc="upper center", fontsize=8, ncol=len(legend), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.965))
    fig.savefig(out, dpi=80)


if __name__ == "__main__":
    main()
