-- extendLeases-11: the heartbeat; extends every lease a worker holds in this queue.
--
-- KEYS: the queue's eleven keys (includes/common.lua).
-- ARGV[1] job-key prefix, ARGV[2] new lease_until (ms), then pairs: id, token.
-- Returns: the ids whose token no longer holds the lease (lost; not extended).

local until_ms = ARGV[2]
local lost = {}
local keep = {}
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local cur = redis.call('HMGET', PREFIX .. id, 's', 't')
  if cur[1] == '2' and cur[2] == token then
    keep[#keep + 1] = until_ms
    keep[#keep + 1] = id
  else
    lost[#lost + 1] = id
  end
end
for i = 1, #keep, 1000 do
  redis.call('ZADD', K_ACTIVE, 'XX', unpack(keep, i, math.min(i + 999, #keep)))
end
return lost
