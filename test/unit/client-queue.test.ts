// The queue part of the SDK (client.queue) and the CLI's queue output, against a fake queue node:
// an in-memory queue with the SPEC 5 routes plus a few queues that misbehave on purpose.
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, beforeEach, describe, it } from 'node:test';
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import {
  DssClient,
  DssConnectionError,
  DssHttpError,
  type ConsumeErrorContext,
  type QueueDelivery,
} from '../../src/client/index.js';
import {
  formatAck,
  formatError,
  formatNack,
  formatPop,
  formatPush,
  formatStats,
  parsePushInput,
} from '../../src/cli/queue-command.js';
import type { Json } from '../../src/raft/types.js';
import { waitFor } from '../helpers/wait.js';
import { dss as runDss } from '../helpers/dss-cli.js';

interface Msg {
  id: string;
  message: Json;
  delivery_count: number;
}

/** A queue node in memory: ready lists, pending maps, and a log of every request. */
class FakeQueues {
  readonly ready = new Map<string, Msg[]>();
  readonly pending = new Map<string, Map<string, Msg>>();
  readonly log: { op: string; body: Record<string, unknown> }[] = [];
  /** The next this-many pops answer 503. */
  failPops = 0;
  private nextId = 1;
  private hits = new Map<string, number>();

  reset(): void {
    this.ready.clear();
    this.pending.clear();
    this.log.length = 0;
    this.failPops = 0;
    this.hits.clear();
    this.nextId = 1;
  }

  hit(key: string): number {
    const n = (this.hits.get(key) ?? 0) + 1;
    this.hits.set(key, n);
    return n;
  }

  count(op: string, queue?: string): number {
    return this.log.filter((l) => l.op === op && (queue === undefined || l.body.queue === queue)).length;
  }

  list(q: string): Msg[] {
    let l = this.ready.get(q);
    if (!l) this.ready.set(q, (l = []));
    return l;
  }

  pend(q: string): Map<string, Msg> {
    let m = this.pending.get(q);
    if (!m) this.pending.set(q, (m = new Map<string, Msg>()));
    return m;
  }

  push(q: string, messages: Json[]): string[] {
    return messages.map((message) => {
      const id = String(this.nextId++);
      this.list(q).push({ id, message, delivery_count: 0 });
      return id;
    });
  }

  take(q: string, max: number): Msg[] {
    const got = this.list(q).splice(0, max);
    for (const m of got) {
      m.delivery_count++;
      this.pend(q).set(m.id, m);
    }
    return got.map((m) => ({ ...m }));
  }
}

const unavailable = (reply: FastifyReply, unknown = false): FastifyReply =>
  reply.code(503).send({
    ...(unknown ? { outcome: 'unknown' } : {}),
    error: { code: 'unavailable', message: 'try again' },
  });

