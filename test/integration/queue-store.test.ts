// The queue's Redis storage layer (SPEC 5) against a real, private redis-server: FIFO, pending
// deadlines, ack/nack/extend, redelivery and dead-lettering, batches, concurrent redelivery from
// two connections, a model-based property test of random operation sequences (results AND the
// full Redis state compared after every step), Redis down -> 503 instead of a hang, and AOF
// durability through a SIGKILL.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { Redis, type RedisOptions } from 'ioredis';
import { DssError } from '../../src/errors.js';
import { QueueStore, queueKeys, type PoppedMessage } from '../../src/queue/store.js';
import type { Json } from '../../src/raft/types.js';
import { RedisServer } from '../helpers/redis.js';

/**
 * Fail fast instead of queueing commands while Redis is away: no offline queue, in-flight commands
 * rejected after one failed reconnect, a command timeout for a hung server, and reconnects forever
 * with a short capped backoff so the client recovers when Redis is back.
 */
function clientOptions(port: number): RedisOptions {
  return {
    host: '127.0.0.1',
    port,
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    autoResendUnfulfilledCommands: false,
    commandTimeout: 1000,
    connectTimeout: 1000,
    retryStrategy: (times: number) => Math.min(times * 50, 500),
  };
}

async function connect(port: number): Promise<Redis> {
  const r = new Redis(clientOptions(port));
  // Connection errors are reported through rejected commands; without a listener ioredis prints each.
  r.on('error', () => undefined);
  await r.connect();
  return r;
}

let queueSeq = 0;
const freshQueue = (tag: string): string => `t.${tag}.${process.pid}.${++queueSeq}`;

interface Snapshot {
  ready: string[];
  pending: [string, number][];
  dead: string[];
  dc: Record<string, string>;
  msg: Record<string, string>;
}

/** The whole stored state of one queue, read in one MULTI so it is consistent. */
async function snapshot(redis: Redis, queue: string): Promise<Snapshot> {
  const k = queueKeys(queue);
  const res = await redis
    .multi()
    .lrange(k.ready, 0, -1)
    .zrange(k.pending, 0, -1, 'WITHSCORES')
    .lrange(k.dead, 0, -1)
    .hgetall(k.dc)
    .hgetall(k.msg)
    .exec();
  assert.ok(res);
  const val = (i: number): unknown => {
    const [err, v] = res[i]!;
    if (err) throw err;
    return v;
  };
  const flat = val(1) as string[];
  const pending: [string, number][] = [];
  for (let i = 0; i < flat.length; i += 2) pending.push([flat[i]!, Number(flat[i + 1])]);
  return {
    ready: val(0) as string[],
    pending,
    dead: val(2) as string[],
    dc: val(3) as Record<string, string>,
    msg: val(4) as Record<string, string>,
  };
}

async function rejection(p: Promise<unknown>): Promise<DssError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof DssError) return e;
    throw e;
  }
  throw new Error('expected a DssError');
}

const POP = { visibilityMs: 1000, nowMs: 1_000_000, maxDeliveries: 10 };

