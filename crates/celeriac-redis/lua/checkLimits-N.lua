-- checkLimits-N: a batch of rate-limit decisions. Each checks the quotas of one key at its
-- caller's now and, only if every one allows the call, charges its cost to each (all or
-- nothing). The maths mirror
-- celeriac_core::limit::maths line by line (integers below 2^53 stay exact in Lua's doubles;
-- quotas are validated so they do).
--
-- Self-contained (no includes: this is not a queue script).
-- KEYS    the quota states of every decision in order, n per decision: quota i's state is a
--         STRING `<prefix>:{rl:<key>}:<state id>` (every quota of a key under its one hash
--         tag, so one Cluster slot): for GCRA the TAT in µs; for windows "a:b:c" (fixed a =
--         window start, b = count; sliding a = window start, b = previous count, c = current
--         count). Its PX TTL is how long the state matters, so nothing lingers.
-- ARGV[1] D, the number of decisions (a batch of concurrent calls: at most 64, so the work
--         per call is bounded); then per decision: n (its quotas), now (ms), cost, then 5 per
--         quota: algorithm (1 gcra, 2 sliding window, 3 fixed window), limit, window (ms),
--         GCRA interval (µs), GCRA tolerance (µs).
-- Returns: 5 integers per decision, in order: allowed 1|0, index of the reported (most
--          restrictive) quota from 0, remaining, reset after (ms), retry after (ms, -1 when
--          allowed). Decisions are made one after the other, exactly as separate calls.

-- The decision being made: check() reads them.
local now, cost = 0, 0

-- floor(a / b) exactly, for integers below 2^53 and b > 0.
local function idiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

local function ceil_ms(us)
  if us <= 0 then return 0 end
  return idiv(us + 999, 1000)
end

local function clamp(x)
  if x < 0 then return 0 end
  if x > 4294967295 then return 4294967295 end
  return x
end

-- One quota: allowed, remaining, reset, retry, new a, b, c, ttl (ms).
local function check(alg, limit, w, t, tau, a, b, c)
  if alg == 1 then
    local now_us = now * 1000
    local tat = math.max(a, now_us)
    local new = tat + t * cost
    local allow_at = new - tau
    if allow_at <= now_us then
      local reset = ceil_ms(new - now_us)
      return true, clamp(idiv(tau - (new - now_us), t)), reset, -1, new, 0, 0, math.max(reset, 1)
    end
    local reset = ceil_ms(tat - now_us)
    return false, clamp(idiv(tau - (tat - now_us), t)), reset, ceil_ms(allow_at - now_us),
      a, b, c, math.max(reset, 1)
  end
  local start = idiv(now, w) * w
  if alg == 3 then
    local count = 0
    if a >= start then
      start = a
      count = b
    end
    local reset = math.max(start + w - now, 0)
    local allowed = count + cost <= limit
    local after = count
    if allowed then after = count + cost end
    local shown = 0
    if after > 0 then shown = reset end
    local retry = -1
    if not allowed then retry = reset end
    return allowed, clamp(limit - after), shown, retry, start, after, 0, math.max(reset, 1)
  end
  local prev, cur = 0, 0
  if a >= start then
    start = a
    prev = b
    cur = c
  elseif a == start - w then
    prev = c
  end
  local e = now - start
  if e < 0 then e = 0 elseif e > w then e = w end
  local cap = limit * w
  local allowed = prev * (w - e) + (cur + cost) * w <= cap
  local after = cur
  if allowed then after = cur + cost end
  local remaining = idiv(cap - (prev * (w - e) + after * w), w)
  local reset = 0
  if after > 0 then
    reset = start + 2 * w - now
  elseif prev > 0 then
    reset = start + w - now
  end
  local retry = -1
  if not allowed then
    local need = cur + cost
    if need <= limit then
      retry = w - idiv((limit - need) * w, math.max(prev, 1)) - e
    else
      local at = 0
      if cur > 0 then at = math.max(w - idiv((limit - cost) * w, cur), 0) end
      retry = w - e + at
    end
  end
  return allowed, clamp(remaining), math.max(reset, 0), retry, start, prev, after,
    math.max(start + 2 * w - now, 1)
end

-- Mirrors Decision::stricter_than: denied first, then the longer retry, then fewer
-- remaining, then the longer reset.
local function stricter(ok, rem, reset, retry, w)
  if ok ~= w[1] then return not ok end
  if not ok then return retry > w[5] end
  if rem ~= w[3] then return rem < w[3] end
  return reset > w[4]
end


local out = {}
local function reply(allowed, index, rem, reset, retry)
  out[#out + 1] = allowed
  out[#out + 1] = index
  out[#out + 1] = rem
  out[#out + 1] = reset
  out[#out + 1] = retry
end

-- One decision over KEYS[k0 + 1 .. k0 + n]; quota i's fields at ARGV[base + 5(i-1) + 1..5].
local function decide(k0, n, base)
  -- The common case, one GCRA quota: the same maths without the general bookkeeping.
  if n == 1 and ARGV[base + 1] == '1' then
    local key = KEYS[k0 + 1]
    local tat = tonumber(redis.call('GET', key) or 0) or 0
    local ok, rem, reset, retry, new, _, _, ttl = check(1, 0, 0, tonumber(ARGV[base + 4]),
      tonumber(ARGV[base + 5]), tat, 0, 0)
    if ok then
      redis.call('SET', key, string.format('%.0f', new), 'PX', ttl)
      return reply(1, 0, rem, reset, -1)
    end
    return reply(0, 0, rem, reset, retry)
  end
  local states = {}
  local worst = nil
  for i = 1, n do
    local at = base + (i - 1) * 5
    local a, b, c = 0, 0, 0
    local alg = tonumber(ARGV[at + 1])
    local stored = redis.call('GET', KEYS[k0 + i])
    if stored and alg == 1 then
      a = tonumber(stored) or 0
    elseif stored then
      local x, y, z = string.match(stored, '^(%-?%d+):(%-?%d+):(%-?%d+)$')
      if x then
        a, b, c = tonumber(x), tonumber(y), tonumber(z)
      end
    end
    local ok, rem, reset, retry, na, nb, nc, ttl = check(alg,
      tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4]),
      tonumber(ARGV[at + 5]), a, b, c)
    states[i] = { alg, na, nb, nc, ttl }
    if worst == nil or stricter(ok, rem, reset, retry, worst) then
      worst = { ok, i - 1, rem, reset, retry }
    end
  end
  if worst[1] then
    for i = 1, n do
      local s = states[i]
      local value
      if s[1] == 1 then
        value = string.format('%.0f', s[2])
      else
        value = string.format('%.0f:%.0f:%.0f', s[2], s[3], s[4])
      end
      redis.call('SET', KEYS[k0 + i], value, 'PX', s[5])
    end
    return reply(1, worst[2], worst[3], worst[4], worst[5])
  end
  return reply(0, worst[2], worst[3], worst[4], worst[5])
end

local at, k0 = 2, 0
for _ = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[at])
  now = tonumber(ARGV[at + 1])
  cost = tonumber(ARGV[at + 2])
  decide(k0, n, at + 2)
  k0 = k0 + n
  at = at + 3 + n * 5
end
return out
