// The queue and the cache on Redis Cluster and on Sentinel (SPEC 7: REDIS_CLUSTER_NODES,
// REDIS_SENTINELS). Three DSS nodes (roles queue,cache) against a private 3-master Redis Cluster:
// many queues spread over every master's slots, pushed, popped and acked through random nodes with
// nothing lost or duplicated; a redelivery after a short visibility timeout; stats; a long poll woken
// by a push; the queue_depth gauge; slots resharded to another master under traffic (nothing lost,
// no lasting 503); cache keys of every identifier character read and written on
// several nodes, flushed and found in Redis next to their fences; /ready, which fails while a
// master is down and recovers with it. Then a smaller run of the same through a Sentinel, and the
// cluster client's handling of a lost reply (through proxies in front of the masters): a 503,
// never a second run of the script.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Cluster, type Redis } from 'ioredis';
import { loadConfig } from '../../src/config/index.js';
import { DssError } from '../../src/errors.js';
import { createRedisClient, pingRedis } from '../../src/queue/redis.js';
import { QueueStore, type PopResult, type RedisClient } from '../../src/queue/store.js';
import { TestCluster } from '../helpers/cluster.js';
import { RedisClusterServers, RedisSentinelServers } from '../helpers/redis-cluster.js';
import { waitFor } from '../helpers/wait.js';

interface Res {
  status: number;
  body: unknown;
  node: string | null;
}

async function call(url: string, method: string, path: string, body?: unknown): Promise<Res> {
  const res = await fetch(url + path, {
    method,
    ...(body !== undefined
      ? { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }
      : {}),
    signal: AbortSignal.timeout(20_000),
  });
  const text = await res.text();
  return {
    status: res.status,
    body: text ? (JSON.parse(text) as unknown) : null,
    node: res.headers.get('x-dss-served-by'),
  };
}

/** A small seeded PRNG (mulberry32), so a failing run can be replayed with RC_SEED. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SEED = Number(process.env.RC_SEED ?? Date.now() % 1_000_000);
const rand = prng(SEED);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;

const LEASE_MS = 600;

interface Delivery {
  id: string;
  message: unknown;
  delivery_count: number;
}

async function waitReady(urls: string[]): Promise<void> {
  await waitFor(
    'every node ready and seeing its peers',
    async () => {
      for (const u of urls) {
        if ((await call(u, 'GET', '/ready')).status !== 200) return false;
        const st = (await call(u, 'GET', '/status')).body as { peers: { reachable: boolean }[] };
        if (!st.peers.every((p) => p.reachable)) return false;
      }
      return true;
    },
    { timeoutMs: 20_000 },
  );
}

/** Every key of `pattern` on one server (SCAN, so it never blocks the server). */
async function scanKeys(r: Redis, pattern: string): Promise<string[]> {
  const out: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await r.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    out.push(...batch);
    cursor = next;
  } while (cursor !== '0');
  return out;
}

/** A long poll parked at `queue`'s owner, answered by a push through another node. */
async function longPollWokenByPush(urls: string[], queue: string): Promise<void> {
  const waiting = call(urls[0]!, 'POST', '/queue/pop', { queue, wait_ms: 15_000 });
  await waitFor('the pop to be parked at the owner', async () => {
    for (const u of urls) {
      const st = (await call(u, 'GET', '/status')).body as { queue: { parked_pops: number } };
      if (st.queue.parked_pops > 0) return true;
    }
    return false;
  });
  const pushedAt = Date.now();
  const p = await call(urls[urls.length - 1]!, 'POST', '/queue/push', { queue, message: 'wake' });
  assert.equal(p.status, 201);
  const r = await waiting;
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const d = r.body as Delivery;
  assert.equal(d.message, 'wake');
  assert.ok(Date.now() - pushedAt < 2_000, `woken ${Date.now() - pushedAt} ms after the push`);
  assert.deepEqual((await call(urls[1 % urls.length]!, 'POST', '/queue/ack', { queue, id: d.id })).body, {
    acked: 1,
  });
}

