-- acquireLeader-1: takes or renews a leader lease, with a fencing token.
--
-- Self-contained (no includes/common.lua: this is not a queue script).
-- KEYS[1] the lease: HASH `<prefix>:{celeriac:beat}:leader:<name>` with holder, token, until.
--         It never expires, so its token only ever grows.
-- ARGV[1] holder, ARGV[2] now (ms), ARGV[3] until (ms) = now + ttl, computed by the caller.
-- Returns: the token while `holder` holds the lease (kept on renewal, one more than the last
-- holder's when it changes hands), or false when another holder's lease runs past now.

-- A spoiled lease is repaired, never a Lua error: a key of another type is replaced, and a
-- token that is not a decimal integer restarts from now (ms), above any counter a past holder
-- can hold; an until that is not one counts as expired.

local function int_of(x)
  if type(x) == 'string' and #x <= 17 and string.find(x, '^%-?%d+$') then
    return tonumber(x)
  end
  return nil
end

if type(redis.pcall('HLEN', KEYS[1])) == 'table' then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'token', ARGV[2])
end
local lease = redis.call('HMGET', KEYS[1], 'holder', 'token', 'until')
local holder, token, untl = lease[1], int_of(lease[2]), int_of(lease[3])
if lease[2] and not token then
  redis.call('HSET', KEYS[1], 'token', ARGV[2])
end
if holder == ARGV[1] and token then
  redis.call('HSET', KEYS[1], 'until', ARGV[3])
  return token
end
if holder and holder ~= '' and untl and untl > tonumber(ARGV[2]) then
  return false
end
local new = redis.call('HINCRBY', KEYS[1], 'token', 1)
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'until', ARGV[3])
return new
