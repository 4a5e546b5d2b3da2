-- releaseMutex-1: releases the `unacked_mutex` if this holder still has it, as redis-py's
-- Lock.release does (compare the token, then delete).
--
-- KEYS[1]      the mutex key
-- ARGV[1]      the token this holder set
-- Returns:     1 released, 0 not ours (expired, or taken by another since)

local token = redis.call('GET', KEYS[1])
if not token or token ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
