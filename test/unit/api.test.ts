import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import type { ApiContext, DssApp, RaftApi } from '../../src/api/context.js';
import { requireRole } from '../../src/api/roles.js';
import { buildServer, type BuildServerOptions } from '../../src/api/server.js';
import { parseClusterAddrs } from '../../src/config/index.js';
import { DssError } from '../../src/errors.js';
import { createMetrics } from '../../src/metrics/index.js';
import type { RaftStatus, RequestMessage, ResponseMessage } from '../../src/raft/types.js';

const cluster = parseClusterAddrs(
  'node1=127.0.0.1:8001,node2=127.0.0.1:8002,node3=127.0.0.1:8003#queue',
  'http',
).members;

class FakeRaft implements RaftApi {
  calls: RequestMessage[][] = [];
  state: RaftStatus = {
    id: 'node1',
    role: 'precandidate',
    term: 7,
    leaderId: null,
    commitIndex: 41,
    lastApplied: 40,
    lastIndex: 42,
    firstIndex: 1,
    snapshotIndex: 0,
  };
  status(): RaftStatus {
    return this.state;
  }
  reachablePeers(): Set<string> {
    return new Set(['node1', 'node2']);
  }
  handleRequests(msgs: RequestMessage[]): Promise<ResponseMessage[]> {
    this.calls.push(msgs);
    return Promise.resolve(
      msgs.flatMap((m): ResponseMessage[] =>
        m.type === 'vote'
          ? [
              {
                type: 'vote_resp',
                from: 'node1',
                to: m.from,
                term: m.term,
                preVote: m.preVote,
                granted: true,
              },
            ]
          : [],
      ),
    );
  }
}

const vote = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
  type: 'vote',
  from: 'node2',
  to: 'node1',
  term: 8,
  preVote: true,
  lastLogIndex: 42,
  lastLogTerm: 7,
  ...over,
});

const append = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
  type: 'append',
  from: 'node2',
  to: 'node1',
  term: 8,
  prevLogIndex: 1,
  prevLogTerm: 1,
  entries: [{ index: 2, term: 8, kind: 'command', command: { op: 'x', n: [1, null] } }],
  commit: 1,
  ctx: 3,
  ...over,
});

/** A service plugin exercising the error mapping and the role guard. */
const testRoutes: FastifyPluginCallbackTypebox<{ ctx: ApiContext }> = (app, { ctx }, done) => {
  app.get('/test/dss-error', () => {
    throw new DssError('no_leader', 'no leader right now', { details: { leader_id: null }, retryAfter: 2 });
  });
  app.get('/test/crash', () => {
    throw new Error('secret internal detail');
  });
  app.get('/test/cache-only', { onRequest: requireRole(ctx, 'cache') }, () => ({ ok: true }));
  app.get('/test/items/:id', () => ({ ok: true }));
  done();
};

async function makeServer(over: Partial<BuildServerOptions> = {}): Promise<{ app: DssApp; raft: FakeRaft }> {
  const raft = new FakeRaft();
  const metrics = createMetrics({ nodeId: 'node1', defaultMetrics: false });
  metrics.bindRaft(() => raft.status());
  const app = await buildServer({
    nodeId: 'node1',
    roles: ['lock', 'queue'],
    cluster,
    raft,
    metrics,
    peers: { isReachable: (id) => id === 'node3' },
    plugins: [testRoutes],
    ...over,
  });
  await app.ready();
  return { app, raft };
}

function assertErrorShape(body: unknown, code: string): void {
  assert.equal(typeof body, 'object');
  const e = (body as { error?: { code?: unknown; message?: unknown } }).error;
  assert.ok(e, `no error object in ${JSON.stringify(body)}`);
  assert.equal(e.code, code);
  assert.equal(typeof e.message, 'string');
  assert.ok((e.message as string).length > 0);
}

