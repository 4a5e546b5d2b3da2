-- ensureKey-1: stores a value of the key-value store if its key is absent or expired at the
-- caller's now, and keeps the key live until at least `until` either way; a live value is
-- never changed. (The cache's tag barriers: created with the entries that carry the tag, so a
-- barrier the server evicted reads as absent, never as "not raised".)
--
-- Self-contained (no includes/common.lua: this is not a queue script).
-- KEYS[1] the value: STRING `<prefix>:kv:<key>` holding 0x01, its expiry in ms (8 bytes,
--         big-endian), then the value (see kv.rs); anything else (a counter) is left alone.
-- ARGV[1] the stored form of the value to write if absent (its header says `until`),
--         ARGV[2] now (ms), ARGV[3] until (ms) = now + ttl, ARGV[4] ttl (ms, above 0).
-- Returns: 1 if the value was written, 0 if a live one was kept.

local cur = redis.call('GET', KEYS[1])
local now = tonumber(ARGV[2])
local untl = tonumber(ARGV[3])
if type(cur) == 'string' then
  if string.byte(cur, 1) ~= 1 or #cur < 9 then
    return 0
  end
  local had = struct.unpack('>i8', cur, 2)
  if had > now then
    if had < untl then
      redis.call('SETRANGE', KEYS[1], 1, struct.pack('>i8', untl))
    end
    if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then
      redis.call('PEXPIRE', KEYS[1], ARGV[4])
    end
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
return 1
