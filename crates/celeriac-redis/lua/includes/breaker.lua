-- includes/breaker.lua: prepended to every shared circuit-breaker script. It mirrors the rules
-- of celeriac_core::breaker::shared::SharedRecord (the SQLite backend applies those directly).
--
-- Every script of a breaker receives the same three keys, under the breaker's hash tag
-- `{celeriac:breaker:<name>}`, each with a Redis TTL of ARGV[14] ms refreshed by every write:
--   KEYS[1] state    HASH  st (BreakerState code: 0 closed, 1 open, 2 half-open, 3 forced
--                          open, 4 forced closed), until (ms), trips, gen, since (ms),
--                          pok / pfail (probe results of this half-open period), exp (ms:
--                          the record counts as gone at the caller's now past it; the Redis
--                          TTL only collects the garbage)
--   KEYS[2] signals  HASH  `<epoch>|<instance>|c|f|s` -> calls|failures|slow of one instance in
--                          one bucket (epoch = now / bucket_ms)
--   KEYS[3] probes   ZSET  probe token -> reservation expiry (ms)
-- ARGV, the policy (celeriac_core::backend::BreakerPolicy), the same for every script:
--   [1] now (ms)  [2] window_ms  [3] bucket_ms  [4] min_calls  [5] quorum  [6] failure_rate
--   [7] slow_rate (percent, 0: slow calls do not count)  [8] probes  [9] probe_lease_ms
--   [10] open_ms  [11] backoff  [12] max_open_ms  [13] jitter_cut (0..1)  [14] ttl_ms
-- Every script returns the state after it: {st, until, trips, gen, calls, failures, slow,
-- instances} (integers), with one more element where its header says so. A breaker with no
-- state hash (never used, or expired) is closed.
-- A spoiled record is repaired, never a Lua error: a key of the wrong type is dropped (the
-- breaker starts over, closed), a state code that is not one reads as closed, and a number
-- that is not finite or beyond 2^53 reads as its default.

local K_STATE, K_SIGNALS, K_PROBES = KEYS[1], KEYS[2], KEYS[3]
local NOW = tonumber(ARGV[1])
local WINDOW, BUCKET = tonumber(ARGV[2]), math.max(1, tonumber(ARGV[3]))
local MIN_CALLS, QUORUM = math.max(1, tonumber(ARGV[4])), math.max(1, tonumber(ARGV[5]))
local FAIL_RATE, SLOW_RATE = tonumber(ARGV[6]), tonumber(ARGV[7])
local PROBES, PROBE_LEASE = math.max(1, tonumber(ARGV[8])), tonumber(ARGV[9])
local OPEN_MS, BACKOFF, MAX_OPEN = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local JITTER, TTL = tonumber(ARGV[13]) or 0, ARGV[14]

local CLOSED, OPEN, HALF_OPEN, FORCED_OPEN, FORCED_CLOSED = 0, 1, 2, 3, 4

-- Integers as text (Redis would format a Lua number with 14 significant digits).
local function num(x)
  return string.format('%.0f', x)
end

-- A stored number, or `default` when it is missing, not a number, not finite or beyond 2^53
-- (where doubles stop counting exactly and integer replies stop meaning anything).
local function stored(x, default)
  local n = tonumber(x)
  if n and n == n and n >= -9007199254740992 and n <= 9007199254740992 then return n end
  return default
end

-- Drops any of the breaker's keys that holds the wrong type (another process's doing).
local function repair()
  if type(redis.pcall('HLEN', K_STATE)) == 'table' then redis.call('DEL', K_STATE) end
  if type(redis.pcall('HLEN', K_SIGNALS)) == 'table' then redis.call('DEL', K_SIGNALS) end
  if type(redis.pcall('ZCARD', K_PROBES)) == 'table' then redis.call('DEL', K_PROBES) end
end

