-- extendUnacked-1: marks messages as still being worked on: their unacked_index score becomes
-- the server's clock now, so a visibility sweep (ours or a Python worker's) leaves them alone
-- for another visibility timeout. Python workers never do this; kombu reads the score only.
--
-- KEYS[1]      the unacked index zset
-- ARGV[1..]    delivery tags
-- Returns:     the tags that were not in the index (already acknowledged or restored)

if redis.replicate_commands then
  pcall(redis.replicate_commands)
end
local now = redis.call('TIME')
local score = now[1] .. '.' .. string.format('%06d', tonumber(now[2]))
local missing = {}
for i = 1, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', score, ARGV[i])
  else
    table.insert(missing, ARGV[i])
  end
end
return missing
