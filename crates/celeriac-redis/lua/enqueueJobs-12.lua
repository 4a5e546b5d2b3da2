-- enqueueJobs-12: stores a batch of new jobs atomically (all or none).
--
-- KEYS: the queue's twelve keys (includes/common.lua).
-- ARGV[1] job-key prefix, ARGV[2] now (ms), then 8 values per job:
--   id, priority, run_at, expires_at ('' = never), max_attempts, result_ttl_ms ('' = keep no
--   result), spec (JSON of the immutable fields), payload (bytes).
-- Returns: the number of jobs stored, or an error `DUPLICATE <id>` (nothing stored) when a job
--   with one of the ids already exists.
-- Jobs due now go to `ready`; later ones to `scheduled`. One wake-up marker.

local now = tonumber(ARGV[2])
local n = (#ARGV - 2) / 8
for i = 3, #ARGV, 8 do
  if redis.call('EXISTS', PREFIX .. ARGV[i]) == 1 then
    return redis.error_reply('DUPLICATE ' .. ARGV[i])
  end
end
local seq = redis.call('HINCRBY', K_META, 'seq', n) - n
for i = 3, #ARGV, 8 do
  local id, pr, run_at = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local key = PREFIX .. id
  seq = seq + 1
  local state = '0'
  if tonumber(run_at) > now then state = '1' end
  redis.call('HSET', key, 's', state, 'pr', pr, 'q', num(seq), 'r', run_at, 'a', '0',
    'm', ARGV[i + 4], 'd', ARGV[i + 6], 'p', ARGV[i + 7])
  if ARGV[i + 3] ~= '' then redis.call('HSET', key, 'x', ARGV[i + 3]) end
  if ARGV[i + 5] ~= '' then redis.call('HSET', key, 'tt', ARGV[i + 5]) end
  if state == '1' then
    redis.call('ZADD', K_SCHED, run_at, id)
  else
    add_ready(id, pr, run_at, seq)
  end
end
wake()
return n