function fakeNode(fq: FakeQueues): FastifyInstance {
  const app = Fastify();
  app.post('/queue/push', (req, reply) => {
    const b = req.body as { queue: string; message?: Json; messages?: Json[] };
    fq.log.push({ op: 'push', body: b });
    // The relay to the owner broke after sending: stored, but the node cannot say so.
    if (b.queue === 'relay-broke' && fq.hit('push:relay-broke') === 1) {
      fq.push(b.queue, b.messages ?? [b.message ?? null]);
      return unavailable(reply, true);
    }
    if (b.messages !== undefined)
      return reply.code(201).send({ queue: b.queue, ids: fq.push(b.queue, b.messages) });
    return reply.code(201).send({ queue: b.queue, id: fq.push(b.queue, [b.message ?? null])[0] });
  });
  app.post('/queue/pop', async (req, reply) => {
    const b = req.body as { queue: string; max?: number; wait_ms?: number; visibility_ms?: number };
    fq.log.push({ op: 'pop', body: b });
    // Takes 300 ms whatever wait_ms says.
    if (b.queue === 'stuck') {
      await delay(300);
      return reply.code(204).send();
    }
    if (fq.failPops > 0) {
      fq.failPops--;
      return unavailable(reply.header('retry-after', '0'));
    }
    const deadline = Date.now() + (b.wait_ms ?? 0);
    for (;;) {
      const got = fq.take(b.queue, b.max ?? 1);
      if (got.length > 0) {
        if (b.max === undefined || b.max === 1) return { queue: b.queue, ...got[0]! };
        return { queue: b.queue, messages: got };
      }
      if (Date.now() >= deadline) return reply.code(204).send();
      await delay(5);
    }
  });
  app.post('/queue/ack', (req, reply) => {
    const b = req.body as { queue: string; id?: string; ids?: string[] };
    fq.log.push({ op: 'ack', body: b });
    // The owner acked, then the relay broke: the retry finds the message gone.
    if (b.queue === 'ack-broke' && fq.hit('ack:ack-broke') === 1) {
      fq.pend(b.queue).delete(b.id!);
      return unavailable(reply, true);
    }
    const ids = b.ids ?? [b.id!];
    const acked = ids.filter((id) => fq.pend(b.queue).delete(id)).length;
    if (b.id !== undefined && acked === 0)
      return reply.code(404).send({
        error: { code: 'unknown_message', message: `no pending message ${b.id} in queue ${b.queue}` },
      });
    return { acked };
  });
  app.post('/queue/nack', (req, reply) => {
    const b = req.body as { queue: string; id: string };
    fq.log.push({ op: 'nack', body: b });
    const m = fq.pend(b.queue).get(b.id);
    if (!m) return reply.code(404).send({ error: { code: 'unknown_message', message: 'not pending' } });
    fq.pend(b.queue).delete(b.id);
    fq.list(b.queue).unshift(m);
    return { queue: b.queue, id: b.id, state: 'ready' };
  });
  app.get('/queue/stats', (req) => {
    const q = (req.query as { queue: string }).queue;
    fq.log.push({ op: 'stats', body: { queue: q } });
    return { queue: q, owner: 'node-1', ready: fq.list(q).length, pending: fq.pend(q).size, dead: 0 };
  });
  return app;
}

