-- releaseLeader-1: gives a leader lease up, if the token still holds it.
--
-- Self-contained (no includes/common.lua).
-- KEYS[1] the lease HASH (see acquireLeader-1.lua).
-- ARGV[1] token.
-- Returns: 1 if released, 0 if the token no longer held it. The token counter is kept.

local lease = redis.call('HMGET', KEYS[1], 'holder', 'token')
if not lease[1] or lease[1] == '' or lease[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'holder', '', 'until', '0')
return 1
