// The node's Redis connection for the queue (SPEC 7: standalone URL, Redis Cluster or Sentinel).
// Options favour a fast 503 over a hang: no offline queue, one retry per command, a command timeout,
// never re-sending a script whose reply was lost (a re-run pop or ack is not idempotent), and
// automatic pipelining. The
// client keeps reconnecting in the background, so the service recovers by itself.
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { RedisConfig } from '../config/index.js';
import type { RedisClient } from './store.js';

const COMMON: RedisOptions = {
  enableOfflineQueue: false,
  maxRetriesPerRequest: 1,
  commandTimeout: 5_000,
  connectTimeout: 2_000,
  autoResendUnfulfilledCommands: false,
  retryStrategy: (attempt: number) => Math.min(attempt * 50, 500),
  // Scripts issued in the same tick (many clients' requests) go out in one write.
  enableAutoPipelining: true,
};

export function createRedisClient(config: RedisConfig): RedisClient {
  switch (config.mode) {
    case 'standalone':
      return new Redis(config.url, COMMON);
    case 'sentinel':
      return new Redis({ ...COMMON, sentinels: config.sentinels, name: config.name });
    case 'cluster':
      return new Cluster(config.nodes, {
        enableOfflineQueue: false,
        enableAutoPipelining: true,
        clusterRetryStrategy: (attempt: number) => Math.min(attempt * 50, 500),
        redisOptions: COMMON,
      });
  }
}
