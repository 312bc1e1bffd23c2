-- stats: the three counts read atomically, so ready + pending + dead is a consistent snapshot.
-- KEYS[1] ready (LIST)   KEYS[2] pending (ZSET)   KEYS[3] dead (LIST)
-- returns: { ready, pending, dead }

return {
  redis.call('LLEN', KEYS[1]),
  redis.call('ZCARD', KEYS[2]),
  redis.call('LLEN', KEYS[3]),
}