describe('queue store (real redis-server)', () => {
  let server: RedisServer;
  let redis: Redis;
  let store: QueueStore;

  before(async () => {
    server = await RedisServer.start();
    redis = await connect(server.port);
    store = new QueueStore(redis);
  });

  after(async () => {
    redis?.disconnect();
    await server?.stop();
  });

  it('delivers first deliveries in push order, singles and batches alike', async () => {
    const q = freshQueue('fifo');
    const pushed: string[] = [];
    pushed.push(...(await store.push(q, ['a'])));
    pushed.push(...(await store.push(q, ['b', 'c', 'd'])));
    pushed.push(...(await store.push(q, [{ e: 1 }])));
    assert.equal(new Set(pushed).size, 5, 'ids are unique');
    const got: PoppedMessage[] = [];
    for (;;) {
      const r = await store.pop(q, { ...POP, max: 1 });
      if (r.messages.length === 0) break;
      got.push(...r.messages);
    }
    assert.deepEqual(
      got.map((m) => m.id),
      pushed,
    );
    assert.deepEqual(
      got.map((m) => m.message),
      ['a', 'b', 'c', 'd', { e: 1 }],
    );
    assert.ok(got.every((m) => m.delivery_count === 1));
  });

  it('pop moves to pending with deadline now + visibility_ms', async () => {
    const q = freshQueue('pending');
    const [id1, id2] = await store.push(q, [1, 2]);
    const r = await store.pop(q, { max: 1, visibilityMs: 2500, nowMs: 10_000, maxDeliveries: 10 });
    assert.deepEqual(r, {
      messages: [{ id: id1, message: 1, delivery_count: 1 }],
      deadLettered: 0,
      more: false,
    });
    const s = await snapshot(redis, q);
    assert.deepEqual(s.ready, [id2]);
    assert.deepEqual(s.pending, [[id1, 12_500]]);
    assert.deepEqual(await store.stats(q), { ready: 1, pending: 1, dead: 0 });
  });

  it('ack deletes; a second ack and unknown ids count 0 and change nothing', async () => {
    const q = freshQueue('ack');
    const [id1, id2] = await store.push(q, ['x', 'y']);
    await store.pop(q, { ...POP, max: 2 });
    assert.equal(await store.ack(q, id1!), 1);
    const before = await snapshot(redis, q);
    assert.deepEqual(
      before.pending.map(([id]) => id),
      [id2],
    );
    assert.equal(before.msg[id1!], undefined, 'the message itself is deleted');
    assert.equal(before.dc[id1!], undefined);

    assert.equal(await store.ack(q, [id1!]), 0, 'double ack');
    assert.equal(await store.ack(q, ['999', 'nope']), 0, 'unknown ids');
    assert.equal((await rejection(store.ack(q, id1!))).code, 'unknown_message');
    const e = await rejection(store.ack(q, 'nope'));
    assert.equal(e.code, 'unknown_message');
    assert.equal(e.status, 404);
    assert.deepEqual(await snapshot(redis, q), before);

    // A ready (not pending) id cannot be acked either.
    const [id3] = await store.push(q, ['z']);
    assert.equal(await store.ack(q, [id3!]), 0);
    assert.deepEqual((await snapshot(redis, q)).ready, [id3]);
  });

  it('nack puts a pending message back at the head of ready at once', async () => {
    const q = freshQueue('nack');
    const [id1, id2] = await store.push(q, ['first', 'second']);
    await store.pop(q, { ...POP, max: 1 });
    assert.equal(await store.nack(q, id1!), 'ready');
    assert.deepEqual(await snapshot(redis, q).then((s) => [s.ready, s.pending]), [[id1, id2], []]);
    const r = await store.pop(q, { ...POP, max: 1 });
    assert.deepEqual(r.messages, [{ id: id1, message: 'first', delivery_count: 2 }]);
    assert.equal((await rejection(store.nack(q, id2!))).code, 'unknown_message', 'a ready id');
    assert.equal((await rejection(store.nack(q, 'nope'))).code, 'unknown_message');
  });

  it('redelivers after the deadline with delivery_count + 1, ahead of newer messages', async () => {
    const q = freshQueue('redeliver');
    const [id1] = await store.push(q, ['m']);
    await store.pop(q, { max: 1, visibilityMs: 100, nowMs: 1000, maxDeliveries: 10 });
    const [id2] = await store.push(q, ['later']);
    assert.deepEqual(await store.redeliverExpired(q, 1099, 10), {
      requeued: 0,
      deadLettered: 0,
      more: false,
    });
    assert.deepEqual(await store.redeliverExpired(q, 1100, 10), {
      requeued: 1,
      deadLettered: 0,
      more: false,
    });
    assert.deepEqual((await snapshot(redis, q)).ready, [id1, id2]);
    const r = await store.pop(q, { max: 2, visibilityMs: 100, nowMs: 1200, maxDeliveries: 10 });
    assert.deepEqual(
      r.messages.map((m) => [m.id, m.delivery_count]),
      [
        [id1, 2],
        [id2, 1],
      ],
    );
  });

  it('a receipt keeps a late ack or nack from touching a later delivery', async () => {
    const q = freshQueue('receipt');
    const [id] = await store.push(q, ['m']);
    // Consumer A's delivery (count 1) runs out and the message goes to B (count 2).
    await store.pop(q, { max: 1, visibilityMs: 100, nowMs: 1000, maxDeliveries: 10 });
    assert.equal((await store.redeliverExpired(q, 1100, 10)).requeued, 1);
    await store.pop(q, { max: 1, visibilityMs: 100, nowMs: 1200, maxDeliveries: 10 });
    const before = await snapshot(redis, q);
    assert.equal((await rejection(store.nack(q, id!, 2, 1))).code, 'unknown_message');
    assert.equal((await rejection(store.ack(q, id!, 1))).code, 'unknown_message');
    assert.deepEqual(await snapshot(redis, q), before, "A's late answers changed nothing");
    assert.equal(await store.ack(q, id!, 2), 1);
    assert.deepEqual(await store.stats(q), { ready: 0, pending: 0, dead: 0 });
  });

  it('extend moves a pending deadline; an id that is not pending is refused', async () => {
    const q = freshQueue('extend');
    const [id1] = await store.push(q, ['m']);
    await store.pop(q, { max: 1, visibilityMs: 100, nowMs: 1000, maxDeliveries: 10 });
    assert.equal(await store.extend(q, id1!, 5000), true);
    assert.deepEqual((await snapshot(redis, q)).pending, [[id1, 5000]]);
    assert.equal((await store.redeliverExpired(q, 4999, 10)).requeued, 0);
    assert.equal((await store.redeliverExpired(q, 5000, 10)).requeued, 1);
    assert.equal(await store.extend(q, id1!, 9000), false, 'ready again, not pending');
    assert.equal(await store.extend(q, 'nope', 9000), false);
    assert.deepEqual((await snapshot(redis, q)).pending, []);
  });

  it('redelivers in bounded steps, earliest deadline at the head, saying when more remain', async () => {
    const q = freshQueue('limit');
    const ids = await store.push(q, [0, 1, 2, 3, 4]);
    // Deadlines in reverse id order: redelivery must follow deadlines, not ids.
    for (let i = 0; i < 5; i++) {
      await store.pop(q, { max: 1, visibilityMs: 0, nowMs: 100 - i, maxDeliveries: 10 });
    }
    assert.deepEqual(await store.redeliverExpired(q, 1000, 10, 2), {
      requeued: 2,
      deadLettered: 0,
      more: true,
    });
    assert.deepEqual(await store.redeliverExpired(q, 1000, 10, 2), {
      requeued: 2,
      deadLettered: 0,
      more: true,
    });
    assert.deepEqual(await store.redeliverExpired(q, 1000, 10, 2), {
      requeued: 1,
      deadLettered: 0,
      more: false,
    });
    // Each step puts its batch ahead of the previous one; within a batch, earliest deadline first.
    assert.deepEqual((await snapshot(redis, q)).ready, [ids[0], ids[2], ids[1], ids[4], ids[3]]);
  });

  it('delivers a message at most max_deliveries times, then dead-letters it', async () => {
    const q = freshQueue('dead');
    const [id1, id2] = await store.push(q, ['poison', 'fine']);
    const opts = { max: 1, visibilityMs: 10, maxDeliveries: 3 };
    for (let n = 1; n <= 3; n++) {
      const r = await store.pop(q, { ...opts, nowMs: n * 100 });
      assert.deepEqual(
        r.messages.map((m) => [m.id, m.delivery_count]),
        [[id1, n]],
      );
      const red = await store.redeliverExpired(q, n * 100 + 10, 3);
      assert.deepEqual(
        red,
        n < 3 ? { requeued: 1, deadLettered: 0, more: false } : { requeued: 0, deadLettered: 1, more: false },
      );
    }
    assert.deepEqual(await store.stats(q), { ready: 1, pending: 0, dead: 1 });
    const s = await snapshot(redis, q);
    assert.deepEqual(s.dead, [id1]);
    assert.equal(s.msg[id1!], '"poison"', 'a dead message keeps its body');
    const r = await store.pop(q, { ...opts, nowMs: 1000 });
    assert.deepEqual(
      r.messages.map((m) => m.id),
      [id2],
    );
  });

  it('the limit holds on every path to ready: nack, and pop itself', async () => {
    const q = freshQueue('dead-paths');
    const [id1, id2] = await store.push(q, ['a', 'b']);
    await store.pop(q, { ...POP, max: 2, maxDeliveries: 1 });
    assert.equal(await store.nack(q, id1!, 1), 'dead', 'nack with no deliveries left');
    // A nack that does not know the limit leaves it to pop, which refuses to deliver it again.
    assert.equal(await store.nack(q, id2!), 'ready');
    const r = await store.pop(q, { ...POP, max: 5, maxDeliveries: 1 });
    assert.deepEqual(r, { messages: [], deadLettered: 1, more: false });
    assert.deepEqual((await snapshot(redis, q)).dead, [id1, id2]);
    assert.deepEqual(await store.stats(q), { ready: 0, pending: 0, dead: 2 });
  });

  it('one pop dead-letters a bounded number of exhausted messages, the next continues', async () => {
    const q = freshQueue('dead-cap');
    const ids = await store.push(
      q,
      Array.from({ length: 1100 }, (_, i) => i),
    );
    await store.pop(q, { max: 1100, visibilityMs: 0, nowMs: 0, maxDeliveries: 0 });
    assert.equal((await store.redeliverExpired(q, 0, 0, 2000)).requeued, 1100);
    // With the limit now 1, all 1100 are exhausted: pop gives up after max + 1000 of them, and says
    // that ready still holds ids (an empty answer alone would read as an empty queue).
    assert.deepEqual(await store.pop(q, { ...POP, max: 1, maxDeliveries: 1 }), {
      messages: [],
      deadLettered: 1001,
      more: true,
    });
    assert.deepEqual(await store.pop(q, { ...POP, max: 1, maxDeliveries: 1 }), {
      messages: [],
      deadLettered: 99,
      more: false,
    });
    // Equal deadlines were redelivered in id-as-bytes order, so compare as sets.
    assert.deepEqual([...(await snapshot(redis, q)).dead].sort(), [...ids].sort());
  });

  it('max_deliveries 0 never dead-letters', async () => {
    const q = freshQueue('nolimit');
    const [id1] = await store.push(q, ['m']);
    for (let n = 1; n <= 25; n++) {
      const r = await store.pop(q, { max: 1, visibilityMs: 0, nowMs: n, maxDeliveries: 0 });
      assert.deepEqual(
        r.messages.map((m) => [m.id, m.delivery_count]),
        [[id1, n]],
      );
      if (n % 2) assert.equal(await store.nack(q, id1!, 0), 'ready');
      else assert.equal((await store.redeliverExpired(q, n, 0)).requeued, 1);
    }
    assert.equal((await store.stats(q)).dead, 0);
  });

  it('batches: push, pop max and ack of many ids in one call each, beyond the Lua unpack limit', async () => {
    const q = freshQueue('batch');
    const n = 12_000;
    const ids = await store.push(
      q,
      Array.from({ length: n }, (_, i) => i),
    );
    assert.equal(ids.length, n);
    assert.equal(new Set(ids).size, n);
    const r = await store.pop(q, { ...POP, max: n });
    assert.deepEqual(
      r.messages.map((m) => m.message),
      Array.from({ length: n }, (_, i) => i),
    );
    // Duplicates and unknown ids in a batch ack count for nothing.
    assert.equal(await store.ack(q, [...ids, ids[0]!, 'nope']), n);
    assert.deepEqual(await store.stats(q), { ready: 0, pending: 0, dead: 0 });
    // Redelivery of more than one LPUSH chunk keeps deadline order.
    const ids2 = await store.push(
      q,
      Array.from({ length: 2500 }, (_, i) => i),
    );
    await store.pop(q, { max: 2500, visibilityMs: 0, nowMs: 5, maxDeliveries: 10 });
    assert.deepEqual(await store.redeliverExpired(q, 5, 10, 5000), {
      requeued: 2500,
      deadLettered: 0,
      more: false,
    });
    const s = await snapshot(redis, q);
    assert.deepEqual(s.ready, ids2);
  });

  it('stores messages as JSON text, byte for byte, and returns them unchanged', async () => {
    const q = freshQueue('json');
    const messages: Json[] = [
      [],
      {},
      { a: [] },
      0.1,
      1e21,
      123456789012345.67,
      -0,
      null,
      true,
      '',
      'ünïcødé \u0000 "quoted" \n',
      { nested: { deep: [1, 'two', { three: null }] } },
    ];
    const ids = await store.push(q, messages);
    const stored = (await snapshot(redis, q)).msg;
    ids.forEach((id, i) => assert.equal(stored[id], JSON.stringify(messages[i])));
    const r = await store.pop(q, { ...POP, max: messages.length });
    assert.deepEqual(
      r.messages.map((m) => m.message),
      messages.map((m) => JSON.parse(JSON.stringify(m)) as Json),
    );
  });

  it('refuses bad arguments with bad_request before touching Redis', async () => {
    const q = freshQueue('bad');
    assert.equal((await rejection(store.pop(q, { ...POP, max: 0 }))).code, 'bad_request');
    assert.equal((await rejection(store.pop(q, { ...POP, max: 1, visibilityMs: -1 }))).code, 'bad_request');
    assert.equal((await rejection(store.pop(q, { ...POP, max: 1.5 }))).code, 'bad_request');
    assert.equal((await rejection(store.redeliverExpired(q, 0, 0, 0))).code, 'bad_request');
    assert.equal((await rejection(store.push('a{b}', [1]))).code, 'bad_request');
    assert.equal((await rejection(store.push(q, [undefined as unknown as Json]))).code, 'bad_request');
    assert.deepEqual(await store.stats(q), { ready: 0, pending: 0, dead: 0 });
  });

  it('QUEUE_MAX_LENGTH: a push that would pass it is refused whole; pending and dead count too', async () => {
    const q = freshQueue('full');
    const limits = { maxLength: 3 };
    await store.push(q, ['a', 'b'], limits);
    const refused = await rejection(store.push(q, ['c', 'd'], limits));
    assert.equal(refused.code, 'limit_exceeded');
    assert.match(refused.message, /QUEUE_MAX_LENGTH/);
    assert.deepEqual(await store.stats(q), { ready: 2, pending: 0, dead: 0 }, 'nothing of the batch stored');
    await store.push(q, ['c'], limits);
    const popped = await store.pop(q, { ...POP, max: 1 });
    assert.equal((await rejection(store.push(q, ['e'], limits))).code, 'limit_exceeded', 'pending counts');
    await store.ack(q, [popped.messages[0]!.id]);
    await store.push(q, ['e'], limits);
    assert.deepEqual(await store.stats(q), { ready: 3, pending: 0, dead: 0 });
    await store.push(q, ['f'], {}); // no limit given: none applies
  });

  it('QUEUE_MAX_MESSAGE_BYTES: a message larger than it is a 413 and nothing is stored', async () => {
    const q = freshQueue('big');
    const refused = await rejection(store.push(q, ['ok', 'x'.repeat(100)], { maxMessageBytes: 50 }));
    assert.equal(refused.code, 'payload_too_large');
    assert.match(refused.message, /message 1 .*QUEUE_MAX_MESSAGE_BYTES/);
    assert.deepEqual(await store.stats(q), { ready: 0, pending: 0, dead: 0 });
  });

  it('two nodes redelivering the same queue at once never duplicate nor lose an id', async () => {
    const q = freshQueue('concurrent');
    const maxDeliveries = 2;
    const ids = await store.push(
      q,
      Array.from({ length: 3000 }, (_, i) => i),
    );
    // Mixed deadlines, and a third of the messages on their second (= last) delivery.
    for (let i = 0; i < ids.length; i += 100) {
      await store.pop(q, { max: 100, visibilityMs: i % 700, nowMs: 0, maxDeliveries });
    }
    const second = ids.filter((_, i) => i % 3 === 0);
    for (const id of second) await store.nack(q, id, maxDeliveries);
    while ((await store.pop(q, { max: 500, visibilityMs: 50, nowMs: 0, maxDeliveries })).messages.length) {
      // drain ready again: every message is pending now
    }
    assert.deepEqual(await store.stats(q), { ready: 0, pending: ids.length, dead: 0 });

    const other = await connect(server.port);
    try {
      const stores = [store, new QueueStore(other)];
      const totals = await Promise.all(
        stores.map(async (s) => {
          let requeued = 0;
          let dead = 0;
          for (;;) {
            const r = await s.redeliverExpired(q, 10_000, maxDeliveries, 37);
            requeued += r.requeued;
            dead += r.deadLettered;
            if (!r.more) return { requeued, dead };
          }
        }),
      );
      const s = await snapshot(redis, q);
      assert.equal(s.pending.length, 0);
      assert.equal(new Set(s.ready).size, s.ready.length, 'no id twice in ready');
      assert.equal(new Set(s.dead).size, s.dead.length, 'no id twice in dead');
      assert.deepEqual([...s.ready, ...s.dead].sort(), [...ids].sort(), 'ready + dead = pushed, exactly');
      assert.deepEqual([...s.dead].sort(), [...second].sort(), 'exactly the exhausted ones are dead');
      assert.equal(totals[0]!.requeued + totals[1]!.requeued, ids.length - second.length);
      assert.equal(totals[0]!.dead + totals[1]!.dead, second.length);
    } finally {
      other.disconnect();
    }
  });

  it('random operation sequences agree with an in-memory model (results and full state)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 40, size: 'max' }), async (ops) => {
        const q = freshQueue('model');
        const model = new Model();
        for (const op of ops) {
          const expected = model.apply(op);
          const actual = await applyToStore(store, q, op);
          assert.deepEqual(actual, expected, `result of ${JSON.stringify(op)}`);
          assert.deepEqual(await snapshot(redis, q), model.snapshot(), `state after ${JSON.stringify(op)}`);
        }
      }),
      { numRuns: 60 },
    );
  });
});

