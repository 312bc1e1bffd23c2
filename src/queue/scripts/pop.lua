-- pop: move up to `max` ids from the head of ready to pending, counting one more delivery each.
-- KEYS[1] ready (LIST)   KEYS[2] pending (ZSET id -> deadline ms)   KEYS[3] dead (LIST)
-- KEYS[4] msg (HASH id -> JSON text)   KEYS[5] dc (HASH id -> delivery count)
-- ARGV[1] now_ms   ARGV[2] visibility_ms   ARGV[3] max (>= 1)   ARGV[4] max_deliveries (0 = no limit)
-- returns: { dead_lettered, more, id1, json1, count1, id2, json2, count2, ... } with more = 1 when
-- the scan stopped at its cap (below) short of `max` while ready still holds ids: the caller pops
-- again rather than report a queue empty that is not
--
-- This is the authoritative max-deliveries check: pop is the only place a delivery happens, so
-- checking here bounds deliveries to max_deliveries whatever way the id reached ready (nack,
-- redelivery, a lowered limit). A message already delivered max_deliveries times is moved to the
-- tail of dead instead and does not count towards `max`.

local deadline = tonumber(ARGV[1]) + tonumber(ARGV[2])
local max = tonumber(ARGV[3])
local maxDeliveries = tonumber(ARGV[4])

-- Dead-lettering while looking for deliverable messages is bounded so that a ready list full of
-- exhausted ids cannot block Redis for long; the next pop continues where this one stopped.
local scanCap = max + 1000

local out = { 0, 0 }
local delivered = 0
local deadLettered = 0
local scanned = 0
while delivered < max and scanned < scanCap do
  local id = redis.call('LPOP', KEYS[1])
  if not id then
    break
  end
  scanned = scanned + 1
  local body = redis.call('HGET', KEYS[4], id)
  if not body then
    -- An id without a message cannot be produced by these scripts; dropping it keeps a nil out of
    -- the reply (which would truncate the array) and there is no message to lose.
    redis.call('HDEL', KEYS[5], id)
  else
    local count = tonumber(redis.call('HGET', KEYS[5], id) or '0')
    if maxDeliveries > 0 and count >= maxDeliveries then
      redis.call('RPUSH', KEYS[3], id)
      deadLettered = deadLettered + 1
    else
      count = redis.call('HINCRBY', KEYS[5], id, 1)
      redis.call('ZADD', KEYS[2], deadline, id)
      out[#out + 1] = id
      out[#out + 1] = body
      out[#out + 1] = count
      delivered = delivered + 1
    end
  end
end

out[1] = deadLettered
if delivered < max and scanned >= scanCap and redis.call('LLEN', KEYS[1]) > 0 then
  out[2] = 1
end
return out
