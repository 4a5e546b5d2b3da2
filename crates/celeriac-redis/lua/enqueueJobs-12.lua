-- enqueueJobs-12: stores a batch of new jobs atomically (all or none).
--
-- KEYS: the queue's twelve keys and the migration guard (includes/common.lua); the name's
-- `-12` counts the twelve. Job and unique keys come from the prefix: safe because of the guard.
-- ARGV[1] job-key prefix, ARGV[2] now (ms), then 11 values per job:
--   id, priority, run_at, expires_at ('' = never), max_attempts, result_ttl_ms ('' = keep no
--   result), spec (JSON of the immutable fields), payload (bytes), unique ('' = none, else
--   `<mode>|<ms>|<key>`: mode s until started, f until finished, w window, d debounce; ms the
--   window or debounce delay), ready-set score, task name.
-- Returns: the jobs another job stands for, as flat pairs `position (1-based), holder id`: the
--   holder of its unique key (nothing stored; a waiting debounce holder takes the new payload
--   and start). Every job not listed stands for itself, including one whose id already exists:
--   it is not stored again (enqueueing is idempotent by id). Listing only the exceptions keeps
--   the reply of a plain batch empty.
-- Jobs due now go to `ready`; later ones to `scheduled`. One wake-up marker. The jobs stored
-- are added to the history's minute and hour, per task (`count_enqueued` in common.lua).
-- A unique key is held while its job's state says so (waiting for s and d, not finished for f)
-- or until its window ends (w), so the state change that ends it releases it.

local now = tonumber(ARGV[2])
local W = 11
local n = (#ARGV - 2) / W

-- The job holding a unique key, if the key is still held, and how. A key whose value does not
-- read (not a string, no window end) holds nothing: the new job takes it over.
local function live_holder(ukey)
  local v = redis.pcall('GET', UPREFIX .. ukey)
  if type(v) ~= 'string' then return nil end
  local mode, holder = string.sub(v, 1, 1), string.sub(v, 3)
  if mode == 'w' then
    -- `w|<id>|<until>`: held until the window ends by the caller's clock.
    local bar = string.find(holder, '|', 1, true)
    local until_ms = bar and int_of(string.sub(holder, bar + 1))
    holder = bar and string.sub(holder, 1, bar - 1)
    if not (until_ms and until_ms > now) then return nil end
  end
  -- Job ids are UUIDs: anything else in the value names no job.
  if not string.find(holder, '^%x+%-%x+%-%x+%-%x+%-%x+$') then return nil end
  if mode == 'w' then return holder, mode end
  local s = redis.pcall('HGET', PREFIX .. holder, 's')
  if type(s) ~= 'string' then return nil end
  if mode == 'f' then
    if s and s ~= '4' and s ~= '5' and s ~= '6' and s ~= '7' and s ~= '8' then return holder, mode end
  elseif s == '0' or s == '1' then
    return holder, mode
  end
  return nil
end

local out = {}
-- Ready and scheduled members are added in slices at the end (one call per 250 jobs rather
-- than one per job); a debounce below flushes them first so it sees every earlier job.
local ready, sched = {}, {}
local function flush()
  sliced('ZADD', K_READY, ready)
  sliced('ZADD', K_SCHED, sched)
  ready, sched = {}, {}
end
local seq = redis.call('HINCRBY', K_META, 'seq', n) - n
-- Whether any job of the batch exists already, asked once for the whole batch: when none
-- does (the usual case) no job needs an EXISTS of its own. An id given twice in one batch is
-- caught by `seen`, as the second EXISTS would have caught it.
local job_keys = {}
for i = 3, #ARGV, W do
  job_keys[#job_keys + 1] = PREFIX .. ARGV[i]
end
local any_exist = false
for i = 1, #job_keys, 500 do
  if redis.call('EXISTS', unpack(job_keys, i, math.min(i + 499, #job_keys))) > 0 then
    any_exist = true
  end
end
local seen = {}
-- Jobs stored per task.
local stored = {}
for i = 3, #ARGV, W do
  local id, pr, run_at = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local key = job_keys[(i - 3) / W + 1]
  local ukey, umode, ums = '', '', 0
  local u = ARGV[i + 8]
  if u ~= '' then
    local bar = string.find(u, '|', 3, true)
    umode, ums, ukey = string.sub(u, 1, 1), string.sub(u, 3, bar - 1), string.sub(u, bar + 1)
  end
  seq = seq + 1
  local holder, hmode = nil, nil
  if seen[id] or (any_exist and redis.call('EXISTS', key) == 1) then
    holder = id
  elseif ukey ~= '' then
    holder, hmode = live_holder(ukey)
  end
  if holder then
    if umode == 'd' and hmode == 'd' then
      flush()
      local hkey = PREFIX .. holder
      local h = redis.call('HMGET', hkey, 's', 'q')
      if h[1] == '0' or h[1] == '1' then
        local at = now + tonumber(ums)
        if h[1] == '0' then remove_ready(holder, h[2]) end
        redis.call('HSET', hkey, 'p', ARGV[i + 7], 'r', num(at), 's', '1')
        redis.call('ZADD', K_SCHED, num(at), holder)
      end
    end
    if holder ~= id then
      out[#out + 1] = (i - 3) / W + 1
      out[#out + 1] = holder
    end
  else
    local state = '0'
    if tonumber(run_at) > now then state = '1' end
    -- One formatting of the sequence serves the record and the ready-set member.
    local q = string.format('%015.0f', seq)
    redis.call('HSET', key, 's', state, 'pr', pr, 'q', q, 'r', run_at, 'a', '0',
      'm', ARGV[i + 4], 'd', ARGV[i + 6], 'p', ARGV[i + 7])
    if ARGV[i + 3] ~= '' then redis.call('HSET', key, 'x', ARGV[i + 3]) end
    if ARGV[i + 5] ~= '' then redis.call('HSET', key, 'tt', ARGV[i + 5]) end
    if ukey ~= '' then
      local value, ttl = umode .. '|' .. id, UNIQUE_BACKSTOP_MS
      if umode == 'w' then
        value = value .. '|' .. num(now + tonumber(ums))
        ttl = tonumber(ums)
      end
      redis.call('SET', UPREFIX .. ukey, value, 'PX', num(ttl))
      redis.call('HSET', key, 'uk', ukey, 'um', umode)
    end
    seen[id] = true
    local task = ARGV[i + 10]
    stored[task] = (stored[task] or 0) + 1
    if state == '1' then
      sched[#sched + 1] = run_at
      sched[#sched + 1] = id
    else
      ready[#ready + 1] = ARGV[i + 9]
      ready[#ready + 1] = q .. ':' .. id
    end
  end
end
flush()
wake()
count_enqueued(now, stored)
return out
