#!/usr/bin/env python3
"""Renders the soak test's samples (the CSV of ReliabilitySoakTests) as a markdown table and, when matplotlib
is installed, a PNG plot of RSS, open fds, CPU and p99 latency over time.

    python3 scripts/soak_plot.py bench/results/.../soak.csv --markdown soak.md --png soak.png
"""
import argparse
import csv
import sys


def read_rows(path):
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def markdown(rows):
    lines = [
        "| t (s) | RSS (MiB) | open fds | CPU (%) | p50 (ms) | p99 (ms) | latency samples |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['t_s']:.0f} | {r['rss_kb'] / 1024:.1f} | {r['fds']:.0f} | {r['cpu_pct']:.1f} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['latency_samples']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows, path):
    try:
        import matplotlib
    except ImportError:
        print("soak_plot: matplotlib is not installed; table only", file=sys.stderr)
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t_s"] for r in rows]
    series = [
        ("RSS (MiB)", [r["rss_kb"] / 1024 for r in rows]),
        ("open fds", [r["fds"] for r in rows]),
        ("CPU (%)", [r["cpu_pct"] for r in rows]),
        ("p99 emit→subscriber (ms)", [r["p99_ms"] for r in rows]),
    ]
    fig, axes = plt.subplots(len(series), 1, figsize=(7, 7), sharex=True)
    for ax, (label, values) in zip(axes, series):
        ax.plot(t, values, marker=".", linewidth=1)
        ax.set_ylabel(label, fontsize=8)
        ax.set_ylim(bottom=0, top=max(values + [1]) * 1.2)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
    axes[-1].set_xlabel("seconds into the soak")
    fig.suptitle("kevd soak: 50 subscribers, files, veth uevents, timers, emits, rules", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("--markdown", help="write the table here (default: stdout)")
    parser.add_argument("--png", help="write the plot here (needs matplotlib)")
    args = parser.parse_args()
    rows = read_rows(args.csv)
    if not rows:
        sys.exit(f"soak_plot: {args.csv} has no samples")
    table = markdown(rows)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)
    else:
        sys.stdout.write(table)
    if args.png and plot(rows, args.png):
        print(f"soak_plot: wrote {args.png}", file=sys.stderr)


if __name__ == "__main__":
    main()
