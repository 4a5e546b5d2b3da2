-- purgeDead-12: deletes up to BATCH dead letters of the queue.
--
-- KEYS: the queue's twelve keys (includes/common.lua).
-- ARGV[1] job-key prefix.
-- Returns: how many were deleted; call again until it returns 0.

local ids = redis.call('ZRANGE', K_DEAD, 0, BATCH - 1)
for _, id in ipairs(ids) do
  redis.call('DEL', PREFIX .. id)
end
zrem_all(K_DEAD, ids)
return #ids
