-- A home's read of memory for a grant: raise the key's fence to the grant's token, then read the
-- value, atomically. Any write-back still in flight under an older token (a holder the home gave
-- up on, a line of an earlier epoch, a write racing a rejoin) is refused from now on, so the value
-- this grant hands out cannot be overwritten behind its back.
-- KEYS[1] = dss:mem:<key>, KEYS[2] = dss:fence:{dss:mem:<key>}
-- ARGV[1] = epoch, ARGV[2] = counter
local epoch = tonumber(ARGV[1])
local counter = tonumber(ARGV[2])
local current = redis.call('GET', KEYS[2])
local raise = true
if current then
  local sep = string.find(current, ':', 1, true)
  local e = tonumber(string.sub(current, 1, sep - 1))
  local c = tonumber(string.sub(current, sep + 1))
  if epoch < e or (epoch == e and counter <= c) then
    raise = false
  end
end
if raise then
  redis.call('SET', KEYS[2], ARGV[1] .. ':' .. ARGV[2])
end
return redis.call('GET', KEYS[1])