describe(`queue and cache on a 3-master Redis Cluster (seed ${SEED})`, () => {
  let redis: RedisClusterServers;
  let masters: Redis[] = [];
  let mem: Cluster;
  let c: TestCluster;
  let urls: string[];

  /** Index (in redis.ports) of the master serving `key`'s slot. */
  const masterOf = async (key: string): Promise<number> => {
    const slot = await masters[0]!.cluster('KEYSLOT', key);
    const range = (await masters[0]!.cluster('SLOTS')).find(([lo, hi]) => lo <= slot && slot <= hi);
    const port = range?.[2]?.[1];
    assert.ok(port !== undefined, `no master serves slot ${slot}`);
    return redis.ports.indexOf(port);
  };

  before(async () => {
    redis = await RedisClusterServers.start();
    masters = await redis.masterClients();
    mem = new Cluster(
      redis.ports.map((port) => ({ host: '127.0.0.1', port })),
      { redisOptions: { maxRetriesPerRequest: 1 } },
    );
    mem.on('error', () => undefined);
    c = await TestCluster.start({
      nodes: 3,
      roles: 'queue,cache',
      direct: true,
      env: { REDIS_CLUSTER_NODES: redis.nodesEnv, CACHE_LEASE_MS: String(LEASE_MS) },
    });
    urls = c.nodes.map((n) => n.url);
    await waitReady(urls);
  });

  after(async () => {
    mem?.disconnect();
    for (const m of masters) m.disconnect();
    await c?.stop();
    await redis?.stop();
  });

  it('/ready is ready on every node, the redis check included', async () => {
    for (const u of urls) {
      const r = await call(u, 'GET', '/ready');
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const checks = (r.body as { checks: { name: string; ok: boolean }[] }).checks;
      assert.ok(
        checks.some((x) => x.name === 'redis' && x.ok),
        JSON.stringify(checks),
      );
    }
  });

  it('many queues spread over every master: nothing lost, nothing duplicated', async () => {
    const QUEUES = 48;
    const queues = Array.from({ length: QUEUES }, (_, i) => `rc-q-${i}`);
    // Every key of one queue is in one slot, and the queues' slots are spread over the masters.
    const slots = new Set<number>();
    for (const q of queues) {
      const keys = ['ready', 'pending', 'dead', 'msg', 'dc', 'seq'].map((s) => `dss:q:{${q}}:${s}`);
      const ks = await Promise.all(keys.map((k) => masters[0]!.cluster('KEYSLOT', k)));
      assert.equal(new Set(ks).size, 1, `${q}: keys in slots ${ks.join(',')}`);
      slots.add(ks[0]!);
    }
    assert.ok(slots.size > QUEUES / 2, `only ${slots.size} distinct slots`);

    // Push: single messages and batches, each through a random node.
    const pushed = new Map<string, unknown>(); // `${queue}/${id}` -> message
    for (const q of queues) {
      for (let n = 0; n < 6;) {
        const batch = rand() < 0.5 ? 1 : Math.min(6 - n, 1 + Math.floor(rand() * 3));
        const msgs = Array.from({ length: batch }, (_, j) => ({ q, n: n + j, pad: 'x'.repeat(n + j) }));
        const body = batch === 1 ? { queue: q, message: msgs[0] } : { queue: q, messages: msgs };
        const r = await call(pick(urls), 'POST', '/queue/push', body);
        assert.equal(r.status, 201, JSON.stringify(r.body));
        const ids = batch === 1 ? [(r.body as { id: string }).id] : (r.body as { ids: string[] }).ids;
        assert.equal(ids.length, batch);
        ids.forEach((id, j) => pushed.set(`${q}/${id}`, msgs[j]));
        n += batch;
      }
    }
    assert.equal(pushed.size, QUEUES * 6);

    // Each master holds some queues, and each queue lives on exactly one master.
    const where = new Map<string, Set<number>>();
    for (const [i, m] of masters.entries()) {
      const keys = await scanKeys(m, 'dss:q:{rc-q-*');
      assert.ok(keys.length > 0, `master ${redis.ports[i]} holds no queue`);
      for (const k of keys) {
        const q = /^dss:q:\{([^}]*)\}:/.exec(k)![1]!;
        if (!where.has(q)) where.set(q, new Set());
        where.get(q)!.add(i);
      }
    }
    assert.equal(where.size, QUEUES);
    for (const [q, ms] of where) assert.equal(ms.size, 1, `${q} is split over masters ${[...ms].join(',')}`);

    // Stats through random nodes agree with what was pushed.
    for (const q of queues) {
      const st = (await call(pick(urls), 'GET', `/queue/stats?queue=${q}`)).body as Record<string, unknown>;
      assert.deepEqual(
        { ready: st.ready, pending: st.pending, dead: st.dead },
        { ready: 6, pending: 0, dead: 0 },
      );
      assert.ok(c.nodes.some((n) => n.id === st.owner));
    }

    // Pop (random batch sizes) and ack (single or batch) through random nodes until every queue is empty.
    const delivered = new Map<string, number>();
    for (const q of queues) {
      let lastId = 0;
      for (;;) {
        const max = 1 + Math.floor(rand() * 4);
        const r = await call(pick(urls), 'POST', '/queue/pop', { queue: q, ...(max > 1 ? { max } : {}) });
        if (r.status === 204) break;
        assert.equal(r.status, 200, JSON.stringify(r.body));
        const got: Delivery[] =
          max > 1 ? (r.body as { messages: Delivery[] }).messages : [r.body as Delivery];
        assert.ok(got.length > 0 && got.length <= max);
        for (const d of got) {
          const k = `${q}/${d.id}`;
          assert.deepEqual(d.message, pushed.get(k), `unexpected delivery ${k}`);
          assert.equal(d.delivery_count, 1);
          assert.ok(Number(d.id) > lastId, `${q}: ${d.id} after ${lastId} (FIFO)`);
          lastId = Number(d.id);
          delivered.set(k, (delivered.get(k) ?? 0) + 1);
        }
        const ids = got.map((d) => d.id);
        const a = await call(
          pick(urls),
          'POST',
          '/queue/ack',
          ids.length === 1 && rand() < 0.5 ? { queue: q, id: ids[0] } : { queue: q, ids },
        );
        assert.deepEqual(a.body, { acked: ids.length });
      }
    }
    assert.deepEqual([...delivered.keys()].sort(), [...pushed.keys()].sort(), 'every push delivered');
    assert.ok(
      [...delivered.values()].every((n) => n === 1),
      'no duplicate',
    );
    for (const q of queues) {
      const st = (await call(pick(urls), 'GET', `/queue/stats?queue=${q}`)).body as Record<string, unknown>;
      assert.deepEqual(
        { ready: st.ready, pending: st.pending, dead: st.dead },
        { ready: 0, pending: 0, dead: 0 },
      );
    }
  });

  it('a delivery not acked within its visibility is redelivered (to a parked long poll)', async () => {
    const q = 'rc-redeliver';
    const p = await call(urls[0]!, 'POST', '/queue/push', { queue: q, message: { once: 'more' } });
    assert.equal(p.status, 201);
    const id = (p.body as { id: string }).id;
    const first = await call(urls[1]!, 'POST', '/queue/pop', { queue: q, visibility_ms: 300 });
    assert.equal(first.status, 200);
    assert.equal((first.body as Delivery).id, id);
    const second = await call(urls[2]!, 'POST', '/queue/pop', { queue: q, wait_ms: 10_000 });
    assert.equal(second.status, 200, 'redelivered within the long poll');
    const d = second.body as Delivery;
    assert.equal(d.id, id);
    assert.deepEqual(d.message, { once: 'more' });
    assert.equal(d.delivery_count, 2);
    assert.deepEqual((await call(urls[0]!, 'POST', '/queue/ack', { queue: q, id })).body, { acked: 1 });
  });

  it('stats count ready and pending; queue_depth reports the queue from its owner', async () => {
    const q = 'rc-stats';
    const r = await call(urls[2]!, 'POST', '/queue/push', { queue: q, messages: ['a', 'b', 'c'] });
    assert.equal(r.status, 201);
    assert.equal((await call(urls[0]!, 'POST', '/queue/pop', { queue: q })).status, 200);
    let owner = '';
    for (const u of urls) {
      const st = (await call(u, 'GET', `/queue/stats?queue=${q}`)).body as Record<string, unknown>;
      assert.deepEqual(
        { queue: st.queue, ready: st.ready, pending: st.pending, dead: st.dead },
        { queue: q, ready: 2, pending: 1, dead: 0 },
      );
      owner = st.owner as string;
    }
    const ownerUrl = c.node(owner).url;
    const text = await (await fetch(`${ownerUrl}/metrics`)).text();
    const line = (state: string): number | undefined => {
      const l = text
        .split('\n')
        .find(
          (x) => x.startsWith('queue_depth{') && x.includes(`queue="${q}"`) && x.includes(`state="${state}"`),
        );
      return l === undefined ? undefined : Number(l.split(' ').pop());
    };
    assert.equal(line('ready'), 2, text);
    assert.equal(line('pending'), 1);
  });

  it('a long poll is woken by a push through another node', async () => {
    await longPollWokenByPush(urls, 'rc-longpoll');
  });

  it('cache keys (every identifier character) on several nodes; write-back lands after flush', async () => {
    // SPEC 3 identifiers: [A-Za-z0-9._:/-]. Braces are not identifier characters: 400, nothing stored.
    const keys = Array.from({ length: 30 }, (_, i) => `rc/k-${i}.v:${i % 4}/_x${'/'.repeat(i % 3)}z`);
    keys.push('A', 'z9', 'a:b', 'a/b/c', '.-_:', 'dss:mem:nested');
    for (const bad of ['a{b}c', '{x}', 'x}', 'y{']) {
      const r = await call(urls[0]!, 'PUT', `/cache/${encodeURIComponent(bad)}`, { value: 1 });
      assert.equal(r.status, 400, `${bad}: ${JSON.stringify(r.body)}`);
    }
    const expected = new Map<string, unknown>();
    for (const [i, key] of keys.entries()) {
      const a = i % 3;
      const b = (i + 1) % 3;
      const path = `/cache/${key}`;
      // Write on one node, read on another (S via a peer), write again on a third, read everywhere.
      const w1 = await call(urls[a]!, 'PUT', path, { value: { key, v: 1 } });
      assert.deepEqual(w1.body, { key, state: 'M' }, `PUT ${key}: ${JSON.stringify(w1.body)}`);
      const r1 = await call(urls[b]!, 'GET', path);
      assert.equal(r1.status, 200, JSON.stringify(r1.body));
      assert.deepEqual((r1.body as { value: unknown }).value, { key, v: 1 });
      const value = { key, v: 2, list: [i, 'two', null], empty: [] };
      const w2 = await call(urls[(i + 2) % 3]!, 'PUT', path, { value });
      assert.equal(w2.status, 200, JSON.stringify(w2.body));
      for (const u of urls) {
        const r = await call(u, 'GET', path);
        assert.equal(r.status, 200, JSON.stringify(r.body));
        assert.deepEqual((r.body as { value: unknown }).value, value, `GET ${key} on ${u}`);
      }
      expected.set(key, value);
    }
    // A written key in M on one node: write-back leaves it in Redis only after a flush.
    const dirty = 'rc/dirty:1';
    assert.equal((await call(urls[1]!, 'PUT', `/cache/${dirty}`, { value: 'dirty' })).status, 200);
    expected.set(dirty, 'dirty');
    let written = 0;
    for (const u of urls) {
      const f = await call(u, 'POST', '/cache/flush');
      assert.equal(f.status, 200, JSON.stringify(f.body));
      written += (f.body as { written_back: number }).written_back;
    }
    assert.ok(written >= 1, `flush wrote ${written} lines back`);

    // Every value is in Redis as its JSON text, its fence next to it (same master), and the
    // values are spread over every master.
    const perMaster = masters.map(() => 0);
    for (const [key, value] of expected) {
      const text = await mem.get(`dss:mem:${key}`);
      assert.ok(text !== null, `dss:mem:${key} missing`);
      assert.deepEqual(JSON.parse(text), value);
      const slot = await masters[0]!.cluster('KEYSLOT', `dss:mem:${key}`);
      assert.equal(await masters[0]!.cluster('KEYSLOT', `dss:fence:{dss:mem:${key}}`), slot);
      const holders = await Promise.all(
        masters.map((m) => m.call('EXISTS', `dss:mem:${key}`, `dss:fence:{dss:mem:${key}}`).catch(() => 0)),
      );
      const i = holders.findIndex((h) => h === 2);
      assert.ok(i >= 0, `dss:mem:${key} and its fence are not together on one master: ${holders.join(',')}`);
      perMaster[i]!++;
    }
    assert.ok(
      perMaster.every((n) => n > 0),
      `cache values per master: ${perMaster.join(',')}`,
    );

    // Deletes are writes of "no value": gone from every node and from Redis after a flush.
    const gone = keys[0]!;
    assert.deepEqual((await call(urls[2]!, 'DELETE', `/cache/${gone}`)).body, { deleted: true });
    for (const u of urls) assert.equal((await call(u, 'GET', `/cache/${gone}`)).status, 404);
    for (const u of urls) assert.equal((await call(u, 'POST', '/cache/flush')).status, 200);
    assert.equal(await mem.get(`dss:mem:${gone}`), null);
  });

  it('slots moved to another master under traffic: nothing lost, every queue served again at once', async () => {
    const FROM = 0;
    const TO = 2;
    const SLOTS = 1500;
    // A reshard moves the lowest slots of its source first: queues there move, the others stay.
    const ranges = await masters[0]!.cluster('SLOTS');
    const lo = Math.min(...ranges.filter((r) => r[2]?.[1] === redis.ports[FROM]).map((r) => r[0]));
    const moving: string[] = [];
    const staying: string[] = [];
    for (let k = 0; moving.length < 16 || staying.length < 8; k++) {
      const q = `rc-move-${k}`;
      const slot = await masters[0]!.cluster('KEYSLOT', `dss:q:{${q}}:ready`);
      if (slot >= lo && slot < lo + SLOTS) {
        if (moving.length < 16) moving.push(q);
      } else if (staying.length < 8) staying.push(q);
    }
    const queues = [...moving, ...staying];
    const before = await Promise.all(staying.map((q) => masterOf(`dss:q:{${q}}:ready`)));

    // Producers on every queue through random nodes while the slots move.
    const sent = new Set<string>();
    const acked = new Set<string>();
    const unexpected: string[] = [];
    let unavailable = 0;
    let stop = false;
    let n = 0;
    const produce = async (q: string): Promise<void> => {
      while (!stop) {
        const m = `${q}#${n++}`;
        sent.add(m);
        const r = await call(pick(urls), 'POST', '/queue/push', { queue: q, message: m });
        if (r.status === 201) acked.add(m);
        else if (r.status === 503) unavailable++;
        else unexpected.push(`push ${m}: ${r.status} ${JSON.stringify(r.body)}`);
      }
    };
    const traffic = Promise.all(queues.map(produce));
    try {
      await redis.reshard(FROM, TO, SLOTS);
    } finally {
      stop = true;
      await traffic;
    }
    assert.deepEqual(unexpected, []);
    for (const q of moving) assert.equal(await masterOf(`dss:q:{${q}}:ready`), TO, `${q} moved`);
    for (const [i, q] of staying.entries()) {
      assert.equal(await masterOf(`dss:q:{${q}}:ready`), before[i], `${q} stayed`);
    }
    assert.ok(acked.size > queues.length, `only ${acked.size} pushes acknowledged during the reshard`);

    // Right after: every node serves every queue, the moved ones included, without a 503.
    for (const q of queues) {
      for (const u of urls) {
        const m = `${q}#after-${u}`;
        sent.add(m);
        const r = await call(u, 'POST', '/queue/push', { queue: q, message: m });
        assert.equal(r.status, 201, `push to ${q} through ${u}: ${r.status} ${JSON.stringify(r.body)}`);
        acked.add(m);
      }
    }

    // Drain: every acknowledged push is delivered; nothing that was not sent appears.
    const delivered = new Set<string>();
    for (const q of queues) {
      for (;;) {
        const r = await call(pick(urls), 'POST', '/queue/pop', { queue: q, max: 200 });
        if (r.status === 204) break;
        assert.equal(r.status, 200, `pop ${q}: ${r.status} ${JSON.stringify(r.body)}`);
        const msgs = (r.body as { messages: Delivery[] }).messages;
        for (const d of msgs) {
          assert.ok(typeof d.message === 'string' && sent.has(d.message), `unexpected ${JSON.stringify(d)}`);
          delivered.add(d.message);
        }
        const ids = msgs.map((d) => d.id);
        assert.deepEqual((await call(pick(urls), 'POST', '/queue/ack', { queue: q, ids })).body, {
          acked: ids.length,
        });
      }
    }
    const lost = [...acked].filter((m) => !delivered.has(m));
    assert.deepEqual(
      lost,
      [],
      `${lost.length} acknowledged pushes lost (${unavailable} 503s during the reshard)`,
    );
  });

  it('a master down: /ready fails and its queues answer 503; restarted: ready and serving again', async () => {
    // A queue on each master (the slot of its keys decides).
    const onMaster = masters.map(() => '');
    for (let k = 0; onMaster.includes(''); k++) {
      const q = `rc-down-${k}`;
      const i = await masterOf(`dss:q:{${q}}:ready`);
      if (onMaster[i] === '') onMaster[i] = q;
    }
    const DOWN = 1;
    await redis.kill(DOWN);
    await waitFor(
      '/ready to fail on every node',
      async () => {
        for (const u of urls) if ((await call(u, 'GET', '/ready')).status !== 503) return false;
        return true;
      },
      { timeoutMs: 15_000 },
    );
    const started = Date.now();
    const r = await call(pick(urls), 'POST', '/queue/push', { queue: onMaster[DOWN], message: 'x' });
    assert.equal(r.status, 503, JSON.stringify(r.body));
    assert.ok(Date.now() - started < 8_000, `503 after ${Date.now() - started} ms`);

    await redis.restart(DOWN);
    await waitReady(urls);
    // The masters' connections are new (and the restarted one has no scripts loaded): requests
    // work again, at worst after a 503 to retry, never a 500.
    const unexpected: string[] = [];
    const retried = async (what: string, ok: number, send: () => Promise<Res>): Promise<Res> =>
      waitFor(
        what,
        async () => {
          const r = await send();
          if (r.status === ok) return r;
          if (r.status !== 503) unexpected.push(`${what}: ${r.status} ${JSON.stringify(r.body)}`);
          return undefined;
        },
        { timeoutMs: 10_000, intervalMs: 100 },
      );
    for (const q of onMaster) {
      const p = await retried(`a push to ${q}`, 201, () =>
        call(pick(urls), 'POST', '/queue/push', { queue: q, message: q }),
      );
      const id = (p.body as { id: string }).id;
      const got = await retried(`a pop from ${q}`, 200, () =>
        call(pick(urls), 'POST', '/queue/pop', { queue: q, max: 10 }),
      );
      const msgs = (got.body as { messages: Delivery[] }).messages;
      assert.ok(msgs.some((m) => m.id === id) && msgs.every((m) => m.message === q), JSON.stringify(msgs));
      const ids = msgs.map((m) => m.id);
      assert.deepEqual((await call(pick(urls), 'POST', '/queue/ack', { queue: q, ids })).body, {
        acked: ids.length,
      });
    }
    // A cache key whose value and fence live on the restarted master.
    let key = '';
    for (let k = 0; key === ''; k++)
      if ((await masterOf(`dss:mem:rc/restart-${k}`)) === DOWN) key = `rc/restart-${k}`;
    await retried(`a write of ${key}`, 200, () => call(urls[0]!, 'PUT', `/cache/${key}`, { value: 1 }));
    const read = await retried(`a read of ${key}`, 200, () => call(urls[1]!, 'GET', `/cache/${key}`));
    assert.equal((read.body as { value: unknown }).value, 1);
    // The read made the writer write back (M -> S): the value is on the restarted master.
    await waitFor(`dss:mem:${key} in Redis`, async () => (await mem.get(`dss:mem:${key}`)) === '1');
    assert.deepEqual(unexpected, [], 'only 503s before success');
  });
});