local function load()
  repair()
  local h = redis.call('HMGET', K_STATE, 'st', 'until', 'trips', 'gen', 'since', 'pok', 'pfail', 'exp')
  local exp = stored(h[8], nil)
  if exp and exp <= NOW then
    -- Expired by the caller's clock: forgotten, with its signals and probes.
    redis.call('DEL', K_STATE, K_SIGNALS, K_PROBES)
    h = {}
  end
  local st = stored(h[1], CLOSED)
  if st ~= math.floor(st) or st < CLOSED or st > FORCED_CLOSED then st = CLOSED end
  return {
    st = st, untl = stored(h[2], 0), trips = math.max(stored(h[3], 0), 0),
    gen = stored(h[4], 0), since = stored(h[5], NOW), pok = stored(h[6], 0),
    pfail = stored(h[7], 0),
  }
end

local function save(r)
  redis.call('HSET', K_STATE, 'st', num(r.st), 'until', num(r.untl), 'trips', num(r.trips),
    'gen', num(r.gen), 'since', num(r.since), 'pok', num(r.pok), 'pfail', num(r.pfail),
    'exp', num(NOW + tonumber(TTL)))
  redis.call('PEXPIRE', K_STATE, TTL)
  if redis.call('EXISTS', K_SIGNALS) == 1 then redis.call('PEXPIRE', K_SIGNALS, TTL) end
end

local function enter(r, st)
  r.st, r.gen, r.since, r.pok, r.pfail = st, r.gen + 1, NOW, 0, 0
  redis.call('DEL', K_PROBES)
end

local function trip(r)
  r.trips = r.trips + 1
  local full = math.min(OPEN_MS * (BACKOFF ^ math.min(r.trips - 1, 64)), MAX_OPEN)
  r.untl = NOW + math.max(1, math.floor(full * (1 - math.min(1, math.max(0, JITTER)))))
  enter(r, OPEN)
  redis.call('DEL', K_SIGNALS)
end

-- An open breaker whose period ended is half-open.
local function settle(r)
  if r.st == OPEN and NOW >= r.untl then enter(r, HALF_OPEN) end
end

local function oldest_epoch()
  local n = math.floor((math.max(1, WINDOW) + BUCKET - 1) / BUCKET)
  return math.floor(NOW / BUCKET) - n + 1
end

-- Per instance {calls, failures, slow} within the window; drops older buckets when `prune`.
local function per_instance(prune)
  local oldest = oldest_epoch()
  local all = redis.call('HGETALL', K_SIGNALS)
  local per, stale = {}, {}
  for i = 1, #all, 2 do
    local epoch, inst = string.match(all[i], '^(%-?%d+)|(.*)$')
    epoch = tonumber(epoch)
    if epoch and epoch >= oldest then
      local c, f, s = string.match(all[i + 1], '^(%d+)|(%d+)|(%d+)$')
      local p = per[inst] or {0, 0, 0}
      p[1], p[2], p[3] = p[1] + stored(c, 0), p[2] + stored(f, 0), p[3] + stored(s, 0)
      per[inst] = p
    else
      stale[#stale + 1] = all[i]
    end
  end
  if prune and #stale > 0 then redis.call('HDEL', K_SIGNALS, unpack(stale)) end
  return per
end

local function reply(r, per)
  local c, f, s, n = 0, 0, 0, 0
  for _, p in pairs(per) do
    c, f, s = c + p[1], f + p[2], s + p[3]
    if p[1] > 0 then n = n + 1 end
  end
  return {r.st, r.untl, r.trips, r.gen, c, f, s, n}
end

-- Opens a closed breaker when the window holds MIN_CALLS, reaches a rate, and QUORUM
-- instances each reach it on their own calls.
local function judge(r, per)
  if r.st ~= CLOSED then return end
  local c, f, s = 0, 0, 0
  for _, p in pairs(per) do c, f, s = c + p[1], f + p[2], s + p[3] end
  if c < MIN_CALLS then return end
  local function reaches(part, whole, rate) return whole > 0 and part * 100 >= rate * whole end
  local function quorum(idx, rate)
    local n = 0
    for _, p in pairs(per) do
      if reaches(p[idx], p[1], rate) then n = n + 1 end
    end
    return n >= QUORUM
  end
  local failing = reaches(f, c, FAIL_RATE) and quorum(2, FAIL_RATE)
  local slow = SLOW_RATE > 0 and reaches(s, c, SLOW_RATE) and quorum(3, SLOW_RATE)
  if failing or slow then trip(r) end
end
