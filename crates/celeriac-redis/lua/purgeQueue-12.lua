-- purgeQueue-12: deletes up to BATCH waiting jobs (ready, scheduled, retrying) of the queue.
--
-- KEYS: the queue's twelve keys and the migration guard (includes/common.lua); the name's
-- `-12` counts the twelve. Job and unique keys come from the prefix: safe because of the guard.
-- ARGV[1] job-key prefix.
-- Returns: how many were deleted; call again until it returns 0. Active jobs are not touched.

local deleted = 0
for _, set in ipairs({K_READY, K_SCHED, K_RETRY}) do
  if deleted < BATCH then
    local members = redis.call('ZRANGE', set, 0, BATCH - deleted - 1)
    for _, m in ipairs(members) do
      if set == K_READY then m = id_of(m) end
      redis.call('DEL', PREFIX .. m)
    end
    zrem_all(set, members)
    deleted = deleted + #members
  end
end
return deleted
