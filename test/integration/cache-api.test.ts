// The cache over HTTP on 3 real node processes sharing a private Redis (SPEC 6): the seeds'
// scenarios (miss -> E, second reader -> S, write on S -> M and I elsewhere, read of an M line ->
// write-back then S, A writes / B reads / C writes / B reads the new value, LRU eviction of an M
// line writes it back), one invalidation per sharer, flush, graceful shutdown writing M lines back,
// and a write that completes within a bound while a sharer is frozen, which afterwards serves no
// stale hit.
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { HashRing } from '../../src/queue/ring.js';
import { TestCluster } from '../helpers/cluster.js';
import { RedisServer } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

interface Res {
  status: number;
  body: unknown;
}

async function call(url: string, method: string, path: string, body?: unknown): Promise<Res> {
  const res = await fetch(url + path, {
    method,
    ...(body !== undefined
      ? { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }
      : {}),
  });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as unknown) : null };
}

interface Got {
  key: string;
  value: unknown;
  state: string;
  source: string;
}

const LEASE_MS = 600;
const ring = new HashRing(['node1', 'node2', 'node3']);
/** A key whose home (its owner on the ring of cache nodes) is `home`. */
function keyHomedAt(home: string, prefix: string): string {
  for (let i = 0; ; i++) if (ring.owner(`${prefix}${i}`) === home) return `${prefix}${i}`;
}

