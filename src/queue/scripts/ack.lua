-- ack: delete pending messages. Only a pending id can be acked: an id that is ready, dead,
-- unknown or already acked counts 0 and changes nothing, so a late ack from a consumer whose
-- visibility already expired (and whose message went back to ready) cannot delete the redelivery.
-- KEYS[1] pending (ZSET)   KEYS[2] msg (HASH)   KEYS[3] dc (HASH)
-- ARGV[1..n] ids (n >= 1; duplicates count once)
-- returns: number of ids acked

local acked = 0
for i = 1, #ARGV do
  local id = ARGV[i]
  if redis.call('ZREM', KEYS[1], id) == 1 then
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    acked = acked + 1
  end
end
return acked