// ---------------------------------------------------------------- the model for the property test

type Op =
  | { op: 'push'; messages: number[] }
  | { op: 'pop'; max: number; vis: number; now: number; maxd: number }
  | { op: 'ack'; ids: string[] }
  | { op: 'ackOne'; id: string; receipt?: number }
  | { op: 'nack'; id: string; maxd: number; receipt?: number }
  | { op: 'extend'; id: string; deadline: number }
  | { op: 'redeliver'; now: number; maxd: number; limit: number }
  | { op: 'unpop'; pairs: [id: string, count: number][] }
  | { op: 'stats' };

// Ids are small decimals from the queue's own counter, so drawing from 1..12 hits live, acked and
// never-pushed ids alike. Weights keep enough messages in flight for nack, extend and redelivery
// to find pending ones.
const idArb = fc.integer({ min: 1, max: 12 }).map(String);
// Coarse times so that deadlines often equal `now` (due) and each other (ties broken by id).
const timeArb = fc.integer({ min: 0, max: 30 }).map((t) => t * 10);
const maxdArb = fc.integer({ min: 0, max: 3 });

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant('push' as const),
      messages: fc.array(fc.integer(), { minLength: 1, maxLength: 3 }),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant('pop' as const),
      max: fc.integer({ min: 1, max: 3 }),
      vis: fc.integer({ min: 0, max: 15 }).map((t) => t * 10),
      now: timeArb,
      maxd: maxdArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant('ack' as const), ids: fc.array(idArb, { maxLength: 4 }) }),
  },
  // Receipts from 1 to 3 match a pending delivery's count often enough to exercise both outcomes.
  {
    weight: 1,
    arbitrary: fc.record(
      { op: fc.constant('ackOne' as const), id: idArb, receipt: fc.integer({ min: 1, max: 3 }) },
      { requiredKeys: ['op', 'id'] },
    ),
  },
  {
    weight: 2,
    arbitrary: fc.record(
      { op: fc.constant('nack' as const), id: idArb, maxd: maxdArb, receipt: fc.integer({ min: 1, max: 3 }) },
      { requiredKeys: ['op', 'id', 'maxd'] },
    ),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('extend' as const), id: idArb, deadline: timeArb }) },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('redeliver' as const),
      now: timeArb,
      maxd: maxdArb,
      limit: fc.integer({ min: 1, max: 4 }),
    }),
  },
  {
    // Counts from 1 to 3 match a pending delivery's count often enough to exercise both paths.
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('unpop' as const),
      pairs: fc.array(fc.tuple(idArb, fc.integer({ min: 1, max: 3 })), { maxLength: 3 }),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ op: 'stats' as const }) },
);

