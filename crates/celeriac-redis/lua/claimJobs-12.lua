-- claimJobs-12: promotes due jobs, then claims and leases up to `limit` ready jobs, in one
-- atomic step (at-least-once: nothing is popped without being leased in the same script).
--
-- KEYS: the queue's twelve keys (includes/common.lua).
-- ARGV[1] job-key prefix, ARGV[2] now (ms), ARGV[3] limit, ARGV[4] lease_until (ms),
-- ARGV[5] worker id, ARGV[6] completion channel, ARGV[7] task limits: one line per limited
-- task, `<task>\t<concurrency cap or ''>\t<rate interval ms or ''>`.
-- A job a limit holds back stays in `ready` at its place and uses no attempt.
-- Returns: one bulk string per claimed job, its fields joined by tabs:
--   `id, token, attempts, max_attempts, result_ttl_ms|'', run_at, priority, expires_at|'',
--    started_at, #spec` then a tab, the spec and the payload, back to back (the spec's length
--   says where the payload starts, so neither needs escaping). One string instead of an array
--   of eleven keeps the reply cheap to build here and to parse in the worker.
-- Guarantees: each claim gets a fresh fencing token (a per-queue counter); jobs past their
-- expires_at are ended as expired instead (a bounded number per call); a paused queue
-- yields nothing; if ready jobs remain, the marker is set so another idle worker wakes.
-- Bounded: promotes at most BATCH due jobs per source set.

local now, limit, lease_until, worker, channel = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]
-- Number-to-text conversions cost a printf each in Redis: make each one once.
local now_s = ARGV[2]
if redis.call('HGET', K_META, 'paused') == '1' then
  return {}
end

local function promote(from)
  local due = redis.call('ZRANGEBYSCORE', from, '-inf', now_s, 'LIMIT', 0, BATCH)
  if #due == 0 then return end
  local seq = redis.call('HINCRBY', K_META, 'seq', #due) - #due
  for i, id in ipairs(due) do
    local key = PREFIX .. id
    local f = redis.call('HMGET', key, 'pr', 'r')
    if f[1] then
      redis.call('HSET', key, 's', '0', 'q', num(seq + i))
      add_ready(id, f[1], f[2], seq + i)
    end
  end
  zrem_all(from, due)
end
promote(K_SCHED)
promote(K_RETRY)

local limits, limited = {}, false
for line in string.gmatch(ARGV[7] or '', '[^\n]+') do
  local task, cap, interval = string.match(line, '^(.-)\t(.-)\t(.-)$')
  if task then
    limits[task] = {cap = tonumber(cap), interval = tonumber(interval)}
    limited = true
  end
end
local running = {}
-- Whether a job of `task` may start now (a concurrency cap, then an evenly spaced rate).
local function admit(task)
  local l = limits[task]
  if not l then return true end
  if l.cap then
    local n = running[task] or tonumber(redis.call('HGET', K_META, 'run:' .. task) or '0')
    running[task] = n
    if n >= l.cap then return false end
  end
  if l.interval then
    local tat = tonumber(redis.call('HGET', K_META, 'tat:' .. task) or '0')
    if tat > now then return false end
    redis.call('HSET', K_META, 'tat:' .. task, num(math.max(tat, now) + l.interval))
  end
  if l.cap then
    running[task] = running[task] + 1
  end
  return true
end

local held = {}
local out = {}
local leased = {}
local tokens = {}
local expired = 0
local token = nil
while #out < limit and expired + #held / 2 < BATCH do
  local popped = redis.call('ZPOPMIN', K_READY, limit - #out)
  if #popped == 0 then break end
  if token == nil then
    token = redis.call('HINCRBY', K_META, 'fence', limit) - limit
  end
  for i = 1, #popped, 2 do
    local id = id_of(popped[i])
    local key = PREFIX .. id
    local f = redis.call('HMGET', key, 'x', 'a', 'd', 'p', 'm', 'tt', 'r', 'pr', 'st', 'cx', 'uk', 'um')
    local task = nil
    if limited and f[3] then task = cjson.decode(f[3]).task end
    if f[3] == false then
      -- The job's record is gone (purged underneath); nothing to run.
    elseif f[10] == '1' then
      end_cancelled(id, key, now, channel)
      expired = expired + 1
    elseif f[1] and tonumber(f[1]) <= now then
      local ttl = tonumber(f[6] or '86400000')
      redis.call('HSET', key, 's', '8', 'f', now_s, 'ek', 'expired',
        'em', 'not started before its expiry', 'ea', f[2])
      redis.call('PEXPIRE', key, num(ttl))
      redis.call('ZADD', K_EXPIRED, num(now + ttl), id)
      redis.call('PUBLISH', channel, id)
      expired = expired + 1
    elseif task and not admit(task) then
      held[#held + 1] = popped[i + 1]
      held[#held + 1] = popped[i]
    else
      if task and limits[task] and limits[task].cap then
        redis.call('HINCRBY', K_META, 'run:' .. task, 1)
        redis.call('HSET', K_META, 'lim:' .. id, task)
      end
      token = token + 1
      local attempts = tonumber(f[2]) + 1
      local started = f[9] or now_s
      redis.call('HSET', key, 's', '2', 'a', attempts, 'w', worker, 'st', started)
      leased[#leased + 1] = lease_until
      leased[#leased + 1] = id
      tokens[#tokens + 1] = id
      local token_s = num(token)
      local lease_value = token_s
      if f[11] then
        if f[12] == 'f' then
          lease_value = token_s .. '|' .. f[11]
        elseif f[12] == 's' or f[12] == 'd' then
          release_unique(f[11], id, f[12])
        end
      end
      tokens[#tokens + 1] = lease_value
      out[#out + 1] = id .. '\t' .. token_s .. '\t' .. attempts .. '\t' .. (f[5] or '1') .. '\t' ..
        (f[6] or '') .. '\t' .. (f[7] or '') .. '\t' .. (f[8] or '') .. '\t' .. (f[1] or '') .. '\t' ..
        started .. '\t' .. #f[3] .. '\t' .. f[3] .. (f[4] or '')
    end
  end
end
sliced('ZADD', K_ACTIVE, leased)
sliced('ZADD', K_READY, held)
sliced('HSET', K_LEASES, tokens)
-- Wake another worker only for jobs it could take (held-back ones would just come back).
if redis.call('ZCARD', K_READY) > #held / 2 then wake() end
return out
