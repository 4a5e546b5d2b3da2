-- extendLeases-12: the heartbeat; extends every lease a worker holds in this queue.
--
-- KEYS: the queue's twelve keys and the migration guard (includes/common.lua); the name's
-- `-12` counts the twelve. Job and unique keys come from the prefix: safe because of the guard.
-- ARGV[1] job-key prefix, ARGV[2] new lease_until (ms), then pairs: id, token.
-- Returns: the ids whose token no longer holds the lease (lost; not extended).
-- The tokens are checked in one call.

local until_ms = ARGV[2]
local ids, tokens = id_token_pairs(3)
local held = held_tokens(ids)
local lost = {}
local keep = {}
for n, id in ipairs(ids) do
  if token_of(held[n]) == tokens[n] then
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