describe('cache API (3 real processes, private Redis, write-back)', () => {
  let redis: RedisServer;
  let mem: Redis;
  let c: TestCluster;
  let urls: string[];

  const get = async (i: number, key: string): Promise<Got> => {
    const r = await call(urls[i]!, 'GET', `/cache/${key}`);
    assert.equal(r.status, 200, `GET ${key} on node${i + 1}: ${JSON.stringify(r.body)}`);
    return r.body as Got;
  };
  const put = async (i: number, key: string, value: unknown): Promise<void> => {
    const r = await call(urls[i]!, 'PUT', `/cache/${key}`, { value });
    assert.equal(r.status, 200, `PUT ${key} on node${i + 1}: ${JSON.stringify(r.body)}`);
    assert.deepEqual(r.body, { key, state: 'M' });
  };
  /** The key's state on every node ('I' when absent). */
  const states = async (key: string): Promise<string[]> =>
    Promise.all(
      urls.map(async (u) => {
        const r = (await call(u, 'GET', '/cache')).body as { lines: { key: string; state: string }[] };
        return r.lines.find((l) => l.key === key)?.state ?? 'I';
      }),
    );
  const metric = async (i: number, name: string): Promise<number> => {
    const text = await (await fetch(`${urls[i]}/metrics`)).text();
    let sum = 0;
    for (const line of text.split('\n')) {
      if (line.startsWith(name + '{') || line.startsWith(name + ' ')) sum += Number(line.split(' ').pop());
    }
    return sum;
  };
  const sumMetric = async (name: string): Promise<number> =>
    (await Promise.all(urls.map((_, i) => metric(i, name)))).reduce((a, b) => a + b, 0);

  before(async () => {
    redis = await RedisServer.start();
    mem = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await mem.connect();
    c = await TestCluster.start({
      nodes: 3,
      roles: 'cache',
      env: { REDIS_URL: redis.url, CACHE_MAX_SIZE: '8', CACHE_LEASE_MS: String(LEASE_MS) },
    });
    urls = c.nodes.map((n) => n.url);
    await waitFor('every cache home ready', async () => {
      for (const u of urls) if ((await fetch(`${u}/ready`)).status !== 200) return false;
      return true;
    });
  });

  after(async () => {
    mem?.disconnect();
    await c?.stop();
    await redis?.stop();
  });

  it('miss with no other copy -> E from memory; a second reader -> both S, data from the peer', async () => {
    await mem.set('dss:mem:s1', JSON.stringify({ v: 1 }));
    const a = await get(0, 's1');
    assert.deepEqual(a, { key: 's1', value: { v: 1 }, state: 'E', source: 'memory' });
    assert.deepEqual(await states('s1'), ['E', 'I', 'I']);
    assert.equal((await get(0, 's1')).source, 'l1', 'the next read is a hit');
    const b = await get(1, 's1');
    assert.deepEqual(b, { key: 's1', value: { v: 1 }, state: 'S', source: 'peer' });
    assert.deepEqual(await states('s1'), ['S', 'S', 'I']);
  });

  it('a hit (sent as prepared text) has the body and content type of a miss, and follows writes', async () => {
    // Keys may hold '/', ':' and '.'; the value has what JSON text must escape.
    const key = 'hit/text:1.a';
    const value = { q: 'say "hi"\\', u: 'é ✓ \u0001', n: [0, -1.5, null, true], o: {} };
    await mem.set(`dss:mem:${key}`, JSON.stringify(value));
    const raw = async (): Promise<{ type: string | null; body: unknown }> => {
      const res = await fetch(`${urls[0]}/cache/${key}`);
      assert.equal(res.status, 200);
      return { type: res.headers.get('content-type'), body: await res.json() };
    };
    const miss = await raw();
    assert.deepEqual(miss.body, { key, value, state: 'E', source: 'memory' });
    const hit = await raw();
    assert.deepEqual(hit, { type: miss.type, body: { key, value, state: 'E', source: 'l1' } });
    // A write brings new data: the next hit must not send the old value's text.
    await put(0, key, 'second');
    assert.deepEqual((await raw()).body, { key, value: 'second', state: 'M', source: 'l1' });
    await put(0, key, null);
    assert.deepEqual((await raw()).body, { key, value: null, state: 'M', source: 'l1' });
    // Another node's read turns the line into S (same data, new state).
    assert.deepEqual(await get(1, key), { key, value: null, state: 'S', source: 'peer' });
    assert.deepEqual((await raw()).body, { key, value: null, state: 'S', source: 'l1' });
  });
  it('write on S -> writer M, every other copy I, one invalidation per sharer', async () => {
    await mem.set('dss:mem:s2', '"old"');
    await get(0, 's2');
    await get(1, 's2');
    await get(2, 's2');
    assert.deepEqual(await states('s2'), ['S', 'S', 'S']);
    const before = await sumMetric('cache_coherence_messages_total');
    await put(1, 's2', 'new');
    assert.equal(
      (await sumMetric('cache_coherence_messages_total')) - before,
      2,
      'two sharers, two messages',
    );
    assert.deepEqual(await states('s2'), ['I', 'M', 'I']);
    // Write-back policy: memory still has the old value; the M line is the only up-to-date copy.
    assert.equal(await mem.get('dss:mem:s2'), '"old"');
    // A write in M needs no message at all.
    const before2 = await sumMetric('cache_coherence_messages_total');
    await put(1, 's2', 'newer');
    assert.equal((await sumMetric('cache_coherence_messages_total')) - before2, 0);
  });

  it('read of a key another node holds in M -> the holder writes back, both end in S', async () => {
    await put(2, 's3', { n: 3 });
    assert.deepEqual(await states('s3'), ['I', 'I', 'M']);
    const wb = await sumMetric('cache_writebacks_total');
    const r = await get(0, 's3');
    assert.deepEqual(r, { key: 's3', value: { n: 3 }, state: 'S', source: 'peer' });
    assert.deepEqual(await states('s3'), ['S', 'I', 'S']);
    assert.equal(await mem.get('dss:mem:s3'), JSON.stringify({ n: 3 }));
    assert.equal((await sumMetric('cache_writebacks_total')) - wb, 1);
  });

  it('A writes v1, B reads v1, C writes v2, B reads v2', async () => {
    await put(0, 's4', 'v1');
    assert.equal((await get(1, 's4')).value, 'v1');
    await put(2, 's4', 'v2');
    const b = await get(1, 's4');
    assert.equal(b.value, 'v2');
    assert.deepEqual(await states('s4'), ['I', 'S', 'S']);
  });

  it('missing keys are 404 from every node; delete invalidates every copy', async () => {
    const r = await call(urls[2]!, 'GET', '/cache/no/such:key');
    assert.equal(r.status, 404);
    assert.equal((r.body as { error: { code: string } }).error.code, 'not_found');
    await put(0, 'dir/s5:x', 5);
    assert.equal((await get(1, 'dir/s5:x')).value, 5);
    const d = await call(urls[2]!, 'DELETE', '/cache/dir/s5:x');
    assert.deepEqual(d.body, { deleted: true });
    for (let i = 0; i < 3; i++) assert.equal((await call(urls[i]!, 'GET', '/cache/dir/s5:x')).status, 404);
    assert.equal(await mem.get('dss:mem:dir/s5:x'), null);
  });

  it('bad input is a 400 naming the field; PUT without a value is a 400', async () => {
    const bad = await call(urls[0]!, 'GET', '/cache/bad%20key');
    assert.equal(bad.status, 400);
    const noValue = await call(urls[0]!, 'PUT', '/cache/s6', {});
    assert.equal(noValue.status, 400);
  });

  it('LRU eviction of an M line writes it back first', async () => {
    // CACHE_MAX_SIZE=8: nine new dirty lines on node3 push the oldest out.
    for (let i = 0; i < 9; i++) await put(2, `lru${i}`, { i });
    const lines = (await call(urls[2]!, 'GET', '/cache')).body as { size: number; capacity: number };
    assert.equal(lines.capacity, 8);
    await waitFor('the oldest line evicted', async () => (await states('lru0'))[2] === 'I');
    assert.equal(await mem.get('dss:mem:lru0'), JSON.stringify({ i: 0 }));
    // ...and read back through any node.
    assert.deepEqual((await get(0, 'lru0')).value, { i: 0 });
  });

  it('flush writes every M line back and keeps it cached', async () => {
    await put(0, 'f1', 'flushed');
    const r = await call(urls[0]!, 'POST', '/cache/flush');
    assert.equal(r.status, 200);
    assert.ok((r.body as { written_back: number }).written_back >= 1);
    assert.equal(await mem.get('dss:mem:f1'), '"flushed"');
    assert.equal((await states('f1'))[0], 'M');
  });

  it('a write completes within a bound while a sharer is frozen; the sharer then serves no stale hit', async () => {
    const key = keyHomedAt('node2', 'fz');
    await put(0, key, 'before');
    await get(1, key);
    await get(2, key);
    c.pause('node3');
    try {
      const t0 = Date.now();
      await put(0, key, 'after');
      const took = Date.now() - t0;
      assert.ok(took >= LEASE_MS, `the home waited out the frozen sharer's lease (${took} ms)`);
      assert.ok(took < LEASE_MS * 3 + 2_000, `write took ${took} ms`);
    } finally {
      c.resume('node3');
    }
    const r = await get(2, key);
    assert.equal(r.value, 'after');
    assert.ok((await metric(1, 'cache_lease_revocations_total')) >= 1);
  });

  it('a sharer cut off from its peers stops serving hits before a write elsewhere completes', async () => {
    const key = keyHomedAt('node1', 'cut');
    await put(0, key, 'v0');
    await get(2, key);
    assert.equal((await get(2, key)).source, 'l1');
    const reads: { start: number; end: number; status: number; value: unknown }[] = [];
    let reading = true;
    const reader = (async () => {
      while (reading) {
        const start = performance.now();
        const r = await call(urls[2]!, 'GET', `/cache/${key}`);
        reads.push({ start, end: performance.now(), status: r.status, value: (r.body as Got | null)?.value });
      }
    })();
    c.partition([['node3'], ['node1', 'node2']]);
    let wroteAt = 0;
    try {
      await put(0, key, 'v1');
      wroteAt = performance.now();
      await waitFor('node3 read after the write', () => reads.some((r) => r.start > wroteAt + 100));
    } finally {
      reading = false;
      await reader;
      c.heal();
    }
    const stale = reads.filter((r) => r.start > wroteAt && r.status === 200 && r.value !== 'v1');
    assert.deepEqual(stale, [], 'no read that started after the write returned the old value');
    assert.ok(
      reads.some((r) => r.status === 200 && r.value === 'v0'),
      'node3 served hits while its lease ran',
    );
    await waitFor('node3 back in the group', async () => {
      const r = await call(urls[2]!, 'GET', `/cache/${key}`);
      return r.status === 200 && (r.body as Got).value === 'v1';
    });
  });

  it('with the home frozen, a write fails within a bound and the key works again once it is back', async () => {
    const key = keyHomedAt('node3', 'hz');
    // Right after the partition above heals, a first request may still meet a link being rejoined
    // (a retryable 503, which the SDK retries): set up the key the way a client would.
    await waitFor(
      'the setup write',
      async () => (await call(urls[0]!, 'PUT', `/cache/${key}`, { value: 'one' })).status === 200,
    );
    c.pause('node3');
    try {
      const t0 = Date.now();
      const r = await call(urls[1]!, 'PUT', `/cache/${key}`, { value: 'two' });
      assert.equal(r.status, 503);
      assert.ok(Date.now() - t0 < 10_000, `failed after ${Date.now() - t0} ms`);
    } finally {
      c.resume('node3');
    }
    const got = await waitFor('the key readable again', async () => {
      const r = await call(urls[1]!, 'GET', `/cache/${key}`);
      return r.status === 200 ? (r.body as Got) : null;
    });
    // The failed write's outcome was unknown to the client: either value is allowed, but every node agrees.
    assert.ok(got.value === 'one' || got.value === 'two');
    for (let i = 0; i < 3; i++) assert.equal((await get(i, key)).value, got.value);
  });

  it('graceful shutdown writes every M line back', async () => {
    await put(1, 'g1', 'dirty at shutdown');
    assert.equal(await mem.get('dss:mem:g1'), null);
    await c.kill('node2', 'SIGTERM');
    assert.equal(await mem.get('dss:mem:g1'), '"dirty at shutdown"');
    await c.restart('node2');
    await waitFor('node2 ready again', async () => (await fetch(`${urls[1]}/ready`)).status === 200, {
      timeoutMs: 15_000,
    });
    assert.equal((await get(1, 'g1')).value, 'dirty at shutdown');
  });
});
