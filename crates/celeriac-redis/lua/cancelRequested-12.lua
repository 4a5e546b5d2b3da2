-- cancelRequested-12: which of a worker's leased jobs were asked to stop.
--
-- KEYS: the queue's twelve keys and the migration guard (includes/common.lua); the name's
-- `-12` counts the twelve. Job and unique keys come from the prefix: safe because of the guard.
-- ARGV[1] job-key prefix, then pairs: id, token.
-- Returns: the ids whose lease is still held by that token and whose job carries the
--   cancellation flag.

local ids, tokens = id_token_pairs(2)
local held = held_tokens(ids)
local out = {}
for n, id in ipairs(ids) do
  -- pcall: a key that is not a hash (malformed) asks nothing, and fails no other lease.
  if token_of(held[n]) == tokens[n] and redis.pcall('HGET', PREFIX .. id, 'cx') == '1' then
    out[#out + 1] = id
  end
end
return out
