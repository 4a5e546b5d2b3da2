-- retryDead-12: puts dead letters back in the ready set with fresh attempts.
--
-- KEYS: the queue's twelve keys and the migration guard (includes/common.lua); the name's
-- `-12` counts the twelve. Job and unique keys come from the prefix: safe because of the guard.
-- ARGV[1] job-key prefix, ARGV[2] now (ms), then either the single value '*' (the oldest
-- BATCH dead letters) or the ids to retry.
-- Returns: {retried, looked_at}; with '*', call again while looked_at > 0.
-- A retried job keeps its record (the expiry of the dead letter is removed) and its original
-- expires_at is dropped: a job retried by hand runs. A dead letter whose record is gone
-- (expired) leaves the set; one whose key holds something other than a hash stays a dead
-- letter (there is nothing to run); one whose record is malformed is retried all the same
-- (a priority that does not read becomes 5), and the next claim judges it.

local now = ARGV[2]
local ids
if ARGV[3] == '*' then
  ids = redis.call('ZRANGE', K_DEAD, 0, BATCH - 1)
else
  ids = {}
  for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
end
local retried = 0
local moved = {}
if #ids > 0 then
  local seq = redis.call('HINCRBY', K_META, 'seq', #ids) - #ids
  for i, id in ipairs(ids) do
    local key = PREFIX .. id
    local f = redis.call('ZSCORE', K_DEAD, id) and read_record(key, 'pr', 's', 'd', 'p')
    if f then
      moved[#moved + 1] = id
      if f[1] or f[2] or f[3] or f[4] then
        local pr = int_of(f[1]) or 5
        redis.call('HSET', key, 's', '0', 'a', '0', 'r', now, 'q', num(seq + i), 'pr', num(pr))
        redis.call('HDEL', key, 'x', 'f', 'w', 'cx')
        redis.call('PERSIST', key)
        add_ready(id, pr, tonumber(now), seq + i)
        retried = retried + 1
      end
    end
  end
end
zrem_all(K_DEAD, moved)
if retried > 0 then wake() end
return {retried, #moved}
