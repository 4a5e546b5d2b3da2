-- cancelJob-12: cancels one job of the queue.
--
-- KEYS: the queue's twelve keys (includes/common.lua).
-- ARGV[1] job-key prefix, ARGV[2] id, ARGV[3] now (ms), ARGV[4] completion channel.
-- Returns: 'cancelled' (it was waiting and will never run), 'requested' (it is running: the
--   flag `cx` asks its worker to stop it, and a flagged job never runs again), 'missing', or
--   the state code of a job that had already finished.

local id, now, channel = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local key = PREFIX .. id
local f = redis.call('HMGET', key, 's', 'q', 'tt')
local state = f[1]
if state == false then return 'missing' end
if state == '2' then
  redis.call('HSET', key, 'cx', '1')
  return 'requested'
end
if state == '0' then
  redis.call('ZREM', K_READY, ready_member(f[2] or 0, id))
elseif state == '1' then
  redis.call('ZREM', K_SCHED, id)
elseif state == '3' then
  redis.call('ZREM', K_RETRY, id)
else
  return state
end
local ttl = tonumber(f[3] or '86400000')
redis.call('HSET', key, 's', '7', 'f', num(now))
redis.call('PEXPIRE', key, num(ttl))
redis.call('ZADD', K_CANCELLED, num(now + ttl), id)
redis.call('PUBLISH', channel, id)
return 'cancelled'
