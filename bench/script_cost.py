#!/usr/bin/env python3
"""Instructions Redis executes per job in each hot queue script, under callgrind.

    bench/script-cost [-n 3000] [--claim-batch 50] [--in-flight 100] [--lua DIR]

Run by `bench/script-cost`, which starts the redis-server under valgrind and passes --port and
--pid. Loads the queue scripts from DIR (default: the repository's
`crates/celeriac-redis/lua`, so a copy with one piece taken out can be compared with the
original), then enqueues N no-op jobs in batches of 1,000, claims them all in batches of
--claim-batch, completing the oldest batch whenever more than --in-flight jobs are leased,
and reads callgrind's counters after every call.
Prints instructions per job for enqueue, claim and complete, and Redis's `used_memory` per
queued job, as one JSON line.

The arguments mirror what `celeriac-redis` sends (`codec::enqueue_args`, the claim and the
completion in `broker.rs`); if they drift apart, the run fails instead of measuring nothing:
every job must be claimed and every completion applied.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import uuid

import redis

QUEUE = "bench"
PREFIX = f"celeriac:{{{QUEUE}}}:"
KEY_NAMES = [
    "ready", "scheduled", "retry", "active", "meta", "marker", "dead",
    "succeeded", "failed", "cancelled", "expired", "leases", "guard",
]
KEYS = [PREFIX + n for n in KEY_NAMES]
JOB_PREFIX = PREFIX + "job:"
CHANNEL = PREFIX + "done"
DEAD_TTL = "604800000"


def ready_score(priority, run_at):
    """As `ready_score` in codec.rs and common.lua."""
    return f"{(9 - priority) * 4398046511104 + run_at:.0f}"


class Counter:
    """callgrind's instruction counter of one process, read by dumping it (which zeroes it)."""

    def __init__(self, pid, out_dir):
        self.pid, self.out_dir, self.dumps = str(pid), out_dir, 0

    def take(self):
        """Instructions since the previous call."""
        subprocess.run(["callgrind_control", "-d", self.pid], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.dumps += 1
        path = os.path.join(self.out_dir, f"cg.out.{self.dumps}")
        for _ in range(100):
            if os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    for line in f:
                        if line.startswith(("totals:", "summary:")):
                            return int(line.split()[1])
            time.sleep(0.1)
        sys.exit(f"script-cost: callgrind wrote no {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--out-dir", required=True, help="callgrind's output folder")
    ap.add_argument("-n", "--jobs", type=int, default=3000)
    ap.add_argument("--claim-batch", type=int, default=50)
    ap.add_argument("--in-flight", type=int, default=100)
    ap.add_argument("--lua", required=True, help="the folder of the scripts")
    a = ap.parse_args()

    r = redis.Redis(port=a.port)
    with open(os.path.join(a.lua, "includes", "common.lua"), encoding="utf-8") as f:
        common = f.read()

    def script(name):
        with open(os.path.join(a.lua, name), encoding="utf-8") as f:
            return r.register_script(common + "\n" + f.read())

    enqueue = script("enqueueJobs-12.lua")
    claim = script("claimJobs-12.lua")
    complete = script("completeJobs-12.lua")
    counter = Counter(a.pid, a.out_dir)
    n = a.jobs
    now = int(time.time() * 1000)
    ids = [str(uuid.uuid4()) for _ in range(n)]
    spec = json.dumps({"t": "celeriac.bench.noop", "c": now}, separators=(",", ":"))

    counter.take()
    memory_before = r.info("memory")["used_memory"]
    counter.take()
    for i in range(0, n, 1000):
        args = [JOB_PREFIX, str(now)]
        for job_id in ids[i:i + 1000]:
            args += [job_id, "5", str(now), "", "3", "", spec, b"\x00" * 10, "",
                     ready_score(5, now), "celeriac.bench.noop"]
        enqueue(keys=KEYS, args=args)
    enqueued = counter.take()
    memory = r.info("memory")["used_memory"] - memory_before

    # Processing as a worker does it: claim a batch, and complete the oldest batch whenever
    # more than --in-flight jobs are leased; each call counted on its own.
    claim_args = [JOB_PREFIX, str(now), str(a.claim_batch), str(now + 60000), "bench-worker",
                  CHANNEL, "", DEAD_TTL]
    claimed = completed = jobs_claimed = 0
    leased = []

    def complete_oldest():
        batch = leased.pop(0)
        args = [JOB_PREFIX, str(now), DEAD_TTL, CHANNEL]
        for reply in batch:
            job_id, token = reply.split(b"\t", 2)[:2]
            args += [job_id, token, "s", b"", "0", ""]
        applied = complete(keys=KEYS, args=args)
        if applied != [1] * len(batch):
            sys.exit(f"script-cost: completions refused: {applied}")
        return counter.take()

    counter.take()
    while True:
        got = claim(keys=KEYS, args=claim_args)
        claimed += counter.take()
        if not got:
            break
        jobs_claimed += len(got)
        leased.append(got)
        while sum(map(len, leased)) > a.in_flight:
            completed += complete_oldest()
    while leased:
        completed += complete_oldest()
    if jobs_claimed != n:
        sys.exit(f"script-cost: claimed {jobs_claimed} of {n} jobs: do the arguments still "
                 "match what celeriac-redis sends?")

    print(json.dumps({
        "jobs": n,
        "claim_batch": a.claim_batch,
        "in_flight": a.in_flight,
        "enqueue_instructions_per_job": round(enqueued / n),
        "claim_instructions_per_job": round(claimed / n),
        "complete_instructions_per_job": round(completed / n),
        "lifecycle_instructions_per_job": round((enqueued + claimed + completed) / n),
        "used_memory_per_queued_job": round(memory / n),
    }))


if __name__ == "__main__":
    main()
