-- Fenced write of one key's main-memory value (SPEC 6: the value of key K lives at dss:mem:K).
-- KEYS[1] = dss:mem:<key>   the value's JSON text
-- KEYS[2] = dss:fence:{dss:mem:<key>}   "<epoch>:<counter>", the highest token that has written
-- ARGV[1] = epoch, ARGV[2] = counter: the writer's token (from the grant of its M/E line)
-- ARGV[3] = 'set' | 'del' | 'fence'
-- ARGV[4] = the JSON text (set only)
-- Returns 1 when applied, 0 when a newer token has already written (the writer lost its line:
-- its home gave up on it and handed the key to someone else, so this late write must not land).
-- 'fence' only raises the token: the home uses it before handing out a key whose exclusive holder
-- it could not reach, so that holder's late write-back is refused.
local epoch = tonumber(ARGV[1])
local counter = tonumber(ARGV[2])
local current = redis.call('GET', KEYS[2])
if current then
  local sep = string.find(current, ':', 1, true)
  local e = tonumber(string.sub(current, 1, sep - 1))
  local c = tonumber(string.sub(current, sep + 1))
  if epoch < e or (epoch == e and counter < c) then
    return 0
  end
  if epoch ~= e or counter ~= c then
    redis.call('SET', KEYS[2], ARGV[1] .. ':' .. ARGV[2])
  end
else
  redis.call('SET', KEYS[2], ARGV[1] .. ':' .. ARGV[2])
end
local op = ARGV[3]
if op == 'set' then
  redis.call('SET', KEYS[1], ARGV[4])
elseif op == 'del' then
  redis.call('DEL', KEYS[1])
end
return 1