describe(`queue and cache through a Redis Sentinel (seed ${SEED})`, () => {
  let redis: RedisSentinelServers;
  let master: Redis;
  let c: TestCluster;
  let urls: string[];

  before(async () => {
    redis = await RedisSentinelServers.start();
    master = await redis.masterClient();
    c = await TestCluster.start({
      nodes: 2,
      roles: 'queue,cache',
      direct: true,
      env: {
        REDIS_SENTINELS: redis.sentinelsEnv,
        REDIS_SENTINEL_NAME: redis.masterName,
        CACHE_LEASE_MS: String(LEASE_MS),
      },
    });
    urls = c.nodes.map((n) => n.url);
    await waitReady(urls);
  });

  after(async () => {
    master?.disconnect();
    await c?.stop();
    await redis?.stop();
  });

  it('queue: push, pop, ack, stats and a long poll through the sentinel-named master', async () => {
    const q = 'rs-q';
    const r = await call(urls[0]!, 'POST', '/queue/push', { queue: q, messages: [1, 2, 3] });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal(await master.llen(`dss:q:{${q}}:ready`), 3, 'the messages are on the master');
    const got: unknown[] = [];
    for (let i = 0; i < 3; i++) {
      const p = await call(urls[(i + 1) % 2]!, 'POST', '/queue/pop', { queue: q });
      assert.equal(p.status, 200);
      const d = p.body as Delivery;
      got.push(d.message);
      assert.deepEqual((await call(urls[i % 2]!, 'POST', '/queue/ack', { queue: q, id: d.id })).body, {
        acked: 1,
      });
    }
    assert.deepEqual(got, [1, 2, 3]);
    const st = (await call(urls[1]!, 'GET', `/queue/stats?queue=${q}`)).body as Record<string, unknown>;
    assert.deepEqual(
      { ready: st.ready, pending: st.pending, dead: st.dead },
      { ready: 0, pending: 0, dead: 0 },
    );
    await longPollWokenByPush(urls, 'rs-longpoll');
  });

  it('cache: written on one node, read on the other, flushed into the master', async () => {
    const key = 'rs/user:42';
    assert.equal((await call(urls[0]!, 'PUT', `/cache/${key}`, { value: { name: 'ada' } })).status, 200);
    const r = await call(urls[1]!, 'GET', `/cache/${key}`);
    assert.equal(r.status, 200);
    assert.deepEqual((r.body as { value: unknown }).value, { name: 'ada' });
    assert.equal((await call(urls[1]!, 'PUT', `/cache/${key}`, { value: { name: 'grace' } })).status, 200);
    for (const u of urls) assert.equal((await call(u, 'POST', '/cache/flush')).status, 200);
    assert.deepEqual(JSON.parse((await master.get(`dss:mem:${key}`))!), { name: 'grace' });
    for (const u of urls) assert.equal((await call(u, 'GET', '/ready')).status, 200);
  });
});

