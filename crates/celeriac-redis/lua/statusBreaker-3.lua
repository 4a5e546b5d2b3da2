-- statusBreaker-3: reads a shared breaker's state without changing it (an open breaker whose
-- period ended reads as half-open; the window is as of the last report).
--
-- Keys: see includes/breaker.lua. ARGV[1] now (ms); the other policy values are unused here
-- but passed as in every breaker script.
-- Returns: the state (see includes/breaker.lua), or false when there is no state hash.

repair()
local exp = stored(redis.call('HGET', K_STATE, 'exp'), nil)
if not exp or exp <= NOW then return false end
local r = load()
if r.st == OPEN and NOW >= r.untl then r.st, r.gen = HALF_OPEN, r.gen + 1 end
return reply(r, per_instance(false))
