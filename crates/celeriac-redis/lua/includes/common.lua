-- includes/common.lua: prepended to every script.
--
-- Every script of a queue receives the same thirteen keys, all under the queue's hash tag
-- `{<queue>}`, so a script runs on one Redis Cluster node:
--   KEYS[1]  ready      ZSET  pending jobs; score = (9 - priority) * 2^42 + run_at, member =
--                             `<sequence, 15 digits>:<id>`: priority first, then due time, then
--                             enqueue order (equal scores sort by member)
--   KEYS[2]  scheduled  ZSET  delayed jobs; score = run_at (ms)
--   KEYS[3]  retry      ZSET  jobs waiting for their next attempt; score = run_at (ms)
--   KEYS[4]  active     ZSET  leased jobs; score = lease_until (ms)
--   KEYS[5]  meta       HASH  paused (0/1), seq (FIFO counter), fence (token counter), and for
--                             tasks with limits: run:<task> (running jobs), tat:<task> (next
--                             start a rate allows), lim:<id> (task of a running limited job)
--   KEYS[6]  marker     ZSET  one member "w" while there may be work; idle workers BZPOPMIN it
--   KEYS[7]  dead       ZSET  dead letters; score = finished_at (ms)
--   KEYS[8]  succeeded  ZSET  kept results; score = keep_until (ms)
--   KEYS[9]  failed     ZSET  failed jobs; score = keep_until (ms)
--   KEYS[10] cancelled  ZSET  cancelled jobs; score = keep_until (ms)
--   KEYS[11] expired    ZSET  expired jobs; score = keep_until (ms)
--   KEYS[12] leases     HASH  job id -> fencing token, for every leased job (one HMGET checks a
--                             whole batch of acknowledgements)
--   KEYS[13] guard      none  never created (see "Slot migration" below)
-- `active` and `leases` also hold one entry that is not a job, KEEPER (below): score +inf in
-- `active`, so no deadline reaches it, and value `keeper` in `leases`, which no token equals.
-- ARGV[1] is always the job-key prefix `<prefix>:{<queue>}:job:`; job keys are that prefix and
-- the id, so they share the queue's hash tag (and slot) with the keys above, as do unique keys
-- (`<prefix>:{<queue>}:unique:<key>`).
--
-- Slot migration. Job and unique keys are found inside a script, so they cannot all be
-- declared; what a script may touch is every key of its queue's slot. The guard makes that safe
-- on Cluster: while a slot migrates, Redis serves a command declaring several keys only on a
-- node that holds all of them (otherwise TRYAGAIN or ASK, then TRYAGAIN, before anything runs),
-- and no node ever holds the guard. So a queue script runs only on the node that owns its slot
-- outright, where every key of the slot is local; during a migration every queue script is
-- refused whole, and the client retries until the slot has moved (MOVED). Without the guard a
-- script could run on the source, find a job key already moved, and fail after its first
-- write, or run on the target under ASKING and read a job key not yet moved as missing.
--
-- Errors. A Lua error keeps the writes made before it. So scripts check every record they read
-- before they change anything for it (a malformed record never raises: `tonumber(x) or ...`,
-- `pcall(cjson.decode, ...)`), and a job moves between sets by being added to its destination
-- before it is removed from its source: whatever fails, every job stays in at least one set.
-- A job whose record is malformed goes to the dead letters, the reason naming the field: a
-- number that is not a decimal integer in its range (`nan`, `inf`, `1e400`, hex, text), a
-- missing field, a state that does not match the set the job is in, or a key that holds
-- something other than a hash (replaced by a dead-letter record saying what it was).
--
-- Numbers are passed to Redis through `num`, never as raw Lua numbers, which Redis would
-- format with 14 significant digits.

