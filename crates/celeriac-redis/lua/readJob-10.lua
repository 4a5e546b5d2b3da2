-- readJob-10: a job's record, its lease and where the sets hold it, read in one step (`get`).
--
-- Self-contained (no queue prelude): a read touches only the keys it declares.
-- KEYS[1] the job key; KEYS[2] to KEYS[10] the queue's ready, scheduled, retry, active, dead,
-- succeeded, failed, cancelled and expired sets (includes/common.lua says what each holds).
-- ARGV[1] the job id.
-- Returns: {} when there is no record; otherwise {record, lease, held}: the record's HGETALL
-- reply; the job's score in `active` (its lease deadline) or nil; and nil, or the state code
-- of a set that holds the job when the record says it waits or runs (states 0 to 3) and the
-- set of that state does not hold it. The sets are where the scripts look for work, so for a
-- record changed by hand (its state rewritten) they say where the job really is: a dead letter
-- whose record reads pending is reported dead, not as a job that will run. A record whose own
-- set holds it is reported as it is, even if an older set entry names the same id (an id used
-- again after its record's retention).
-- An error reply (WRONGTYPE) when the key holds something other than a hash.

local id = ARGV[1]
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'none' then return {} end
if kind ~= 'hash' then
  return redis.error_reply('WRONGTYPE the key of job ' .. id .. ' holds a ' .. kind .. ', not a job record')
end
local record = redis.call('HGETALL', KEYS[1])
local lease = redis.call('ZSCORE', KEYS[5], id)

-- The key of the set that holds jobs in each state (JobState codes).
local SET_OF = { [1] = KEYS[3], [2] = KEYS[5], [3] = KEYS[4], [4] = KEYS[7], [5] = KEYS[8],
  [6] = KEYS[6], [7] = KEYS[9], [8] = KEYS[10] }

-- A field holding a decimal integer as Celeriac writes it, as a number; nil otherwise.
local function int_of(x)
  if type(x) == 'string' and #x <= 17 and string.find(x, '^%-?%d+$') then
    return tonumber(x)
  end
  return nil
end

local function holds(state)
  if state == 0 then
    -- A ready-set member is the record's sequence number, padded, and the id.
    local seq = int_of(redis.call('HGET', KEYS[1], 'q'))
    if not seq or seq < 0 then return false end
    return redis.call('ZSCORE', KEYS[2], string.format('%015.0f', seq) .. ':' .. id) ~= false
  end
  return redis.call('ZSCORE', SET_OF[state], id) ~= false
end

local held = nil
local s = int_of(redis.call('HGET', KEYS[1], 's'))
if s and s >= 0 and s <= 3 and not holds(s) then
  for _, state in ipairs({ 6, 2, 3, 1, 0, 4, 5, 7, 8 }) do
    if state ~= s and holds(state) then
      held = state
      break
    end
  end
end
return { record, lease, held }
