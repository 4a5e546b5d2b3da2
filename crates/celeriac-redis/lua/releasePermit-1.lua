-- releasePermit-1: gives a holder's concurrency permit back.
--
-- Self-contained (no includes: this is not a queue script).
-- KEYS[1] the permits: ZSET `<prefix>:{rl:<key>}:permits`, holder -> lease until (ms).
-- ARGV[1] holder, ARGV[2] now (ms).
-- Returns: 1 if the holder held a lease live at now, else 0 (the member goes either way).

-- A key of another type (spoiled) holds no permit.
local until_ms = redis.pcall('ZSCORE', KEYS[1], ARGV[1])
if type(until_ms) == 'table' then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
if until_ms and tonumber(until_ms) > tonumber(ARGV[2]) then
  return 1
end
return 0
