-- readJob-12: a job's record, its lease and where the sets hold it, read in one step (`get`).
--
-- KEYS: the queue's twelve keys and the migration guard (includes/common.lua); the name's
-- `-12` counts the twelve. The job key comes from the prefix: safe because of the guard.
-- ARGV[1] job-key prefix, ARGV[2] id.
-- Returns: {} when there is no record; otherwise {record, lease, held}: the record's HGETALL
-- reply; the job's score in `active` (its lease deadline) or nil; and nil, or the state code
-- of a set that holds the job when the record says it waits or runs (states 0 to 3) and the
-- set of that state does not hold it. The sets are where the scripts look for work, so for a
-- record changed by hand (its state rewritten) they say where the job really is: a dead letter
-- whose record reads pending is reported dead, not as a job that will run. A record whose own
-- set holds it is reported as it is, even if an older set entry names the same id (an id used
-- again after its record's retention).
-- An error reply (WRONGTYPE) when the key holds something other than a hash.

local id = ARGV[2]
local key = PREFIX .. id
local kind = redis.call('TYPE', key).ok
if kind == 'none' then return {} end
if kind ~= 'hash' then
  return redis.error_reply('WRONGTYPE the key of job ' .. id .. ' holds a ' .. kind .. ', not a job record')
end
local record = redis.call('HGETALL', key)
local lease = redis.call('ZSCORE', K_ACTIVE, id)

-- The set that holds jobs in each state but pending (JobState codes).
local SET_OF = { [1] = K_SCHED, [2] = K_ACTIVE, [3] = K_RETRY, [4] = K_SUCCEEDED, [5] = K_FAILED,
  [6] = K_DEAD, [7] = K_CANCELLED, [8] = K_EXPIRED }

local function holds(state)
  if state == 0 then
    local seq = int_of(redis.call('HGET', key, 'q'))
    if not seq or seq < 0 then return false end
    return redis.call('ZSCORE', K_READY, ready_member(seq, id)) ~= false
  end
  return redis.call('ZSCORE', SET_OF[state], id) ~= false
end

local held = nil
local s = int_of(redis.call('HGET', key, 's'))
if s and s >= 0 and s <= 3 and not holds(s) then
  for _, state in ipairs({ 6, 2, 3, 1, 0, 4, 5, 7, 8 }) do
    if state ~= s and holds(state) then
      held = state
      break
    end
  end
end
return { record, lease, held }
