-- checkLimits-N: a batch of rate-limit decisions. Each checks the quotas of one key at its
-- caller's now and, only if every one allows the call, charges its cost to each (all or
-- nothing). The maths mirror
-- celeriac_core::limit::maths line by line (integers below 2^53 stay exact in Lua's doubles;
-- quotas are validated so they do).
--
-- Numbers travel and rest as little-endian IEEE doubles (`struct`), not decimal text: parsing
-- and printing decimals cost Redis more than the maths.
--
-- Self-contained (no includes: this is not a queue script).
-- KEYS    the quota states of every decision in order, n per decision: quota i's state is a
--         STRING `<prefix>:{rl:<key>}:<state id>` (every quota of a key under its one hash
--         tag, so one Cluster slot) of 4 doubles: a, b, c (GCRA: a = the TAT in µs; fixed
--         window: a = window start, b = count; sliding: a = window start, b = previous count,
--         c = current count), then when the key expires by Redis's clock (ms). Decimal text
--         from older builds ("<tat>", "a:b:c") is still read. The TTL covers how long the
--         state matters, plus slack (see store()).
-- ARGV[1] the batch's distinct quotas, 5 doubles each: algorithm (1 gcra, 2 sliding window,
--         3 fixed window), limit, window (ms), GCRA interval (µs), GCRA tolerance (µs).
-- ARGV[2] the decisions (at most 64 a call, so the work per call is bounded), each as
--         doubles: n (its quotas), now (ms), cost, then n quota numbers (from 1, into ARGV[1]).
-- Spoiled states (another process's writing): a number that is not finite, a state more than
-- an hour ahead of the caller's clock, or a key of another type reads as a fresh state, so no
-- key is denied forever; this is the one departure from the maths in Rust.
-- Returns: one string of 5 doubles per decision, in order: allowed 1|0, index of the reported
--          (most restrictive) quota from 0, remaining, reset after (ms), retry after (ms, -1
--          when allowed). Decisions are made one after the other, exactly as separate calls.

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
-- A state further ahead of the caller's clock than any state a fleet can write (a TAT past
-- now + tolerance, a window starting after now, each with an hour of slack for clocks that
-- disagree) was spoiled: it reads as fresh rather than denying its key until then.
local SLACK_MS = 3600000

local function check(alg, limit, w, t, tau, a, b, c)
  if alg == 1 then
    local now_us = now * 1000
    if a > now_us + tau + SLACK_MS * 1000 then a = 0 end
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
  if a > now + SLACK_MS then a, b, c = 0, 0, 0 end
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


local pack, sunpack = struct.pack, struct.unpack
local decisions = ARGV[2]

-- The batch's quotas: quota q's fields are quotas[q][1..5].
local quotas = {}
for at = 1, #ARGV[1], 40 do
  quotas[#quotas + 1] = { sunpack('<ddddd', ARGV[1], at) }
end

-- Redis's own clock (ms), which judges the keys' TTLs; read once a batch.
local time = redis.call('TIME')
local clock = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

-- A stored number that is not finite (a NaN or an infinity another process wrote, which would
-- deny a key forever) reads as 0, a fresh state.
local HUGE = math.huge
local function finite(x)
  if x ~= x or x == HUGE or x == -HUGE then return 0 end
  return x
end

-- A stored state: a, b, c, and when its key expires by Redis's clock (0 if unknown).
local function load(stored, alg)
  if type(stored) ~= 'string' then return 0, 0, 0, 0 end
  if #stored == 32 then
    -- Byte 8 is the top of a's double (0 for 0, 0x3F-0x43 for the values a takes); in text
    -- it is a digit, '-' or ':'.
    local top = string.byte(stored, 8)
    if top ~= 45 and (top < 48 or top > 58) then
      local a, b, c, expires = sunpack('<dddd', stored)
      return finite(a), finite(b), finite(c), finite(expires)
    end
  end
  -- Text from an older build: "<tat>" or "a:b:c".
  if alg == 1 then return finite(tonumber(stored) or 0), 0, 0, 0 end
  local x, y, z = string.match(stored, '^(%-?%d+):(%-?%d+):(%-?%d+)$')
  if x then return finite(tonumber(x)), finite(tonumber(y)), finite(tonumber(z)), 0 end
  return 0, 0, 0, 0
end

-- Writes a state that must outlive `ttl` ms. Setting a TTL costs Redis about as much as the
-- rest of a decision, so a key whose TTL already reaches far enough keeps it; one that must
-- live longer gets `ttl` plus slack (as long again, at least 1 s, at most 60 s), so a busy
-- key is given a new TTL now and then rather than on every call.
local function store(key, a, b, c, ttl, expires)
  if clock + ttl <= expires then
    redis.call('SET', key, pack('<dddd', a, b, c, expires), 'KEEPTTL')
    return
  end
  local live = ttl + math.min(math.max(ttl, 1000), 60000)
  redis.call('SET', key, pack('<dddd', a, b, c, clock + live), 'PX', live)
end

-- Five numbers a decision, packed into one string at the end.
local out, o = {}, 0
local function reply(allowed, index, rem, reset, retry)
  out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5] = allowed, index, rem, reset, retry
  o = o + 5
