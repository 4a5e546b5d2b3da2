-- unlockKey-1: releases a lease lock of the key-value store if the token holds it (compare
-- and delete).
--
-- Self-contained (no includes/common.lua).
-- KEYS[1] the lock STRING `<until>|<token>` (see lockKey-1.lua).
-- ARGV[1] token.
-- Returns: 1 if released, 0 if the lock is free or another token holds it.

local held = redis.pcall('GET', KEYS[1])
if type(held) ~= 'string' then return 0 end
local bar = string.find(held, '|', 1, true)
if not bar or string.sub(held, bar + 1) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
