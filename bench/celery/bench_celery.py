"""Celery side of `bench/compare`: the same workload as `celeriac bench`.

As a script it is the driver:

    python bench_celery.py --url redis://127.0.0.1:6390/2 [-n 20000] [-c 100]

1. Publishes N no-op tasks (``ignore_result=True``, no result backend) through ONE producer
   taken from the app's pool (``app.producer_or_acquire()`` passed as ``producer=`` to
   ``apply_async``), with no worker running (timed). Celery has no bulk publish of distinct
   tasks: ``group(...).apply_async()`` loops over the same per-message publish, and
   ``chunks`` would pack many calls into one message, which is a different workload.
2. Starts a worker as a subprocess (``celery -A bench_celery worker --pool=threads
   --concurrency=C``) and waits until the N-th task has run. The worker's boot (imports,
   connecting, bootsteps) is NOT timed: the clock starts at the ``worker_ready`` signal, which
   Celery sends once the task consumer is set up and just before the event loop starts
   consuming, and stops when the N-th task body has run (counted in-process, no per-task
   Redis round trip: the N-th task writes one summary key that the driver polls). The time
   from the first task's start is reported too.

Around each phase the server's counters are read just before and just after it (``INFO cpu
memory commandstats`` on a connection of its own), as ``celeriac bench`` does: Redis CPU per
job of each phase, ``used_memory`` per queued task with the backlog in place, and the commands
(``redis_*`` fields; ``redis_note`` instead when INFO is refused). The publishing phase is
read by the driver; the processing phase by the worker itself, in its ``worker_ready`` handler
and in the N-th task, so it spans what the processing clock spans.

Prints one JSON line on stdout; progress goes to stderr.

As a module (``-A bench_celery``) it is the worker's app. Settings come from environment
variables set by the driver: BENCH_CELERY_URL, BENCH_CELERY_QUEUE, BENCH_CELERY_JOBS,
BENCH_CELERY_DONE_KEY.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time

from celery import Celery, signals

URL = os.environ.get("BENCH_CELERY_URL", "redis://127.0.0.1:6379/2")
QUEUE = os.environ.get("BENCH_CELERY_QUEUE", "celeriac_bench_celery")
JOBS = int(os.environ.get("BENCH_CELERY_JOBS", "20000"))
DONE_KEY = os.environ.get("BENCH_CELERY_DONE_KEY", "celeriac_bench_celery:done")

app = Celery("bench_celery", broker=URL)
app.conf.update(
    task_ignore_result=True,
    result_backend=None,
    task_default_queue=QUEUE,
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

_lock = threading.Lock()
_count = 0
_first_start = None
_ready_at = None
_info_before = None


class RedisProbe:
    """A connection of its own that reads the server's counters (see celeriac's
    crates/celeriac-cli/src/bench/redis_info.rs): ``INFO cpu memory commandstats`` (``INFO
    all`` where the server takes one section at a time). ``note`` says why a reading failed;
    none is made after that."""

    def __init__(self, url):
        import redis

        self.r = redis.Redis.from_url(url)
        # The raw text, not redis-py's parsed dict: parsed the same way for every system.
        self.r.set_response_callback("INFO", lambda resp, **_kw: resp)
        self.infos = 0  # INFO calls made (they show up in cmdstat_info)
        self.multi_section = True
        self.note = None

    def _info(self, *sections):
        text = self.r.execute_command("INFO", *sections)
        self.infos += 1
        return text.decode() if isinstance(text, bytes) else str(text)

    def read(self):
        """A reading (a dict), or None once one has failed."""
        if self.note is not None:
            return None
        own = self.infos
        try:
            text = None
            if self.multi_section:
                try:
                    text = self._info("cpu", "memory", "commandstats")
                except Exception as e:  # an older server: one section at a time
                    if "NOPERM" in str(e):
                        raise
                    self.multi_section = False
            if text is None:
                text = self._info("all")
            reading = parse_info(text)
            if reading is None:
                raise RuntimeError("INFO has no CPU figures")
        except Exception as e:
            said = str(e)
            self.note = (
                f"the Redis user may not run INFO ({said}); grant it +info to see them"
                if "NOPERM" in said
                else f"INFO failed: {said}"
            )
            return None
        reading["own_infos"] = own
        return reading


def parse_info(text):
    """CPU (µs), used_memory and {command: [calls, usec]} from an INFO reply."""
    fields = {}
    commands = {}
    for line in text.splitlines():
        name, sep, value = line.strip().partition(":")
        if not sep:
            continue
        if name.startswith("cmdstat_"):
            kv = dict(p.split("=", 1) for p in value.split(",") if "=" in p)
            if "calls" in kv and "usec" in kv:
                commands[name[len("cmdstat_"):]] = [int(kv["calls"]), int(kv["usec"])]
        else:
            fields[name] = value
    if "used_cpu_sys" not in fields or "used_cpu_user" not in fields:
        return None
    mem = fields.get("used_memory")
    return {
        "cpu_us": (float(fields["used_cpu_sys"]) + float(fields["used_cpu_user"])) * 1e6,
        "used_memory": int(mem) if mem is not None else None,
        "commands": commands,
    }


def phase_cost(before, after, n):
    """What a phase of n jobs cost Redis: CPU and memory per job, and the commands."""
    if not before or not after:
        return None
    own = after["own_infos"] - before["own_infos"]
    commands = []
    for name, (calls1, usec1) in after["commands"].items():
        calls0, usec0 = before["commands"].get(name, [0, 0])
        calls, usec = max(0, calls1 - calls0), max(0, usec1 - usec0)
        if name == "info" and own > 0 and calls > 0:
            mine = min(own, calls)  # the probe's own readings
            usec -= usec * mine // calls
            calls -= mine
        if calls > 0:
            commands.append(
                {
                    "command": name,
                    "calls": calls,
                    "usec": usec,
                    "calls_per_job": calls / n,
                    "usec_per_call": usec / calls,
                    "usec_per_job": usec / n,
                }
            )
    commands.sort(key=lambda c: (-c["usec"], c["command"]))
    mem0, mem1 = before["used_memory"], after["used_memory"]
    return {
        "cpu_us_per_job": max(0.0, after["cpu_us"] - before["cpu_us"]) / n,
        "bytes_per_job": None if mem0 is None or mem1 is None else (mem1 - mem0) / n,
        "commands": commands,
    }


_probe = None


def _worker_probe():
    global _probe
    if _probe is None:
        _probe = RedisProbe(URL)
    return _probe


@signals.worker_ready.connect
def _on_ready(**_kwargs):
    global _ready_at, _info_before
    # The processing phase's first reading, just before the clock starts.
    _info_before = _worker_probe().read()
    _ready_at = time.time()


@app.task(name="celeriac_bench.noop", ignore_result=True)
def noop(enqueued_us):
    """Does nothing but count itself (like celeriac's bench task)."""
    global _count, _first_start
    with _lock:
        if _first_start is None:
            _first_start = time.time()
        _count += 1
        n = _count
    if n == JOBS:
        end = time.time()
        probe = _worker_probe()
        info_after = probe.read() if _info_before is not None else None
        summary = {
            "ready_at": _ready_at,
            "first_start_at": _first_start,
            "end_at": end,
            "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "info_before": _info_before,
            "info_after": info_after,
            "redis_note": probe.note,
        }
        import redis

        redis.Redis.from_url(URL).set(DONE_KEY, json.dumps(summary))


def log(*a):
    print("[celery]", *a, file=sys.stderr, flush=True)


def main() -> int:
    import argparse

    import celery
    import kombu
    import redis

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=URL, help="broker URL (redis://host:port/db)")
    p.add_argument("-n", "--jobs", type=int, default=20000)
    p.add_argument("-c", "--concurrency", type=int, default=100)
    p.add_argument("--pool", default="threads", help="worker pool (threads, gevent, prefork, ...)")
    p.add_argument("--timeout-secs", type=float, default=480)
    args = p.parse_args()

    # Let a SIGTERM (from `timeout` or bench/compare's cleanup) run the `finally` below, which
    # stops the worker subprocess.
    def _term(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _term)

    queue = f"celeriac_bench_celery_{os.getpid()}"
    done_key = f"{queue}:done"
    env = dict(os.environ)
    env.update(
        BENCH_CELERY_URL=args.url,
        BENCH_CELERY_QUEUE=queue,
        BENCH_CELERY_JOBS=str(args.jobs),
        BENCH_CELERY_DONE_KEY=done_key,
    )
    os.environ.update(env)
    app.conf.broker_url = args.url
    app.conf.task_default_queue = queue

    r = redis.Redis.from_url(args.url)
    r.ping()
    r.delete(queue, done_key)

    # 1. Publish the backlog through one producer (connection opened before the clock).
    log(f"publishing {args.jobs} tasks to queue {queue} ({args.url})")
    probe = RedisProbe(args.url)
    with app.producer_or_acquire() as producer:
        producer.connection.ensure_connection(max_retries=3)
        enqueue_before = probe.read()
        t0 = time.perf_counter()
        for _ in range(args.jobs):
            noop.apply_async((int(time.time() * 1e6),), producer=producer, queue=queue)
        enqueue_secs = time.perf_counter() - t0
        enqueue_after = probe.read()
    waiting = r.llen(queue)
    log(f"published in {enqueue_secs:.3f}s ({waiting} messages in the queue)")
    if waiting != args.jobs:
        log(f"error: expected {args.jobs} messages in {queue}, found {waiting}")
        return 1

    # 2. Start a worker and wait for the N-th task.
    here = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = here + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        sys.executable, "-m", "celery", "-A", "bench_celery", "--quiet", "worker",
        f"--pool={args.pool}", f"--concurrency={args.concurrency}",
        "-Q", queue, "--loglevel=WARNING",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "-n", f"bench{os.getpid()}@%h",
    ]  # fmt: skip
    log("starting worker:", " ".join(cmd[1:]))
    launched = time.time()
    worker = subprocess.Popen(cmd, cwd=here, env=env, stdout=sys.stderr, stderr=sys.stderr)
    summary = None
    last_log = time.time()
    try:
        deadline = time.time() + args.timeout_secs
        while time.time() < deadline:
            raw = r.get(done_key)
            if raw:
                summary = json.loads(raw)
                break
            if worker.poll() is not None:
                log(f"error: the worker exited early with status {worker.returncode}")
                return 1
            if time.time() - last_log >= 2:
                log(f"{r.llen(queue)} messages still in the queue")
                last_log = time.time()
            time.sleep(0.02)
        else:
            log(f"error: not all {args.jobs} tasks ran within {args.timeout_secs}s")
            return 1
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)  # warm shutdown
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()

    left = r.llen(queue)
    r.delete(queue, done_key)
    enqueue_cost = phase_cost(enqueue_before, enqueue_after, args.jobs)
    process_cost = phase_cost(summary.get("info_before"), summary.get("info_after"), args.jobs)
    redis_figures = {}
    if enqueue_cost:
        redis_figures["redis_cpu_us_per_job_enqueue"] = enqueue_cost["cpu_us_per_job"]
        if enqueue_cost["bytes_per_job"] is not None:
            redis_figures["redis_bytes_per_queued_job"] = enqueue_cost["bytes_per_job"]
        redis_figures["redis_commandstats_enqueue"] = enqueue_cost["commands"]
    if process_cost:
        redis_figures["redis_cpu_us_per_job_process"] = process_cost["cpu_us_per_job"]
        redis_figures["redis_commandstats_process"] = process_cost["commands"]
    note = probe.note or summary.get("redis_note")
    if note:
        redis_figures["redis_note"] = note
    ready = summary["ready_at"] or summary["first_start_at"]
    process_secs = summary["end_at"] - ready
    from_first = summary["end_at"] - summary["first_start_at"]
    log(
        f"worker boot {ready - launched:.2f}s (not timed); processed in {process_secs:.3f}s "
        f"from worker_ready ({from_first:.3f}s from the first task); {left} left in the queue"
    )
    print(
        json.dumps(
            {
                "system": "Celery",
                "version": celery.__version__,
                "kombu_version": kombu.__version__,
                "redis_py_version": redis.__version__,
                "python_version": sys.version.split()[0],
                "pool": args.pool,
                "queue": queue,
                "jobs": args.jobs,
                "concurrency": args.concurrency,
                "enqueue_secs": enqueue_secs,
                "process_secs": process_secs,
                "enqueue_jobs_per_sec": args.jobs / enqueue_secs,
                "process_jobs_per_sec": args.jobs / process_secs,
                "process_jobs_per_sec_from_first_task": args.jobs / from_first,
                "worker_boot_secs": ready - launched,
                "peak_rss_kib": summary["peak_rss_kib"],
                "cpus": os.cpu_count(),
                **redis_figures,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
