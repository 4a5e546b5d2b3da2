-- restoreMessage-N: puts one unacknowledged message back on its lists and forgets it, in one
-- atomic step, only if its entry is still the one the caller read (kombu's restore_by_tag
-- does the same under WATCH).
--
-- KEYS[1]      the unacked hash
-- KEYS[2]      the unacked index zset
-- KEYS[3..]    the lists to push the message onto (none: just forget the entry)
-- ARGV[1]      the delivery tag
-- ARGV[2]      the entry as read (`[message, exchange, routing_key]`); '' = expected absent
-- ARGV[3]      the newest index score to restore ('+inf': any); an entry whose score is newer
--              (its owner extended it after the sweep looked) stays
-- ARGV[4]      'right' = RPUSH (the consuming end: next out, as kombu restores) or 'left' =
--              LPUSH (the publishing end, kombu's reject with requeue)
-- ARGV[5]      the message to push (with `redelivered` set)
-- Returns:     1 restored, 0 left alone (gone, changed, or extended)

local entry = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '' then
  if entry then return 0 end
elseif entry ~= ARGV[2] then
  return 0
end
if ARGV[3] ~= '+inf' then
  local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
  if score and tonumber(score) > tonumber(ARGV[3]) then
    return 0
  end
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
local push = 'RPUSH'
if ARGV[4] == 'left' then push = 'LPUSH' end
for i = 3, #KEYS do
  redis.call(push, KEYS[i], ARGV[5])
end
return 1