async function applyToStore(store: QueueStore, q: string, op: Op): Promise<unknown> {
  try {
    switch (op.op) {
      case 'push':
        return await store.push(q, op.messages);
      case 'pop':
        return await store.pop(q, {
          max: op.max,
          visibilityMs: op.vis,
          nowMs: op.now,
          maxDeliveries: op.maxd,
        });
      case 'ack':
        return await store.ack(q, op.ids);
      case 'ackOne':
        return await store.ack(q, op.id, op.receipt);
      case 'nack':
        return await store.nack(q, op.id, op.maxd, op.receipt);
      case 'extend':
        return await store.extend(q, op.id, op.deadline);
      case 'redeliver':
        return await store.redeliverExpired(q, op.now, op.maxd, op.limit);
      case 'unpop':
        return await store.unpop(
          q,
          op.pairs.map(([id, delivery_count]) => ({ id, delivery_count })),
        );
      case 'stats':
        return await store.stats(q);
    }
  } catch (e) {
    if (e instanceof DssError) return { error: e.code };
    throw e;
  }
}

/** The queue written from the rules with plain arrays and maps, no cleverness. */
class Model {
  seq = 0;
  ready: string[] = [];
  pending = new Map<string, number>();
  dead: string[] = [];
  dc = new Map<string, number>();
  msg = new Map<string, string>();

