-- chordCleanup-5: after the body was sent, drop the chord's state and mark it released
-- (Celery 5.7's CHORD_CLEANUP_LUA).
--
-- KEYS[1]  celery-taskset-meta-<gid>.c  the claim
-- KEYS[2..5]  .j .t .s .d
-- ARGV[1]  this worker's claim token
-- ARGV[2]  how long the "done" marker stays (s): late duplicates are ignored that long
--
-- Returns 1 when cleaned up, 0 when the claim was no longer this worker's (state left to
-- expire).
local ckey = KEYS[1]
local jkey = KEYS[2]
local tkey = KEYS[3]
local skey = KEYS[4]
local dkey = KEYS[5]
local token = ARGV[1]
local done_expires = tonumber(ARGV[2])

if redis.call('GET', ckey) == token then
    redis.call('DEL', jkey, tkey, skey, dkey)
    if done_expires and done_expires > 0 then
        redis.call('SET', ckey, 'done', 'EX', done_expires)
    end
    return 1
end
return 0
