-- claimJobs-12: promotes due jobs, then claims and leases up to `limit` ready jobs, in one
-- atomic step (at-least-once: nothing is popped without being leased in the same script).
--
-- KEYS: the queue's twelve keys and the migration guard (includes/common.lua); the name's
-- `-12` counts the twelve. Job and unique keys come from the prefix: safe because of the guard.
-- ARGV[1] job-key prefix, ARGV[2] now (ms), ARGV[3] limit, ARGV[4] lease_until (ms),
-- ARGV[5] worker id, ARGV[6] completion channel, ARGV[7] task limits: one line per limited
-- task, `<task>\t<concurrency cap or ''>\t<rate interval ms or ''>`, ARGV[8] dead-letter ttl
-- (ms).
-- A job a limit holds back stays in `ready` at its place and uses no attempt.
-- Returns: one bulk string per claimed job, its fields joined by tabs:
--   `id, token, attempts, max_attempts, result_ttl_ms|'', run_at, priority, expires_at|'',
--    started_at, spec, payload`: the spec is JSON, which holds no raw tab, so the first tab
--   after it says where the payload starts and neither needs escaping. One string instead of
--   an array of eleven keeps the reply cheap to build here and to parse in the worker.
-- Guarantees: each claim gets a fresh fencing token (a per-queue counter, one for the jobs of
-- one call: each completion is checked against its own job's lease); jobs past their
-- expires_at are ended as expired instead (a bounded number per call); a paused queue
-- yields nothing; if ready jobs remain, the marker is set so another idle worker wakes.
-- Reads first: the ready jobs are looked at in place (ZRANGE, not ZPOPMIN) and every decision
-- is made before the first write; then jobs are added to `active` before they leave `ready`.
-- An error at any point leaves every job in a set (includes/common.lua, "Errors").
-- A job whose record is malformed (a count missing or not an integer, a number out of its
-- range, no spec, a spec that is not JSON when task limits need its task, a state other than
-- pending, or a key that is not a hash) goes to the dead letters with the reason; the rest of
-- the batch is claimed.
-- Bounded: promotes at most BATCH due jobs per source set, and looks at most at BATCH ready
-- jobs it does not claim.

local now, limit, lease_until, worker, channel = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]
local dead_ttl = tonumber(ARGV[8]) or 604800000
-- Number-to-text conversions cost a printf each in Redis: make each one once.
local now_s = ARGV[2]
if redis.call('HGET', K_META, 'paused') == '1' then
  return {}
end

