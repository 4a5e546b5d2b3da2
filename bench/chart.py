#!/usr/bin/env python3
"""Draws what Redis spends on a job, per system, from `bench/compare --json-out` files.

    bench/chart.py run1.json run2.json ... -o docs/img/redis-cost-per-job.svg

Left: Redis CPU per job, enqueue and processing stacked (µs). Right: Redis memory per queued
job (bytes). Each figure is the median over the files given. Plain SVG, no dependencies.
"""

import argparse
import json
import statistics
import sys
from html import escape

SYSTEMS = ["Celeriac", "BullMQ", "Celery"]
COLORS = {"enqueue": "#7aa6c2", "process": "#2f5f7f", "memory": "#8c6bb1"}


def system_of(result):
    """A result's system: Celeriac's own bench output names none."""
    return result.get("system", "Celeriac")


def medians(paths):
    """Per system: median enqueue µs/job, processing µs/job, bytes/queued job, and runs."""
    seen = {s: {"enqueue": [], "process": [], "memory": []} for s in SYSTEMS}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            run = json.load(f)
        for result in run.get("results", []):
            figures = seen.get(system_of(result))
            if figures is None:
                continue
            for key, field in [
                ("enqueue", "redis_cpu_us_per_job_enqueue"),
                ("process", "redis_cpu_us_per_job_process"),
                ("memory", "redis_bytes_per_queued_job"),
            ]:
                value = result.get(field)
                if isinstance(value, (int, float)):
                    figures[key].append(float(value))
    out = {}
    for system, figures in seen.items():
        if all(figures.values()):
            out[system] = {k: statistics.median(v) for k, v in figures.items()}
            out[system]["runs"] = len(figures["process"])
    return out


def text(x, y, body, size=13, anchor="start", weight="normal", fill="#222"):
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
        f'font-weight="{weight}" fill="{fill}">{escape(body)}</text>'
    )


def rect(x, y, w, h, fill):
    return f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{h:.1f}" fill="{fill}"/>'


def draw(figures):
    width, bar_h, gap, top = 900, 26, 18, 70
    label_w, panel_w = 90, 300
    left_x, right_x = label_w, label_w + panel_w + 130
    rows = [s for s in SYSTEMS if s in figures]
    height = top + len(rows) * (bar_h + gap) + 60
    max_cpu = max(f["enqueue"] + f["process"] for f in figures.values())
    max_mem = max(f["memory"] for f in figures.values())
    runs = min(f["runs"] for f in figures.values())
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        text(left_x, 24, "What Redis spends on a no-op job", 17, weight="bold"),
        text(left_x, 48, "Redis CPU per job, µs (lower is better)", 13, fill="#444"),
        text(right_x, 48, "Redis memory per queued job, bytes (lower is better)", 13, fill="#444"),
    ]
    for i, system in enumerate(rows):
        f = figures[system]
        y = top + i * (bar_h + gap)
        parts.append(text(label_w - 10, y + bar_h * 0.68, system, 14, "end", "bold"))
        enq_w = panel_w * f["enqueue"] / max_cpu
        proc_w = panel_w * f["process"] / max_cpu
        parts.append(rect(left_x, y, enq_w, bar_h, COLORS["enqueue"]))
        parts.append(rect(left_x + enq_w, y, proc_w, bar_h, COLORS["process"]))
        total = f["enqueue"] + f["process"]
        parts.append(
            text(
                left_x + enq_w + proc_w + 6,
                y + bar_h * 0.68,
                f'{total:.1f} ({f["enqueue"]:.1f} + {f["process"]:.1f})',
                12,
            )
        )
        mem_w = (panel_w - 40) * f["memory"] / max_mem
        parts.append(rect(right_x, y, mem_w, bar_h, COLORS["memory"]))
        parts.append(text(right_x + mem_w + 6, y + bar_h * 0.68, f'{f["memory"]:,.0f}', 12))
    legend_y = top + len(rows) * (bar_h + gap) + 8
    parts.append(rect(left_x, legend_y, 12, 12, COLORS["enqueue"]))
    parts.append(text(left_x + 18, legend_y + 11, "enqueue", 12))
    parts.append(rect(left_x + 90, legend_y, 12, 12, COLORS["process"]))
    parts.append(text(left_x + 108, legend_y + 11, "processing (claim, run, complete)", 12))
    parts.append(
        text(
            left_x,
            legend_y + 36,
            f"median of {runs} bench/compare runs; INFO cpu and used_memory of one private Redis",
            11,
            fill="#666",
        )
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("runs", nargs="+", help="JSON files written by bench/compare --json-out")
    parser.add_argument("-o", "--out", required=True, help="the SVG to write")
    args = parser.parse_args()
    figures = medians(args.runs)
    if not figures:
        sys.exit("chart.py: no run has the Redis figures of any system")
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(draw(figures))
    for system, f in figures.items():
        print(
            f'{system}: {f["enqueue"]:.1f} + {f["process"]:.1f} µs/job, '
            f'{f["memory"]:.0f} B/queued job ({f["runs"]} runs)'
        )


if __name__ == "__main__":
    main()
