-- commandBreaker-3: forces a shared breaker open or closed for every instance, or resets it
-- (closed, no signals, no backoff history).
--
-- Keys and policy ARGV[1..14]: see includes/breaker.lua. ARGV[15] `force_open`,
-- `force_closed` or `reset`.
-- Returns: the state after.

local r = load()
local to = ({force_open = FORCED_OPEN, force_closed = FORCED_CLOSED, reset = CLOSED})[ARGV[15]]
if not to then return redis.error_reply('unknown breaker command ' .. ARGV[15]) end
if to == CLOSED then r.trips = 0 end
enter(r, to)
redis.call('DEL', K_SIGNALS)
save(r)
return reply(r, per_instance(false))
