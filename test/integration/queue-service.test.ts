// The queue service on one node (src/queue/service.ts) against a real, private redis-server, with the
// store's calls held at chosen moments to open the races a loaded node meets by chance: a push
// landing while a parked pop's drain is in Redis, a long poll ending while its pop is in Redis, one
// queue failing during a monitor pass, and a pop behind more exhausted ids than one script examines.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { DssError } from '../../src/errors.js';
import type { QueueService, QueueServiceOptions } from '../../src/queue/service.js';
import { QueueStore, type PopOptions, type PopResult } from '../../src/queue/store.js';
import { oneNodeQueueService } from '../helpers/queue-service.js';
import { RedisServer } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

const code = (e: unknown): string => (e instanceof DssError ? e.code : String(e));

let queueSeq = 0;
const freshQueue = (tag: string): string => `svc.${tag}.${process.pid}.${++queueSeq}`;

/** A promise and the function that settles it. */
function gate(): { open: () => void; opened: Promise<void> } {
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  return { open, opened };
}

describe('queue service (real redis-server)', { timeout: 60_000 }, () => {
  let server: RedisServer;
  let redis: Redis;
  const services: QueueService[] = [];

  before(async () => {
    server = await RedisServer.start();
    redis = new Redis({ host: '127.0.0.1', port: server.port, lazyConnect: true, maxRetriesPerRequest: 1 });
    redis.on('error', () => undefined);
    await redis.connect();
  });

  after(async () => {
    for (const s of services) s.stop();
    redis?.disconnect();
    await server?.stop();
  });

  /** A fresh store (its methods may be wrapped per test) and a one-node service on it. */
  function setup(extra: Partial<QueueServiceOptions> = {}): { store: QueueStore; svc: QueueService } {
    const store = new QueueStore(redis);
    const svc = oneNodeQueueService({ store, redis, ...extra });
    services.push(svc);
    return { store, svc };
  }

  /** Wraps store.pop so that call number `n` (1-based) waits for `hold` before it returns or starts. */
  function holdPop(
    store: QueueStore,
    n: number,
    where: 'before' | 'after',
    hold: Promise<void>,
  ): { calls: () => number; reached: Promise<void> } {
    const real = store.pop.bind(store);
    const reached = gate();
    let calls = 0;
    store.pop = async (q: string, o: PopOptions): Promise<PopResult> => {
      const mine = ++calls;
      if (mine !== n) return real(q, o);
      if (where === 'before') {
        reached.open();
        await hold;
        return real(q, o);
      }
      const res = await real(q, o);
      reached.open();
      await hold;
      return res;
    };
    return { calls: () => calls, reached: reached.opened };
  }

  it('a push that lands while a parked pop is being served from Redis still wakes it', async () => {
    const { store, svc } = setup();
    const q = freshQueue('wake');
    const release = gate();
    // Call 1 is the pop's own look (empty); call 2 the drain that parking starts, held after Redis
    // answered it (empty) so that the push lands in between.
    const held = holdPop(store, 2, 'after', release.opened);
    const t0 = Date.now();
    const waiter = svc.pop(q, { max: 1, waitMs: 10_000 });
    await held.reached;
    const [id] = await svc.push(q, ['hello']);
    release.open();
    const got = await waiter;
    assert.deepEqual(got, [{ id, message: 'hello', delivery_count: 1 }]);
    assert.ok(Date.now() - t0 < 5_000, `answered after ${Date.now() - t0} ms, not at once`);
  });

  it('a long poll that ends while its pop is in Redis gives the messages back in order, uncounted', async () => {
    const { store, svc } = setup();
    const q = freshQueue('unclaimed');
    const release = gate();
    // Call 2 (the drain for the parked pop) waits before it runs, until the poll has given up.
    const held = holdPop(store, 2, 'before', release.opened);
    const realUnpop = store.unpop.bind(store);
    const unpopped = new Promise<number>((resolve) => {
      store.unpop = async (queue, msgs) => {
        const n = await realUnpop(queue, msgs);
        resolve(n);
        return n;
      };
    });
    const waiter = svc.pop(q, { max: 3, waitMs: 200 });
    await held.reached;
    const ids = await svc.push(q, ['m1', 'm2', 'm3']);
    assert.deepEqual(await waiter, []);
    release.open();
    assert.equal(await unpopped, 3);
    assert.deepEqual(await store.stats(q), { ready: 3, pending: 0, dead: 0 });
    const next = await svc.pop(q, { max: 3, waitMs: 0 });
    assert.deepEqual(
      next.map((m) => [m.id, m.message, m.delivery_count]),
      [
        [ids[0], 'm1', 1],
        [ids[1], 'm2', 1],
        [ids[2], 'm3', 1],
      ],
    );
  });

  it('a client that went away gets nothing, and what was taken for it goes back uncounted', async () => {
    const { svc } = setup();
    const q = freshQueue('gone');
    const gone = new AbortController();
    const waiter = svc.pop(q, { max: 1, waitMs: 10_000 }, gone.signal);
    await waitFor('the pop parked', () => svc.parkedCount() === 1);
    gone.abort();
    assert.deepEqual(await waiter, []);
    assert.equal(svc.parkedCount(), 0);
    // One already gone when its pop starts (it waited for a relay meanwhile) takes nothing either.
    await svc.push(q, ['early']);
    assert.deepEqual(await svc.pop(q, { max: 1, waitMs: 10_000 }, gone.signal), []);
    assert.deepEqual(await svc.stats(q), { ready: 1, pending: 0, dead: 0 });
    assert.equal((await svc.pop(q, { max: 1, waitMs: 0 }))[0]?.message, 'early');
    // A delivery made for a client that is gone (the route hands it back) returns as if never made.
    const [id] = await svc.push(q, ['x']);
    const taken = await svc.pop(q, { max: 1, waitMs: 0 });
    assert.equal(taken[0]?.id, id);
    await svc.giveBack(q, taken);
    const again = await svc.pop(q, { max: 1, waitMs: 0 });
    assert.deepEqual(again, [{ id, message: 'x', delivery_count: 1 }]);
  });

  it('an ack of a list answers a count, even a list of one; a single id that is not pending is 404', async () => {
    const { svc } = setup();
    const q = freshQueue('ack');
    const [id] = await svc.push(q, ['a']);
    assert.equal(await svc.ack(q, ['999']), 0);
    await assert.rejects(
      svc.ack(q, '999'),
      (e: unknown) => e instanceof DssError && e.code === 'unknown_message',
    );
    await svc.pop(q, { max: 1, waitMs: 0 });
    assert.equal(await svc.ack(q, [id!]), 1);
    assert.equal(await svc.ack(q, [id!]), 0);
  });

  it('a pop finds a deliverable message behind more exhausted ids than one script looks at', async () => {
    const { store, svc } = setup({ maxDeliveries: 1 });
    const q = freshQueue('exhausted');
    const first = await svc.push(
      q,
      Array.from({ length: 1100 }, (_, i) => i),
    );
    await store.pop(q, { max: 1100, visibilityMs: 0, nowMs: 0, maxDeliveries: 0 });
    assert.equal((await store.redeliverExpired(q, 0, 0, 2000)).requeued, 1100);
    const [last] = await svc.push(q, ['deliverable']);
    // 1100 ids delivered once, each exhausted under a limit of 1, ahead of one never delivered.
    const got = await svc.pop(q, { max: 1, waitMs: 0 });
    assert.deepEqual(got, [{ id: last, message: 'deliverable', delivery_count: 1 }]);
    assert.deepEqual(await store.stats(q), { ready: 0, pending: 1, dead: first.length });
  });

  it('a pop that fails on a later script call gives back what the earlier ones took', async () => {
    const { store, svc } = setup();
    const q = freshQueue('partial');
    const [id] = await svc.push(q, ['first']);
    const real = store.pop.bind(store);
    let calls = 0;
    // The first call takes the message but says more may lie behind (as at its dead-letter bound);
    // the second fails as Redis going away would.
    store.pop = async (queue: string, o: PopOptions): Promise<PopResult> => {
      if (++calls === 1) return { ...(await real(queue, o)), more: true };
      throw new DssError('unavailable', 'Redis unavailable: simulated');
    };
    await assert.rejects(svc.pop(q, { max: 2, waitMs: 0 }), (e: unknown) => code(e) === 'unavailable');
    store.pop = real;
    assert.deepEqual(await store.stats(q), { ready: 1, pending: 0, dead: 0 });
    assert.deepEqual(await svc.pop(q, { max: 1, waitMs: 0 }), [{ id, message: 'first', delivery_count: 1 }]);
  });

  it('the monitor redelivers for every queue it owns while one of them keeps failing', async () => {
    const { store, svc } = setup({ monitorIntervalMs: 20 });
    // More queues than one batch of the monitor, the failing one in the first batch.
    const queues = Array.from({ length: 150 }, () => freshQueue('monitor'));
    for (const q of queues) {
      await svc.push(q, ['m']);
      await store.pop(q, { max: 1, visibilityMs: 0, nowMs: 0, maxDeliveries: 0 });
    }
    const known = await svc.knownQueues(Number.MAX_SAFE_INTEGER);
    const bad = known.find((q) => queues.includes(q))!;
    const real = store.redeliverExpired.bind(store);
    store.redeliverExpired = (q, now, maxd, limit) =>
      q === bad ? Promise.reject(new Error('CLUSTERDOWN simulated')) : real(q, now, maxd, limit);
    svc.start();
    await waitFor('every healthy queue redelivered', async () => {
      for (const q of queues) {
        if (q === bad) continue;
        if ((await store.stats(q)).ready !== 1) return false;
      }
      return true;
    });
    assert.deepEqual(await store.stats(bad), { ready: 0, pending: 1, dead: 0 });
  });
});