local K_READY, K_SCHED, K_RETRY, K_ACTIVE, K_META, K_MARKER = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local K_DEAD, K_SUCCEEDED, K_FAILED, K_CANCELLED, K_EXPIRED = KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11]
local K_LEASES = KEYS[12]
-- An entry longer than Redis's `zset-max-listpack-value` and `hash-max-listpack-value` (64
-- bytes by default) keeps `active` and `leases` in their hash-table encodings, where adding,
-- finding and removing a lease costs the same at any number in flight. Below 128 entries Redis
-- would otherwise keep each as a listpack, a flat array scanned whole by every one of those
-- operations: with a hundred jobs in flight, a quarter of what claiming and completing a job
-- cost. It is added with every claim that leases a job, so it comes back if deleted, and
-- readers pass over it (counts of `active` are `ZCOUNT -inf (+inf`). 256 bytes, so a server
-- configured with larger listpack values up to 255 is covered too.
local KEEPER = '~not-a-job~keeps-this-set-in-hash-table-encoding~see-celeriac-redis-lua-includes-common.lua~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~'
local PREFIX = ARGV[1]
-- Unique keys: `<prefix>:{<queue>}:unique:<key>` holding `<mode>|<job id>` (mode: s, f, w, d;
-- a window adds `|<until ms>`).
local UPREFIX = string.sub(PREFIX, 1, -5) .. 'unique:'
-- Keys held until started or finished also expire after this long, a bound on what a lost
-- release can keep; windows expire at their end.
local UNIQUE_BACKSTOP_MS = 7 * 24 * 3600 * 1000

-- Bounded work: no call moves, reaps or deletes more than this many jobs. A number given to
-- redis.call is formatted on every call (as much work as a small command): the text form is
-- kept for arguments.
local BATCH, BATCH_S = 1000, '1000'

local function num(x)
  return string.format('%.0f', x)
end

-- A field that holds a decimal integer as Celeriac writes it (an optional minus and at most 16
-- digits, so it is exact in a Lua number), as a number; nil for anything else: missing, text,
-- `nan`, `inf`, `1e400`, hex, fractions, spaces. `tonumber` alone accepts all of those, and a
-- NaN or an infinity reaching ZADD or PEXPIRE fails the whole script.
local function int_of(x)
  if type(x) == 'string' and #x <= 17 and string.find(x, '^%-?%d+$') then
    return tonumber(x)
  end
  return nil
end

local function ready_score(priority, run_at)
  return num((9 - priority) * 4398046511104 + run_at)
end

-- A ready-set member from a sequence number (a number: callers read `q` with int_of).
local function ready_member(seq, id)
  return string.format('%015.0f', seq) .. ':' .. id
end

-- The job id of a ready-set member.
local function id_of(member)
  return string.sub(member, 17)
end

local function add_ready(id, priority, run_at, seq)
  redis.call('ZADD', K_READY, ready_score(priority, run_at), ready_member(seq, id))
end

-- Wakes one idle worker; a worker that claims and leaves work behind wakes the next.
local function wake()
  redis.call('ZADD', K_MARKER, '0', 'w')
end

-- History (celeriac_core::backend::History): `<prefix>:{<queue>}:hist:<m|h>:<bucket start>`,
-- HASHes of `<field>|<task>` -> count (see keys.rs), kept 48 hours (minutes) and 90 days
-- (hours) after the bucket ends, as `MINUTES_KEPT_MS` and `HOURS_KEPT_MS` say.
local HPREFIX = string.sub(PREFIX, 1, -5) .. 'hist:'
local HISTORY = { { 'm', 60000, 48 * 3600000 }, { 'h', 3600000, 90 * 24 * 3600000 } }

-- Adds the jobs stored per task (`task -> n`) to the history's minute and hour of `now`.
local function count_enqueued(now, per_task)
  if next(per_task) == nil then return end
  for _, r in ipairs(HISTORY) do
    local start = now - now % r[2]
    local key = HPREFIX .. r[1] .. ':' .. num(start)
    local fresh = false
    for task, n in pairs(per_task) do
      if redis.call('HINCRBY', key, 'e|' .. task, n) == n then fresh = true end
    end
    -- Set once per field created, not per call; relative to the caller's clock, as every
    -- time a script judges.
    if fresh then redis.call('PEXPIRE', key, num(start + r[2] + r[3] - now)) end
  end
