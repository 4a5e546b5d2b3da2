// BullMQ side of `bench/compare`: the same workload as `celeriac bench`.
//
//   node bench.mjs --port 6390 [--db 1] [-n 20000] [-c 100] [--batch 1000]
//
// 1. Enqueue N no-op jobs with `queue.addBulk` in batches of --batch, no worker running (timed).
// 2. Start one Worker at concurrency -c and wait until all N jobs have completed (timed from
//    the Worker's construction to the N-th `completed` event, as `celeriac bench` times from
//    spawning its worker to the N-th success).
// Jobs are removed on completion and on failure (no results kept), on a fresh queue name.
// Around each phase, a connection of its own reads the server's counters just before and just
// after it (`INFO cpu memory commandstats`), as `celeriac bench` does: Redis CPU per job of
// each phase, `used_memory` per queued job with the backlog in place, and the commands
// (`redis_*` fields; `redis_note` instead when INFO is refused).
// Prints one JSON line on stdout; progress goes to stderr.
//
// `bench/compare` copies this file next to the node_modules it installed (ES modules are
// resolved relative to the importing file, not NODE_PATH) and runs it from there.

import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
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

// --- the server's counters around each phase (see celeriac's bench/redis_info.rs) -----------
const probe = new Redis({ host, port, db, maxRetriesPerRequest: 1, lazyConnect: true });
probe.on('error', () => {}); // a failed reading is reported through redisNote
let probeInfos = 0; // INFO calls the probe made (they show up in cmdstat_info)
let multiSection = true; // Redis 7 takes several sections in one INFO
let redisNote = null;

function parseInfo(text) {
  const r = { cpuUs: null, usedMemory: null, commands: new Map(), ownInfos: probeInfos };
  let sys = null;
  let user = null;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const i = line.indexOf(':');
    if (i < 0) continue;
    const name = line.slice(0, i);
    const value = line.slice(i + 1);
    if (name === 'used_cpu_sys') sys = Number(value);
    else if (name === 'used_cpu_user') user = Number(value);
    else if (name === 'used_memory') r.usedMemory = Number(value);
    else if (name.startsWith('cmdstat_')) {
      const f = Object.fromEntries(value.split(',').map((kv) => kv.split('=')));
      if (f.calls !== undefined && f.usec !== undefined) {
        r.commands.set(name.slice('cmdstat_'.length), [Number(f.calls), Number(f.usec)]);
      }
    }
  }
  if (sys === null || user === null) return null;
  r.cpuUs = (sys + user) * 1e6;
  return r;
}

// A reading now, or null (with redisNote set) once one has failed.
async function readRedis() {
  if (redisNote !== null) return null;
  try {
    if (probe.status === 'wait') await probe.connect();
    let text;
    const before = probeInfos;
    if (multiSection) {
      try {
        text = await probe.call('INFO', 'cpu', 'memory', 'commandstats');
      } catch (e) {
        if (String(e && e.message).includes('NOPERM')) throw e;
        multiSection = false;
      }
    }
    if (!multiSection) text = await probe.call('INFO', 'all');
    probeInfos++;
    const r = parseInfo(String(text));
    if (r === null) throw new Error('INFO has no CPU figures');
    r.ownInfos = before;
    return r;
  } catch (e) {
    const said = String((e && e.message) || e);
    redisNote = said.includes('NOPERM')
      ? `the Redis user may not run INFO (${said}); grant it +info to see them`
      : `INFO failed: ${said}`;
    return null;
  }
}

// What a phase of `n` jobs cost Redis, from the readings before and after it.
function phaseCost(before, after, n) {
  if (!before || !after) return null;
  const own = after.ownInfos - before.ownInfos;
  const commands = [];
  for (const [name, [calls1, usec1]] of after.commands) {
    const [calls0, usec0] = before.commands.get(name) ?? [0, 0];
    let calls = Math.max(0, calls1 - calls0);
    let usec = Math.max(0, usec1 - usec0);
    if (name === 'info' && own > 0 && calls > 0) {
      const mine = Math.min(own, calls);
      usec -= Math.floor((usec * mine) / calls);
      calls -= mine;
    }
    if (calls > 0) {
      commands.push({
        command: name,
        calls,
        usec,
        calls_per_job: calls / n,
        usec_per_call: usec / calls,
        usec_per_job: usec / n,
      });
    }
  }
  commands.sort((a, b) => b.usec - a.usec || a.command.localeCompare(b.command));
  const bytes =
    before.usedMemory === null || after.usedMemory === null
      ? null
      : (after.usedMemory - before.usedMemory) / n;
  return { cpuUsPerJob: Math.max(0, after.cpuUs - before.cpuUs) / n, bytes, commands };
}

// 1. Bulk enqueue.
log(`enqueueing ${jobs} jobs in batches of ${batch} into ${queueName} (db ${db})`);
const enqueueBefore = await readRedis();
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
const enqueueAfter = await readRedis();
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
const processBefore = await readRedis();
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
const processAfter = await readRedis();
const processSecs = Number(endNs - t0) / 1e9;
const processSecsFromFirst = Number(endNs - (firstStartNs ?? t0)) / 1e9;
clearInterval(progress);
log(`processed in ${processSecs.toFixed(3)}s (${failed} failed)`);

await worker.close();
await queue.obliterate({ force: true }).catch(() => {});
await queue.close();
probe.disconnect();
clearTimeout(watchdog);
const enqueueCost = phaseCost(enqueueBefore, enqueueAfter, jobs);
const processCost = phaseCost(processBefore, processAfter, jobs);
const redisFigures = {};
if (enqueueCost) {
  redisFigures.redis_cpu_us_per_job_enqueue = enqueueCost.cpuUsPerJob;
  if (enqueueCost.bytes !== null) redisFigures.redis_bytes_per_queued_job = enqueueCost.bytes;
  redisFigures.redis_commandstats_enqueue = enqueueCost.commands;
}
if (processCost) {
  redisFigures.redis_cpu_us_per_job_process = processCost.cpuUsPerJob;
  redisFigures.redis_commandstats_process = processCost.commands;
}
if (redisNote !== null) redisFigures.redis_note = redisNote;

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
    ...redisFigures,
  }),
);
process.exit(failed === 0 ? 0 : 1);
