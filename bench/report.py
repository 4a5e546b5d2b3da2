"""Table and JSON for `bench/compare`.

    python3 report.py --meta META.json --result celeriac.json --result bullmq.json ... \
        [--json-out FILE]

Each --result is one system's JSON line (or {"system": ..., "error": ...} when it failed).
META holds the run's context (cores, Redis version, job count, notes). Prints the table on
stdout; writes the same figures as JSON to --json-out. Standard library only.

Besides the rates, each system's JSON may hold what Redis spent on it, read from INFO just
before and just after each phase: redis_cpu_us_per_job_enqueue, redis_cpu_us_per_job_process,
redis_bytes_per_queued_job, redis_commandstats_enqueue and redis_commandstats_process (lists of
{command, calls_per_job, usec_per_call, usec_per_job, ...}), or redis_note when not measured.
"""

from __future__ import annotations

import argparse
import json
import sys


def num(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def ratio(a: float | None, b: float | None) -> float | None:
    if not a or not b:
        return None
    return a / b


def fmt_ratio(r: float) -> str:
    return f"{r:.0f}×" if r >= 10 else f"{r:.1f}×"


def fmt_cost_ratio(r: float) -> str:
    """A cost ratio (lower is better), two decimals below 10."""
    return f"{r:.0f}×" if r >= 10 else f"{r:.2f}×"


def num1(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f}"


# The Redis figures: (JSON key, column header, label of the ratio line, formatter).
REDIS_FIGURES = (
    ("redis_cpu_us_per_job_enqueue", "Redis µs/job (enqueue)", "Redis CPU, enqueue", num1),
    ("redis_cpu_us_per_job_process", "Redis µs/job (process)", "Redis CPU, process", num1),
    ("redis_bytes_per_queued_job", "Redis B/queued job", "Redis memory", num),
)
# Where each figure's value comes from, for the ratio lines.
REDIS_UNITS = {
    "redis_cpu_us_per_job_enqueue": "µs/job",
    "redis_cpu_us_per_job_process": "µs/job",
    "redis_bytes_per_queued_job": "B/queued job",
}
TOP_COMMANDS = 3


def per_job(x: float) -> str:
    """Calls per job: three decimals for the rare ones (one script call per batch)."""
    return f"{x:.3f}" if x < 0.1 else f"{x:.2f}"


def describe(res: dict) -> str:
    s = res.get("system")
    v = res.get("version") or "?"
    if s == "Celeriac":
        extra = res.get("revision")
        return f"{v} ({extra})" if extra else v
    if s == "BullMQ":
        return f"{v} (ioredis {res.get('ioredis_version')}, Node {res.get('node_version')})"
    if s == "Celery":
        return (
            f"{v} (kombu {res.get('kombu_version')}, {res.get('pool')} pool, "
            f"Python {res.get('python_version')})"
        )
    return v


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--meta", required=True)
    p.add_argument("--result", action="append", default=[])
    p.add_argument("--json-out")
    args = p.parse_args()

    with open(args.meta) as f:
        meta = json.load(f)
    results = []
    for path in args.result:
        with open(path) as f:
            results.append(json.load(f))

    by = {r["system"]: r for r in results}
    cel = by.get("Celeriac", {})

    rows = [
        ("system", "version", "enqueue jobs/s", "processing jobs/s", "peak RSS")
        + tuple(header for _, header, _, _ in REDIS_FIGURES)
    ]
    for r in results:
        if r.get("error"):
            rows.append(
                (r["system"], r.get("version") or "-", "FAILED", "FAILED", "-")
                + ("-",) * len(REDIS_FIGURES)
            )
            continue
        rss = r.get("peak_rss_kib")
        rows.append(
            (
                r["system"],
                describe(r),
                num(r.get("enqueue_jobs_per_sec")),
                num(r.get("process_jobs_per_sec")),
                "-" if rss is None else f"{rss / 1024:,.0f} MiB",
            )
            + tuple(fmt(r.get(key)) for key, _, _, fmt in REDIS_FIGURES)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = set(range(2, len(rows[0])))

    out = []
    out.append(
        f"{meta['jobs']:,} no-op jobs, batches of {meta['batch']:,}, concurrency "
        f"{meta['concurrency']}, one Redis {meta.get('redis_version', '?')} on "
        f"127.0.0.1:{meta.get('redis_port', '?')}, {meta['cpus']} CPU cores"
    )
    out.append("")
    for i, row in enumerate(rows):
        cells = [
            c.rjust(widths[j]) if j in right else c.ljust(widths[j]) for j, c in enumerate(row)
        ]
        out.append("  ".join(cells).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    out.append("")

    ratios: dict[str, dict[str, float | None]] = {"enqueue": {}, "processing": {}}
    for label, key in (("enqueue", "enqueue_jobs_per_sec"), ("processing", "process_jobs_per_sec")):
        mine = cel.get(key)
        parts = []
        for r in results:
            if r["system"] == "Celeriac":
                continue
            q = ratio(mine, r.get(key))
            ratios[label][r["system"]] = q
            parts.append(f"{fmt_ratio(q)} {r['system']}" if q else f"n/a {r['system']}")
        if mine and parts:
            out.append(f"{label + ':':<12} Celeriac {num(mine)}/s = " + ", ".join(parts))
        elif "Celeriac" in by and not mine:
            out.append(f"{label + ':':<12} Celeriac failed, no ratio")
    # The Redis figures: lower is better, so the ratio is Celeriac's over the other's.
    for key, _, label, fmt in REDIS_FIGURES:
        mine = cel.get(key)
        ratios[key] = {}
        parts = []
        for r in results:
            if r["system"] == "Celeriac":
                continue
            q = ratio(mine, r.get(key))
            ratios[key][r["system"]] = q
            parts.append(
                f"{fmt_cost_ratio(q)} {r['system']}'s" if q else f"n/a {r['system']}"
            )
        if mine and parts:
            out.append(
                f"{label + ':':<20} Celeriac {fmt(mine)} {REDIS_UNITS[key]} = " + ", ".join(parts)
            )
    for r in results:
        if r.get("redis_note"):
            out.append(f"{'Redis figures:':<20} {r['system']}: not measured: {r['redis_note']}")
    for phase, key in (("enqueue", "redis_commandstats_enqueue"), ("process", "redis_commandstats_process")):
        for r in results:
            commands = r.get(key)
            if not commands:
                continue
            top = sorted(commands, key=lambda c: -c.get("usec_per_job", 0))[:TOP_COMMANDS]
            out.append(
                f"{'Redis top, ' + phase + ':':<20} {r['system']}: "
                + ", ".join(
                    f"{c['command']} {per_job(c['calls_per_job'])}/job × {c['usec_per_call']:.1f} µs "
                    f"= {c['usec_per_job']:.2f} µs/job"
                    for c in top
                )
            )
    if any(r.get("redis_commandstats_process") for r in results):
        out.append(
            f"{'':<20} (INFO commandstats; the commands of a Lua script or a MULTI/EXEC count in "
            "its evalsha or exec line and again on their own)"
        )
    if cel.get("latency_p50_us") is not None:
        out.append(
            f"{'latency:':<12} Celeriac idle enqueue-to-start p50 {cel['latency_p50_us']:,} µs, "
            f"p99 {cel['latency_p99_us']:,} µs ({meta.get('latency_samples')} samples; "
            "not measured for the others)"
        )
    out.append(f"{'machine:':<12} {meta['cpus']} CPU cores, {meta.get('mem_total', '?')}")
    for note in meta.get("notes", []):
        out.append(f"note: {note}")
    print("\n".join(out))

    if args.json_out:
        doc = dict(meta)
        doc["results"] = results
        doc["ratios"] = {
            k: {s: (None if q is None else round(q, 3)) for s, q in v.items()}
            for k, v in ratios.items()
        }
        with open(args.json_out, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
    return 0 if all(not r.get("error") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
