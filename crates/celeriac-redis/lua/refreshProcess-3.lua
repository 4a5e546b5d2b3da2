-- refreshProcess-3: writes one process's registry entry and takes the commands sent to it.
--
-- Self-contained (no includes/common.lua).
-- KEYS[1] `<prefix>:{<prefix>:procs}:seen`: ZSET process id -> entry expiry (ms)
-- KEYS[2] `<prefix>:{<prefix>:procs}:info`: HASH process id -> entry (JSON)
-- KEYS[3] `<prefix>:{<prefix>:procs}:control`: HASH process id -> waiting commands
-- ARGV[1] now (ms), ARGV[2] id, ARGV[3] expiry (ms), ARGV[4] entry.
-- Returns: the waiting commands (comma-separated names), or '' when none; they are cleared.
--
-- Also drops up to 100 entries expired before `now`, with their commands, so the keys hold
-- no more than the live processes and those that died since the last refresh of any process.

local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, 100)
for _, id in ipairs(gone) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
local waiting = redis.call('HGET', KEYS[3], ARGV[2])
if not waiting then return '' end
redis.call('HDEL', KEYS[3], ARGV[2])
return waiting
