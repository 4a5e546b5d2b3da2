-- recordHistory-N: adds what a worker tallied to history buckets (celeriac_core::History).
--
-- KEYS: the buckets to add to (a minute's and its hour's), all of one queue, so under its hash
-- tag `{<queue>}` and on one Cluster slot.
-- ARGV[i] for i <= #KEYS: how long KEYS[i] is kept from now (ms, PEXPIRE: the caller computes
-- it from the bucket's end by its own clock); then pairs of field, value:
--   `<code>|<task>`, where the code says how the value adds:
--   Rs, Ws   sum of run or wait times (HINCRBYFLOAT)
--   Rl, Wl   smallest run or wait time (kept if smaller)
--   Rh, Wh   largest run or wait time (kept if larger)
--   other    a count (HINCRBY): e s o r f d c, Rz and Wz (zeros), R<i> and W<i> (sketch buckets)
-- Returns the number of fields given.
-- A spoiled bucket is repaired, never a Lua error: a key of another type is dropped, and a
-- field that does not add (not a number) takes the value given.

local n = #KEYS
for k = 1, n do
  local key = KEYS[k]
  if type(redis.pcall('HLEN', key)) == 'table' then redis.call('DEL', key) end
  for i = n + 1, #ARGV, 2 do
    local field, value = ARGV[i], ARGV[i + 1]
    local code = string.sub(field, 1, 2)
    if code == 'Rs' or code == 'Ws' then
      if type(redis.pcall('HINCRBYFLOAT', key, field, value)) == 'table' then
        redis.call('HSET', key, field, value)
      end
    elseif code == 'Rl' or code == 'Wl' or code == 'Rh' or code == 'Wh' then
      local cur = tonumber(redis.call('HGET', key, field))
      local v = tonumber(value)
      local low = string.sub(code, 2, 2) == 'l'
      if v and (not cur or (low and v < cur) or (not low and v > cur)) then
        redis.call('HSET', key, field, value)
      end
    elseif type(redis.pcall('HINCRBY', key, field, value)) == 'table' then
      redis.call('HSET', key, field, value)
    end
  end
  redis.call('PEXPIRE', key, ARGV[k])
end
return (#ARGV - n) / 2
