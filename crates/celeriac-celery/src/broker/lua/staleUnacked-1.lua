-- staleUnacked-1: the delivery tags whose visibility timeout has passed, by the server's
-- clock, as kombu's restore_visible selects them (ZREVRANGEBYSCORE ceil 0: newest first).
--
-- KEYS[1]      the unacked index zset
-- ARGV[1]      the visibility timeout in seconds (float)
-- ARGV[2]      at most this many tags (0 = all)
-- Returns:     { ceil, tag, tag, ... } with ceil = now - visibility timeout as a string

local now = redis.call('TIME')
local ceil = tonumber(now[1]) + tonumber(now[2]) / 1000000 - tonumber(ARGV[1])
local ceil_s = string.format('%.6f', ceil)
local tags
if tonumber(ARGV[2]) > 0 then
  tags = redis.call('ZREVRANGEBYSCORE', KEYS[1], ceil_s, 0, 'LIMIT', 0, tonumber(ARGV[2]))
else
  tags = redis.call('ZREVRANGEBYSCORE', KEYS[1], ceil_s, 0)
end
table.insert(tags, 1, ceil_s)
return tags
