-- cancelJob-12: cancels one job of the queue.
--
-- KEYS: the queue's twelve keys and the migration guard (includes/common.lua); the name's
-- `-12` counts the twelve. Job and unique keys come from the prefix: safe because of the guard.
-- ARGV[1] job-key prefix, ARGV[2] id, ARGV[3] now (ms), ARGV[4] completion channel.
-- Returns: {answer, spec}: answer is 'cancelled' (it was waiting and will never run),
--   'requested' (it is running: the flag `cx` asks its worker to stop it, and a flagged job
--   never runs again), 'missing', or the state code of a job that had already finished; spec
--   is the job's field `d` when this call cancelled it (so what depends on the job, a
--   workflow, reads nothing back), false otherwise.

local id, now, channel = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local key = PREFIX .. id
local f, kind = read_record(key, 's', 'q', 'tt', 'd')
if not f then
  return redis.error_reply('ERR job ' .. id .. ': its key holds a ' .. tostring(kind) ..
    ', not a job record')
end
local state = f[1]
if state == false then return {'missing', false} end
if state == '2' then
  redis.call('HSET', key, 'cx', '1')
  return {'requested', false}
end
if state == '0' then
  remove_ready(id, f[2])
elseif state == '1' then
  redis.call('ZREM', K_SCHED, id)
elseif state == '3' then
  redis.call('ZREM', K_RETRY, id)
else
  return {state, false}
end
local ttl = ttl_of(f[3])
redis.call('HSET', key, 's', '7', 'f', num(now))
redis.call('PEXPIRE', key, num(ttl))
redis.call('ZADD', K_CANCELLED, num(now + ttl), id)
redis.call('PUBLISH', channel, id)
return {'cancelled', f[4]}
