-- purgeDead-12: deletes up to BATCH dead letters of the queue.
--
-- KEYS: the queue's twelve keys and the migration guard (includes/common.lua); the name's
-- `-12` counts the twelve. Job and unique keys come from the prefix: safe because of the guard.
-- ARGV[1] job-key prefix.
-- Returns: how many were deleted; call again until it returns 0.

local ids = redis.call('ZRANGE', K_DEAD, 0, BATCH - 1)
for _, id in ipairs(ids) do
  redis.call('DEL', PREFIX .. id)
end
zrem_all(K_DEAD, ids)
return #ids
