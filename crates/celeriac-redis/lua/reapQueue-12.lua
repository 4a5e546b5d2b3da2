-- reapQueue-12: moves expired leases back to ready (or to the dead letters when no attempts
-- are left) and drops index entries of records whose retention ran out.
--
-- KEYS: the queue's twelve keys and the migration guard (includes/common.lua); the name's
-- `-12` counts the twelve. Job and unique keys come from the prefix: safe because of the guard.
-- ARGV[1] job-key prefix, ARGV[2] now (ms), ARGV[3] dead-letter ttl (ms), ARGV[4] channel,
-- ARGV[5] most dead letters the queue keeps.
-- Returns: {requeued, dead, swept, ended, dropped, more}: ended lists the jobs this call ended
--   (dead, or cancelled while their lease was out), each as {id, state code, spec (field `d`,
--   false if missing), error kind, error message, error attempt} (the error false for a
--   cancelled job), so what depends on them (a workflow) reads nothing back; dropped counts the
--   oldest dead letters deleted for the cap; more is 1 when a batch came back full (the caller
--   calls again).
-- Bounded: at most BATCH expired leases, BATCH index entries per set and BATCH dropped dead
-- letters per call. Recovery is by lease expiry alone.
-- A leased job whose record is malformed (attempts or max attempts missing or not a count,
-- a run-at or priority that is not an integer in its range, or a key that is not a hash) goes
-- to the dead letters with the reason, so one bad record never stops the queue's reaps.

local now, dead_ttl, channel = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local dead_max = tonumber(ARGV[5])
local expired = redis.call('ZRANGEBYSCORE', K_ACTIVE, '-inf', '(' .. num(now), 'LIMIT', 0, BATCH)
local requeued, dead, ended = 0, 0, {}
for _, id in ipairs(expired) do
  local key = PREFIX .. id
  local f, kind = read_record(key, 'a', 'm', 'cx', 's', 'd', 'pr', 'r')
  local why = f and malformed(f[1], f[2], nil, nil, f[7], f[6])
  if not f then
    local e = dead_foreign(id, key, now, dead_ttl, channel, kind)
    dead = dead + 1
    ended[#ended + 1] = {id, '6', false, e[1], e[2], e[3]}
  elseif not (f[1] or f[4] or f[5]) then
    -- Record gone; only the index entry is left.
  elseif f[3] == '1' then
    end_cancelled(id, key, now, channel)
    ended[#ended + 1] = {id, '7', f[5], false, false, false}
  elseif why then
    local e = dead_malformed(id, key, now, dead_ttl, channel, why, f[1])
    dead = dead + 1
    ended[#ended + 1] = {id, '6', f[5], e[1], e[2], e[3]}
  elseif int_of(f[1]) >= int_of(f[2]) then
    local ek, em = 'lease_expired', 'the worker stopped heartbeating and no attempts are left'
    redis.call('HSET', key, 's', '6', 'f', num(now), 'ek', ek, 'em', em, 'ea', f[1])
    redis.call('PEXPIRE', key, num(dead_ttl))
    redis.call('ZADD', K_DEAD, num(now), id)
    redis.call('PUBLISH', channel, id)
    dead = dead + 1
    ended[#ended + 1] = {id, '6', f[5], ek, em, f[1]}
  else
    redis.call('HSET', key, 's', '0', 'ek', 'lease_expired',
      'em', 'the worker stopped heartbeating', 'ea', f[1])
    redis.call('HDEL', key, 'w')
    requeue(id, key)
    requeued = requeued + 1
  end
end
-- Each job above went to ready or the dead letters first; only now does it leave `active`.
end_leases(expired)
if requeued > 0 then wake() end

-- Records past their retention go by the caller's clock (the store's own expiry, set when
-- they finished, is the backstop when no worker reaps).
local swept, more = 0, #expired >= BATCH
local function delete_all(set, ids)
  for _, id in ipairs(ids) do
    redis.call('DEL', PREFIX .. id)
  end
  zrem_all(set, ids)
end
local function sweep(set, before)
  local old = redis.call('ZRANGEBYSCORE', set, '-inf', num(before), 'LIMIT', 0, BATCH)
  if #old > 0 then
    delete_all(set, old)
    swept = swept + #old
    if #old >= BATCH then more = true end
  end
end
sweep(K_SUCCEEDED, now)
sweep(K_FAILED, now)
sweep(K_CANCELLED, now)
sweep(K_EXPIRED, now)
sweep(K_DEAD, now - dead_ttl)

-- The cap on dead letters: the oldest beyond it go.
local dropped = 0
local excess = redis.call('ZCARD', K_DEAD) - dead_max
if excess > 0 then
  local oldest = redis.call('ZRANGE', K_DEAD, 0, math.min(excess, BATCH) - 1)
  delete_all(K_DEAD, oldest)
  dropped = #oldest
  if excess > dropped then more = true end
end
return {requeued, dead, swept, ended, dropped, more and 1 or 0}