end

-- A record's retention (ms): its `tt` field, one day when absent, not an integer or negative.
local function ttl_of(tt)
  local ttl = int_of(tt)
  if not ttl or ttl < 0 then return 86400000 end
  return ttl
end

-- Ends a job that was asked to stop (flag `cx`) instead of letting it run again.
local function end_cancelled(id, key, now, channel)
  local ttl = ttl_of(redis.call('HGET', key, 'tt'))
  redis.call('HSET', key, 's', '7', 'f', num(now))
  redis.call('HDEL', key, 'w')
  redis.call('PEXPIRE', key, num(ttl))
  redis.call('ZADD', K_CANCELLED, num(now + ttl), id)
  redis.call('PUBLISH', channel, id)
end

-- Puts a job back in the ready set at its original place in line (fields that do not read
-- as integers put it at priority 5, due at 0, first of its score: the next claim judges the
-- record).
local function requeue(id, key)
  local f = redis.call('HMGET', key, 'pr', 'r', 'q')
  add_ready(id, int_of(f[1]) or 5, int_of(f[2]) or 0, int_of(f[3]) or 0)
end

-- Takes a waiting job out of the ready set: by its member, or, when its sequence `q` does not
-- give the member (a malformed record), by looking for its id among the members.
local function remove_ready(id, q)
  local seq = int_of(q)
  if seq and redis.call('ZREM', K_READY, ready_member(seq, id)) == 1 then return end
  local cursor = '0'
  repeat
    local page = redis.call('ZSCAN', K_READY, cursor, 'MATCH', '*:' .. id, 'COUNT', 1000)
    cursor = page[1]
    for i = 1, #page[2], 2 do
      if id_of(page[2][i]) == id then redis.call('ZREM', K_READY, page[2][i]) end
    end
  until cursor == '0'
end

-- Fields of a job's record (HMGET), or nil and the key's type when the key holds something
-- other than a hash (WRONGTYPE would otherwise fail the whole script, for every job of it).
local function read_record(key, ...)
  local f = redis.pcall('HMGET', key, ...)
  if f.err then return nil, redis.call('TYPE', key).ok end
  return f
end

-- Ends a job whose record is malformed as a dead letter, with `why` (it names the field) as
-- its error; the caller takes it out of the set it was in afterwards. Returns the error
-- recorded: {kind, message, attempt}.
local function dead_malformed(id, key, now, dead_ttl, channel, why, attempts)
  local ek, em = 'malformed_job', 'the job\'s record in Redis is malformed: ' .. why
  local ea = num(math.max(int_of(attempts) or 0, 0))
  redis.call('HSET', key, 's', '6', 'f', num(now), 'ek', ek, 'em', em, 'ea', ea)
  redis.call('HDEL', key, 'w')
  redis.call('PEXPIRE', key, num(dead_ttl))
  redis.call('ZADD', K_DEAD, num(now), id)
  redis.call('PUBLISH', channel, id)
  return {ek, em, ea}
end

-- Ends a job whose key holds a `kind` (a string, a list...) instead of a hash: the key is
-- replaced by a dead-letter record saying so. Returns the error recorded, as dead_malformed.
local function dead_foreign(id, key, now, dead_ttl, channel, kind)
  redis.call('DEL', key)
  return dead_malformed(id, key, now, dead_ttl, channel,
    'the key holds a ' .. tostring(kind) .. ', not a hash (its value is gone)', 0)
end

-- Whether a field reads as an integer within [lo, hi].
local function int_within(x, lo, hi)
  local n = int_of(x)
  return n ~= nil and n >= lo and n <= hi