describe('client.queue', () => {
  const fq = new FakeQueues();
  let app: FastifyInstance;
  let url: string;
  let client: DssClient;

  before(async () => {
    app = fakeNode(fq);
    await app.listen({ host: '127.0.0.1', port: 0 });
    url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    client = new DssClient({ urls: [url], retries: 2, backoffBaseMs: 1 });
  });
  beforeEach(() => fq.reset());
  after(async () => {
    await client.close();
    await app.close();
  });

  it('push and pushBatch send the SPEC bodies and return the 201 answers', async () => {
    assert.deepEqual(await client.queue.push('jobs', { n: 1 }), { queue: 'jobs', id: '1' });
    assert.deepEqual(await client.queue.pushBatch('jobs', ['a', null, [2]]), {
      queue: 'jobs',
      ids: ['2', '3', '4'],
    });
    assert.deepEqual(
      fq.log.map((l) => l.body),
      [
        { queue: 'jobs', message: { n: 1 } },
        { queue: 'jobs', messages: ['a', null, [2]] },
      ],
    );
    // An empty batch is nothing to do: no request.
    assert.deepEqual(await client.queue.pushBatch('jobs', []), { queue: 'jobs', ids: [] });
    assert.equal(fq.count('push'), 2);
  });

  it('push retries a 503 of unknown outcome: at worst a duplicate, never a lost message', async () => {
    assert.deepEqual(await client.queue.push('relay-broke', 'm'), { queue: 'relay-broke', id: '2' });
    assert.equal(fq.count('push'), 2);
    // The documented cost of at-least-once: both attempts stored it.
    assert.deepEqual(
      fq.list('relay-broke').map((m) => m.message),
      ['m', 'm'],
    );
  });

  it('pop: null on 204, one list for both reply shapes', async () => {
    assert.equal(await client.queue.pop('jobs'), null);
    assert.equal(await client.queue.pop('jobs', { max: 5 }), null);
    fq.push('jobs', ['a', 'b', 'c']);
    assert.deepEqual(await client.queue.pop('jobs'), [{ id: '1', message: 'a', delivery_count: 1 }]);
    assert.deepEqual(await client.queue.pop('jobs', { max: 5, visibilityMs: 500, consumerId: 'w1' }), [
      { id: '2', message: 'b', delivery_count: 1 },
      { id: '3', message: 'c', delivery_count: 1 },
    ]);
    assert.deepEqual(fq.log.at(-1)!.body, {
      queue: 'jobs',
      consumer_id: 'w1',
      max: 5,
      wait_ms: 0,
      visibility_ms: 500,
    });
  });

  it("a long poll's HTTP timeout covers waitMs", async () => {
    const t0 = Date.now();
    assert.equal(await client.queue.pop('jobs', { waitMs: 300 }, { timeoutMs: 100 }), null);
    assert.ok(Date.now() - t0 >= 290, 'the node held the poll for wait_ms');
    // Control: the same 100 ms timeout without a waitMs to cover a slow answer fails (POST: no retry).
    await assert.rejects(
      client.queue.pop('stuck', {}, { timeoutMs: 100 }),
      (e: unknown) => e instanceof DssConnectionError && e.timedOut,
    );
    assert.equal(fq.count('pop', 'stuck'), 1);
  });

  it('ack, ackBatch, nack and stats', async () => {
    fq.push('jobs', ['a', 'b', 'c', 'd']);
    const got = (await client.queue.pop('jobs', { max: 4 }))!;
    assert.deepEqual(await client.queue.ack('jobs', got[0]!.id), { acked: 1 });
    assert.deepEqual(await client.queue.ackBatch('jobs', [got[1]!.id, got[2]!.id, '999']), { acked: 2 });
    assert.deepEqual(await client.queue.ackBatch('jobs', []), { acked: 0 });
    assert.deepEqual(await client.queue.nack('jobs', got[3]!.id), { queue: 'jobs', id: '4', state: 'ready' });
    assert.deepEqual(await client.queue.stats('jobs'), {
      queue: 'jobs',
      owner: 'node-1',
      ready: 1,
      pending: 0,
      dead: 0,
    });
    assert.deepEqual(fq.log.find((l) => l.op === 'ack')!.body, { queue: 'jobs', id: '1' });
    assert.equal(fq.count('ack'), 2);
  });

  it('ack of an unknown message is a DssHttpError 404 unknown_message', async () => {
    const err = await client.queue.ack('jobs', '42').then(
      () => assert.fail('expected unknown_message'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof DssHttpError);
    assert.equal(err.status, 404);
    assert.equal(err.code, 'unknown_message');
    assert.equal(err.afterUnknownOutcome, false);
    await assert.rejects(
      client.queue.nack('jobs', '42'),
      (e: unknown) => e instanceof DssHttpError && e.status === 404,
    );
  });

  it('ack: 404 after an attempt of unknown outcome means that attempt acked it', async () => {
    fq.push('ack-broke', ['x']);
    const [d] = (await client.queue.pop('ack-broke'))!;
    assert.deepEqual(await client.queue.ack('ack-broke', d!.id), { acked: 1 });
    assert.equal(fq.count('ack'), 2);
    assert.equal(fq.pend('ack-broke').size, 0);
  });

  describe('consume', () => {
    /** A client that does not retry, so the loop itself sees every 503. */
    let raw: DssClient;
    before(() => {
      raw = new DssClient({ urls: [url], retries: 0 });
    });
    after(async () => raw.close());

    it('acks what its handler processed and nacks what it failed, which comes back', async () => {
      fq.push('work', [1, 2, 'fail', 3]);
      const seen: [Json, number][] = [];
      const errors: ConsumeErrorContext[] = [];
      const consumer = raw.queue.consume(
        'work',
        (message, d) => {
          seen.push([message, d.delivery_count]);
          if (message === 'fail' && d.delivery_count === 1) throw new Error('boom');
        },
        { waitMs: 50, onError: (_e, ctx) => errors.push(ctx) },
      );
      await waitFor('every message acked', () => fq.count('ack', 'work') === 4);
      await consumer.stop();
      assert.deepEqual(seen, [
        [1, 1],
        [2, 1],
        ['fail', 1],
        ['fail', 2],
        [3, 1],
      ]);
      assert.equal(fq.count('nack', 'work'), 1);
      assert.deepEqual(
        errors.map((e) => [e.stage, e.delivery?.message]),
        [['handler', 'fail']],
      );
      assert.equal(fq.list('work').length + fq.pend('work').size, 0);
      // Each answer names the delivery it answers (a late one must not touch a redelivery).
      const receipts = fq.log
        .filter((l) => (l.op === 'ack' || l.op === 'nack') && l.body.queue === 'work')
        .map((l) => (l.body as { delivery_count?: unknown }).delivery_count);
      assert.deepEqual(receipts.sort(), [1, 1, 1, 1, 2]);
    });

    it(
      'refuses options every pop would be refused for; many handlers take pops of at most 1000',
      { timeout: 60_000 },
      async () => {
        const noop = (): void => undefined;
        for (const bad of [
          { waitMs: 30_001 },
          { waitMs: -1 },
          { max: 1001 },
          { visibilityMs: 0 },
          { concurrency: 0 },
        ]) {
          assert.throws(() => raw.queue.consume('work', noop, bad), RangeError, JSON.stringify(bad));
        }
        fq.push(
          'many',
          Array.from({ length: 1100 }, (_, i) => i),
        );
        const consumer = raw.queue.consume('many', noop, { concurrency: 1_200, waitMs: 50 });
        try {
          await waitFor('every message acked', () => fq.count('ack', 'many') === 1100, { timeoutMs: 30_000 });
        } finally {
          await consumer.stop();
        }
        const maxes = fq.log
          .filter((l) => l.op === 'pop' && l.body.queue === 'many')
          .map((l) => (l.body as { max?: number }).max ?? 1);
        assert.ok(Math.max(...maxes) <= 1000, `pops asked for ${Math.max(...maxes)}`);
      },
    );

    it('keeps polling after 503s, reporting them, with backoff', async () => {
      fq.failPops = 3;
      fq.push('work', ['a']);
      const errors: unknown[] = [];
      const consumer = raw.queue.consume('work', () => undefined, {
        waitMs: 50,
        backoffBaseMs: 5,
        onError: (e) => errors.push(e),
      });
      await waitFor('the message acked', () => fq.count('ack', 'work') === 1);
      await consumer.stop();
      assert.equal(errors.length, 3);
      assert.ok(errors.every((e) => e instanceof DssHttpError && e.status === 503));
    });

    it('runs at most `concurrency` handlers, and stop() waits for the running ones', async () => {
      fq.push('work', [1, 2, 3, 4, 5]);
      let running = 0;
      let peak = 0;
      const gates: (() => void)[] = [];
      const consumer = raw.queue.consume(
        'work',
        async () => {
          running++;
          peak = Math.max(peak, running);
          await new Promise<void>((r) => gates.push(r));
          running--;
        },
        { concurrency: 2, waitMs: 50 },
      );
      await waitFor('two handlers started', () => gates.length === 2);
      await delay(100);
      assert.equal(gates.length, 2, 'no third handler while two run');
      // Pops took no more than the free slots: the other messages are still ready.
      assert.equal(fq.list('work').length, 3);
      let stopped = false;
      const stopping = consumer.stop().then(() => (stopped = true));
      await delay(100);
      assert.equal(stopped, false, 'stop() waits for running handlers');
      assert.equal(fq.count('ack', 'work'), 0);
      for (const g of gates) g();
      await stopping;
      assert.equal(peak, 2);
      assert.equal(fq.count('ack', 'work'), 2);
      assert.equal(fq.list('work').length, 3, 'nothing popped after stop()');
      await consumer.done;
    });

    it('gives back (nacks) what a poll in progress brings after stop()', async () => {
      const handled: QueueDelivery[] = [];
      const consumer = raw.queue.consume('late', (_m, d) => void handled.push(d), { waitMs: 2000 });
      await waitFor('a poll parked', () => fq.count('pop', 'late') === 1);
      const stopping = consumer.stop();
      fq.push('late', ['m']);
      await stopping;
      assert.equal(handled.length, 0);
      assert.equal(fq.count('nack', 'late'), 1);
      assert.deepEqual(
        fq.list('late').map((m) => m.message),
        ['m'],
      );
    });
  });

  it('dss queue ... runs against a node (CLI wiring)', async () => {
    const dss = (args: string[]): ReturnType<typeof runDss> => runDss(['--url', url, 'queue', ...args]);
    const [push, empty, ack] = await Promise.all([
      dss(['push', 'cli', '{"a":1}']),
      dss(['pop', 'cli-empty', '--wait', '10', '--json']),
      dss(['ack', 'cli', '77']),
    ]);
    assert.deepEqual([push.code, push.stdout], [0, 'pushed message 1 to cli\n']);
    assert.deepEqual([empty.code, empty.stdout], [0, '[]\n']);
    assert.equal(ack.code, 1);
    assert.match(ack.stderr, /^dss: 404 unknown_message: no pending message 77 in queue cli/);
    assert.equal(ack.stderr.trim().split('\n').length, 1);
    const pop = await dss(['pop', 'cli', '--max', '2', '--ack']);
    assert.deepEqual([pop.code, pop.stdout], [0, 'message 1 (delivery 1): {"a":1}\nacked 1 of 1 in cli\n']);
  });
});

describe('dss queue output', () => {
  it('parses push input: JSON, --text, --batch', () => {
    assert.deepEqual(parsePushInput('{"a":[1,null]}'), { message: { a: [1, null] } });
    assert.deepEqual(parsePushInput('"s"'), { message: 's' });
    assert.deepEqual(parsePushInput('hello world', { asText: true }), { message: 'hello world' });
    assert.deepEqual(parsePushInput('[1,{"b":2}]', { batch: true }), { messages: [1, { b: 2 }] });
    assert.deepEqual(parsePushInput('[1,2]'), { message: [1, 2] });
    assert.throws(() => parsePushInput('hello'), /not JSON.*--text/);
    assert.throws(() => parsePushInput('{"a":1}', { batch: true }), /JSON array/);
    assert.throws(() => parsePushInput('[]', { batch: true }), /at least one/);
  });

  it('formats push, pop, ack, nack and stats readably or as JSON', () => {
    assert.equal(formatPush({ queue: 'q', id: '7' }, false).stdout, 'pushed message 7 to q\n');
    assert.equal(formatPush({ queue: 'q', ids: ['7', '8'] }, false).stdout, 'pushed 2 messages to q: 7 8\n');
    assert.deepEqual(JSON.parse(formatPush({ queue: 'q', id: '7' }, true).stdout), { queue: 'q', id: '7' });

    const empty = formatPop('q', null, false);
    assert.deepEqual(empty, { stdout: 'queue q empty\n', stderr: '', exitCode: 0 });
    assert.equal(formatPop('q', null, true).stdout, '[]\n');
    const two: QueueDelivery[] = [
      { id: '1', message: { a: 1 }, delivery_count: 1 },
      { id: '2', message: 'x', delivery_count: 3 },
    ];
    assert.equal(
      formatPop('q', two, false).stdout,
      'message 1 (delivery 1): {"a":1}\nmessage 2 (delivery 3): "x"\n',
    );
    assert.deepEqual(JSON.parse(formatPop('q', two, true).stdout), two);

    assert.deepEqual(formatAck('q', 2, 2, false), { stdout: 'acked 2 of 2 in q\n', stderr: '', exitCode: 0 });
    const partial = formatAck('q', 3, 1, true);
    assert.deepEqual(JSON.parse(partial.stdout), { acked: 1 });
    assert.equal(partial.exitCode, 1);
    assert.match(partial.stderr, /^dss: 2 of 3 messages were not pending/);

    assert.equal(
      formatNack({ queue: 'q', id: '5', state: 'ready' }, false).stdout,
      'message 5 of q is ready again\n',
    );
    assert.match(formatNack({ queue: 'q', id: '5', state: 'dead' }, false).stdout, /dead-lettered/);
    assert.equal(
      formatStats({ queue: 'q', owner: 'n2', ready: 3, pending: 1, dead: 0 }, false).stdout,
      'queue q (owner n2): ready 3, pending 1, dead 0\n',
    );
  });

  it('formats errors as one line, with the body on stdout under --json', () => {
    const body = { error: { code: 'unknown_message', message: 'no pending message 9 in queue q' } };
    const e = new DssHttpError({ status: 404, body, url: 'http://n1' });
    const plain = formatError(e, false);
    assert.deepEqual(plain, {
      stdout: '',
      stderr: 'dss: 404 unknown_message: no pending message 9 in queue q (http://n1)\n',
      exitCode: 1,
    });
    assert.deepEqual(JSON.parse(formatError(e, true).stdout), body);
    assert.deepEqual(formatError(new Error('cannot reach x'), true), {
      stdout: '',
      stderr: 'dss: cannot reach x\n',
      exitCode: 1,
    });
  });
});
