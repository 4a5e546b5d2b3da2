-- Celeriac's embedded store. One row per job: the job, its state, lease and outcome.
CREATE TABLE IF NOT EXISTS celeriac_jobs (
    seq              INTEGER PRIMARY KEY,      -- insertion order, the FIFO tie-breaker
    id               BLOB NOT NULL UNIQUE,     -- UUIDv7, 16 bytes
    queue            TEXT NOT NULL,
    task             TEXT NOT NULL,
    state            INTEGER NOT NULL,         -- JobState::code
    priority         INTEGER NOT NULL,         -- 0..=9, higher first
    run_at           INTEGER NOT NULL,         -- ms; due time while pending/scheduled/retrying
    payload          BLOB NOT NULL,
    encoding         INTEGER NOT NULL,
    attempts         INTEGER NOT NULL,
    max_attempts     INTEGER NOT NULL,
    expires_at       INTEGER,
    soft_limit_ms    INTEGER,
    hard_limit_ms    INTEGER,
    headers          TEXT,                     -- JSON object, NULL when empty
    parent_id        BLOB,
    root_id          BLOB,
    result_ttl_ms    INTEGER,                  -- NULL: keep no result on success
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    token            INTEGER,                  -- fencing token of the current lease
    lease_until      INTEGER,
    worker           TEXT,
    result           BLOB,
    error_kind       TEXT,
    error_message    TEXT,
    error_attempt    INTEGER,
    progress         REAL,
    progress_message TEXT,
    keep_until       INTEGER,                  -- finished rows are deleted after this
    cancel_requested INTEGER NOT NULL DEFAULT 0 -- 1: stop it, and never run it again
);
CREATE INDEX IF NOT EXISTS celeriac_jobs_ready
    ON celeriac_jobs (queue, priority DESC, run_at, seq) WHERE state = 0;
CREATE INDEX IF NOT EXISTS celeriac_jobs_due
    ON celeriac_jobs (run_at) WHERE state IN (1, 3);
CREATE INDEX IF NOT EXISTS celeriac_jobs_due_by_queue
    ON celeriac_jobs (queue, run_at) WHERE state IN (1, 3);
CREATE INDEX IF NOT EXISTS celeriac_jobs_leased
    ON celeriac_jobs (lease_until) WHERE state = 2;
CREATE INDEX IF NOT EXISTS celeriac_jobs_kept
    ON celeriac_jobs (keep_until) WHERE keep_until IS NOT NULL;
CREATE INDEX IF NOT EXISTS celeriac_jobs_dead
    ON celeriac_jobs (finished_at) WHERE state = 6;
-- Counts dead letters per queue and finds a queue's oldest, for the cap a reap enforces.
CREATE INDEX IF NOT EXISTS celeriac_jobs_dead_by_queue
    ON celeriac_jobs (queue, state, finished_at) WHERE state = 6;
