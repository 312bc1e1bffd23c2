import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { DssClient, DssConnectionError, DssHttpError } from '../../src/client/index.js';
import { freePort } from '../../src/cli/processes.js';

interface Server {
  app: FastifyInstance;
  url: string;
  hits: Map<string, number>;
}

/** A loopback server whose routes count their hits. */
async function serve(
  id: string,
  setup: (app: FastifyInstance, hit: (key: string) => number) => void,
): Promise<Server> {
  const app = Fastify();
  const hits = new Map<string, number>();
  const hit = (key: string): number => {
    const n = (hits.get(key) ?? 0) + 1;
    hits.set(key, n);
    return n;
  };
  app.get('/health', () => ({ status: 'ok', node_id: id }));
  setup(app, hit);
  await app.listen({ host: '127.0.0.1', port: 0 });
  return { app, url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`, hits };
}

describe('DssClient', () => {
  let a: Server;
  let b: Server;
  let dead: string;

  before(async () => {
    a = await serve('a', (app, hit) => {
      app.get('/flaky', (_req, reply) => {
        const n = hit('flaky');
        if (n <= 2)
          return reply
            .code(503)
            .header('retry-after', '1')
            .send({ error: { code: 'no_leader', message: 'x' } });
        return { ok: true, attempt: n };
      });
      app.post('/rate-limited', (_req, reply) => {
        const n = hit('rate-limited');
        if (n === 1)
          return reply
            .code(429)
            .header('retry-after', '1')
            .send({ error: { code: 'rate_limited', message: 'slow down' } });
        return { ok: true, attempt: n };
      });
      app.get('/always-503', (_req, reply) => {
        hit('always-503');
        return reply.code(503).send({ error: { code: 'unavailable', message: 'down' } });
      });
      app.post('/conflict', (_req, reply) => {
        hit('conflict');
        return reply
          .code(409)
          .send({ granted: false, error: { code: 'lock_conflict', message: 'held' }, holders: ['c1'] });
      });
      app.get('/misdirected', (_req, reply) => {
        hit('misdirected');
        return reply.code(421).send({
          error: { code: 'role_not_served', message: 'no' },
          nodes: [{ id: 'b', url: b.url + '/' }],
        });
      });
      app.post('/echo', (req) => ({ got: req.body, auth: req.headers.authorization ?? null, q: req.query }));
      app.get('/slow', async () => {
        hit('slow');
        await new Promise((r) => setTimeout(r, 500));
        return { ok: true };
      });
      app.post('/slow', async () => {
        hit('slow-post');
        await new Promise((r) => setTimeout(r, 500));
        return { ok: true };
      });
      app.get('/empty', (_req, reply) => reply.code(204).send());
      // A leader that committed the release, then crashed before answering: the next try finds
      // the client no longer holding the lock.
      app.post('/lock/release', (req, reply) => {
        const { resource } = req.body as { resource: string };
        const n = hit(`release:${resource}`);
        if (resource === 'crashed' && n === 1)
          return reply.code(503).send({ outcome: 'unknown', error: { code: 'unavailable', message: 'x' } });
        return reply.code(409).send({ error: { code: 'not_holder', message: 'not the holder' } });
      });
      app.get('/status', () => ({
        node_id: 'a',
        roles: ['lock'],
        raft: { state: 'leader', term: 2, leader_id: 'a', commit_index: 5, last_applied: 5 },
        peers: [
          { id: 'a', url: a.url, roles: ['lock'], reachable: true },
          { id: 'b', url: b.url, roles: ['lock'], reachable: true },
          { id: 'c', url: dead, roles: ['lock'], reachable: false },
        ],
      }));
    });
    b = await serve('b', (app, hit) => {
      app.get('/misdirected', () => {
        hit('misdirected');
        return { served_by: 'b' };
      });
      app.get('/status', () => ({
        node_id: 'b',
        roles: ['lock'],
        raft: { state: 'follower', term: 2, leader_id: 'a', commit_index: 5, last_applied: 4 },
        peers: [],
      }));
    });
    // A port nothing listens on: connection refused.
    dead = `http://127.0.0.1:${await freePort()}`;
  });

  after(async () => {
    await a.app.close();
    await b.app.close();
  });

  it('fails over from an unreachable node and then sticks to the working one', async () => {
    const client = new DssClient({ urls: [dead, a.url], backoffBaseMs: 5 });
    assert.deepEqual(await client.health(), { status: 'ok', node_id: 'a' });
    assert.deepEqual(await client.health(), { status: 'ok', node_id: 'a' });
    await client.close();
  });

  it('retries 503 honouring Retry-After up to the cap, then succeeds', async () => {
    const client = new DssClient({ urls: [a.url], retries: 3, backoffBaseMs: 1, maxRetryAfterMs: 60 });
    const t0 = Date.now();
    const res = await client.request<{ ok: boolean; attempt: number }>('GET', '/flaky');
    assert.equal(res.attempt, 3);
    assert.ok(Date.now() - t0 >= 100, 'waited the capped Retry-After twice');
    await client.close();
  });

  it('retries 429 rate_limited, even a POST (it did not run), after Retry-After', async () => {
    const client = new DssClient({ urls: [a.url], retries: 3, backoffBaseMs: 1, maxRetryAfterMs: 60 });
    const t0 = Date.now();
    const res = await client.request<{ ok: boolean; attempt: number }>('POST', '/rate-limited', {});
    assert.equal(res.attempt, 2);
    assert.ok(Date.now() - t0 >= 50, 'waited the capped Retry-After');
    await client.close();
  });

  it('gives up after `retries` with the last 503 as a DssHttpError', async () => {
    const client = new DssClient({ urls: [a.url], retries: 2, backoffBaseMs: 1 });
    await assert.rejects(client.request('GET', '/always-503'), (e: unknown) => {
      assert.ok(e instanceof DssHttpError);
      assert.equal(e.status, 503);
      assert.equal(e.code, 'unavailable');
      return true;
    });
    assert.equal(a.hits.get('always-503'), 3);
    await client.close();
  });

  it('does not retry 4xx and exposes status, code and body', async () => {
    const client = new DssClient({ urls: [a.url, b.url], retries: 5 });
    await assert.rejects(client.request('POST', '/conflict', { resource: 'r' }), (e: unknown) => {
      assert.ok(e instanceof DssHttpError);
      assert.equal(e.status, 409);
      assert.equal(e.code, 'lock_conflict');
      assert.deepEqual((e.body as { holders: string[] }).holders, ['c1']);
      assert.equal(e.url, a.url);
      return true;
    });
    assert.equal(a.hits.get('conflict'), 1);
    await client.close();
  });

  it('follows 421 role_not_served to a node that serves the role', async () => {
    const client = new DssClient({ urls: [a.url] });
    assert.deepEqual(await client.request('GET', '/misdirected'), { served_by: 'b' });
    assert.equal(b.hits.get('misdirected'), 1);
    await client.close();
  });

  it('sends JSON bodies, query strings and the bearer token', async () => {
    const client = new DssClient({ urls: [a.url], token: 'tok' });
    const res = await client.request<{ got: unknown; auth: string; q: unknown }>(
      'POST',
      '/echo',
      { x: [1, 'two'] },
      { query: { resource: 'a/b', skip: undefined, n: 3 } },
    );
    assert.deepEqual(res, { got: { x: [1, 'two'] }, auth: 'Bearer tok', q: { resource: 'a/b', n: '3' } });
    const empty = await client.requestFull('GET', '/empty');
    assert.equal(empty.status, 204);
    assert.equal(empty.body, undefined);
    await client.close();
  });

  it('retries a timed-out GET but not a timed-out POST', async () => {
    const client = new DssClient({ urls: [a.url], timeoutMs: 100, retries: 1, backoffBaseMs: 1 });
    await assert.rejects(
      client.request('GET', '/slow'),
      (e: unknown) => e instanceof DssConnectionError && e.timedOut,
    );
    assert.equal(a.hits.get('slow'), 2);
    await assert.rejects(client.request('POST', '/slow', {}), DssConnectionError);
    assert.equal(a.hits.get('slow-post'), 1);
    await client.close();
  });

  it('release: not_holder after an attempt of unknown outcome means our attempt released it', async () => {
    const c = new DssClient({ urls: [a.url], retries: 2, backoffBaseMs: 1 });
    try {
      assert.deepEqual(await c.lock.release('crashed', 'me'), { released: true });
      assert.equal(a.hits.get('release:crashed'), 2);
      // Without an earlier unknown outcome, not_holder is what it says.
      const err = await c.lock.release('never-held', 'me').then(
        () => assert.fail('expected not_holder'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof DssHttpError);
      assert.equal(err.code, 'not_holder');
      assert.equal(err.afterUnknownOutcome, false);
    } finally {
      await c.close();
    }
  });

  it('throws DssConnectionError when no node can be reached', async () => {
    const client = new DssClient({ urls: [dead], retries: 2, backoffBaseMs: 1 });
    await assert.rejects(client.health(), (e: unknown) => {
      assert.ok(e instanceof DssConnectionError);
      assert.equal(e.url, dead);
      assert.equal(e.timedOut, false);
      return true;
    });
    await client.close();
  });

  it('clusterStatus asks every listed node and marks the unreachable ones', async () => {
    const client = new DssClient({ urls: [a.url] });
    const cs = await client.clusterStatus();
    assert.deepEqual(
      cs.nodes.map((n) => [n.id, n.reachable, n.status?.raft?.state ?? null]),
      [
        ['a', true, 'leader'],
        ['b', true, 'follower'],
        ['c', false, null],
      ],
    );
    assert.ok(cs.nodes[2]!.error);
    await client.close();
  });
});
