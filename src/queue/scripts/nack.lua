-- nack: give a pending message back at once. It goes to the HEAD of ready so that it is the next
-- one delivered (the consumer refused it, it should not wait behind everything pushed since), or
-- to the tail of dead when it has already been delivered max_deliveries times, the same rule pop
-- and redeliver apply, so stats never count as ready a message that can no longer be delivered.
-- A receipt (the delivery_count the consumer got) narrows it to that very delivery: a late nack
-- from a consumer whose delivery expired must not take the message from whoever has it now.
-- KEYS[1] pending (ZSET)   KEYS[2] ready (LIST)   KEYS[3] dead (LIST)   KEYS[4] dc (HASH)
-- ARGV[1] id   ARGV[2] max_deliveries (0 = no limit)   ARGV[3] receipt ('' = any delivery)
-- returns: 0 not pending (unknown, ready, dead, acked, or another delivery; nothing changed),
-- 1 ready, 2 dead

local id = ARGV[1]
local maxDeliveries = tonumber(ARGV[2])
if ARGV[3] ~= '' and redis.call('HGET', KEYS[4], id) ~= ARGV[3] then
  return 0
end
if redis.call('ZREM', KEYS[1], id) == 0 then
  return 0
end
local count = tonumber(redis.call('HGET', KEYS[4], id) or '0')
if maxDeliveries > 0 and count >= maxDeliveries then
  redis.call('RPUSH', KEYS[3], id)
  return 2
end
redis.call('LPUSH', KEYS[2], id)
return 1
