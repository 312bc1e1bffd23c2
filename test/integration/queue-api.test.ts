// The queue API on 3 real node processes sharing a private Redis: any node accepts any request and
// relays it to the queue's owner; long polls are answered by a push at once; redelivery after the
// visibility timeout; dead-lettering; 404 for unknown acks; 503 while Redis is down, then recovery.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { TestCluster } from '../helpers/cluster.js';
import { RedisServer } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

interface Res {
  status: number;
  body: unknown;
  node: string | null;
}

async function call(url: string, method: 'GET' | 'POST', path: string, body?: unknown): Promise<Res> {
  const res = await fetch(url + path, {
    method,
    ...(body !== undefined
      ? { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }
      : {}),
  });
  const text = await res.text();
  return {
    status: res.status,
    body: text ? (JSON.parse(text) as unknown) : null,
    node: res.headers.get('x-dss-served-by'),
  };
}

describe('queue API (real processes, private Redis)', () => {
  let redis: RedisServer;
  let c: TestCluster;
  let urls: string[];

  before(async () => {
    redis = await RedisServer.start();
    c = await TestCluster.start({
      nodes: 3,
      roles: 'queue',
      env: { REDIS_URL: redis.url, QUEUE_MAX_DELIVERIES: '2', QUEUE_ACK_TIMEOUT: '30' },
    });
    urls = c.nodes.map((n) => n.url);
    // Relaying needs the peer probes to have seen the other nodes.
    await waitFor('every node sees its peers', async () => {
      for (const u of urls) {
        const st = (await call(u, 'GET', '/status')).body as { peers: { reachable: boolean }[] };
        if (!st.peers.every((p) => p.reachable)) return false;
      }
      return true;
    });
  });

  after(async () => {
    await c?.stop();
    await redis?.stop();
  });

  it('push through one node, pop through another, ack through a third; FIFO; the owner answers', async () => {
    const pushed: string[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await call(urls[i % 3]!, 'POST', '/queue/push', { queue: 'api-q1', message: { n: i } });
      assert.equal(r.status, 201);
      pushed.push((r.body as { id: string }).id);
    }
    const st = (await call(urls[1]!, 'GET', '/queue/stats?queue=api-q1')).body as {
      owner: string;
      ready: number;
    };
    assert.equal(st.ready, 5);
    for (let i = 0; i < 5; i++) {
      const r = await call(urls[(i + 1) % 3]!, 'POST', '/queue/pop', { queue: 'api-q1' });
      assert.equal(r.status, 200);
      const d = r.body as { id: string; message: { n: number }; delivery_count: number };
      assert.equal(d.id, pushed[i]);
      assert.deepEqual(d.message, { n: i });
      assert.equal(d.delivery_count, 1);
      assert.equal(r.node, st.owner, 'relayed answers come from the owner');
      const a = await call(urls[(i + 2) % 3]!, 'POST', '/queue/ack', { queue: 'api-q1', id: d.id });
      assert.deepEqual(a.body, { acked: 1 });
    }
    assert.equal((await call(urls[0]!, 'POST', '/queue/pop', { queue: 'api-q1' })).status, 204);
    const again = await call(urls[0]!, 'POST', '/queue/ack', { queue: 'api-q1', id: pushed[0] });
    assert.equal(again.status, 404);
    assert.equal((again.body as { error: { code: string } }).error.code, 'unknown_message');
  });

  it('batches: push messages, pop with max, ack ids', async () => {
    const r = await call(urls[0]!, 'POST', '/queue/push', {
      queue: 'api-q2',
      messages: [1, 'two', { three: 3 }, null],
    });
    assert.equal(r.status, 201);
    const ids = (r.body as { ids: string[] }).ids;
    assert.equal(ids.length, 4);
    const p = await call(urls[1]!, 'POST', '/queue/pop', { queue: 'api-q2', max: 10 });
    const msgs = (p.body as { messages: { id: string; message: unknown }[] }).messages;
    assert.deepEqual(
      msgs.map((m) => m.message),
      [1, 'two', { three: 3 }, null],
    );
    const a = await call(urls[2]!, 'POST', '/queue/ack', { queue: 'api-q2', ids: [...ids, '999999'] });
    assert.deepEqual(a.body, { acked: 4 }, 'unknown ids in a batch are skipped');
  });

  it('a long poll is answered by a push at once, without polling', async () => {
    const started = Date.now();
    const waiting = call(urls[0]!, 'POST', '/queue/pop', { queue: 'api-q3', wait_ms: 10_000 });
    await waitFor('the pop is parked at the owner', async () => {
      for (const u of urls) {
        const st = (await call(u, 'GET', '/status')).body as { queue: { parked_pops: number } };
        if (st.queue.parked_pops > 0) return true;
      }
      return false;
    });
    const pushedAt = Date.now();
    await call(urls[2]!, 'POST', '/queue/push', { queue: 'api-q3', message: 'wake' });
    const r = await waiting;
    assert.equal(r.status, 200);
    assert.equal((r.body as { message: string }).message, 'wake');
    assert.ok(Date.now() - pushedAt < 500, `answered ${Date.now() - pushedAt} ms after the push`);
    assert.ok(Date.now() - started < 10_000);
    const empty = await call(urls[1]!, 'POST', '/queue/pop', { queue: 'api-q3', wait_ms: 300 });
    assert.equal(empty.status, 204, 'an empty long poll ends with 204 after wait_ms');
  });

  it('a long poll whose client hangs up stops waiting, at the owner and through a relay', async () => {
    const parkedPops = async (): Promise<number> => {
      let n = 0;
      for (const u of urls) {
        n += ((await call(u, 'GET', '/status')).body as { queue: { parked_pops: number } }).queue.parked_pops;
      }
      return n;
    };
    const owner = ((await call(urls[0]!, 'GET', '/queue/stats?queue=api-gone')).body as { owner: string })
      .owner;
    const ownerUrl = c.node(owner).url;
    const relayUrl = urls.find((u) => u !== ownerUrl)!;
    for (const url of [ownerUrl, relayUrl]) {
      const client = new AbortController();
      const polling = fetch(url + '/queue/pop', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ queue: 'api-gone', wait_ms: 20_000 }),
        signal: client.signal,
      }).catch(() => 'aborted');
      await waitFor('the pop is parked at the owner', async () => (await parkedPops()) === 1);
      client.abort();
      assert.equal(await polling, 'aborted');
      await waitFor('the abandoned pop is no longer parked', async () => (await parkedPops()) === 0);
      // Nobody is waiting any more, so a push stays ready instead of going to the departed client.
      await call(urls[0]!, 'POST', '/queue/push', { queue: 'api-gone', message: url });
      const stats = (await call(urls[0]!, 'GET', '/queue/stats?queue=api-gone')).body;
      assert.deepEqual(stats, { queue: 'api-gone', owner, ready: 1, pending: 0, dead: 0 });
      const popped = await call(urls[1]!, 'POST', '/queue/pop', { queue: 'api-gone' });
      assert.deepEqual((popped.body as { message: string }).message, url);
      const { id } = popped.body as { id: string };
      assert.equal((await call(urls[2]!, 'POST', '/queue/ack', { queue: 'api-gone', id })).status, 200);
    }
  });

  it('redelivers after the visibility timeout with delivery_count + 1, then dead-letters', async () => {
    await call(urls[0]!, 'POST', '/queue/push', { queue: 'api-q4', message: 'flaky' });
    const first = (await call(urls[1]!, 'POST', '/queue/pop', { queue: 'api-q4', visibility_ms: 300 }))
      .body as {
      id: string;
      delivery_count: number;
    };
    assert.equal(first.delivery_count, 1);
    const second = await waitFor('the redelivery', async () => {
      const r = await call(urls[2]!, 'POST', '/queue/pop', { queue: 'api-q4', visibility_ms: 300 });
      return r.status === 200 ? (r.body as { id: string; delivery_count: number }) : undefined;
    });
    assert.equal(second.id, first.id);
    assert.equal(second.delivery_count, 2);
    // QUEUE_MAX_DELIVERIES=2: once this delivery expires the message is dead, not delivered again.
    await waitFor('dead-lettered', async () => {
      const st = (await call(urls[0]!, 'GET', '/queue/stats?queue=api-q4')).body as { dead: number };
      return st.dead === 1;
    });
    assert.equal((await call(urls[0]!, 'POST', '/queue/pop', { queue: 'api-q4' })).status, 204);
  });

  it('nack makes a message ready again at once', async () => {
    await call(urls[0]!, 'POST', '/queue/push', { queue: 'api-q5', message: 'again' });
    const d = (await call(urls[1]!, 'POST', '/queue/pop', { queue: 'api-q5' })).body as { id: string };
    const n = await call(urls[2]!, 'POST', '/queue/nack', { queue: 'api-q5', id: d.id });
    assert.deepEqual(n.body, { queue: 'api-q5', id: d.id, state: 'ready' });
    const again = (await call(urls[0]!, 'POST', '/queue/pop', { queue: 'api-q5' })).body as {
      id: string;
      delivery_count: number;
    };
    assert.equal(again.id, d.id);
    assert.equal(again.delivery_count, 2);
    assert.equal(
      (await call(urls[0]!, 'POST', '/queue/nack', { queue: 'api-q5', id: '424242' })).status,
      404,
    );
  });

  it('an ack or nack with a receipt acts only on that delivery', async () => {
    await call(urls[0]!, 'POST', '/queue/push', { queue: 'api-receipt', message: 'r' });
    const popped = await call(urls[1]!, 'POST', '/queue/pop', { queue: 'api-receipt' });
    const { id, delivery_count } = popped.body as { id: string; delivery_count: number };
    assert.equal(delivery_count, 1);
    const stale = { queue: 'api-receipt', id, delivery_count: 2 };
    assert.equal((await call(urls[2]!, 'POST', '/queue/nack', stale)).status, 404);
    assert.equal((await call(urls[2]!, 'POST', '/queue/ack', stale)).status, 404);
    const batch = { queue: 'api-receipt', ids: [id], delivery_count: 1 };
    assert.equal((await call(urls[0]!, 'POST', '/queue/ack', batch)).status, 400);
    const ok = await call(urls[0]!, 'POST', '/queue/ack', { queue: 'api-receipt', id, delivery_count: 1 });
    assert.deepEqual([ok.status, ok.body], [200, { acked: 1 }]);
  });

  it('rejects bad input with 400 naming the problem', async () => {
    const both = await call(urls[0]!, 'POST', '/queue/push', { queue: 'q', message: 1, messages: [2] });
    assert.equal(both.status, 400);
    const neither = await call(urls[0]!, 'POST', '/queue/push', { queue: 'q' });
    assert.equal(neither.status, 400);
    const badName = await call(urls[0]!, 'POST', '/queue/push', { queue: 'a{b}', message: 1 });
    assert.equal(badName.status, 400);
    const badWait = await call(urls[0]!, 'POST', '/queue/pop', { queue: 'q', wait_ms: 30_001 });
    assert.equal(badWait.status, 400);
  });

  it('answers 503 while Redis is down and recovers by itself (last: it kills Redis)', async () => {
    await redis.kill();
    for (const u of urls) {
      const r = await call(u, 'POST', '/queue/push', { queue: 'api-q6', message: 'x' });
      assert.equal(r.status, 503, `${u} answered ${r.status}`);
      const ready = await call(u, 'GET', '/ready');
      assert.equal(ready.status, 503);
    }
    await redis.restart();
    await waitFor('pushes succeed again', async () => {
      const r = await call(urls[0]!, 'POST', '/queue/push', { queue: 'api-q6', message: 'back' });
      return r.status === 201;
    });
    for (const n of c.nodes) assert.ok(n.proc && n.proc.exitCode === null, `${n.id} is still running`);
  });
});

