-- controlProcess-3: sends a command to a live process, to be taken at its next refresh.
--
-- Self-contained (no includes/common.lua).
-- KEYS as refreshProcess-3.lua.
-- ARGV[1] now (ms), ARGV[2] id, ARGV[3] command name (`quiet`, `stop`).
-- Returns: 1 if the process is live (its entry expires at or after `now`) and the command was
-- added to its waiting ones (once); 0 otherwise.

local until_ms = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[2]))
if not until_ms or until_ms < tonumber(ARGV[1]) then return 0 end
local waiting = redis.call('HGET', KEYS[3], ARGV[2])
if not waiting or waiting == '' then
  waiting = ARGV[3]
elseif not string.find(',' .. waiting .. ',', ',' .. ARGV[3] .. ',', 1, true) then
  waiting = waiting .. ',' .. ARGV[3]
end
redis.call('HSET', KEYS[3], ARGV[2], waiting)
return 1
