-- chordClaimExtend-2: keep (or take back) the release claim before the body is sent
-- (Celery 5.7's CHORD_CLAIM_EXTEND_LUA).
--
-- KEYS[1]  celery-taskset-meta-<gid>.c  the claim
-- KEYS[2]  celery-taskset-meta-<gid>.s  the chord size (present while the chord is live)
-- ARGV[1]  this worker's claim token
-- ARGV[2]  new claim expiry (s)
--
-- Returns 1 when this worker holds the claim for ARGV[2] more seconds, 0 when another
-- worker holds it or the chord is gone.
local ckey, skey = KEYS[1], KEYS[2]
local token = ARGV[1]
local expires = tonumber(ARGV[2])
if redis.call('GET', ckey) == token then
    return redis.call('EXPIRE', ckey, expires)
end
if not redis.call('GET', ckey) and redis.call('EXISTS', skey) == 1 then
    return redis.call('SET', ckey, token, 'EX', expires, 'NX') and 1 or 0
end
return 0
