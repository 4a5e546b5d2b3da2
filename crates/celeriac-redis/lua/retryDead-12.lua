-- retryDead-12: puts dead letters back in the ready set with fresh attempts.
--
-- KEYS: the queue's twelve keys and the migration guard (includes/common.lua); the name's
-- `-12` counts the twelve. Job and unique keys come from the prefix: safe because of the guard.
-- ARGV[1] job-key prefix, ARGV[2] now (ms), then either the single value '*' (the oldest
-- BATCH dead letters) or the ids to retry.
-- Returns: {retried, looked_at}; with '*', call again while looked_at > 0.
-- A retried job keeps its record (the expiry of the dead letter is removed) and its original
-- expires_at is dropped: a job retried by hand runs.

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
    if redis.call('ZSCORE', K_DEAD, id) then
      moved[#moved + 1] = id
      if redis.call('HGET', key, 's') == '6' then
        redis.call('HSET', key, 's', '0', 'a', '0', 'r', now, 'q', num(seq + i))
        redis.call('HDEL', key, 'x', 'f', 'w', 'cx')
        redis.call('PERSIST', key)
        add_ready(id, redis.call('HGET', key, 'pr') or 5, now, seq + i)
        retried = retried + 1
      end
    end
  end
end
zrem_all(K_DEAD, moved)
if retried > 0 then wake() end
return {retried, #moved}
