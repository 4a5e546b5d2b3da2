-- arriveJoin-1: records one member's arrival at a join and answers with the join's state.
--
-- KEYS[1] the join's hash `<prefix>:{wf:<join id>}:join` (includes/flow.lua).
-- ARGV[1] index, ARGV[2] total members, ARGV[3] kind ('o' output, 'f' failed), ARGV[4] the
--   output (JSON text) or the failure message, ARGV[5] now (ms), ARGV[6] ttl (ms).
-- Returns: {'w', arrived} while members are missing; {'f', message} once a member failed
--   (the first failure's message); {'c', {field, value, ...}} once every index brought an
--   output: the whole hash (HGETALL), which the caller orders by index; fields that are not
--   numbers (`n`, `t`, `x`) are the join's own.
-- Guarantees: idempotent per index (HSETNX: the first output of an index stays, and a failure
--   of an index whose output is recorded changes nothing); the count moves only when an index
--   is new, so completion is one comparison and no call reads the members before it. The
--   record expires `ttl` after the last arrival (PEXPIRE), and a record whose keep-until `x`
--   is not after `now` counts as gone even before Redis drops it. No unpack, no scan.

local key = KEYS[1]
local index, total, kind, value = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now, ttl = tonumber(ARGV[5]), math.max(tonumber(ARGV[6]), 1)

local kept = redis.call('HGET', key, 'x')
if kept and tonumber(kept) <= now then
  redis.call('DEL', key)
end
redis.call('HSETNX', key, 't', total)
if kind == 'o' then
  if redis.call('HSETNX', key, index, value) == 1 then
    redis.call('HINCRBY', key, 'n', 1)
  end
elseif redis.call('HEXISTS', key, index) == 0 then
  redis.call('HSETNX', key, 'e', value)
end
redis.call('HSET', key, 'x', num(now + ttl))
redis.call('PEXPIRE', key, num(ttl))

local f = redis.call('HMGET', key, 'e', 'n', 't')
if f[1] then
  return {'f', f[1]}
end
local arrived = tonumber(f[2] or '0')
if arrived < tonumber(f[3]) then
  return {'w', arrived}
end
return {'c', redis.call('HGETALL', key)}
