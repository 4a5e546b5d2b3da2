-- storeResult-1: store a result record and publish it, unless a SUCCESS is stored already.
--
-- KEYS[1]  the record's key, celery-task-meta-<id> (also the pub/sub channel)
-- ARGV[1]  the record (JSON)
-- ARGV[2]  time to live in seconds; "0" = keep forever (SET instead of SETEX)
-- ARGV[3]  optional: the stored value the caller has decoded and found not to be a SUCCESS
--          (for compressed records, which Lua cannot read); the write happens only if the
--          key still holds exactly that value (or nothing)
--
-- Returns 1 when stored and published (SETEX + PUBLISH of the same bytes, as Celery's
-- RedisBackend._set does in one MULTI); 0 when the key holds a SUCCESS record: a late or
-- duplicate write never replaces a success (Celery's _store_result checks the same);
-- 2 when the stored record is compressed (Celery 5.7 result_compression): the caller decodes
-- it and calls again with ARGV[3]; 3 when the value changed since the caller read it.
local current = redis.call('GET', KEYS[1])
if current then
    if ARGV[3] then
        if current ~= ARGV[3] then
            return 3
        end
    elseif string.sub(current, 1, 19) == '\0celery-compressed\0' then
        return 2
    else
        local ok, decoded = pcall(cjson.decode, current)
        if ok then
            if type(decoded) == 'table' and decoded['status'] == 'SUCCESS' then
                return 0
            end
        elseif string.find(current, '^%s*{%s*"status"%s*:%s*"SUCCESS"') then
            -- Not JSON to cjson (e.g. big numbers); Python writes "status" first.
            return 0
        end
    end
end
local ttl = tonumber(ARGV[2])
if ttl and ttl > 0 then
    redis.call('SETEX', KEYS[1], ttl, ARGV[1])
else
    redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