end

-- What is wrong with a record about to be leased or reaped, or nil, from its fields a
-- (attempts), m (max attempts), x (expires at), tt (result ttl), r (run at), pr (priority):
-- the first two must be integers (attempts from 0, max attempts from 1), the others integers
-- when present (nil: not checked), the result ttl not negative and the priority 0 to 9.
local function malformed(a, m, x, tt, r, pr)
  if not int_within(a, 0, 4294967295) then
    return 'field `a` (attempts) is missing or not a count'
  end
  if not int_within(m, 1, 4294967295) then
    return 'field `m` (max attempts) is missing or not a count from 1'
  end
  if x and not int_of(x) then return 'field `x` (expires at) is not an integer' end
  if tt and not int_within(tt, 0, 1e16) then
    return 'field `tt` (result ttl) is not an integer from 0'
  end
  if r and not int_of(r) then return 'field `r` (run at) is not an integer' end
  if pr and not int_within(pr, 0, 9) then return 'field `pr` (priority) is not 0 to 9' end
  return nil
end

-- A command over many arguments, in slices (Lua's unpack has a limit).
local function sliced(cmd, key, args)
  for i = 1, #args, 500 do
    redis.call(cmd, key, unpack(args, i, math.min(i + 499, #args)))
  end
end

local function zrem_all(key, ids)
  sliced('ZREM', key, ids)
end

-- A lease-table value is the fencing token, followed by `|<unique key>` for a job unique until
-- finished (so its key is released with the acknowledgement that ends it).
local function token_of(v)
  if not v then return v end
  local bar = string.find(v, '|', 1, true)
  if bar then return string.sub(v, 1, bar - 1) end
  return v
end

local function ukey_of(v)
  local bar = v and string.find(v, '|', 1, true)
  if bar then return string.sub(v, bar + 1) end
  return nil
end

-- Deletes a unique key if `id` still holds it in `mode` (a key of another type is not its,
-- and without a mode, a malformed record, nothing is released).
local function release_unique(ukey, id, mode)
  if not mode then return end
  local k = UPREFIX .. ukey
  if redis.pcall('GET', k) == mode .. '|' .. id then
    redis.call('DEL', k)
  end
end

-- The `id, token` pairs in ARGV from position `first` on, as two lists.
local function id_token_pairs(first)
  local ids, tokens = {}, {}
  for i = first, #ARGV, 2 do
    ids[#ids + 1] = ARGV[i]
    tokens[#tokens + 1] = ARGV[i + 1]
  end
  return ids, tokens
end

-- The current fencing token of each id (false when it holds no lease), in one or a few calls.
local function held_tokens(ids)
  local held = {}
  for i = 1, #ids, 500 do
    local last = math.min(i + 499, #ids)
    local part = redis.call('HMGET', K_LEASES, unpack(ids, i, last))
    for j = 1, last - i + 1 do
      held[i + j - 1] = part[j]
    end
  end
  return held
end

-- Ends the leases of these ids: out of the active set and the lease table, and a limited
-- task's running count gives their places back.
local function end_leases(ids)
  sliced('ZREM', K_ACTIVE, ids)
  sliced('HDEL', K_LEASES, ids)
  -- Only paused, seq and fence: no task of this queue has limits.
  if #ids == 0 or redis.call('HLEN', K_META) <= 3 then return end
  local fields = {}
  for i, id in ipairs(ids) do fields[i] = 'lim:' .. id end
  for i = 1, #fields, 500 do
    local last = math.min(i + 499, #fields)
    local tasks = redis.call('HMGET', K_META, unpack(fields, i, last))
    for j = 1, last - i + 1 do
      if tasks[j] then
        redis.call('HINCRBY', K_META, 'run:' .. tasks[j], -1)
        redis.call('HDEL', K_META, fields[i + j - 1])
      end
    end
  end
end
