-- finishWorkflow-1: ends a running workflow; only the first end is applied.
--
-- KEYS[1] the record's hash `<prefix>:{wf:<id>}:rec` (includes/flow.lua).
-- ARGV[1] the workflow's id, ARGV[2] now (ms), ARGV[3] kind ('s' succeeded, 'f' failed),
--   ARGV[4] the output (JSON text) or the error message, ARGV[5] the completion channel
--   `<prefix>:{wf:<id>}:done`.
-- Returns: 1 if applied; 0 if the workflow had already ended or is unknown (nothing changes).
-- Guarantees: the record gets finished-at = now and expires its ttl (field `t`) from now; the
--   id is published on the channel, so waiters listening for job completions wake.

local key = KEYS[1]
local id, now, kind, value, channel = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local f = redis.pcall('HMGET', key, 's', 't')
-- A key that is not a hash is no running workflow.
if f.err then return 0 end
if f[1] ~= '0' then return 0 end
if kind == 's' then
  redis.call('HSET', key, 's', '1', 'r', value, 'f', num(now))
else
  redis.call('HSET', key, 's', '2', 'e', value, 'f', num(now))
end
-- A ttl that does not read as an integer (a spoiled record) keeps the record one day.
local ttl = int_of(f[2]) or 86400000
redis.call('PEXPIRE', key, num(math.min(math.max(ttl, 1), 1e15)))
redis.call('PUBLISH', channel, id)
return 1
