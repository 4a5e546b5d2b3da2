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
-- A spoiled record: a keep-until `x` that is not an integer is written anew; a total `t` that
-- is not an integer is the caller's again; a count `n` that is not one is counted anew from
-- the numeric fields; a key that is not a hash fails with an error saying so.

local key = KEYS[1]
local index, total, kind, value = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now, ttl = tonumber(ARGV[5]), math.max(tonumber(ARGV[6]), 1)

local kept = redis.pcall('HGET', key, 'x')
if type(kept) == 'table' then
  return redis.error_reply('ERR join ' .. key .. ' holds a ' .. redis.call('TYPE', key).ok ..
    ', not a hash')
end
if int_of(kept) and int_of(kept) <= now then
  redis.call('DEL', key)
end
if not int_of(redis.call('HGET', key, 't')) then
  redis.call('HSET', key, 't', total)
end
if not int_of(redis.call('HGET', key, 'n')) then
  -- Counted anew: the distinct indexes holding an output.
  local n = 0
  for _, field in ipairs(redis.call('HKEYS', key)) do
    if string.find(field, '^%d+$') then n = n + 1 end
  end
  redis.call('HSET', key, 'n', n)
end
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
local arrived = int_of(f[2]) or 0
if arrived < int_of(f[3]) then
  return {'w', arrived}
end
return {'c', redis.call('HGETALL', key)}
