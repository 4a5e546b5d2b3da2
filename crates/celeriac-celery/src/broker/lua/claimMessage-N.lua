-- claimMessage-N: takes the next message of a consume call and records it in kombu's
-- `unacked` hash and `unacked_index` zset in the same atomic step, so there is no instant at
-- which the message is in neither place (kombu itself pops with BRPOP and records afterwards).
--
-- KEYS[1]      the unacked hash (`unacked`, with the global key prefix)
-- KEYS[2]      the unacked index zset (`unacked_index`)
-- KEYS[3..]    the priority lists in kombu's order (each priority step ascending, within it
--              each queue in the queue order); the first non-empty one is served (RPOP)
-- ARGV[i]      the queue name (without prefix) of list KEYS[i + 2]: the routing key stored for
--              a message without `properties.delivery_info`
-- Returns:     nil when every list is empty, else { i, delivery_tag, raw } with i the 1-based
--              position of the list in KEYS[3..].
--
-- The unacked entry is exactly what kombu's QoS.append writes: field = delivery tag, value =
-- JSON `[<message>, <exchange>, <routing_key>]` (the message text embedded unchanged), score =
-- the server's clock in float seconds. A message that is not a JSON object for cjson is
-- stored as a JSON string (Python's restore then drops it with a log line instead of failing
-- its whole sweep); one without a delivery tag gets `celeriac-untagged-<sha1>`; a tag already
-- in the hash gets a `~n` suffix so no entry overwrites another.

if redis.replicate_commands then
  pcall(redis.replicate_commands)
end

for i = 1, #KEYS - 2 do
  local raw = redis.call('RPOP', KEYS[i + 2])
  if raw then
    local ok, msg = pcall(cjson.decode, raw)
    local tag, ex, rk
    local record
    if ok and type(msg) == 'table' then
      local props = msg['properties']
      if type(props) == 'table' then
        local t = props['delivery_tag']
        if type(t) == 'string' or type(t) == 'number' then
          tag = tostring(t)
        end
        local info = props['delivery_info']
        if type(info) == 'table' then
          ex = info['exchange']
          rk = info['routing_key']
        end
      end
      if ex == nil then ex = '' end
      if rk == nil then rk = ARGV[i] end
      record = '[' .. raw .. ', ' .. cjson.encode(ex) .. ', ' .. cjson.encode(rk) .. ']'
    else
      record = '[' .. cjson.encode(raw) .. ', "", ' .. cjson.encode(ARGV[i]) .. ']'
    end
    local now = redis.call('TIME')
    if tag == nil or tag == '' then
      tag = 'celeriac-untagged-' .. redis.sha1hex(raw)
    end
    if redis.call('HEXISTS', KEYS[1], tag) == 1 then
      local n = 1
      while redis.call('HEXISTS', KEYS[1], tag .. '~' .. n) == 1 do
        n = n + 1
      end
      tag = tag .. '~' .. n
    end
    local score = now[1] .. '.' .. string.format('%06d', tonumber(now[2]))
    redis.call('ZADD', KEYS[2], score, tag)
    redis.call('HSET', KEYS[1], tag, record)
    return { i, tag, raw }
  end
end
return nil
