-- ack: delete pending messages. Only a pending id can be acked: an id that is ready, dead,
-- unknown or already acked counts 0 and changes nothing, so a late ack from a consumer whose
-- visibility expired cannot take a message that went back to ready. Once it was delivered again,
-- only a receipt (the delivery_count the consumer got) tells the deliveries apart: with one, the ack
-- acts on that very delivery or not at all.
-- KEYS[1] pending (ZSET)   KEYS[2] msg (HASH)   KEYS[3] dc (HASH)
-- ARGV[1] receipt ('' = any delivery; only sent with a single id)
-- ARGV[2..n] ids (n >= 2; duplicates count once)
-- returns: number of ids acked

local receipt = ARGV[1]
local acked = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  if (receipt == '' or redis.call('HGET', KEYS[3], id) == receipt) and redis.call('ZREM', KEYS[1], id) == 1 then
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    acked = acked + 1
  end
end
return acked
