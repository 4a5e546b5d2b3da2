-- releaseJobs-12: hands leased jobs back to ready without counting their attempt (graceful
-- shutdown), at their original place in line.
--
-- KEYS: the queue's twelve keys and the migration guard (includes/common.lua); the name's
-- `-12` counts the twelve. Job and unique keys come from the prefix: safe because of the guard.
-- ARGV[1] job-key prefix, then pairs: id, token.
-- Returns: how many were handed back (stale tokens are skipped). A job whose key no longer
-- holds a hash keeps its lease, so the reaper dead-letters it when the lease runs out.

local ids, tokens = id_token_pairs(2)
local held = held_tokens(ids)
local done = {}
for n, id in ipairs(ids) do
  local key = PREFIX .. id
  local f = token_of(held[n]) == tokens[n] and read_record(key, 'a')
  if f then
    local attempts = math.max((int_of(f[1]) or 1) - 1, 0)
    redis.call('HSET', key, 's', '0', 'a', attempts)
    redis.call('HDEL', key, 'w')
    requeue(id, key)
    done[#done + 1] = id
  end
end
end_leases(done)
if #done > 0 then wake() end
return #done
