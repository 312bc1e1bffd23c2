-- unpop: undo deliveries that reached no consumer (a long poll that ended, or a client that went
-- away, while its pop was in Redis). Each message goes back to the HEAD of ready, in the order it was
-- popped, with the delivery it never had taken off its count, so the queue looks as if that pop
-- had not happened: first deliveries stay in push order and no message nears the dead-letter limit.
-- A pair acts only while the message is still pending under that very delivery (its count
-- unchanged): with a short visibility the monitor may have redelivered it to someone else already,
-- and that delivery must not be touched.
-- KEYS[1] pending (ZSET)   KEYS[2] ready (LIST)   KEYS[3] dc (HASH)
-- ARGV: id1, count1, id2, count2, ... (count = the delivery_count that pop returned; at most 1000 pairs)
-- returns: number of messages given back

local back = {}
for i = 1, #ARGV, 2 do
  local id = ARGV[i]
  local current = redis.call('HGET', KEYS[3], id)
  if current == ARGV[i + 1] and redis.call('ZREM', KEYS[1], id) == 1 then
    if tonumber(current) <= 1 then
      redis.call('HDEL', KEYS[3], id)
    else
      redis.call('HINCRBY', KEYS[3], id, -1)
    end
    back[#back + 1] = id
  end
end

-- LPUSH puts its last argument at the head, so the ids go in reverse. At most 1000 of them (one
-- pop's worth, checked by the caller): one unpack() holds that many.
if #back > 0 then
  local reversed = {}
  for k = #back, 1, -1 do
    reversed[#reversed + 1] = back[k]
  end
  redis.call('LPUSH', KEYS[2], unpack(reversed))
end
return #back