describe('the Redis Cluster client of a node never re-sends a script whose reply was lost', () => {
  let redis: RedisClusterServers;
  let client: RedisClient;
  let store: QueueStore;

  before(async () => {
    redis = await RedisClusterServers.start({ proxied: true });
    client = createRedisClient(loadConfig({ REDIS_CLUSTER_NODES: redis.nodesEnv }).redis);
    client.on('error', () => undefined);
    store = new QueueStore(client);
    await waitFor('the cluster client ready', async () => {
      await pingRedis(client);
      return true;
    });
  });

  after(async () => {
    client?.disconnect();
    await redis?.stop();
  });

  const unavailable = (e: unknown): boolean => e instanceof DssError && e.code === 'unavailable';
  const pop = (q: string): Promise<PopResult> =>
    store.pop(q, { max: 1, visibilityMs: 60_000, nowMs: Date.now(), maxDeliveries: 0 });

  it('an ack whose reply is lost is a 503, not a second run answering unknown_message', async () => {
    const q = 'rc-lost-ack';
    const [id] = await store.push(q, ['m']);
    assert.equal((await pop(q)).messages[0]?.id, id);
    const lost = redis.loseReplyTo(q);
    await assert.rejects(store.ack(q, id!), unavailable);
    await lost;
    assert.deepEqual(await store.stats(q), { ready: 0, pending: 0, dead: 0 }, 'the ack ran once');
  });

  it('a pop whose reply is lost is a 503 and took one message, not two', async () => {
    const q = 'rc-lost-pop';
    const ids = await store.push(q, ['a', 'b']);
    const lost = redis.loseReplyTo(q);
    await assert.rejects(pop(q), unavailable);
    await lost;
    assert.deepEqual(await store.stats(q), { ready: 1, pending: 1, dead: 0 }, 'the pop ran once');
    // The lost delivery comes back through the redelivery monitor; the next pop gets the second.
    assert.equal((await pop(q)).messages[0]?.id, ids[1]);
  });
});