  private exhausted(id: string, maxd: number): boolean {
    return maxd > 0 && (this.dc.get(id) ?? 0) >= maxd;
  }

  /** Pending ids by deadline, ties by id as bytes (Redis' sorted-set order). */
  private pendingOrder(): [string, number][] {
    return [...this.pending].sort(([a, da], [b, db]) => da - db || (a < b ? -1 : a > b ? 1 : 0));
  }

  apply(op: Op): unknown {
    switch (op.op) {
      case 'push':
        return op.messages.map((m) => {
          const id = String(++this.seq);
          this.msg.set(id, JSON.stringify(m));
          this.ready.push(id);
          return id;
        });
      case 'pop': {
        const messages: PoppedMessage[] = [];
        let deadLettered = 0;
        let scanned = 0;
        while (messages.length < op.max && this.ready.length > 0 && scanned < op.max + 1000) {
          scanned++;
          const id = this.ready.shift()!;
          if (this.exhausted(id, op.maxd)) {
            this.dead.push(id);
            deadLettered++;
            continue;
          }
          const n = (this.dc.get(id) ?? 0) + 1;
          this.dc.set(id, n);
          this.pending.set(id, op.now + op.vis);
          messages.push({ id, message: JSON.parse(this.msg.get(id)!) as Json, delivery_count: n });
        }
        const more = messages.length < op.max && scanned >= op.max + 1000 && this.ready.length > 0;
        return { messages, deadLettered, more };
      }
      case 'ack':
      case 'ackOne': {
        const ids = op.op === 'ack' ? op.ids : [op.id];
        const receipt = op.op === 'ackOne' ? op.receipt : undefined;
        let n = 0;
        for (const id of ids) {
          if (receipt !== undefined && this.dc.get(id) !== receipt) continue;
          if (!this.pending.delete(id)) continue;
          this.msg.delete(id);
          this.dc.delete(id);
          n++;
        }
        return op.op === 'ackOne' && n === 0 ? { error: 'unknown_message' } : n;
      }
      case 'nack':
        if (op.receipt !== undefined && this.dc.get(op.id) !== op.receipt)
          return { error: 'unknown_message' };
        if (!this.pending.delete(op.id)) return { error: 'unknown_message' };
        if (this.exhausted(op.id, op.maxd)) {
          this.dead.push(op.id);
          return 'dead';
        }
        this.ready.unshift(op.id);
        return 'ready';
      case 'extend':
        if (!this.pending.has(op.id)) return false;
        this.pending.set(op.id, op.deadline);
        return true;
      case 'redeliver': {
        const due = this.pendingOrder()
          .filter(([, d]) => d <= op.now)
          .map(([id]) => id);
        const batch = due.slice(0, op.limit);
        const back: string[] = [];
        let deadLettered = 0;
        for (const id of batch) {
          this.pending.delete(id);
          if (this.exhausted(id, op.maxd)) {
            this.dead.push(id);
            deadLettered++;
          } else back.push(id);
        }
        this.ready.unshift(...back);
        return { requeued: back.length, deadLettered, more: due.length > batch.length };
      }
      case 'unpop': {
        const back: string[] = [];
        for (const [id, count] of op.pairs) {
          if (this.dc.get(id) !== count || !this.pending.delete(id)) continue;
          if (count <= 1) this.dc.delete(id);
          else this.dc.set(id, count - 1);
          back.push(id);
        }
        this.ready.unshift(...back);
        return back.length;
      }
      case 'stats':
        return { ready: this.ready.length, pending: this.pending.size, dead: this.dead.length };
    }
  }

