// Request limits (issue 7): JSON depth, a rate per connection, slow clients, cache value size, and
// the lock limits the leader checks before proposing. Each breach is a clear 4xx in the SPEC format.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { Client } from 'undici';
import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import type { ApiContext, DssApp } from '../../src/api/context.js';
import { ConnectionRateLimiter, MAX_JSON_DEPTH, jsonDepthExceeds } from '../../src/api/limits.js';
import { cacheRoutes } from '../../src/api/routes/cache.js';
import { buildServer, type BuildServerOptions } from '../../src/api/server.js';
import { loadConfig, parseClusterAddrs } from '../../src/config/index.js';
import { DssError } from '../../src/errors.js';
import { LockService } from '../../src/lock/service.js';
import { LockTable } from '../../src/lock/table.js';
import { createMetrics } from '../../src/metrics/index.js';
import type { Json, RaftStatus } from '../../src/raft/types.js';

const cluster = parseClusterAddrs('node1=127.0.0.1:1#lock+queue+cache', 'http').members;

const echo: FastifyPluginCallbackTypebox<{ ctx: ApiContext }> = (app, _opts, done) => {
  app.post('/test/echo', (req) => ({ ok: true, body: req.body as Json }));
  app.get('/test/ping', () => ({ ok: true }));
  app.post('/cache/handle_test', (req) => ({ ok: true, body: req.body as Json }));
  done();
};

const servers: DssApp[] = [];
after(async () => {
  for (const s of servers) await s.close();
});

async function server(over: Partial<BuildServerOptions> = {}): Promise<DssApp> {
  const app = await buildServer({
    nodeId: 'node1',
    roles: ['lock', 'queue', 'cache'],
    cluster,
    raft: null,
    metrics: createMetrics({ nodeId: 'node1', defaultMetrics: false }),
    plugins: [echo, cacheRoutes({ service: null, maxValueBytes: 100 })],
    ...over,
  });
  servers.push(app);
  return app;
}

function depthOf(v: unknown): number {
  if (Array.isArray(v)) return 1 + Math.max(0, ...v.map(depthOf));
  if (v !== null && typeof v === 'object') return 1 + Math.max(0, ...Object.values(v).map(depthOf));
  return 0;
}

describe('jsonDepthExceeds', () => {
  it('agrees with the real nesting depth of any JSON value, brackets inside strings ignored', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 8 }), fc.integer({ min: 0, max: 9 }), (v, max) => {
        const text = JSON.stringify(v);
        assert.equal(jsonDepthExceeds(text, max), depthOf(v) > max, text);
      }),
      { numRuns: 500 },
    );
    assert.equal(jsonDepthExceeds('{"a":"[[[[\\"]]]]{{"}', 1), false);
    assert.equal(jsonDepthExceeds('[[["\\\\"]]]', 2), true);
  });
});

describe('ConnectionRateLimiter', () => {
  it('lets `rate` requests a second through per connection, then answers 429 with Retry-After', () => {
    let now = 0;
    const limiter = new ConnectionRateLimiter(10, () => now);
    const a = connect({ port: 1, host: '127.0.0.1' }).on('error', () => undefined);
    const b = connect({ port: 1, host: '127.0.0.1' }).on('error', () => undefined);
    try {
      for (let i = 0; i < 10; i++) limiter.take(a);
      assert.throws(
        () => limiter.take(a),
        (e: unknown) => e instanceof DssError && e.code === 'rate_limited' && e.retryAfter === 1,
      );
      limiter.take(b); // another connection has its own bucket
      now += 100; // a tenth of a second refills one token
      limiter.take(a);
      assert.throws(() => limiter.take(a));
    } finally {
      a.destroy();
      b.destroy();
    }
  });
});