describe('the Redis Cluster client of a node under load while slots move', () => {
  let redis: RedisClusterServers;
  let client: RedisClient;
  let store: QueueStore;

  before(async () => {
    redis = await RedisClusterServers.start();
    client = createRedisClient(loadConfig({ REDIS_CLUSTER_NODES: redis.nodesEnv }).redis);
    client.on('error', () => undefined);
    store = new QueueStore(client);
    await waitFor('the cluster client ready', async () => {
      await pingRedis(client);
      return true;
    });
  });

  after(async () => {
    client?.disconnect();
    await redis?.stop();
  });

  it('commands for slots moved under load follow them: no error once the reshard is over', async () => {
    // Many queues at once from one client, as a node's redelivery monitor and its requests do.
    const queues = Array.from({ length: 300 }, (_, i) => `rc-load-${i}`);
    await Promise.all(queues.map((q) => store.push(q, ['m'])));
    const failures = new Map<string, number>();
    const round = async (): Promise<number> => {
      let failed = 0;
      await Promise.all(
        queues.map(async (q) => {
          try {
            assert.equal((await store.stats(q)).ready, 1);
          } catch (e) {
            failed++;
            const why = e instanceof Error ? e.message.split(' ').slice(0, 3).join(' ') : String(e);
            failures.set(why, (failures.get(why) ?? 0) + 1);
          }
        }),
      );
      return failed;
    };
    let stop = false;
    const load = (async () => {
      while (!stop) await round();
    })();
    try {
      await redis.reshard(0, 1, 2000);
    } finally {
      stop = true;
      await load;
    }
    const during = [...failures].map(([why, n]) => `${n} x ${why}`).join(', ');
    for (let i = 0; i < 3; i++)
      assert.equal(await round(), 0, `round ${i} after the reshard (during: ${during})`);
  });
});