describe('queue relaying with CLUSTER_SECRET (real processes)', () => {
  let redis: RedisServer;
  let c: TestCluster;

  before(async () => {
    redis = await RedisServer.start();
    c = await TestCluster.start({
      nodes: 3,
      roles: 'queue',
      env: { REDIS_URL: redis.url, CLUSTER_SECRET: 'queue-s3cret' },
    });
    await waitFor('every node sees its peers', async () => {
      for (const n of c.nodes) {
        const st = (await call(n.url, 'GET', '/status')).body as { peers: { reachable: boolean }[] };
        if (!st.peers.every((p) => p.reachable)) return false;
      }
      return true;
    });
  });

  after(async () => {
    await c?.stop();
    await redis?.stop();
  });

  it('relays carry the secret; an internal call without it gets 401 and changes nothing', async () => {
    const urls = c.nodes.map((n) => n.url);
    const owner = ((await call(urls[0]!, 'GET', '/queue/stats?queue=sec-q')).body as { owner: string }).owner;
    const other = c.nodes.find((n) => n.id !== owner)!;
    const relayed = await call(other.url, 'POST', '/queue/push', { queue: 'sec-q', message: 1 });
    assert.equal(relayed.status, 201);
    assert.equal(relayed.node, owner);
    for (const u of urls) {
      const r = await call(u, 'POST', '/queue/internal_push', { queue: 'sec-q', message: 2 });
      assert.equal(r.status, 401);
      assert.equal((r.body as { error: { code: string } }).error.code, 'unauthorized');
    }
    const st = (await call(urls[1]!, 'GET', '/queue/stats?queue=sec-q')).body as { ready: number };
    assert.equal(st.ready, 1);
  });
});