describe('HTTP API', () => {
  let app: DssApp;
  let raft: FakeRaft;

  before(async () => {
    ({ app, raft } = await makeServer());
  });
  after(async () => {
    await app.close();
  });

  describe('errors in the SPEC format, with X-DSS-Node on every response', () => {
    it('200 /health', async () => {
      const r = await app.inject({ method: 'GET', url: '/health' });
      assert.equal(r.statusCode, 200);
      assert.equal(r.headers['x-dss-node'], 'node1');
      assert.deepEqual(r.json(), { status: 'ok', node_id: 'node1' });
    });

    it('404 not_found for unknown routes', async () => {
      const r = await app.inject({ method: 'GET', url: '/nope?x=1' });
      assert.equal(r.statusCode, 404);
      assert.equal(r.headers['x-dss-node'], 'node1');
      assertErrorShape(r.json(), 'not_found');
    });

    it('405 method_not_allowed for known paths (incl. parametric) with the wrong method', async () => {
      for (const [method, url] of [
        ['POST', '/health'],
        ['DELETE', '/status'],
        ['GET', '/raft/append_entries'],
        ['PUT', '/test/items/42'],
      ] as const) {
        const r = await app.inject({ method, url });
        assert.equal(r.statusCode, 405, `${method} ${url}`);
        assert.equal(r.headers['x-dss-node'], 'node1');
        assert.ok(String(r.headers.allow).length > 0);
        assertErrorShape(r.json(), 'method_not_allowed');
      }
    });

    it('routes 256-char identifiers in path parameters, even percent-encoded', async () => {
      const r = await app.inject({ method: 'GET', url: `/test/items/${'%3A'.repeat(256)}` });
      assert.equal(r.statusCode, 200);
    });

    it('400 bad_request for invalid JSON', async () => {
      const r = await app.inject({
        method: 'POST',
        url: '/raft/request_vote',
        headers: { 'content-type': 'application/json' },
        payload: '{"messages": [',
      });
      assert.equal(r.statusCode, 400);
      assert.equal(r.headers['x-dss-node'], 'node1');
      assertErrorShape(r.json(), 'bad_request');
    });

    it('400 (not 500) for prototype poisoning', async () => {
      const r = await app.inject({
        method: 'POST',
        url: '/raft/request_vote',
        headers: { 'content-type': 'application/json' },
        payload: '{"__proto__": {"x": 1}, "messages": []}',
      });
      assert.equal(r.statusCode, 400);
      assertErrorShape(r.json(), 'bad_request');
    });

    it('415 unsupported_media_type for non-JSON bodies', async () => {
      for (const type of ['text/plain', 'application/x-www-form-urlencoded']) {
        const r = await app.inject({
          method: 'POST',
          url: '/raft/request_vote',
          headers: { 'content-type': type },
          payload: 'a=1',
        });
        assert.equal(r.statusCode, 415, type);
        assert.equal(r.headers['x-dss-node'], 'node1');
        assertErrorShape(r.json(), 'unsupported_media_type');
      }
    });

    it('413 payload_too_large above 1 MiB on public routes', async () => {
      const r = await app.inject({
        method: 'POST',
        url: '/test/items/1',
        headers: { 'content-type': 'application/json' },
        payload: JSON.stringify({ blob: 'x'.repeat(1024 * 1024 + 10) }),
      });
      assert.equal(r.statusCode, 413);
      assert.equal(r.headers['x-dss-node'], 'node1');
      assertErrorShape(r.json(), 'payload_too_large');
    });

    it('internal Raft routes accept bodies above 1 MiB (snapshots)', async () => {
      const before = raft.calls.length;
      const msg = {
        type: 'snapshot',
        from: 'node2',
        to: 'node1',
        term: 8,
        snapshot: {
          meta: { index: 10, term: 8, voters: ['node1', 'node2'] },
          data: { blob: 'y'.repeat(3 << 20) },
        },
      };
      const r = await app.inject({
        method: 'POST',
        url: '/raft/install_snapshot',
        payload: { messages: [msg] },
      });
      assert.equal(r.statusCode, 200, r.body.slice(0, 200));
      assert.equal(raft.calls.length, before + 1);
    });

    it('DssError: status from the table, details merged, Retry-After on 503', async () => {
      const r = await app.inject({ method: 'GET', url: '/test/dss-error' });
      assert.equal(r.statusCode, 503);
      assert.equal(r.headers['retry-after'], '2');
      assert.equal(r.headers['x-dss-node'], 'node1');
      assert.deepEqual(r.json(), {
        leader_id: null,
        error: { code: 'no_leader', message: 'no leader right now' },
      });
    });

    it('anything else is 500 internal without leaking the message', async () => {
      const r = await app.inject({ method: 'GET', url: '/test/crash' });
      assert.equal(r.statusCode, 500);
      assert.equal(r.headers['x-dss-node'], 'node1');
      assertErrorShape(r.json(), 'internal');
      assert.ok(!r.body.includes('secret internal detail'));
    });

    it('421 role_not_served names the nodes serving the role', async () => {
      const r = await app.inject({ method: 'GET', url: '/test/cache-only' });
      assert.equal(r.statusCode, 421);
      const body = r.json<{ nodes: { id: string; url: string }[] }>();
      assertErrorShape(body, 'role_not_served');
      assert.deepEqual(
        body.nodes.map((n) => n.id),
        ['node1', 'node2'],
      );
      assert.equal(body.nodes[0]!.url, 'http://127.0.0.1:8001');
    });
  });

  describe('validation', () => {
    it('accepts a valid vote batch, ignores unknown fields, and returns the responses', async () => {
      const before = raft.calls.length;
      const r = await app.inject({
        method: 'POST',
        url: '/raft/request_vote',
        payload: { messages: [vote({ extra: 'ignored' })], also: 1 },
      });
      assert.equal(r.statusCode, 200, r.body);
      assert.equal(raft.calls.length, before + 1);
      const body = r.json<{ messages: ResponseMessage[] }>();
      assert.equal(body.messages.length, 1);
      assert.equal(body.messages[0]!.type, 'vote_resp');
    });

    it('accepts append and timeout_now on /raft/append_entries', async () => {
      const r = await app.inject({
        method: 'POST',
        url: '/raft/append_entries',
        payload: { messages: [append(), { type: 'timeout_now', from: 'node2', to: 'node1', term: 8 }] },
      });
      assert.equal(r.statusCode, 200, r.body);
      assert.deepEqual(r.json(), { messages: [] });
    });

    it('does not coerce types and names the field', async () => {
      const r = await app.inject({
        method: 'POST',
        url: '/raft/request_vote',
        payload: { messages: [vote({ term: '8' })] },
      });
      assert.equal(r.statusCode, 400);
      assertErrorShape(r.json(), 'bad_request');
      assert.match(r.json<{ error: { message: string } }>().error.message, /messages\[0\]\.term/);
    });

    it('names missing fields and allowed values', async () => {
      const missing = await app.inject({
        method: 'POST',
        url: '/raft/request_vote',
        payload: { messages: [{}] },
      });
      assert.equal(missing.statusCode, 400);
      assert.match(missing.json<{ error: { message: string } }>().error.message, /is required/);
      const noBody = await app.inject({ method: 'POST', url: '/raft/request_vote' });
      assert.equal(noBody.statusCode, 400);
      assertErrorShape(noBody.json(), 'bad_request');
    });

    it('rejects messages for another node, from a non-lock node, or mixed senders', async () => {
      const before = raft.calls.length;
      for (const messages of [
        [vote({ to: 'node2' })],
        [vote({ from: 'node3' })],
        [vote({ from: 'node1' })],
        [vote(), vote({ from: 'node3' })],
        [],
      ]) {
        const r = await app.inject({ method: 'POST', url: '/raft/request_vote', payload: { messages } });
        assert.equal(r.statusCode, 400, JSON.stringify(messages));
        assertErrorShape(r.json(), 'bad_request');
      }
      assert.equal(raft.calls.length, before);
    });

    it('wrong message type for the endpoint is a 400', async () => {
      const r = await app.inject({
        method: 'POST',
        url: '/raft/request_vote',
        payload: { messages: [append()] },
      });
      assert.equal(r.statusCode, 400);
    });

    it('malformed Raft bodies never give a 5xx (fuzz)', async () => {
      const before = raft.calls.length;
      const numbers = fc.oneof(
        fc.integer(),
        fc.double(),
        fc.constantFrom(1e300, -1, 2 ** 60, Number.MAX_SAFE_INTEGER + 2, 0.5),
      );
      const field = fc.oneof(
        numbers,
        fc.string(),
        fc.boolean(),
        fc.constant(null),
        fc.array(fc.integer()),
        fc.object(),
      );
      const mutated = fc
        .tuple(
          fc.constantFrom(vote(), append()),
          fc.constantFrom(
            'type',
            'from',
            'to',
            'term',
            'preVote',
            'lastLogIndex',
            'entries',
            'commit',
            'ctx',
          ),
          field,
        )
        .map(([base, key, value]) => ({ ...base, [key]: value }));
      const body = fc.oneof(
        fc.jsonValue(),
        fc.record({ messages: fc.array(fc.oneof(mutated, fc.jsonValue()), { maxLength: 3 }) }),
        fc.array(mutated),
      );
      await fc.assert(
        fc.asyncProperty(
          fc.constantFrom('request_vote', 'append_entries', 'install_snapshot'),
          body,
          async (ep, b) => {
            const r = await app.inject({
              method: 'POST',
              url: `/raft/${ep}`,
              headers: { 'content-type': 'application/json' },
              payload: JSON.stringify(b),
            });
            assert.ok(r.statusCode < 500, `${r.statusCode} for ${ep} ${JSON.stringify(b)}: ${r.body}`);
            assert.equal(r.headers['x-dss-node'], 'node1');
            if (r.statusCode !== 200) assert.ok(r.json<{ error: { code: string } }>().error.code);
          },
        ),
        { numRuns: 300 },
      );
      // Everything that reached the fake was well formed.
      for (const batch of raft.calls.slice(before)) {
        for (const m of batch) {
          assert.equal(m.to, 'node1');
          assert.ok(Number.isSafeInteger(m.term) && m.term >= 0);
        }
      }
    });

    it('huge numbers and non-JSON literals are rejected', async () => {
      for (const payload of [
        '{"messages":[{"type":"vote","from":"node2","to":"node1","term":1e400,"preVote":false,"lastLogIndex":0,"lastLogTerm":0}]}',
        '{"messages":[{"type":"vote","from":"node2","to":"node1","term":18446744073709551616,"preVote":false,"lastLogIndex":0,"lastLogTerm":0}]}',
        '{"messages":[{"type":"vote","from":"node2","to":"node1","term":NaN,"preVote":false,"lastLogIndex":0,"lastLogTerm":0}]}',
        '[1,2,3]',
        '"just a string"',
        'null',
      ]) {
        const r = await app.inject({
          method: 'POST',
          url: '/raft/request_vote',
          headers: { 'content-type': 'application/json' },
          payload,
        });
        assert.equal(r.statusCode, 400, payload);
      }
    });
  });

  describe('operations', () => {
    it('/status has the SPEC shape', async () => {
      const r = await app.inject({ method: 'GET', url: '/status' });
      assert.equal(r.statusCode, 200);
      assert.deepEqual(r.json(), {
        node_id: 'node1',
        roles: ['lock', 'queue'],
        raft: { state: 'candidate', term: 7, leader_id: null, commit_index: 41, last_applied: 40 },
        peers: [
          { id: 'node1', url: 'http://127.0.0.1:8001', roles: ['lock', 'queue', 'cache'], reachable: true },
          { id: 'node2', url: 'http://127.0.0.1:8002', roles: ['lock', 'queue', 'cache'], reachable: true },
          { id: 'node3', url: 'http://127.0.0.1:8003', roles: ['queue'], reachable: true },
        ],
      });
    });

    it('/status includes service sections', async () => {
      const { app: a } = await makeServer({ statusSections: { cache: () => ({ size: 1, capacity: 10 }) } });
      const r = await a.inject({ method: 'GET', url: '/status' });
      assert.deepEqual(r.json<{ cache: unknown }>().cache, { size: 1, capacity: 10 });
      await a.close();
    });

    it('/ready is 503 with the failing checks, 200 when all pass', async () => {
      let leader = false;
      const { app: a } = await makeServer({
        readinessChecks: [
          {
            name: 'raft',
            check: () => Promise.resolve(leader ? { ok: true } : { ok: false, reason: 'no leader' }),
          },
          { name: 'redis', check: () => Promise.resolve({ ok: true }) },
        ],
      });
      const notReady = await a.inject({ method: 'GET', url: '/ready' });
      assert.equal(notReady.statusCode, 503);
      assert.ok(notReady.headers['retry-after']);
      const body = notReady.json<{ checks: { name: string; ok: boolean; reason?: string }[] }>();
      assertErrorShape(body, 'unavailable');
      assert.deepEqual(body.checks, [
        { name: 'raft', ok: false, reason: 'no leader' },
        { name: 'redis', ok: true },
      ]);
      leader = true;
      const ready = await a.inject({ method: 'GET', url: '/ready' });
      assert.equal(ready.statusCode, 200);
      assert.equal(ready.json<{ status: string }>().status, 'ready');
      await a.close();
    });

    it('/metrics exposes raft gauges and the request histogram by route pattern', async () => {
      await app.inject({ method: 'GET', url: '/test/items/123' });
      await app.inject({ method: 'GET', url: '/test/items/456' });
      const r = await app.inject({ method: 'GET', url: '/metrics' });
      assert.equal(r.statusCode, 200);
      assert.match(String(r.headers['content-type']), /text\/plain/);
      const text = r.body;
      assert.match(text, /^raft_term\{node_id="node1"\} 7$/m);
      assert.match(text, /^raft_is_leader\{node_id="node1"\} 0$/m);
      assert.match(text, /^raft_commit_index\{node_id="node1"\} 41$/m);
      assert.match(text, /^raft_last_applied\{node_id="node1"\} 40$/m);
      assert.match(text, /^raft_elections_total\{node_id="node1"\} 0$/m);
      assert.match(text, /http_request_duration_seconds_bucket\{le="0\.0005"/);
      const count =
        /http_request_duration_seconds_count\{node_id="node1",method="GET",route="\/test\/items\/:id",status_code="200"\} (\d+)/.exec(
          text,
        );
      assert.ok(count && Number(count[1]) >= 2, 'requests counted under the route pattern');
      assert.ok(!text.includes('/test/items/123'), 'raw URLs must not become labels');
    });

    it('/openapi.json is an OpenAPI 3 document listing the routes', async () => {
      const r = await app.inject({ method: 'GET', url: '/openapi.json' });
      assert.equal(r.statusCode, 200);
      const doc = r.json<{
        openapi: string;
        info: { title: string };
        paths: Record<string, Record<string, unknown>>;
      }>();
      assert.match(doc.openapi, /^3\./);
      assert.ok(doc.info.title);
      for (const p of [
        '/health',
        '/ready',
        '/status',
        '/metrics',
        '/raft/request_vote',
        '/raft/append_entries',
      ]) {
        assert.ok(doc.paths[p], `missing ${p}`);
      }
      assert.ok(doc.paths['/raft/install_snapshot']?.post);
      const docs = await app.inject({ method: 'GET', url: '/docs' });
      assert.equal(docs.statusCode, 200);
      assert.ok(!docs.body.includes('//cdn'), 'Swagger UI must not load from a CDN');
    });
  });
});

describe('authentication', () => {
  it('CLUSTER_SECRET guards internal routes before the body is handled', async () => {
    const { app, raft } = await makeServer({ clusterSecret: 'cluster-s3cret' });
    const payload = { messages: [vote()] };
    for (const authorization of [
      undefined,
      'Bearer wrong',
      'Bearer cluster-s3cre',
      'Basic cluster-s3cret',
      'Bearer',
    ]) {
      const r = await app.inject({
        method: 'POST',
        url: '/raft/request_vote',
        payload,
        headers: authorization ? { authorization } : {},
      });
      assert.equal(r.statusCode, 401, String(authorization));
      assert.equal(r.headers['x-dss-node'], 'node1');
      assertErrorShape(r.json(), 'unauthorized');
    }
    // Percent-encoding the path does not bypass the check.
    const encoded = await app.inject({ method: 'POST', url: '/r%61ft/request_vote', payload });
    assert.equal(encoded.statusCode, 401);
    // Other internal prefixes too, even before their routes exist.
    for (const url of ['/queue/internal_push', '/cache/handle_invalidate']) {
      const r = await app.inject({ method: 'POST', url, payload: {} });
      assert.equal(r.statusCode, 401, url);
    }
    assert.equal(raft.calls.length, 0, 'raft must not be called without the secret');

    const ok = await app.inject({
      method: 'POST',
      url: '/raft/request_vote',
      payload,
      headers: { authorization: 'Bearer cluster-s3cret' },
    });
    assert.equal(ok.statusCode, 200);
    assert.equal(raft.calls.length, 1);
    // Public routes stay open when only CLUSTER_SECRET is set.
    assert.equal((await app.inject({ method: 'GET', url: '/status' })).statusCode, 200);
    await app.close();
  });

  it('OPS_ROUTES_OPEN=false puts health, ready and metrics behind the tokens too (docs stay open)', async () => {
    const { app } = await makeServer({ apiTokens: ['t1'], clusterSecret: 'cs', opsRoutesOpen: false });
    for (const url of ['/health', '/ready', '/metrics']) {
      assert.equal((await app.inject({ method: 'GET', url })).statusCode, 401, url);
      const r = await app.inject({ method: 'GET', url, headers: { authorization: 'Bearer t1' } });
      assert.notEqual(r.statusCode, 401, url);
    }
    assert.equal((await app.inject({ method: 'GET', url: '/openapi.json' })).statusCode, 200);
    await app.close();
  });

  it('API_TOKENS guards public routes except health, ready, metrics and docs', async () => {
    const { app } = await makeServer({ apiTokens: ['t1', 't2'], clusterSecret: 'cs' });
    assert.equal((await app.inject({ method: 'GET', url: '/status' })).statusCode, 401);
    assert.equal(
      (await app.inject({ method: 'GET', url: '/status', headers: { authorization: 'Bearer t3' } }))
        .statusCode,
      401,
    );
    for (const token of ['t1', 't2', 'cs']) {
      const r = await app.inject({
        method: 'GET',
        url: '/status',
        headers: { authorization: `Bearer ${token}` },
      });
      assert.equal(r.statusCode, 200, token);
    }
    for (const url of ['/health', '/metrics', '/openapi.json', '/docs']) {
      assert.equal((await app.inject({ method: 'GET', url })).statusCode, 200, url);
    }
    assert.notEqual((await app.inject({ method: 'GET', url: '/ready' })).statusCode, 401);
    // API tokens do not open internal routes.
    const r = await app.inject({
      method: 'POST',
      url: '/raft/request_vote',
      payload: { messages: [vote()] },
      headers: { authorization: 'Bearer t1' },
    });
    assert.equal(r.statusCode, 401);
    await app.close();
  });
});

describe('nodes without the lock role', () => {
  it('answer Raft RPCs with 421 and report raft: null', async () => {
    const metrics = createMetrics({ nodeId: 'node3', defaultMetrics: false });
    const app = await buildServer({ nodeId: 'node3', roles: ['queue'], cluster, raft: null, metrics });
    const r = await app.inject({
      method: 'POST',
      url: '/raft/request_vote',
      payload: { messages: [vote()] },
    });
    assert.equal(r.statusCode, 421);
    assertErrorShape(r.json(), 'role_not_served');
    const s = await app.inject({ method: 'GET', url: '/status' });
    assert.equal(s.json<{ raft: unknown }>().raft, null);
    const m = await app.inject({ method: 'GET', url: '/metrics' });
    assert.ok(!m.body.includes('raft_term'));
    await app.close();
  });
});
