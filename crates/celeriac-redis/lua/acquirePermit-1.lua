-- acquirePermit-1: takes one of a key's concurrency permits for a holder, or renews the
-- holder's own lease. Leases that ended by the caller's now are dropped first, so a holder
-- that died frees its permit when its lease ends.
--
-- Self-contained (no includes: this is not a queue script).
-- KEYS[1] the permits: ZSET `<prefix>:{rl:<key>}:permits`, holder -> lease until (ms). Its
--         PX TTL runs to the last lease's end, so an abandoned set cleans itself up.
-- ARGV[1] holder, ARGV[2] max permits (above 0), ARGV[3] now (ms), ARGV[4] until (ms) =
--         now + lease, computed by the caller.
-- Returns: {allowed 1|0, leases live after the call, first lease end (ms), last lease end
--          (ms)} (both ends are now when none is live).

-- A spoiled set is repaired, never a Lua error: a key of another type is dropped (its permits
-- are gone), and the TTL is capped, so a lease end far in the future cannot make PEXPIRE fail.

local now = tonumber(ARGV[3])
if type(redis.pcall('ZCARD', KEYS[1])) == 'table' then redis.call('DEL', KEYS[1]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local allowed = 0
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  allowed = 1
elseif redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  allowed = 1
end
if allowed == 1 then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
end
local n = redis.call('ZCARD', KEYS[1])
local first, last = now, now
if n > 0 then
  first = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
  last = tonumber(redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2])
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', math.min(math.max(last - now, 1), 1e15)))
end
return { allowed, n, first, last }
