// The redelivery monitor retries Redis on every pass (twice a second in production). An outage must
// be logged once when it begins and once when it ends, not on every pass, and a node still making
// its first connection at start must not warn at all within the grace period.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import type { Logger } from 'pino';
import { MONITOR_STARTUP_GRACE_MS } from '../../../src/queue/service.js';
import type { QueueStore, RedisClient } from '../../../src/queue/store.js';
import { oneNodeQueueService } from '../../helpers/queue-service.js';
import { waitFor } from '../../helpers/wait.js';

describe('queue redelivery monitor: logging of a Redis outage', () => {
  let redisDown = true;
  let passes = 0;
  // The monitor's first call each pass lists the queues: failing it fails the pass.
  const redis = {
    sscan: (): Promise<[string, string[]]> => {
      passes++;
      return redisDown ? Promise.reject(new Error('connect ECONNREFUSED')) : Promise.resolve(['0', []]);
    },
  } as unknown as RedisClient;
  const warnings: string[] = [];
  const logger = {
    warn: (_fields: unknown, msg: string) => warnings.push(msg),
    info: () => undefined,
    debug: () => undefined,
  } as unknown as Logger;
  let clock = 1_000_000;
  const svc = oneNodeQueueService({
    store: {} as QueueStore,
    redis,
    monitorIntervalMs: 5,
    logger,
    now: () => clock,
  });
  after(() => svc.stop());

  const morePasses = (n: number): Promise<boolean> => {
    const target = passes + n;
    return waitFor(`${n} more monitor passes`, () => passes >= target);
  };

  it('says nothing while a starting node has not reached Redis within the grace period', async () => {
    svc.start();
    await morePasses(5);
    assert.deepEqual(warnings, []);
  });

  it('warns once when the outage outlasts the grace period, however many passes fail', async () => {
    clock += MONITOR_STARTUP_GRACE_MS;
    await morePasses(10);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /Redis unavailable/);
  });

  it('says once that Redis is back, and nothing more while it stays up', async () => {
    redisDown = false;
    await morePasses(10);
    assert.equal(warnings.length, 2);
    assert.match(warnings[1]!, /reachable again/);
  });

  it('after Redis was reached once, a new outage is reported at once (no grace), once', async () => {
    redisDown = true;
    await morePasses(10);
    assert.equal(warnings.length, 3);
    assert.match(warnings[2]!, /Redis unavailable/);
  });
});