  snapshot(): Snapshot {
    return {
      ready: [...this.ready],
      pending: this.pendingOrder(),
      dead: [...this.dead],
      dc: Object.fromEntries([...this.dc].map(([id, n]) => [id, String(n)])),
      msg: Object.fromEntries(this.msg),
    };
  }
}

// ---------------------------------------------------------------- faults

describe('queue store when Redis fails', () => {
  it('answers unavailable (503) within bounded time when Redis is killed or hung, and recovers', async () => {
    const server = await RedisServer.start();
    const redis = await connect(server.port);
    try {
      const store = new QueueStore(redis);
      const q = freshQueue('down');
      await store.push(q, ['before']);

      server.pause();
      let t0 = Date.now();
      let e = await rejection(store.stats(q));
      assert.equal(e.code, 'unavailable', e.message);
      assert.equal(e.status, 503);
      assert.ok(Date.now() - t0 < 3000, `a hung Redis answered after ${Date.now() - t0} ms`);
      // The script went out and may yet run: the 503 must not claim that nothing happened.
      assert.deepEqual(e.details, { outcome: 'unknown' });
      server.resume();

      await server.kill();
      for (const attempt of [
        () => store.push(q, ['x']),
        () => store.pop(q, { ...POP, max: 1 }),
        () => store.ack(q, ['1']),
        () => store.redeliverExpired(q, 0, 10),
        () => store.stats(q),
      ]) {
        t0 = Date.now();
        e = await rejection(attempt());
        assert.equal(e.code, 'unavailable', e.message);
        assert.ok(e.retryAfter !== undefined);
        assert.ok(Date.now() - t0 < 3000, `a dead Redis answered after ${Date.now() - t0} ms`);
      }
      // By now the client knows the connection is down and sends nothing: a plain 503.
      assert.equal(e.details, undefined, e.message);

      // The same client reconnects by itself once Redis is back (empty: no persistence here).
      await server.restart();
      await waitReady(redis);
      assert.equal((await store.push(q, ['after'])).length, 1);
    } finally {
      redis.disconnect();
      await server.stop();
    }
  });

  it('with AOF appendfsync always, everything survives a SIGKILL and restart', async () => {
    const server = await RedisServer.start({ appendonly: true });
    const redis = await connect(server.port);
    try {
      const store = new QueueStore(redis);
      const q = freshQueue('aof');
      const ids: string[] = [];
      for (let i = 0; i < 50; i++) ids.push(...(await store.push(q, [{ i }])));
      ids.push(
        ...(await store.push(
          q,
          Array.from({ length: 150 }, (_, i) => ({ i: 50 + i })),
        )),
      );
      const popped = await store.pop(q, { ...POP, max: 30 });
      await store.ack(
        q,
        popped.messages.slice(0, 10).map((m) => m.id),
      );
      await store.pop(q, { ...POP, max: 5, maxDeliveries: 1 });
      await store.nack(q, ids[12]!, 1);
      const before = await snapshot(redis, q);
      assert.equal(Object.keys(before.msg).length, 190);

      await server.kill();
      await server.restart();
      await waitReady(redis);
      assert.deepEqual(await snapshot(redis, q), before);
      assert.deepEqual(await store.stats(q), { ready: 165, pending: 24, dead: 1 });
      // Scripts run again after the restart emptied Redis' script cache, and ids keep growing.
      const [next] = await store.push(q, ['after']);
      assert.equal(next, String(ids.length + 1));
    } finally {
      redis.disconnect();
      await server.stop();
    }
  });
});

async function waitReady(redis: Redis): Promise<void> {
  if (redis.status === 'ready') return;
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`client not ready again (status ${redis.status})`)), 10_000);
    redis.once('ready', () => {
      clearTimeout(t);
      resolve();
    });
  });
}