end

-- One decision over KEYS[k0 + 1 .. k0 + n], its first quota q (the others numbered from `pos`
-- in ARGV[2]); returns where the next decision starts. The general case: several quotas, or
-- a windowed one.
local function decide(k0, n, q, pos)
  local quota = quotas[q]
  local states = {}
  local worst = nil
  for i = 1, n do
    if i > 1 then
      q, pos = sunpack('<d', decisions, pos)
      quota = quotas[q]
    end
    local alg = quota[1]
    local a, b, c, expires = load(redis.pcall('GET', KEYS[k0 + i]), alg)
    local ok, rem, reset, retry, na, nb, nc, ttl = check(alg, quota[2], quota[3], quota[4],
      quota[5], a, b, c)
    states[i] = { na, nb, nc, ttl, expires }
    if worst == nil or stricter(ok, rem, reset, retry, worst) then
      worst = { ok, i - 1, rem, reset, retry }
    end
  end
  if worst[1] then
    for i = 1, n do
      local s = states[i]
      store(KEYS[k0 + i], s[1], s[2], s[3], s[4], s[5])
    end
    reply(1, worst[2], worst[3], worst[4], worst[5])
  else
    reply(0, worst[2], worst[3], worst[4], worst[5])
  end
  return pos
end

local pos, k0 = 1, 0
-- GET through pcall: a key of the wrong type (another process's doing) reads as no state and
-- is overwritten by the next allowed call, instead of failing every decision of the batch.
local byte, call, pcall_ = string.byte, redis.call, redis.pcall
while pos <= #decisions do
  local n, q
  n, now, cost, q, pos = sunpack('<dddd', decisions, pos)
  local quota = quotas[q]
  if n == 1 and quota[1] == 1 then
    -- The common case, one GCRA quota, made right here: load(), check(), store() and
    -- reply() line for line without calling them (function calls were a tenth of a
    -- decision's cost in Redis).
    local key = KEYS[k0 + 1]
    local stored = pcall_('GET', key)
    local tat, expires = 0, 0
    if type(stored) == 'string' then
      local top = #stored == 32 and byte(stored, 8)
      if top and top ~= 45 and (top < 48 or top > 58) then
        tat, expires = sunpack('<d', stored), sunpack('<d', stored, 25)
      else
        tat = tonumber(stored) or 0
      end
      -- Not finite (spoiled): a fresh state, as load() reads it.
      if tat ~= tat or tat == HUGE or tat == -HUGE then tat = 0 end
      if expires ~= expires or expires == HUGE or expires == -HUGE then expires = 0 end
    end
    local t, tau = quota[4], quota[5]
    local now_us = now * 1000
    if tat > now_us + tau + SLACK_MS * 1000 then tat = 0 end
    if tat < now_us then tat = now_us end
    local new = tat + t * cost
    if new - tau <= now_us then
      local reset = ceil_ms(new - now_us)
      local ttl = reset
      if ttl < 1 then ttl = 1 end
      if clock + ttl <= expires then
        call('SET', key, pack('<dddd', new, 0, 0, expires), 'KEEPTTL')
      else
        local live = ttl + math.min(math.max(ttl, 1000), 60000)
        call('SET', key, pack('<dddd', new, 0, 0, clock + live), 'PX', live)
      end
      out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5] =
        1, 0, clamp(idiv(tau - (new - now_us), t)), reset, -1
    else
      out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5] =
        0, 0, clamp(idiv(tau - (tat - now_us), t)), ceil_ms(tat - now_us),
        ceil_ms(new - tau - now_us)
    end
    o = o + 5
  else
    pos = decide(k0, n, q, pos)
  end
  k0 = k0 + n
end
return pack('<' .. string.rep('d', o), unpack(out, 1, o))