-- Due scheduled or retrying jobs join `ready` (added there before they leave their set).
local function promote(from)
  local due = redis.call('ZRANGEBYSCORE', from, '-inf', now_s, 'LIMIT', '0', BATCH_S)
  if #due == 0 then return end
  local seq = redis.call('HINCRBY', K_META, 'seq', #due) - #due
  for i, id in ipairs(due) do
    local key = PREFIX .. id
    local f, kind = read_record(key, 'pr', 'r', 's')
    -- A record that is gone has nothing to run; a malformed one is judged when claimed, but
    -- one that is not a hash at all cannot be queued and ends here.
    if not f then
      dead_foreign(id, key, now, dead_ttl, channel, kind)
    elseif f[1] or f[2] or f[3] then
      redis.call('HSET', key, 's', '0', 'q', num(seq + i))
      add_ready(id, int_of(f[1]) or 5, int_of(f[2]) or now, seq + i)
    end
  end
  zrem_all(from, due)
end
-- One look at whether anything waits in either set first: most claims find both empty.
if redis.call('EXISTS', K_SCHED, K_RETRY) > 0 then
  promote(K_SCHED)
  promote(K_RETRY)
end

local limits, limited = {}, false
for line in string.gmatch(ARGV[7] or '', '[^\n]+') do
  local task, cap, interval = string.match(line, '^(.-)\t(.-)\t(.-)$')
  if task then
    limits[task] = {cap = tonumber(cap), interval = tonumber(interval)}
    limited = true
  end
end
-- What admissions decided, written after the read phase: running counts and next starts.
local running, tats = {}, {}
-- Whether a job of `task` may start now (a concurrency cap, then an evenly spaced rate).
local function admit(task)
  local l = limits[task]
  if not l then return true end
  if l.cap then
    local n = running[task] or tonumber(redis.call('HGET', K_META, 'run:' .. task)) or 0
    running[task] = n
    if n >= l.cap then return false end
  end
  if l.interval then
    local tat = tats[task] or tonumber(redis.call('HGET', K_META, 'tat:' .. task)) or 0
    if tat > now then return false end
    tats[task] = math.max(tat, now) + l.interval
  end
  if l.cap then
    running[task] = running[task] + 1
  end
  return true
end

-- The next attempt count of the usual records, without a number conversion.
local NEXT_ATTEMPT = {['0'] = '1', ['1'] = '2', ['2'] = '3', ['3'] = '4', ['4'] = '5'}
-- The usual max attempts, and every priority.
local USUAL_MAX = {['1'] = true, ['2'] = true, ['3'] = true, ['4'] = true, ['5'] = true,
  ['10'] = true, ['25'] = true}
local PRIORITY = {['0'] = true, ['1'] = true, ['2'] = true, ['3'] = true, ['4'] = true,
  ['5'] = true, ['6'] = true, ['7'] = true, ['8'] = true, ['9'] = true}

-- Whether the fields every record has (a, m, r, pr) are plainly well formed: all present,
-- unsigned decimal counts within 10 digits (a from 0, m from 1, both at most 4294967295), a
-- run_at within 17 characters and a one-digit priority. The usual attempts, max attempts
-- and priority are found by one table lookup each; other values by one pattern match over
-- the four. Only a record that fails both (or has x or tt) goes through `malformed`, which
-- finds the reason. It never accepts what `malformed` refuses.
local function plainly_fine(a, m, r, pr)
  -- HMGET gives false, not nil, for a missing field.
  if not (a and m and r and pr) or #r > 17 then return false end
  if NEXT_ATTEMPT[a] and USUAL_MAX[m] and PRIORITY[pr] then
    return string.find(r, '^%-?%d+$') ~= nil
  end
  return #a <= 10 and #m <= 10
    and string.find(a .. ' ' .. m .. ' ' .. r .. ' ' .. pr, '^%d+ [1-9]%d* %-?%d+ %d$') ~= nil
    and (#a < 10 or a <= '4294967295') and (#m < 10 or m <= '4294967295')
end

-- Read phase: decide each ready job's fate, front first, without changing anything.
local claims, ends, leaving = {}, {}, {}
local held, looked, offset = 0, 0, 0
while #claims < limit and looked - #claims < BATCH do
  local members = redis.call('ZRANGE', K_READY, offset == 0 and '0' or num(offset),
    num(offset + limit - #claims - 1))
  if #members == 0 then break end
  offset = offset + #members
  for _, member in ipairs(members) do
    looked = looked + 1
    local id = id_of(member)
    local key = PREFIX .. id
    local f, kind = read_record(key, 'x', 'a', 'd', 'p', 'm', 'tt', 'r', 'pr', 'st', 'cx', 'uk', 'um', 's')
    local why = nil
    if not f then
      f = {}
    else
      if f[1] or f[6] or not plainly_fine(f[2], f[5], f[7], f[8]) then
        why = malformed(f[2], f[5], f[1], f[6], f[7], f[8])
      end
      if not why and not f[3] then why = 'field `d` (spec) is missing' end
      if not why and f[13] ~= '0' then
        why = 'field `s` (state) is ' .. (f[13] and ('`' .. f[13] .. '`') or 'missing') ..
          ', not pending (0), for a job in the ready set'
      end
    end
    local task = nil
    if not why and limited then
      local ok, spec = pcall(cjson.decode, f[3])
      if not ok or type(spec) ~= 'table' then
        why = 'field `d` (spec) is not a JSON object'
      elseif type(spec.t) == 'string' then
        task = spec.t
      elseif type(spec.task) == 'string' then
        -- A record written before the names were shortened.
        task = spec.task
      end
    end
    if kind then
      ends[#ends + 1] = {'t', id, key, kind}
      leaving[#leaving + 1] = member
    elseif not (f[2] or f[3] or f[13]) then
      -- The job's record is gone (purged underneath); nothing to run.
      leaving[#leaving + 1] = member
    elseif f[10] == '1' then
      ends[#ends + 1] = {'c', id, key}
      leaving[#leaving + 1] = member
    elseif why then
      ends[#ends + 1] = {'m', id, key, why, f[2]}
      leaving[#leaving + 1] = member
    elseif f[1] and tonumber(f[1]) <= now then
      ends[#ends + 1] = {'x', id, key, f[6], f[2]}
      leaving[#leaving + 1] = member
    elseif task and not admit(task) then
      -- Held back: it stays in `ready` at its place.
      held = held + 1
    else
      claims[#claims + 1] = {id, key, task, f}
      leaving[#leaving + 1] = member
    end
  end
end

-- Write phase.
for _, e in ipairs(ends) do
  local kind, id, key = e[1], e[2], e[3]
  if kind == 'c' then
    end_cancelled(id, key, now, channel)
  elseif kind == 'm' then
    dead_malformed(id, key, now, dead_ttl, channel, e[4], e[5])
  elseif kind == 't' then
    dead_foreign(id, key, now, dead_ttl, channel, e[4])
  else
    local ttl = ttl_of(e[4])
    redis.call('HSET', key, 's', '8', 'f', now_s, 'ek', 'expired',
      'em', 'not started before its expiry', 'ea', e[5])
    redis.call('PEXPIRE', key, num(ttl))
    redis.call('ZADD', K_EXPIRED, num(now + ttl), id)
    redis.call('PUBLISH', channel, id)
  end
end

-- The keeper (common.lua) goes in first with every batch of leases.
local out, leased, tokens = {}, {'inf', KEEPER}, {KEEPER, 'keeper'}
-- One fencing token for the whole batch: a completion is checked against its own job's
-- lease, so jobs of one batch can share the token, and every later claim of any of them gets
-- a larger one. One number formatted per call instead of one per job.
local token_s = ''
if #claims > 0 then
  token_s = num(redis.call('HINCRBY', K_META, 'fence', '1'))
end
for _, c in ipairs(claims) do
  local id, key, task, f = c[1], c[2], c[3], c[4]
  if task and limits[task] and limits[task].cap then
    redis.call('HINCRBY', K_META, 'run:' .. task, 1)
    redis.call('HSET', K_META, 'lim:' .. id, task)
  end
  local attempts = NEXT_ATTEMPT[f[2]] or num(int_of(f[2]) + 1)
  local started = (f[9] and int_of(f[9]) and f[9]) or now_s
  redis.call('HSET', key, 's', '2', 'a', attempts, 'w', worker, 'st', started)
  leased[#leased + 1] = lease_until
  leased[#leased + 1] = id
  tokens[#tokens + 1] = id
  local lease_value = token_s
  if f[11] then
    if f[12] == 'f' then
      lease_value = token_s .. '|' .. f[11]
    elseif f[12] == 's' or f[12] == 'd' then
      release_unique(f[11], id, f[12])
    end
  end
  tokens[#tokens + 1] = lease_value
  out[#out + 1] = id .. '\t' .. token_s .. '\t' .. attempts .. '\t' .. f[5] .. '\t' ..
    (f[6] or '') .. '\t' .. (f[7] or '') .. '\t' .. (f[8] or '') .. '\t' .. (f[1] or '') .. '\t' ..
    started .. '\t' .. f[3] .. '\t' .. (f[4] or '')
end
for task, tat in pairs(tats) do
  redis.call('HSET', K_META, 'tat:' .. task, num(tat))
end
if #claims > 0 then
  sliced('ZADD', K_ACTIVE, leased)
  sliced('HSET', K_LEASES, tokens)
end
zrem_all(K_READY, leaving)
-- Wake another worker only for jobs it could take (held-back ones would just come back).
if redis.call('ZCARD', K_READY) > held then wake() end
return out