describe('request limits on a real server', () => {
  it('a body nested deeper than MAX_JSON_DEPTH is a 400 naming the limit; at the limit it passes', async () => {
    const app = await server();
    const deep = '['.repeat(MAX_JSON_DEPTH + 1) + ']'.repeat(MAX_JSON_DEPTH + 1);
    const r = await app.inject({
      method: 'POST',
      url: '/test/echo',
      headers: { 'content-type': 'application/json' },
      payload: deep,
    });
    assert.equal(r.statusCode, 400);
    assert.equal(r.json<{ error: { code: string } }>().error.code, 'bad_request');
    assert.match(r.body, /nested deeper than 64/);
    const ok = '['.repeat(MAX_JSON_DEPTH) + ']'.repeat(MAX_JSON_DEPTH);
    const r2 = await app.inject({
      method: 'POST',
      url: '/test/echo',
      headers: { 'content-type': 'application/json' },
      payload: ok,
    });
    assert.equal(r2.statusCode, 200);
    // A million levels: still a 400, not a stack overflow.
    const bomb = '['.repeat(500_000) + ']'.repeat(500_000);
    const r3 = await app.inject({
      method: 'POST',
      url: '/test/echo',
      headers: { 'content-type': 'application/json' },
      payload: bomb,
    });
    assert.equal(r3.statusCode, 400);
    // Internal bodies carry public values a level or two deeper: they get twice the depth.
    const nested = (n: number): string => '['.repeat(n) + ']'.repeat(n);
    const internal = async (n: number): Promise<number> =>
      (
        await app.inject({
          method: 'POST',
          url: '/cache/handle_test',
          headers: { 'content-type': 'application/json' },
          payload: nested(n),
        })
      ).statusCode;
    assert.equal(await internal(MAX_JSON_DEPTH + 2), 200);
    assert.equal(await internal(2 * MAX_JSON_DEPTH + 1), 400);
  });

  it('a cache value larger than CACHE_MAX_VALUE_BYTES is a 413', async () => {
    const app = await server();
    const r = await app.inject({ method: 'PUT', url: '/cache/k', payload: { value: 'x'.repeat(200) } });
    assert.equal(r.statusCode, 413);
    assert.equal(r.json<{ error: { code: string } }>().error.code, 'payload_too_large');
    assert.match(r.body, /CACHE_MAX_VALUE_BYTES/);
  });

  it('a body over the limit gets its 413 even while the client is still sending it, and the connection stays usable', async () => {
    const app = await server();
    await app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = app.server.address() as { port: number };
    let connections = 0;
    app.server.on('connection', () => connections++);
    const client = new Client(`http://127.0.0.1:${port}`, { pipelining: 1 });
    const post = async (body: Buffer | string): Promise<{ status: number; code?: string }> => {
      const r = await client.request({
        method: 'POST',
        path: '/test/echo',
        headers: { 'content-type': 'application/json' },
        body,
      });
      const json = (await r.body.json()) as { error?: { code: string } };
      return { status: r.statusCode, ...(json.error ? { code: json.error.code } : {}) };
    };
    try {
      // Sent whole and at once: the answer comes before the body has been read. Closing on the
      // unread bytes made the kernel reset the connection, and the client lost the 413.
      const big = Buffer.alloc(8 * 1024 * 1024, 0x20);
      for (let i = 0; i < 3; i++) {
        assert.deepEqual(await post(big), { status: 413, code: 'payload_too_large' }, `oversized body ${i}`);
        assert.deepEqual(await post('{"n":1}'), { status: 200 }, `next request ${i}`);
      }
      assert.deepEqual(await post('{"n":'), { status: 400, code: 'bad_request' });
      assert.deepEqual(await post('{"n":2}'), { status: 200 });
      assert.equal(connections, 1, 'every request went over the one connection');
    } finally {
      await client.close();
    }
  });

  it('more requests per second on one connection than RATE_LIMIT_PER_CONNECTION get 429', async () => {
    const app = await server({ ratePerConnection: 20 });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = app.server.address() as { port: number };
    const client = new Client(`http://127.0.0.1:${port}`, { pipelining: 1 });
    try {
      const codes: number[] = [];
      let retryAfter: string | string[] | undefined;
      for (let i = 0; i < 40; i++) {
        const r = await client.request({ method: 'GET', path: '/test/ping' });
        codes.push(r.statusCode);
        if (r.statusCode === 429) {
          retryAfter = r.headers['retry-after'];
          const body = (await r.body.json()) as { error: { code: string } };
          assert.equal(body.error.code, 'rate_limited');
        } else await r.body.dump();
      }
      assert.ok(codes.filter((c) => c === 200).length >= 20, codes.join(','));
      assert.ok(codes.includes(429), codes.join(','));
      assert.equal(retryAfter, '1');
      // Health and metrics are public too; internal routes (peers) are never limited.
    } finally {
      await client.close();
    }
  });

  it('requests a peer relays to the leader (many clients, few connections) are not limited', async () => {
    const app = await server({ ratePerConnection: 5, clusterSecret: 'peer-secret' });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = app.server.address() as { port: number };
    const client = new Client(`http://127.0.0.1:${port}`, { pipelining: 1 });
    const get = async (headers: Record<string, string>): Promise<number> => {
      const r = await client.request({ method: 'GET', path: '/test/ping', headers });
      await r.body.dump();
      return r.statusCode;
    };
    try {
      const relay = { 'x-dss-forwarded-by': 'node2', authorization: 'Bearer peer-secret' };
      for (let i = 0; i < 20; i++) assert.equal(await get(relay), 200, `relayed request ${i}`);
      // The header alone, without the cluster secret, is an ordinary client's request.
      const forged = { 'x-dss-forwarded-by': 'node2' };
      const codes: number[] = [];
      for (let i = 0; i < 10; i++) codes.push(await get(forged));
      assert.ok(codes.includes(429), codes.join(','));
    } finally {
      await client.close();
    }
  });

  it('a client that sends its headers too slowly is cut off (slowloris)', async () => {
    const app = await server({ requestTimeoutMs: 600 });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = app.server.address() as { port: number };
    const started = performance.now();
    const answer = await new Promise<string>((resolve, reject) => {
      const sock = connect({ port, host: '127.0.0.1' }, () => {
        sock.write('GET /test/ping HTTP/1.1\r\nHost: x\r\n'); // never finished
      });
      let got = '';
      sock.on('data', (d: Buffer) => (got += d.toString()));
      sock.on('close', () => resolve(got));
      sock.on('error', reject);
      setTimeout(() => {
        sock.destroy();
        reject(new Error('the server kept a half-sent request open for 5 s'));
      }, 5_000).unref();
    });
    const took = performance.now() - started;
    assert.match(answer, /^HTTP\/1\.1 408/);
    assert.ok(took < 3_000, `cut off after ${Math.round(took)} ms`);
  });
});

