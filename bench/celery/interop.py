"""Driver of `bench/celery-interop`: Python-sent Celery no-op tasks, served by a Python Celery
worker and then by Celeriac's Rust `CeleryWorker`, on the same Redis.

As a script it is the driver:

    python interop.py --url redis://127.0.0.1:PORT --rust-worker PATH [-n 20000] [-c 100]
                      [--runs 3] [--variants ignore,results]

For each run and each variant (``ignore``: ``ignore_result=True``, no result backend;
``results``: results kept in Celery's Redis backend), it

1. empties the private Redis (the caller guarantees it is a private one), then publishes N
   ``bench.noop`` tasks (JSON) into one queue of db 0 through one producer (Celery's
   ``apply_async``), with no worker running;
2. starts a Python Celery worker (``--pool=threads --concurrency=C --without-mingle
   --without-gossip --without-heartbeat``, events off, Celery's default prefetch multiplier
   and ``acks_late`` off), measures, stops it;
3. empties Redis, publishes the same N tasks again, starts the Rust worker (same concurrency;
   its default ``acks_late`` on), measures, stops it.

The clock is read from Redis by this driver, polling every ``--poll-ms`` (default 2 ms) with
one pipeline (``LLEN queue``, ``HLEN unacked``, and for ``results`` ``DBSIZE`` of the backend
db): it starts at the first poll that sees a message taken (queue shorter than N or an
``unacked`` entry) and stops at the first poll that sees the queue empty, ``unacked`` empty
and, for ``results``, N result keys. Worker boot is thus not timed, for either worker.
Redis CPU is ``INFO cpu`` (``used_cpu_sys + used_cpu_user``) just before the worker starts
and at the end, divided by N. The worker's own CPU comes from ``/proc/PID/stat``.

Prints one JSON object per measurement on stdout, then a summary; progress goes to stderr.

As a module (``-A interop``) it is the Python worker's app; settings come from the
environment: BENCH_INTEROP_URL, BENCH_INTEROP_QUEUE, BENCH_INTEROP_RESULTS (``1``/``0``).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time

from celery import Celery

BROKER_DB = 0
BACKEND_DB = 1
URL = os.environ.get("BENCH_INTEROP_URL", "redis://127.0.0.1:6379")
QUEUE = os.environ.get("BENCH_INTEROP_QUEUE", "bench_interop")
RESULTS = os.environ.get("BENCH_INTEROP_RESULTS", "0") == "1"

app = Celery(
    "interop",
    broker=f"{URL}/{BROKER_DB}",
    backend=f"{URL}/{BACKEND_DB}" if RESULTS else None,
)
app.conf.update(
    task_default_queue=QUEUE,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_ignore_result=not RESULTS,
    worker_send_task_events=False,
    task_send_sent_event=False,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop", ignore_result=not RESULTS)
def noop():
    """Does nothing."""


def log(*a):
    print("[interop]", *a, file=sys.stderr, flush=True)


def cpu_of(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu(r) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def publish(n: int, results: bool) -> float:
    """Publishes n tasks; returns the seconds it took."""
    with app.producer_or_acquire() as producer:
        producer.connection.ensure_connection(max_retries=3)
        t0 = time.perf_counter()
        for _ in range(n):
            noop.apply_async((), producer=producer, queue=QUEUE, ignore_result=not results)
        return time.perf_counter() - t0


def measure(r, rb, worker: subprocess.Popen, n: int, results: bool, poll: float, timeout: float):
    """Polls Redis until the N tasks are done; returns (start, end, cpu at start) or raises."""
    start = None
    worker_cpu0 = None
    deadline = time.monotonic() + timeout
    last_log = time.monotonic()
    while True:
        p = r.pipeline(transaction=False)
        p.llen(QUEUE)
        p.hlen("unacked")
        waiting, unacked = p.execute()
        done = rb.dbsize() if results else 0
        now = time.monotonic()
        if start is None and (waiting < n or unacked > 0):
            start = now
            worker_cpu0 = cpu_of(worker.pid)
        if start is not None and waiting == 0 and unacked == 0 and (not results or done >= n):
            return start, now, worker_cpu0
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited early with status {worker.returncode}")
        if now > deadline:
            raise RuntimeError(f"not done within {timeout}s: {waiting} waiting, {unacked} unacked")
        if now - last_log >= 2:
            log(f"  {waiting} waiting, {unacked} unacked" + (f", {done} results" if results else ""))
            last_log = now
        time.sleep(poll)


def stop(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def one(args, system: str, results: bool, r, rb) -> dict:
    r.flushall()
    enqueue_secs = publish(args.jobs, results)
    waiting = r.llen(QUEUE)
    if waiting != args.jobs:
        raise RuntimeError(f"expected {args.jobs} messages in {QUEUE}, found {waiting}")
    env = dict(os.environ)
    env.update(
        BENCH_INTEROP_URL=args.url,
        BENCH_INTEROP_QUEUE=QUEUE,
        BENCH_INTEROP_RESULTS="1" if results else "0",
    )
    here = os.path.dirname(os.path.abspath(__file__))
    if system == "celery":
        env["PYTHONPATH"] = here + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [
            sys.executable, "-m", "celery", "-A", "interop", "--quiet", "worker",
            "--pool=threads", f"--concurrency={args.concurrency}", "-Q", QUEUE,
            "--loglevel=WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-n", f"interop{os.getpid()}@%h",
        ]  # fmt: skip
    else:
        cmd = [
            args.rust_worker, "--broker", f"{args.url}/{BROKER_DB}",
            "--backend", f"{args.url}/{BACKEND_DB}", "--queue", QUEUE,
            "-c", str(args.concurrency),
        ]  # fmt: skip
    load = os.getloadavg()[0]
    cpu0 = redis_cpu(r)
    worker = subprocess.Popen(
        cmd, cwd=here, env=env, stdout=subprocess.DEVNULL, stderr=sys.stderr
    )
    try:
        start, end, wcpu0 = measure(r, rb, worker, args.jobs, results, args.poll_ms / 1000, args.timeout_secs)
        wcpu1 = cpu_of(worker.pid)
        cpu1 = redis_cpu(r)
    finally:
        stop(worker)
    dead = r.llen("celeriac.celery.dead_letters")
    if dead:
        raise RuntimeError(f"{dead} dead letters from the {system} worker")
    if results:
        key = rb.randomkey()
        meta = json.loads(rb.get(key)) if key else {}
        if meta.get("status") != "SUCCESS":
            raise RuntimeError(f"a result of the {system} worker is not SUCCESS: {key!r} = {meta}")
    secs = end - start
    return {
        "system": system,
        "variant": "results" if results else "ignore_result",
        "jobs": args.jobs,
        "concurrency": args.concurrency,
        "enqueue_jobs_per_sec": args.jobs / enqueue_secs,
        "process_secs": secs,
        "process_jobs_per_sec": args.jobs / secs,
        "redis_cpu_us_per_job": (cpu1 - cpu0) * 1e6 / args.jobs,
        "worker_cpu_us_per_job": (wcpu1 - wcpu0) * 1e6 / args.jobs,
        "load_avg_1m_before": load,
    }


def main() -> int:
    import argparse

    import celery
    import kombu
    import redis

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="redis://host:port of a PRIVATE server (it is flushed)")
    p.add_argument("--rust-worker", required=True, help="path of the bench_worker binary")
    p.add_argument("-n", "--jobs", type=int, default=20000)
    p.add_argument("-c", "--concurrency", type=int, default=100)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--variants", default="ignore,results")
    p.add_argument("--systems", default="celery,rust")
    p.add_argument("--poll-ms", type=float, default=2.0)
    p.add_argument("--timeout-secs", type=float, default=480)
    args = p.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        if v not in ("ignore", "results"):
            p.error(f"unknown variant {v!r} (ignore, results)")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for s in systems:
        if s not in ("celery", "rust"):
            p.error(f"unknown system {s!r} (celery, rust)")

    def _term(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _term)

    app.conf.broker_url = f"{args.url}/{BROKER_DB}"
    r = redis.Redis.from_url(f"{args.url}/{BROKER_DB}")
    rb = redis.Redis.from_url(f"{args.url}/{BACKEND_DB}")
    r.ping()
    port = r.connection_pool.connection_kwargs.get("port")
    if port == 6379:
        log("error: refusing to flush a Redis on port 6379")
        return 1
    versions = {
        "celery": celery.__version__,
        "kombu": kombu.__version__,
        "redis_py": redis.__version__,
        "python": sys.version.split()[0],
        "redis_server": r.info("server")["redis_version"],
    }
    log("versions:", json.dumps(versions))
    rows = []
    for run in range(1, args.runs + 1):
        for variant in variants:
            for system in systems:
                log(f"run {run}, {variant}, {system}: {args.jobs} tasks at concurrency {args.concurrency}")
                row = one(args, system, variant == "results", r, rb)
                row["run"] = run
                rows.append(row)
                print(json.dumps(row), flush=True)
                log(
                    f"  {row['process_jobs_per_sec']:,.0f} jobs/s, Redis {row['redis_cpu_us_per_job']:.1f} "
                    f"us/job, worker {row['worker_cpu_us_per_job']:.1f} us/job, load {row['load_avg_1m_before']:.2f}"
                )
    print()
    print(f"Celery-interop: {args.jobs} Python-sent no-op tasks, concurrency {args.concurrency}, "
          f"{os.cpu_count()} cores; {json.dumps(versions)}")
    print(f"{'variant':<14}{'run':>4}{'Celery jobs/s':>15}{'Rust jobs/s':>13}{'ratio':>8}"
          f"{'Redis us/job C/R':>19}{'worker us/job C/R':>20}{'load':>7}")
    summary = {"versions": versions, "rows": rows, "ratios": {}}
    for variant in variants:
        vname = "results" if variant == "results" else "ignore_result"
        ratios = []
        for run in range(1, args.runs + 1):
            got = {x["system"]: x for x in rows if x["run"] == run and x["variant"] == vname}
            c, rs = got.get("celery"), got.get("rust")
            ratio = rs["process_jobs_per_sec"] / c["process_jobs_per_sec"] if c and rs else None
            if ratio:
                ratios.append(ratio)
            f = lambda x, k, fmt: format(x[k], fmt) if x else "-"  # noqa: E731
            print(f"{vname:<14}{run:>4}{f(c, 'process_jobs_per_sec', ',.0f'):>15}"
                  f"{f(rs, 'process_jobs_per_sec', ',.0f'):>13}"
                  f"{(format(ratio, '.1f') + 'x') if ratio else '-':>8}"
                  f"{f(c, 'redis_cpu_us_per_job', '.1f') + ' / ' + f(rs, 'redis_cpu_us_per_job', '.1f'):>19}"
                  f"{f(c, 'worker_cpu_us_per_job', '.0f') + ' / ' + f(rs, 'worker_cpu_us_per_job', '.0f'):>20}"
                  f"{max((x['load_avg_1m_before'] for x in (c, rs) if x), default=0):>7.2f}")
        if ratios:
            summary["ratios"][vname] = statistics.median(ratios)
            print(f"{vname}: median ratio Rust/Celery {statistics.median(ratios):.1f}x over {len(ratios)} run(s)")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
