-- deleteJobs-12: deletes the given jobs of the queue that are not running.
--
-- KEYS: the queue's twelve keys and the migration guard (includes/common.lua); the name's
-- `-12` counts the twelve. Job and unique keys come from the prefix: safe because of the guard.
-- ARGV[1] job-key prefix, ARGV[2..] job ids (at most BATCH).
-- Returns: how many were deleted. An active job (leased) is left alone: cancel it first; the
-- lease table decides, whatever the record's state says. A unique key the job held is
-- released. A key that holds something other than a hash is left alone too (its state cannot
-- be read; a claim or reap dead-letters it).

local SETS = {
  ['1'] = K_SCHED, ['3'] = K_RETRY, ['4'] = K_SUCCEEDED, ['5'] = K_FAILED,
  ['6'] = K_DEAD, ['7'] = K_CANCELLED, ['8'] = K_EXPIRED,
}
local deleted = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local key = PREFIX .. id
  local f = read_record(key, 's', 'q', 'uk', 'um') or {}
  local state = f[1]
  if state and state ~= '2' and redis.call('HEXISTS', K_LEASES, id) == 0 then
    if state == '0' then
      remove_ready(id, f[2])
    elseif SETS[state] then
      redis.call('ZREM', SETS[state], id)
    end
    if f[3] then release_unique(f[3], id, f[4]) end
    redis.call('DEL', key)
    deleted = deleted + 1
  end
end
return deleted
