// The node's Redis connection for the queue (SPEC 7: standalone URL, Redis Cluster or Sentinel).
// Options favour a fast 503 over a hang: no offline queue, one retry per command, a command timeout,
// never re-sending a script whose reply was lost (a re-run pop or ack is not idempotent), and
// automatic pipelining (not on a Redis Cluster, see below). The client keeps reconnecting in the
// background, so the service recovers by itself.
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { RedisConfig } from '../config/index.js';
import type { RedisClient } from './store.js';

/** How long one Redis call may take before the request that made it gets its 503. */
export const REDIS_COMMAND_TIMEOUT_MS = 5_000;

/**
 * Bounds one Redis call from the moment it is issued. ioredis starts `commandTimeout` only when a
 * command is written to the socket, and with auto-pipelining a command issued while the previous
 * pipeline is still unanswered waits in the client for it first: on a hung Redis (SIGSTOP) that
 * made one call take two command timeouts, and a cache transaction with several calls in a row
 * (each queued behind a hung pipeline) over 15 s. Measured in test/integration/redis-outage.test.ts.
 * The call itself is not cancelled: as with any timeout, its outcome is unknown.
 */
export function withCommandDeadline<T>(call: Promise<T>, ms = REDIS_COMMAND_TIMEOUT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Redis call timed out after ${ms} ms`)), ms);
  });
  return Promise.race([call, deadline]).finally(() => clearTimeout(timer));
}

const COMMON: RedisOptions = {
  enableOfflineQueue: false,
  maxRetriesPerRequest: 1,
  commandTimeout: REDIS_COMMAND_TIMEOUT_MS,
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
        // Off on a cluster: an auto-pipeline groups the commands of many slots served by one node,
        // and when slots move (resharding, failover) its MOVED replies differ, so ioredis neither
        // follows them nor refreshes its slot map. Measured under load (300 queues, 3000 slots
        // moved): every queue on a moved slot still got 503 seconds after the resharding ended.
        // Sent one by one, commands follow MOVED/ASK and refresh the map (no error at all).
        enableAutoPipelining: false,
        clusterRetryStrategy: (attempt: number) => Math.min(attempt * 50, 500),
        // The Cluster client re-sends a command whose connection closed before its reply came,
        // unless this is 0: the script may have run, and a re-run ack or pop is not idempotent (a
        // re-run ack answers 404 for a message it did ack; a re-run pop hides one message until
        // its visibility runs out). 0 makes it a 503 instead, as autoResendUnfulfilledCommands
        // does for one connection. Redirections (MOVED, ASK) and TRYAGAIN / CLUSTERDOWN replies
        // are still followed: there the script did not run.
        retryDelayOnFailover: 0,
        redisOptions: COMMON,
      });
  }
}

/**
 * The readiness probe of a node's Redis: PING for one server (standalone, or the master a Sentinel
 * names). A Cluster client would send its PING to one fixed master only, and it forgets a master
 * whose connection closed, so on a cluster: every master of the client's slot map must have a
 * connection that answers PING (a master it lost asks for a fresh slot map, so the probe heals
 * once the master is back or replaced), and the cluster must report `cluster_state:ok`. Queues and
 * keys on a dead master's slots fail at once, well before the cluster itself declares the failure.
 */
export async function pingRedis(client: RedisClient): Promise<void> {
  if (!(client instanceof Cluster)) {
    await client.ping();
    return;
  }
  const wanted = new Set<string>();
  for (let slot = 0; slot < 16384; slot++) {
    const master = client.slots[slot]?.[0];
    if (master === undefined) throw new Error(`Redis Cluster slot ${slot} has no master`);
    wanted.add(master);
  }
  const connected = new Map(client.nodes('master').map((r) => [`${r.options.host}:${r.options.port}`, r]));
  const missing = [...wanted].filter((key) => !connected.has(key));
  if (missing.length > 0) {
    client.refreshSlotsCache();
    throw new Error(`no connection to Redis Cluster master ${missing.join(', ')}`);
  }
  await Promise.all([...wanted].map((key) => connected.get(key)!.ping()));
  const info = await client.cluster('INFO');
  const state = /^cluster_state:(\w+)/m.exec(info)?.[1];
  if (state !== 'ok') throw new Error(`Redis Cluster reports cluster_state:${state ?? 'unknown'}`);
}