-- Unique keys. A key is held while its job's state says so (see ops::live_holder), so it is
-- released by the very update that ends that state; rows are swept when their job is gone.
CREATE TABLE IF NOT EXISTS celeriac_unique (
    queue   TEXT NOT NULL,
    key     TEXT NOT NULL,
    job_id  BLOB NOT NULL,
    mode    TEXT NOT NULL,                     -- UniqueFor::code
    until   INTEGER,                           -- windows: held until then
    PRIMARY KEY (queue, key)
);
-- Task rates (GCRA): the next moment a job of the task may start, per queue and task.
CREATE TABLE IF NOT EXISTS celeriac_rates (
    key TEXT PRIMARY KEY,                      -- queue, unit separator, task
    tat INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS celeriac_jobs_running_task
    ON celeriac_jobs (queue, task) WHERE state = 2;
CREATE TABLE IF NOT EXISTS celeriac_queues (
    name   TEXT PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS celeriac_meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO celeriac_meta (key, value) VALUES ('fence', 0);
-- Joins, the barrier after a group: a header per join counts the distinct indexes that brought
-- an output, so an arrival tells whether the join is complete without reading the members.
CREATE TABLE IF NOT EXISTS celeriac_joins (
    id         BLOB PRIMARY KEY,               -- the join's id, 16 bytes
    total      INTEGER NOT NULL,               -- members of the group
    arrived    INTEGER NOT NULL,               -- distinct indexes with an output
    failure    TEXT,                           -- the first failure's message; never replaced
    keep_until INTEGER NOT NULL                -- last arrival + ttl; swept by reap, or on access
);
CREATE INDEX IF NOT EXISTS celeriac_joins_kept ON celeriac_joins (keep_until);
-- The outputs of a join's members, one row per index (the first output of an index stays).
CREATE TABLE IF NOT EXISTS celeriac_join_members (
    join_id BLOB NOT NULL,
    idx     INTEGER NOT NULL,
    output  BLOB NOT NULL,                     -- JSON text
    PRIMARY KEY (join_id, idx)
);
-- Workflow records (chain, group, chord). A running record is kept until it finishes; a
-- finished one until keep_until (finished_at + ttl), swept by reap.
CREATE TABLE IF NOT EXISTS celeriac_workflows (
    id          BLOB PRIMARY KEY,              -- the workflow's id, 16 bytes
    name        TEXT NOT NULL,
    state       INTEGER NOT NULL,              -- WorkflowState::code
    result      BLOB,
    error       TEXT,
    created_at  INTEGER NOT NULL,
    finished_at INTEGER,
    ttl_ms      INTEGER NOT NULL,
    keep_until  INTEGER
);
CREATE INDEX IF NOT EXISTS celeriac_workflows_kept
    ON celeriac_workflows (keep_until) WHERE keep_until IS NOT NULL;
-- Leader leases (the scheduler's): one row per lease name. The token grows whenever the lease
-- changes hands and is kept when it is released, so a later holder always gets a larger one.
CREATE TABLE IF NOT EXISTS celeriac_leaders (
    name   TEXT PRIMARY KEY,
    holder TEXT NOT NULL,                      -- '' once released
    token  INTEGER NOT NULL,
    until  INTEGER NOT NULL                    -- ms; held while until > now
);
-- Periodic schedules: the last tick handled, and whether `celeriac schedules pause` paused it.
CREATE TABLE IF NOT EXISTS celeriac_schedules (
    name      TEXT PRIMARY KEY,
    last_tick INTEGER,
    paused    INTEGER NOT NULL DEFAULT 0
);
-- The key-value store (KvStore, the cache's L2). Values expire at expires_at (ms, judged by the
-- caller's now; NULL: never, as counters, whose value is the count in decimal text). Expired
-- rows read as absent at once and are swept by reap in batches.
CREATE TABLE IF NOT EXISTS celeriac_kv (
    key        TEXT PRIMARY KEY,
    value      BLOB NOT NULL,
    expires_at INTEGER,
    written    INTEGER NOT NULL DEFAULT 0      -- celeriac_meta 'kv_written' at the last write
);
CREATE INDEX IF NOT EXISTS celeriac_kv_expiry
    ON celeriac_kv (expires_at) WHERE expires_at IS NOT NULL;
-- The order a capped file (?max_bytes=) evicts values in: least recently written first.
-- Counters (no expiry) are never evicted, so they are not in it.
CREATE INDEX IF NOT EXISTS celeriac_kv_written
    ON celeriac_kv (written) WHERE expires_at IS NOT NULL;
-- 'kv_bytes': the bytes of every row's key and value, kept exact by the triggers below whoever
-- writes the table; 'kv_evicted': the values a cap evicted since the file was created;
-- 'kv_written': the sequence of writes that orders eviction.
INSERT OR IGNORE INTO celeriac_meta (key, value) VALUES ('kv_bytes', 0);
INSERT OR IGNORE INTO celeriac_meta (key, value) VALUES ('kv_evicted', 0);
INSERT OR IGNORE INTO celeriac_meta (key, value) VALUES ('kv_written', 0);
CREATE TRIGGER IF NOT EXISTS celeriac_kv_bytes_insert AFTER INSERT ON celeriac_kv BEGIN
    UPDATE celeriac_meta
       SET value = value + COALESCE(length(CAST(NEW.key AS BLOB)), 0)
                         + COALESCE(length(CAST(NEW.value AS BLOB)), 0)
     WHERE key = 'kv_bytes';
END;
CREATE TRIGGER IF NOT EXISTS celeriac_kv_bytes_delete AFTER DELETE ON celeriac_kv BEGIN
    UPDATE celeriac_meta
       SET value = value - COALESCE(length(CAST(OLD.key AS BLOB)), 0)
                         - COALESCE(length(CAST(OLD.value AS BLOB)), 0)
     WHERE key = 'kv_bytes';
END;
CREATE TRIGGER IF NOT EXISTS celeriac_kv_bytes_update AFTER UPDATE OF key, value ON celeriac_kv
BEGIN
    UPDATE celeriac_meta
       SET value = value + COALESCE(length(CAST(NEW.key AS BLOB)), 0)
                         + COALESCE(length(CAST(NEW.value AS BLOB)), 0)
                         - COALESCE(length(CAST(OLD.key AS BLOB)), 0)
                         - COALESCE(length(CAST(OLD.value AS BLOB)), 0)
     WHERE key = 'kv_bytes';
END;
-- Lease locks of the key-value store (their own namespace: a lock and a value may share a key).
-- Held while until > now; swept by reap once expired.
CREATE TABLE IF NOT EXISTS celeriac_kv_locks (
    key   TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    until INTEGER NOT NULL                     -- ms
);
-- Broadcast messages, for subscribers in every process on the file: each subscription polls
-- for rows past the last seq it saw. Rows older than the retention (60 s) are swept by publish
-- and reap; the highest swept seq is kept in celeriac_meta as 'kv_swept', so a subscriber
-- that had not seen a swept row knows it missed messages.
CREATE TABLE IF NOT EXISTS celeriac_kv_events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    message BLOB NOT NULL,
    at      INTEGER NOT NULL                   -- ms, when published
);
CREATE INDEX IF NOT EXISTS celeriac_kv_events_channel ON celeriac_kv_events (channel, seq);
CREATE INDEX IF NOT EXISTS celeriac_kv_events_at ON celeriac_kv_events (at);
INSERT OR IGNORE INTO celeriac_meta (key, value) VALUES ('kv_swept', 0);
-- Rate limiter state (RateLimitStore): one row per key and quota (Quota::state_id), three
-- integers whose meaning depends on the algorithm (celeriac_core::limit::maths). A row reads as
-- fresh once expires_at (ms) is not after the caller's now; reap sweeps such rows in batches.
CREATE TABLE IF NOT EXISTS celeriac_limits (
    key        TEXT NOT NULL,
    quota      TEXT NOT NULL,
    a          INTEGER NOT NULL,
    b          INTEGER NOT NULL,
    c          INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (key, quota)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS celeriac_limits_expiry ON celeriac_limits (expires_at);
-- Concurrency permits: one row per key and holder, held while until (ms) > now; reap sweeps
-- expired ones, so a holder that died frees its permit when its lease ends.
CREATE TABLE IF NOT EXISTS celeriac_limit_permits (
    key    TEXT NOT NULL,
    holder TEXT NOT NULL,
    until  INTEGER NOT NULL,
    PRIMARY KEY (key, holder)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS celeriac_limit_permits_until ON celeriac_limit_permits (until);
-- Shared circuit breakers (BreakerStore). One record per breaker, judged by the rules of
-- celeriac_core::breaker::shared::SharedRecord; every row expires at expires_at (ms, by the
-- caller's now: ttl after the breaker's last write) and is swept by reap and by the calls.
CREATE TABLE IF NOT EXISTS celeriac_breakers (
    name       TEXT PRIMARY KEY,
    state      INTEGER NOT NULL,               -- BreakerState::code
    open_until INTEGER NOT NULL,               -- ms
    trips      INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    since      INTEGER NOT NULL,               -- ms
    probe_ok   INTEGER NOT NULL,
    probe_fail INTEGER NOT NULL,
    expires_at INTEGER NOT NULL                -- ms
);
-- Signals of a breaker's instances, per bucket of time (epoch = now / bucket_ms).
CREATE TABLE IF NOT EXISTS celeriac_breaker_signals (
    name       TEXT NOT NULL,
    epoch      INTEGER NOT NULL,
    instance   TEXT NOT NULL,
    calls      INTEGER NOT NULL,
    failures   INTEGER NOT NULL,
    slow       INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,               -- ms
    PRIMARY KEY (name, epoch, instance)
) WITHOUT ROWID;
-- Half-open probe reservations: live while expires_at > now.
CREATE TABLE IF NOT EXISTS celeriac_breaker_probes (
    name       TEXT NOT NULL,
    token      TEXT NOT NULL,
    expires_at INTEGER NOT NULL,               -- ms
    PRIMARY KEY (name, token)
) WITHOUT ROWID;
-- The fleet's clock (see clock.rs): the wall time the processes agreed on when the host's boot
-- clock read `boot_ms`, in this boot of the host. One row.
CREATE TABLE IF NOT EXISTS celeriac_clock (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    boot_id   TEXT NOT NULL,
    wall_ms   INTEGER NOT NULL,                -- ms since the epoch
    boot_ms   INTEGER NOT NULL,                -- the boot clock at wall_ms
    slewed_at INTEGER NOT NULL                 -- the boot clock at the anchor's last move
);
-- The process registry: one row per live worker or beat, refreshed by the process itself.
CREATE TABLE IF NOT EXISTS celeriac_processes (
    id         TEXT PRIMARY KEY,
    info       TEXT NOT NULL,                  -- the entry (JSON)
    expires_at INTEGER NOT NULL,               -- ms, fleet clock
    commands   TEXT NOT NULL DEFAULT ''        -- commands waiting for it: quiet, stop
);
-- Jobs per queue and state, kept by the operations that change them (counts.rs), so counting
-- a queue costs one row per state however many jobs it holds.
CREATE TABLE IF NOT EXISTS celeriac_queue_counts (
    queue TEXT NOT NULL,
    state INTEGER NOT NULL,                    -- JobState::code
    n     INTEGER NOT NULL,
    PRIMARY KEY (queue, state)
) WITHOUT ROWID;
-- The capped stream of events (events.rs): failures, dead letters, cancellations and the
-- administrative actions, each as JSON; the oldest beyond the cap are dropped on append.
CREATE TABLE IF NOT EXISTS celeriac_events (
    seq  INTEGER PRIMARY KEY,
    body TEXT NOT NULL
);
-- History (history.rs): what happened per queue and task in one minute (span 60000) or one
-- hour (span 3600000): counts, and run and wait times as mergeable sketches (JSON). Every
-- record adds to its minute and its hour; minutes are kept 48 hours, hours 90 days.
CREATE TABLE IF NOT EXISTS celeriac_history (
    span      INTEGER NOT NULL,                -- ms: 60000 or 3600000
    start     INTEGER NOT NULL,                -- ms, fleet clock: the bucket's start
    queue     TEXT NOT NULL,
    task      TEXT NOT NULL,
    enqueued  INTEGER NOT NULL DEFAULT 0,
    started   INTEGER NOT NULL DEFAULT 0,
    succeeded INTEGER NOT NULL DEFAULT 0,
    retried   INTEGER NOT NULL DEFAULT 0,
    failed    INTEGER NOT NULL DEFAULT 0,
    dead      INTEGER NOT NULL DEFAULT 0,
    cancelled INTEGER NOT NULL DEFAULT 0,
    run_ms    TEXT,                            -- celeriac_core::sketch::Sketch as JSON
    wait_ms   TEXT,
    PRIMARY KEY (span, start, queue, task)
) WITHOUT ROWID;
