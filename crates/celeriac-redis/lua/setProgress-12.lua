-- setProgress-12: records the progress of a running attempt, fenced by its token.
--
-- KEYS: the queue's twelve keys and the migration guard (includes/common.lua); the name's
-- `-12` counts the twelve. Job and unique keys come from the prefix: safe because of the guard.
-- ARGV[1] job-key prefix, ARGV[2] id, ARGV[3] token, ARGV[4] fraction, ARGV[5] message ('' none).
-- Returns: 1 if recorded, 0 if the token no longer holds the lease or the record is gone (a
-- write to a missing record would leave a hash of progress alone, unreadable and never expired).

local key = PREFIX .. ARGV[2]
if token_of(redis.call('HGET', K_LEASES, ARGV[2])) ~= ARGV[3] then return 0 end
if redis.call('TYPE', key).ok ~= 'hash' then return 0 end
redis.call('HSET', key, 'pg', ARGV[4])
if ARGV[5] == '' then
  redis.call('HDEL', key, 'pgm')
else
  redis.call('HSET', key, 'pgm', ARGV[5])
end
return 1
