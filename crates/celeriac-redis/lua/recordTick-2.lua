-- recordTick-2: records the last tick a schedule handled, fenced by the leader's token.
--
-- Self-contained (no includes/common.lua).
-- KEYS[1] the lease HASH (see acquireLeader-1.lua)
-- KEYS[2] `<prefix>:{celeriac:beat}:ticks`: HASH schedule name -> last tick (ms)
-- ARGV[1] token, ARGV[2] schedule, ARGV[3] tick (ms), ARGV[4] now (ms).
-- Returns: 1 if recorded; 0 if the token does not hold an unexpired lease, or the tick is not
-- later than the one recorded.

local lease = redis.call('HMGET', KEYS[1], 'holder', 'token', 'until')
if not lease[1] or lease[1] == '' or lease[2] ~= ARGV[1] then return 0 end
if not tonumber(lease[3]) or tonumber(lease[3]) <= tonumber(ARGV[4]) then return 0 end
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[2]))
if last and last >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
