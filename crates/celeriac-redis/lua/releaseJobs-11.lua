-- releaseJobs-11: hands leased jobs back to ready without counting their attempt (graceful
-- shutdown), at their original place in line.
--
-- KEYS: the queue's eleven keys (includes/common.lua).
-- ARGV[1] job-key prefix, then pairs: id, token.
-- Returns: how many were handed back (stale tokens are skipped).

local n = 0
local done = {}
for i = 2, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local key = PREFIX .. id
  local cur = redis.call('HMGET', key, 's', 't', 'a')
  if cur[1] == '2' and cur[2] == token then
    local attempts = math.max(tonumber(cur[3]) - 1, 0)
    redis.call('HSET', key, 's', '0', 'a', attempts)
    redis.call('HDEL', key, 't', 'w')
    requeue(id, key)
    done[#done + 1] = id
    n = n + 1
  end
end
zrem_all(K_ACTIVE, done)
if n > 0 then wake() end
return n
