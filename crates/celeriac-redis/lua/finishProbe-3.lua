-- finishProbe-3: records the result of a reserved probe. A lapsed reservation, or one of an
-- earlier half-open period (reservations are dropped at every change of state), counts for
-- nothing. Failures reaching the failure rate over `probes` open the breaker again (backoff);
-- `probes` results without that close it.
--
-- Keys and policy ARGV[1..14]: see includes/breaker.lua. ARGV[15] the probe's token,
-- ARGV[16] 1 if the probe failed, 0 if it succeeded.
-- Returns: the state after.

local r = load()
settle(r)
local lease = tonumber(redis.call('ZSCORE', K_PROBES, ARGV[15]))
if r.st == HALF_OPEN and lease and lease > NOW then
  redis.call('ZREM', K_PROBES, ARGV[15])
  if ARGV[16] == '1' then r.pfail = r.pfail + 1 else r.pok = r.pok + 1 end
  if r.pfail * 100 >= FAIL_RATE * PROBES then
    trip(r)
  elseif r.pok + r.pfail >= PROBES then
    r.trips = 0
    enter(r, CLOSED)
    redis.call('DEL', K_SIGNALS)
  end
end
save(r)
return reply(r, per_instance(false))
