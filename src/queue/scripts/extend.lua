-- extend: set a new visibility deadline for a pending message (longer or shorter: the caller
-- decides). A message whose deadline passed but that the redelivery monitor has not moved yet is
-- still pending and can be extended; once moved it is not pending any more and this returns 0.
-- KEYS[1] pending (ZSET)
-- ARGV[1] id   ARGV[2] deadline_ms (absolute)
-- returns: 1 extended, 0 not pending (nothing changed)

-- ZADD XX alone cannot tell "not pending" from "same deadline", hence the ZSCORE.
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', ARGV[2], ARGV[1])
return 1
