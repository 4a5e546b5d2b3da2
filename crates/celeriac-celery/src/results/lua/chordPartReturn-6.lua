-- chordPartReturn-6: record one finished chord header member (Celery 5.7 bookkeeping) and,
-- when the chord is complete, claim the right to release its body.
-- The same script, keys and arguments as Celery 5.7's CHORD_PART_RETURN_LUA, so Rust and
-- Python 5.7 workers can finish members of one chord together.
--
-- KEYS[1]  celery-taskset-meta-<gid>.j  results: zset scored by group_index (or a list)
-- KEYS[2]  celery-taskset-meta-<gid>.t  members added later (Task.add_to_chord), integer
-- KEYS[3]  celery-taskset-meta-<gid>.s  the chord size, set by the client
-- KEYS[4]  celery-taskset-meta-<gid>.d  set of "<task id>:<group index>" already recorded
-- KEYS[5]  celery-taskset-meta-<gid>    a saved GroupResult (only its expiry is touched)
-- KEYS[6]  celery-taskset-meta-<gid>.c  the release claim: a token, or "done" once released
-- ARGV[1]  task id             ARGV[2]  element: JSON [1, task_id, state, result]
-- ARGV[3]  "1" = zset, "0" = list                  ARGV[4]  score: group index or "+inf"
-- ARGV[5]  chord expiry (s, 0 = none)              ARGV[6]  group record expiry (s, 0 = none)
-- ARGV[7]  claim expiry (s)                        ARGV[8]  claim token
--
-- Returns {readycount, totaldiff or false, size or false, claimed (1/0)}; {-1, 0, 0, 0} when
-- the chord was already released (a late duplicate: nothing is recorded).
local jkey, tkey, skey, dkey, gkey, ckey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local tid, value, ordered, score = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local expires, group_expires = tonumber(ARGV[5]), tonumber(ARGV[6])
local claim_expires = tonumber(ARGV[7])
local claim_token = ARGV[8]

if redis.call('GET', ckey) == 'done' then
    return {-1, 0, 0, 0}
end

-- A redelivered member (same task id and index) is recorded once.
local member = tid .. ':' .. score
if redis.call('SISMEMBER', dkey, member) == 0 then
    if ordered == '1' then
        redis.call('ZADD', jkey, score, value)
    else
        redis.call('RPUSH', jkey, value)
    end
    redis.call('SADD', dkey, member)
end
local readycount
if ordered == '1' then
    readycount = redis.call('ZCOUNT', jkey, '-inf', '+inf')
else
    readycount = redis.call('LLEN', jkey)
end
if expires > 0 then
    for _, key in ipairs({jkey, tkey, skey, dkey}) do
        redis.call('EXPIRE', key, expires)
    end
    if group_expires > 0 then
        redis.call('EXPIRE', gkey, group_expires)
    end
end

local totaldiff = redis.call('GET', tkey)
local size = redis.call('GET', skey)
local claimed = 0
if size and readycount == tonumber(size) + tonumber(totaldiff or 0) then
    if redis.call('SET', ckey, claim_token, 'NX', 'EX', claim_expires) then
        claimed = 1
    end
end

return {readycount, totaldiff, size, claimed}
