-- completeJobs-12: records the end of attempts, each fenced by its token.
--
-- KEYS: the queue's twelve keys and the migration guard (includes/common.lua); the name's
-- `-12` counts the twelve. Job and unique keys come from the prefix: safe because of the guard.
-- ARGV[1] job-key prefix, ARGV[2] now (ms), ARGV[3] dead-letter ttl (ms), ARGV[4] completion
-- channel, then 6 values per completion: id, token, kind, v1, v2, v3, where kind is
--   's' succeeded  v1 = result bytes, v2 = '1' to keep the record (with the result) for the
--                  job's result ttl, '0' to delete it
--   'r' retry      v1 = run_at (ms), v2 = error kind, v3 = error message (attempt = attempts)
--   'f' failed     v2 = error kind, v3 = error message
--   'd' dead       v2 = error kind, v3 = error message
--   'c' cancelled
--   'e' deferred   v1 = run_at (ms): back to scheduled, the attempt not counted (its
--                  circuit breaker was open); a job asked to stop ends as cancelled
-- Returns: one integer per completion, 1 if applied, 0 if its token no longer holds the lease
--   (a stale completion changes nothing).
-- The tokens of the whole batch are checked in one call; successes that keep no record are
-- deleted together. Kept records expire by themselves (PEXPIRE) and are indexed by keep_until
-- for counting. Finished jobs are published on the channel. A job whose key no longer holds a
-- hash ends as a dead letter saying so (whatever the outcome), and the rest of the batch is
-- recorded.

local now, dead_ttl, channel = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local ids = {}
for i = 5, #ARGV, 6 do
  ids[#ids + 1] = ARGV[i]
end
local held = held_tokens(ids)
local out = {}
local done = {}
local drop = {}
local wake_needed = false
for n, id in ipairs(ids) do
  local i = 5 + (n - 1) * 6
  local token, kind = ARGV[i + 1], ARGV[i + 2]
  local key = PREFIX .. id
  -- A bare token (the usual value) is compared as it is, without parsing.
  local bare = held[n] == token
  if not bare and token_of(held[n]) ~= token then
    out[n] = 0
  else
    out[n] = 1
    done[#done + 1] = id
    local ukey = not bare and ukey_of(held[n])
    if ukey and kind ~= 'r' and kind ~= 'e' then release_unique(ukey, id, 'f') end
    if kind == 's' and ARGV[i + 4] ~= '1' then
      drop[#drop + 1] = key
    else
      local cur, foreign = read_record(key, 'tt', 'a', 'cx')
      cur = cur or {}
      local ttl = ttl_of(cur[1])
      -- The attempt the error belongs to; a record without attempts (malformed: the next
      -- claim or reap dead-letters it) records 0, as HSET takes no nil.
      local attempt = cur[2] or '0'
      if foreign then
        dead_foreign(id, key, now, dead_ttl, channel, foreign)
      elseif kind == 's' then
        redis.call('HSET', key, 's', '4', 'f', num(now), 'res', ARGV[i + 3])
        redis.call('HDEL', key, 'ek', 'em', 'ea')
        redis.call('PEXPIRE', key, num(ttl))
        redis.call('ZADD', K_SUCCEEDED, num(now + ttl), id)
        redis.call('PUBLISH', channel, id)
      elseif kind == 'r' and cur[3] == '1' then
        -- Asked to stop: no further attempt.
        redis.call('HSET', key, 'ek', ARGV[i + 4], 'em', ARGV[i + 5], 'ea', attempt)
        end_cancelled(id, key, now, channel)
      elseif kind == 'r' then
        redis.call('HSET', key, 's', '3', 'r', ARGV[i + 3], 'ek', ARGV[i + 4], 'em', ARGV[i + 5], 'ea', attempt)
        redis.call('HDEL', key, 'w')
        redis.call('ZADD', K_RETRY, ARGV[i + 3], id)
        wake_needed = true
      elseif kind == 'f' or kind == 'd' then
        redis.call('HSET', key, 'f', num(now), 'ek', ARGV[i + 4], 'em', ARGV[i + 5], 'ea', attempt)
        if kind == 'd' then
          redis.call('HSET', key, 's', '6')
          redis.call('PEXPIRE', key, num(dead_ttl))
          redis.call('ZADD', K_DEAD, num(now), id)
        else
          redis.call('HSET', key, 's', '5')
          redis.call('PEXPIRE', key, num(ttl))
          redis.call('ZADD', K_FAILED, num(now + ttl), id)
        end
        redis.call('PUBLISH', channel, id)
      elseif kind == 'e' and cur[3] == '1' then
        end_cancelled(id, key, now, channel)
      elseif kind == 'e' then
        local attempts = math.max((int_of(cur[2]) or 1) - 1, 0)
        redis.call('HSET', key, 's', '1', 'r', ARGV[i + 3], 'a', num(attempts))
        redis.call('HDEL', key, 'w')
        redis.call('ZADD', K_SCHED, ARGV[i + 3], id)
        wake_needed = true
      elseif kind == 'c' then
        redis.call('HSET', key, 's', '7', 'f', num(now))
        redis.call('PEXPIRE', key, num(ttl))
        redis.call('ZADD', K_CANCELLED, num(now + ttl), id)
        redis.call('PUBLISH', channel, id)
      end
    end
  end
end
for i = 1, #drop, 500 do
  redis.call('DEL', unpack(drop, i, math.min(i + 499, #drop)))
end
end_leases(done)
if wake_needed then wake() end
return out
