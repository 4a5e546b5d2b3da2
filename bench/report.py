"""Table and JSON for `bench/compare`.

    python3 report.py --meta META.json --result celeriac.json --result bullmq.json ... \
        [--json-out FILE]

Each --result is one system's JSON line (or {"system": ..., "error": ...} when it failed).
META holds the run's context (cores, Redis version, job count, notes). Prints the table on
stdout; writes the same figures as JSON to --json-out. Standard library only.
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

    rows = [("system", "version", "enqueue jobs/s", "processing jobs/s", "peak RSS")]
    for r in results:
        if r.get("error"):
            rows.append((r["system"], r.get("version") or "-", "FAILED", "FAILED", "-"))
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
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {2, 3, 4}

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
