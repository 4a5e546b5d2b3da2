-- completeJobs-11: records the end of attempts, each fenced by its token.
--
-- KEYS: the queue's eleven keys (includes/common.lua).
-- ARGV[1] job-key prefix, ARGV[2] now (ms), ARGV[3] dead-letter ttl (ms), ARGV[4] completion
-- channel, then 6 values per completion: id, token, kind, v1, v2, v3, where kind is
--   's' succeeded  v1 = result bytes, v2 = '1' if there is a result
--   'r' retry      v1 = run_at (ms), v2 = error kind, v3 = error message (attempt = attempts)
--   'f' failed     v2 = error kind, v3 = error message
--   'd' dead       v2 = error kind, v3 = error message
--   'c' cancelled
-- Returns: one integer per completion, 1 if applied, 0 if its token no longer holds the lease
--   (a stale completion changes nothing).
-- A success without a kept result deletes the job; kept records expire by themselves (PEXPIRE)
-- and are indexed by keep_until for counting. Finished jobs are published on the channel.

local now, dead_ttl, channel = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local out = {}
local done = {}
local wake_needed = false
for i = 5, #ARGV, 6 do
  local id, token, kind = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local key = PREFIX .. id
  local cur = redis.call('HMGET', key, 's', 't', 'tt', 'a')
  if cur[1] ~= '2' or cur[2] ~= token then
    out[#out + 1] = 0
  else
    out[#out + 1] = 1
    done[#done + 1] = id
    local ttl = tonumber(cur[3] or '86400000')
    if kind == 's' then
      if cur[3] == false then
        redis.call('DEL', key)
      else
        redis.call('HSET', key, 's', '4', 'f', num(now))
        if ARGV[i + 4] == '1' then redis.call('HSET', key, 'res', ARGV[i + 3]) end
        redis.call('HDEL', key, 't', 'ek', 'em', 'ea')
        redis.call('PEXPIRE', key, num(ttl))
        redis.call('ZADD', K_SUCCEEDED, num(now + ttl), id)
        redis.call('PUBLISH', channel, id)
      end
    elseif kind == 'r' then
      redis.call('HSET', key, 's', '3', 'r', ARGV[i + 3], 'ek', ARGV[i + 4], 'em', ARGV[i + 5], 'ea', cur[4])
      redis.call('HDEL', key, 't', 'w')
      redis.call('ZADD', K_RETRY, ARGV[i + 3], id)
      wake_needed = true
    elseif kind == 'f' or kind == 'd' then
      redis.call('HSET', key, 'f', num(now), 'ek', ARGV[i + 4], 'em', ARGV[i + 5], 'ea', cur[4])
      redis.call('HDEL', key, 't')
      if kind == 'd' then
        redis.call('HSET', key, 's', '6')
        redis.call('PEXPIRE', key, num(dead_ttl))
        redis.call('ZADD', K_DEAD, num(now), id)
      else
        redis.call('HSET', key, 's', '5')
        redis.call('PEXPIRE', key, num(ttl))
        redis.call('ZADD', K_FAILED, num(now + ttl), id)
      end
      redis.call('PUBLISH', channel, id)
    elseif kind == 'c' then
      redis.call('HSET', key, 's', '7', 'f', num(now))
      redis.call('HDEL', key, 't')
      redis.call('PEXPIRE', key, num(ttl))
      redis.call('ZADD', K_CANCELLED, num(now + ttl), id)
      redis.call('PUBLISH', channel, id)
    end
  end
end
zrem_all(K_ACTIVE, done)
if wake_needed then wake() end
return out
