-- push: store messages and append their ids to the tail of the ready list, in argument order.
-- KEYS[1] ready (LIST)   KEYS[2] msg (HASH id -> JSON text)   KEYS[3] seq (STRING counter)
-- ARGV[1] most messages the queue may hold (HLEN of msg: ready, pending and dead), 0 = no limit
-- ARGV[2..n+1] the messages' JSON text, one per message (n >= 1)
-- returns: { id1, ..., idn } (decimal strings, strictly increasing per queue), or
--          { 'full', held } when the batch would take the queue past ARGV[1] (nothing stored)
--
-- No delivery count is written: a missing `dc` field means 0, which saves one hash entry per
-- message that is never popped before it is dropped, and pop creates it with HINCRBY.

local n = #ARGV - 1
if n <= 0 then
  return {}
end

-- All or nothing: a batch that does not fit is refused whole, so the caller knows what was stored.
local maxLength = tonumber(ARGV[1])
if maxLength > 0 then
  local held = redis.call('HLEN', KEYS[2])
  if held + n > maxLength then
    return { 'full', held }
  end
end

-- One INCRBY reserves the whole id range; the counter is never reset, so ids are never reused even
-- after every message of the queue has been acked.
local last = redis.call('INCRBY', KEYS[3], n)
local first = last - n + 1

-- unpack() is bounded by the Lua C stack (about 8000 values), and a 1 MiB batch of tiny messages
-- can hold far more than that, so HSET and RPUSH go in chunks. Order across chunks is kept.
local CHUNK = 1000
local ids = {}
local i = 1
while i <= n do
  local j = math.min(i + CHUNK - 1, n)
  local fields = {}
  local chunkIds = {}
  for k = i, j do
    -- %d, not tostring: tostring switches to exponent notation above 1e14.
    local id = string.format('%d', first + k - 1)
    ids[k] = id
    chunkIds[#chunkIds + 1] = id
    fields[#fields + 1] = id
    fields[#fields + 1] = ARGV[k + 1]
  end
  redis.call('HSET', KEYS[2], unpack(fields))
  redis.call('RPUSH', KEYS[1], unpack(chunkIds))
  i = j + 1
end

return ids
