-- redeliver: move up to `limit` pending messages whose deadline is <= now back to ready, or to
-- dead when they have already been delivered max_deliveries times (pop would refuse to deliver
-- them anyway; moving them here makes stats show them as dead at once).
-- Returned messages go to the HEAD of ready, earliest deadline first: they are older than anything
-- pushed since, so this keeps delivery close to push order. Two nodes may run this concurrently
-- for the same queue: each run is atomic, so an id is moved by exactly one of them.
-- KEYS[1] pending (ZSET)   KEYS[2] ready (LIST)   KEYS[3] dead (LIST)   KEYS[4] dc (HASH)
-- ARGV[1] now_ms   ARGV[2] max_deliveries (0 = no limit)   ARGV[3] limit (>= 1)
-- returns: { requeued, dead_lettered, more } with more = 1 when expired messages remain

local now = ARGV[1]
local maxDeliveries = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])

local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
if #ids == 0 then
  return { 0, 0, 0 }
end

local back = {}
local deadLettered = 0
for i = 1, #ids do
  local id = ids[i]
  redis.call('ZREM', KEYS[1], id)
  local count = tonumber(redis.call('HGET', KEYS[4], id) or '0')
  if maxDeliveries > 0 and count >= maxDeliveries then
    redis.call('RPUSH', KEYS[3], id)
    deadLettered = deadLettered + 1
  else
    back[#back + 1] = id
  end
end

-- LPUSH puts its last argument at the head, so push in reverse deadline order, chunked because
-- unpack() is bounded by the Lua C stack.
local CHUNK = 1000
local hi = #back
while hi >= 1 do
  local lo = math.max(1, hi - CHUNK + 1)
  local chunk = {}
  for k = hi, lo, -1 do
    chunk[#chunk + 1] = back[k]
  end
  redis.call('LPUSH', KEYS[2], unpack(chunk))
  hi = lo - 1
end

local more = 0
if redis.call('ZCOUNT', KEYS[1], '-inf', now) > 0 then
  more = 1
end
return { #back, deadLettered, more }
