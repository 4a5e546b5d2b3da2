-- startWorkflow-1: stores a new workflow record, state running, unless one with its id exists.
--
-- KEYS[1] the record's hash `<prefix>:{wf:<id>}:rec` (includes/flow.lua).
-- ARGV[1] name, ARGV[2] created at (ms), ARGV[3] ttl after it finishes (ms).
-- Returns: 1 if stored, 0 if a record with this id was there (it is left as it is, so a second
--   start never resets a finished workflow).
-- Guarantees: a running record does not expire; it gets its expiry when it finishes.

local key = KEYS[1]
if redis.call('EXISTS', key) == 1 then return 0 end
redis.call('HSET', key, 'n', ARGV[1], 's', '0', 'c', ARGV[2], 't', ARGV[3])
return 1
