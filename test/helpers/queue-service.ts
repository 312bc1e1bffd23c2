// A one-node QueueService for tests: defaults for everything but its store and Redis client.
import pino from 'pino';
import { HashRing } from '../../src/queue/ring.js';
import { QueueService, type QueueServiceOptions } from '../../src/queue/service.js';

export function oneNodeQueueService(
  opts: Pick<QueueServiceOptions, 'store' | 'redis'> & Partial<QueueServiceOptions>,
): QueueService {
  return new QueueService({
    nodeId: 'n1',
    ring: new HashRing(['n1']),
    isUp: () => true,
    ackTimeoutMs: 30_000,
    maxDeliveries: 10,
    monitorIntervalMs: 60_000,
    // Long: a parked pop must be woken by a push itself, not found by a periodic recheck.
    recheckIntervalMs: 60_000,
    metrics: { messages: () => undefined, redeliveries: () => undefined },
    logger: pino({ level: 'silent' }),
    ...opts,
  });
}