describe('lock limits (checked by the leader before proposing)', () => {
  /** A LockService over a one-node "Raft" that commits every proposal at once. */
  function lockService(limits: { maxWaiters: number; maxHoldsPerClient: number }): LockService {
    const table = new LockTable();
    let index = 0;
    const svc = new LockService({
      table,
      defaultTtlMs: 60_000,
      electionTimeoutMaxMs: 1_000,
      monitorIntervalMs: 1_000_000,
      metrics: { acquire: () => undefined, deadlock: () => undefined },
      logger: { debug: () => undefined } as unknown as ConstructorParameters<typeof LockService>[0]['logger'],
      now: () => 1_000_000,
      ...limits,
    });
    const status = (): RaftStatus => ({
      id: 'n1',
      role: 'leader',
      term: 1,
      leaderId: 'n1',
      commitIndex: index,
      lastApplied: index,
      lastIndex: index,
      firstIndex: 1,
      snapshotIndex: 0,
    });
    svc.attach({
      status,
      propose: (command: Json) => {
        index++;
        return Promise.resolve({ index, result: svc.stateMachine.apply(command, index, 1) });
      },
      readIndex: () => Promise.resolve(),
    });
    return svc;
  }
  const acquire = (svc: LockService, resource: string, client_id: string, wait_ms = 0) =>
    svc.acquire({ resource, client_id, mode: 'exclusive', ttl_ms: 60_000, wait_ms });
  const limit = (name: string) => (e: unknown) =>
    e instanceof DssError && e.code === 'limit_exceeded' && e.message.includes(name);

  it('LOCK_MAX_HOLDS_PER_CLIENT: one hold too many is refused; re-acquiring a held lock is not', async () => {
    const svc = lockService({ maxWaiters: 10, maxHoldsPerClient: 2 });
    await acquire(svc, 'r1', 'c');
    await acquire(svc, 'r2', 'c');
    await assert.rejects(acquire(svc, 'r3', 'c'), limit('LOCK_MAX_HOLDS_PER_CLIENT'));
    await acquire(svc, 'r1', 'c'); // reentrant: no new hold
    await svc.release('r1', 'c');
    await acquire(svc, 'r3', 'c');
    await acquire(svc, 'r9', 'other'); // another client has its own budget
  });

  it('LOCK_MAX_WAITERS: a waiter beyond the limit is refused at once', async () => {
    const svc = lockService({ maxWaiters: 2, maxHoldsPerClient: 10 });
    await acquire(svc, 'r', 'holder');
    const w1 = acquire(svc, 'r', 'w1', 60_000);
    const w2 = acquire(svc, 'r', 'w2', 60_000);
    w1.catch(() => undefined);
    w2.catch(() => undefined);
    await new Promise((r) => setImmediate(r));
    await assert.rejects(acquire(svc, 'r', 'w3', 60_000), limit('LOCK_MAX_WAITERS'));
    // A try-lock (no wait) is not a waiter: it gets the usual conflict.
    await assert.rejects(
      acquire(svc, 'r', 'w3'),
      (e: unknown) => e instanceof DssError && e.code === 'lock_conflict',
    );
    await svc.release('r', 'holder');
    assert.equal((await w1).client_id, 'w1');
    svc.stop();
    await assert.rejects(w2);
  });
});

describe('limit settings', () => {
  it('have defaults and are validated like every other variable', () => {
    const base = { NODE_ID: 'node1', CLUSTER_ADDRS: 'localhost:8001' };
    const c = loadConfig(base);
    assert.deepEqual(c.limits, {
      requestTimeoutMs: 30_000,
      ratePerConnection: 5_000,
      cacheMaxValueBytes: 256 * 1024,
      queueMaxMessageBytes: 256 * 1024,
      queueMaxLength: 1_000_000,
      lockMaxWaiters: 1_000,
      lockMaxHoldsPerClient: 10_000,
    });
    assert.equal(loadConfig({ ...base, LOCK_MAX_WAITERS: '5' }).limits.lockMaxWaiters, 5);
    assert.equal(c.opsRoutesOpen, true);
    assert.equal(loadConfig({ ...base, OPS_ROUTES_OPEN: 'false' }).opsRoutesOpen, false);
    assert.throws(() => loadConfig({ ...base, OPS_ROUTES_OPEN: 'maybe' }), /OPS_ROUTES_OPEN/);
    assert.throws(() => loadConfig({ ...base, CACHE_MAX_VALUE_BYTES: '2000000' }), /CACHE_MAX_VALUE_BYTES/);
    assert.throws(
      () => loadConfig({ ...base, RATE_LIMIT_PER_CONNECTION: 'lots' }),
      /RATE_LIMIT_PER_CONNECTION/,
    );
  });
});
