-- reportBreaker-3: adds one instance's signal to a shared breaker's window and judges it.
--
-- Keys and policy ARGV[1..14]: see includes/breaker.lua.
-- ARGV[15] instance (empty with zero counts: a read that still settles the state),
-- ARGV[16] calls, ARGV[17] failures, ARGV[18] slow, counted since the instance's last report.
-- Returns: the state after (see includes/breaker.lua).

local r = load()
settle(r)
local calls = tonumber(ARGV[16])
if ARGV[15] ~= '' and calls > 0 then
  local field = num(math.floor(NOW / BUCKET)) .. '|' .. ARGV[15]
  local old = redis.call('HGET', K_SIGNALS, field)
  local c, f, s = 0, 0, 0
  if old then
    local a, b, d = string.match(old, '^(%d+)|(%d+)|(%d+)$')
    c, f, s = stored(a, 0), stored(b, 0), stored(d, 0)
  end
  redis.call('HSET', K_SIGNALS, field,
    num(c + calls) .. '|' .. num(f + tonumber(ARGV[17])) .. '|' .. num(s + tonumber(ARGV[18])))
  redis.call('PEXPIRE', K_SIGNALS, TTL)
end
judge(r, per_instance(true))
save(r)
return reply(r, per_instance(false))
