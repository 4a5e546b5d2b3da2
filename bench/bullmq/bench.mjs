// BullMQ side of `bench/compare`: the same workload as `celeriac bench`.
//
//   node bench.mjs --port 6390 [--db 1] [-n 20000] [-c 100] [--batch 1000]
//
// 1. Enqueue N no-op jobs with `queue.addBulk` in batches of --batch, no worker running (timed).
// 2. Start one Worker at concurrency -c and wait until all N jobs have completed (timed from
//    the Worker's construction to the N-th `completed` event, as `celeriac bench` times from
//    spawning its worker to the N-th success).
// Jobs are removed on completion and on failure (no results kept), on a fresh queue name.
// Prints one JSON line on stdout; progress goes to stderr.
//
// `bench/compare` copies this file next to the node_modules it installed (ES modules are
// resolved relative to the importing file, not NODE_PATH) and runs it from there.

import { Queue, Worker } from 'bullmq';
import { createRequire } from 'node:module';
import os from 'node:os';

const require = createRequire(import.meta.url);

function arg(names, dflt) {
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    if (names.includes(argv[i]) && i + 1 < argv.length) return argv[i + 1];
  }
  return dflt;
}

const port = Number(arg(['--port'], '6379'));
const host = arg(['--host'], '127.0.0.1');
const db = Number(arg(['--db'], '1'));
const jobs = Number(arg(['-n', '--jobs'], '20000'));
const concurrency = Number(arg(['-c', '--concurrency'], '100'));
const batch = Number(arg(['--batch'], '1000'));
const timeoutMs = Number(arg(['--timeout-secs'], '480')) * 1000;

const log = (...a) => console.error('[bullmq]', ...a);
const connection = { host, port, db, maxRetriesPerRequest: null };
const queueName = `celeriac-bench-${process.pid}-${Date.now()}`;
const jobOpts = { removeOnComplete: true, removeOnFail: true };

const watchdog = setTimeout(() => {
  console.error(`[bullmq] error: gave up after ${timeoutMs / 1000}s`);
  process.exit(2);
}, timeoutMs);

const queue = new Queue(queueName, { connection, defaultJobOptions: jobOpts });
await queue.waitUntilReady();

// 1. Bulk enqueue.
log(`enqueueing ${jobs} jobs in batches of ${batch} into ${queueName} (db ${db})`);
let t0 = process.hrtime.bigint();
for (let sent = 0; sent < jobs; ) {
  const n = Math.min(batch, jobs - sent);
  const ts = Date.now() * 1000;
  const bulk = new Array(n);
  for (let i = 0; i < n; i++) bulk[i] = { name: 'noop', data: { t: ts }, opts: jobOpts };
  await queue.addBulk(bulk);
  sent += n;
}
const enqueueSecs = Number(process.hrtime.bigint() - t0) / 1e9;
const waiting = await queue.getWaitingCount();
log(`enqueued in ${enqueueSecs.toFixed(3)}s (${waiting} waiting)`);
if (waiting !== jobs) {
  console.error(`[bullmq] error: expected ${jobs} waiting jobs, found ${waiting}`);
  process.exit(1);
}

// 2. Process.
let completed = 0;
let failed = 0;
let firstStartNs = null;
let resolveDone;
const done = new Promise((r) => (resolveDone = r));
t0 = process.hrtime.bigint();
const worker = new Worker(
  queueName,
  async (job) => {
    if (firstStartNs === null) firstStartNs = process.hrtime.bigint();
    return undefined; // no-op
  },
  { connection, concurrency, autorun: true },
);
worker.on('completed', () => {
  completed++;
  if (completed + failed >= jobs) resolveDone();
});
worker.on('failed', (_job, err) => {
  failed++;
  if (failed <= 3) log('job failed:', err && err.message);
  if (completed + failed >= jobs) resolveDone();
});
worker.on('error', (err) => log('worker error:', err && err.message));
const progress = setInterval(() => log(`processed ${completed}/${jobs}`), 2000);
await done;
const endNs = process.hrtime.bigint();
const processSecs = Number(endNs - t0) / 1e9;
const processSecsFromFirst = Number(endNs - (firstStartNs ?? t0)) / 1e9;
clearInterval(progress);
log(`processed in ${processSecs.toFixed(3)}s (${failed} failed)`);

await worker.close();
await queue.obliterate({ force: true }).catch(() => {});
await queue.close();
clearTimeout(watchdog);

let ioredisVersion = null;
try {
  ioredisVersion = require('ioredis/package.json').version;
} catch {}

console.log(
  JSON.stringify({
    system: 'BullMQ',
    version: require('bullmq/package.json').version,
    ioredis_version: ioredisVersion,
    node_version: process.version,
    queue: queueName,
    jobs,
    batch,
    concurrency,
    failed,
    enqueue_secs: enqueueSecs,
    process_secs: processSecs,
    enqueue_jobs_per_sec: jobs / enqueueSecs,
    process_jobs_per_sec: jobs / processSecs,
    process_jobs_per_sec_from_first_job: jobs / processSecsFromFirst,
    peak_rss_kib: process.resourceUsage().maxRSS,
    cpus: os.cpus().length,
  }),
);
process.exit(failed === 0 ? 0 : 1);
