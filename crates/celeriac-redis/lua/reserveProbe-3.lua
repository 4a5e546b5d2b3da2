-- reserveProbe-3: reserves one of a half-open breaker's probes (compare-and-set on the number
-- of live reservations, each lapsing after probe_lease_ms).
--
-- Keys and policy ARGV[1..14]: see includes/breaker.lua. ARGV[15] the probe's token.
-- Returns: the state after, then 1 if the probe was granted, 0 if not (not half-open, or
-- every probe taken).

local r = load()
settle(r)
local granted = 0
if r.st == HALF_OPEN then
  redis.call('ZREMRANGEBYSCORE', K_PROBES, '-inf', num(NOW))
  if redis.call('ZCARD', K_PROBES) < PROBES then
    granted = redis.call('ZADD', K_PROBES, 'NX', num(NOW + PROBE_LEASE), ARGV[15])
    redis.call('PEXPIRE', K_PROBES, TTL)
  end
end
save(r)
local out = reply(r, per_instance(false))
out[#out + 1] = granted
return out
