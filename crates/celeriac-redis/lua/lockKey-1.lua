-- lockKey-1: takes a lease lock of the key-value store if it is free or expired at the
-- caller's now (SET NX PX, but judged by ARGV now rather than by Redis' clock).
--
-- Self-contained (no includes/common.lua: this is not a queue script).
-- KEYS[1] the lock: STRING `<prefix>:kv-lock:<key>` holding `<until>|<token>` (until first:
--         it is digits, so a token may hold any byte, `|` too). Its Redis TTL is the lease, so
--         an abandoned lock cleans itself up; until it does, `until` says when it expired.
-- ARGV[1] token, ARGV[2] now (ms), ARGV[3] until (ms) = now + ttl, ARGV[4] ttl (ms, above 0),
--         computed by the caller.
-- Returns: 1 if the lock was taken for the token, 0 while another lease (or this token's own)
-- runs past now.

-- A value that does not read as `<until>|<token>` with a decimal until (another type, `nan`,
-- `inf`, text) holds nothing: the lock is free and the SET below replaces it.
local held = redis.pcall('GET', KEYS[1])
if type(held) == 'string' then
  local bar = string.find(held, '|', 1, true)
  local digits = bar and string.sub(held, 1, bar - 1)
  local untl = digits and #digits <= 17 and string.find(digits, '^%-?%d+$') and tonumber(digits)
  if untl and untl > tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[3] .. '|' .. ARGV[1], 'PX', ARGV[4])
return 1
