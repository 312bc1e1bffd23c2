// The dashboard's routes on in-process servers: one node's snapshot (shape, caps and how many were
// left out, a Redis failure reported inside it), the cluster snapshot (peers read with the cluster
// secret, an unreachable and a hanging peer marked so within the deadline, the leader and whose
// lock table to show), the page and its assets, and the OpenAPI entries.
import assert from 'node:assert/strict';
import net from 'node:net';
import { Script } from 'node:vm';
import { after, before, describe, it } from 'node:test';
import type { RaftApi } from '../../src/api/context.js';
import type { DashboardClusterReply, DashboardNodeReply } from '../../src/api/schemas/dashboard.js';
import { buildServer } from '../../src/api/server.js';
import type { ClusterMember, NodeRole } from '../../src/config/index.js';
import { dashboardRoutes } from '../../src/dashboard/routes.js';
import { PeerSnapshots, type CacheSource, type QueueSource } from '../../src/dashboard/snapshot.js';
import { LockTable } from '../../src/lock/table.js';
import { createMetrics } from '../../src/metrics/index.js';
import type { RaftStatus, Role } from '../../src/raft/types.js';
import { freePort } from '../helpers/proxy.js';

const SECRET = 'cluster-secret';
const USER_TOKEN = 'user-token';
const LIMIT = 5;

function fakeRaft(id: string, role: Role, term: number, leaderId: string | null, applied: number): RaftApi {
  const status: RaftStatus = {
    id,
    role,
    term,
    leaderId,
    commitIndex: applied,
    lastApplied: applied,
    lastIndex: applied,
    firstIndex: 1,
    snapshotIndex: 0,
  };
  return {
    status: () => status,
    reachablePeers: () => new Set<string>(),
    handleRequests: () => Promise.resolve([]),
  };
}

async function distinctFreePorts(n: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < n) ports.add(await freePort());
  return [...ports];
}

function member(id: string, port: number, roles: NodeRole[]): ClusterMember {
  return { id, host: '127.0.0.1', port, url: `http://127.0.0.1:${port}`, roles };
}

describe('dashboard routes', () => {
  const now = Date.now();
  let cluster: ClusterMember[];
  let node1: Awaited<ReturnType<typeof buildServer>>;
  let node2: Awaited<ReturnType<typeof buildServer>>;
  let hanging: net.Server;
  const sockets = new Set<net.Socket>();
  /** What setUp opened, for tearDown. */
  const closers: (() => Promise<void>)[] = [];

  // 7 resources: the cap of 5 leaves 2 out. res-3 has an exclusive holder and a shared waiter.
  const table = new LockTable();
  let index = 0;
  const acquire = (resource: string, client: string, mode: string, wait: number): void => {
    const r = table.apply(
      { op: 'acquire', resource, client_id: client, mode, ttl_ms: 60_000, wait_ms: wait, now },
      ++index,
      1,
    );
    assert.ok(!('error' in r), JSON.stringify(r));
  };
  for (let i = 7; i >= 1; i--) acquire(`res-${i}`, `c${i}`, 'exclusive', 0);
  acquire('res-3', 'waiting-client', 'shared', 30_000);

  // 8 owned queues (5 shown) and one owned by node2.
  const queueNames = ['q-h', 'q-g', 'q-f', 'q-e', 'q-d', 'q-c', 'q-b', 'q-a', 'elsewhere'];
  const queues: QueueSource = {
    knownQueues: () => Promise.resolve(queueNames),
    ownerOf: (q) => (q === 'elsewhere' ? 'node2' : 'node1'),
    stats: (q) => Promise.resolve({ ready: q.length, pending: 1, dead: q === 'q-a' ? 2 : 0 }),
  };
  // 7 lines, least recently used first: the 5 most recent are shown, sorted by key.
  const lines: { key: string; state: 'M' | 'E' | 'S' }[] = [
    { key: 'old-1', state: 'S' },
    { key: 'old-2', state: 'E' },
    { key: 'k/e', state: 'M' },
    { key: 'k/a', state: 'S' },
    { key: 'k/d', state: 'E' },
    { key: 'k/c', state: 'S' },
    { key: 'k/b', state: 'M' },
  ];
  const cache: CacheSource = {
    lines: () => lines,
    status: () => ({ size: lines.length, capacity: 100, write_policy: 'write-back' }),
  };

  // Free ports can be taken by another test file's sockets between freePort() and listen(): a
  // setup that meets EADDRINUSE is undone and tried again on new ports.
  before(async () => {
    for (let attempt = 1; ; attempt++) {
      try {
        await setUp(await distinctFreePorts(4));
        return;
      } catch (e) {
        await tearDown();
        if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt === 5) throw e;
      }
    }
  });

  async function setUp([p1, p2, p3, p4]: number[]): Promise<void> {
    if (p1 === undefined || p2 === undefined || p3 === undefined || p4 === undefined)
      throw new Error('ports');
    hanging = net.createServer((s) => {
      sockets.add(s); // accepts and never answers
      s.on('close', () => sockets.delete(s));
    });
    const h = hanging;
    closers.push(async () => {
      for (const s of sockets) s.destroy();
      if (h.listening) await new Promise<void>((resolve) => h.close(() => resolve()));
    });
    await new Promise<void>((resolve, reject) => {
      hanging.once('error', reject);
      hanging.listen(p4, '127.0.0.1', () => resolve());
    });
    cluster = [
      member('node1', p1, ['lock', 'queue', 'cache']),
      member('node2', p2, ['lock']),
      member('node3', p3, ['lock']), // nothing listens there
      member('node4', p4, ['cache']), // accepts, never answers
    ];
    const common = { cluster, clusterSecret: SECRET, apiTokens: [USER_TOKEN] };
    node1 = await buildServer({
      ...common,
      nodeId: 'node1',
      roles: ['lock', 'queue', 'cache'],
      raft: fakeRaft('node1', 'follower', 4, 'node2', index),
      metrics: createMetrics({ nodeId: 'node1', defaultMetrics: false }),
      plugins: [
        dashboardRoutes({
          sources: { locks: table, queues, cache },
          clusterSecret: SECRET,
          limit: LIMIT,
          peerTimeoutMs: 400,
        }),
      ],
    });
    const n1 = node1;
    closers.push(() => n1.close());
    node2 = await buildServer({
      ...common,
      nodeId: 'node2',
      roles: ['lock'],
      raft: fakeRaft('node2', 'leader', 4, 'node2', index),
      metrics: createMetrics({ nodeId: 'node2', defaultMetrics: false }),
      // A leader whose lock table is not available: the view falls back to node1's.
      plugins: [dashboardRoutes({ sources: {}, clusterSecret: SECRET })],
    });
    const n2 = node2;
    closers.push(() => n2.close());
    await node1.listen({ host: '127.0.0.1', port: p1 });
    await node2.listen({ host: '127.0.0.1', port: p2 });
  }

  async function tearDown(): Promise<void> {
    for (const close of closers.splice(0).reverse()) await close();
  }

  after(tearDown);

  const auth = { authorization: `Bearer ${USER_TOKEN}` };

  it('GET /dashboard/api/node: shape, caps and what was left out', async () => {
    const r = await node1.inject({ method: 'GET', url: '/dashboard/api/node', headers: auth });
    assert.equal(r.statusCode, 200, r.body);
    assert.equal(r.headers['cache-control'], 'no-store');
    const s = r.json<DashboardNodeReply>();
    assert.equal(s.node_id, 'node1');
    assert.deepEqual(s.roles, ['lock', 'queue', 'cache']);
    assert.ok(Math.abs(s.time - Date.now()) < 5_000);
    assert.deepEqual(s.raft, {
      state: 'follower',
      term: 4,
      leader_id: 'node2',
      commit_index: index,
      last_applied: index,
    });

    const locks = s.locks!;
    assert.equal(locks.view_of, 'node1');
    assert.equal(locks.leader, false);
    assert.equal(locks.applied_index, index);
    assert.equal(locks.total, 7);
    assert.equal(locks.omitted, 2);
    assert.equal(locks.resources.length, LIMIT);
    const names = locks.resources.map((x) => x.resource);
    assert.deepEqual(names, [...names].sort(), 'sorted by name');
    const res3 = locks.resources.find((x) => x.resource === 'res-3');
    assert.ok(res3, `res-3 among the oldest entries: ${names.join(',')}`);
    assert.equal(res3.mode, 'exclusive');
    assert.equal(res3.holders.length, 1);
    assert.equal(res3.holders[0]!.client_id, 'c3');
    assert.equal(res3.holders[0]!.mode, 'exclusive');
    assert.equal(typeof res3.holders[0]!.fencing_token, 'number');
    assert.equal(res3.holders[0]!.expires_at, now + 60_000);
    assert.deepEqual(res3.waiters, [{ client_id: 'waiting-client', mode: 'shared' }]);

    assert.deepEqual(s.queues, {
      total: 8,
      omitted: 3,
      queues: [
        { queue: 'q-a', ready: 3, pending: 1, dead: 2 },
        { queue: 'q-b', ready: 3, pending: 1, dead: 0 },
        { queue: 'q-c', ready: 3, pending: 1, dead: 0 },
        { queue: 'q-d', ready: 3, pending: 1, dead: 0 },
        { queue: 'q-e', ready: 3, pending: 1, dead: 0 },
      ],
    });

    assert.deepEqual(s.cache, {
      capacity: 100,
      size: 7,
      write_policy: 'write-back',
      counts: { M: 2, E: 2, S: 3 },
      omitted: 2,
      lines: [
        { key: 'k/a', state: 'S' },
        { key: 'k/b', state: 'M' },
        { key: 'k/c', state: 'S' },
        { key: 'k/d', state: 'E' },
        { key: 'k/e', state: 'M' },
      ],
    });
  });

  it('a node without the roles reports null sections; a Redis failure is reported, not thrown', async () => {
    const r = await node2.inject({ method: 'GET', url: '/dashboard/api/node', headers: auth });
    assert.equal(r.statusCode, 200, r.body);
    const s = r.json<DashboardNodeReply>();
    assert.equal(s.locks, null);
    assert.equal(s.queues, null);
    assert.equal(s.cache, null);
    assert.equal(s.raft?.state, 'leader');

    const broken = await buildServer({
      nodeId: 'node1',
      roles: ['queue'],
      cluster: [member('node1', 1, ['queue'])],
      raft: null,
      metrics: createMetrics({ nodeId: 'node1', defaultMetrics: false }),
      plugins: [
        dashboardRoutes({
          sources: {
            queues: {
              knownQueues: () => Promise.reject(new Error('Connection is closed.')),
              ownerOf: () => 'node1',
              stats: () => Promise.reject(new Error('unreachable')),
            },
          },
          clusterSecret: null,
        }),
      ],
    });
    try {
      const b = await broken.inject({ method: 'GET', url: '/dashboard/api/node' });
      assert.equal(b.statusCode, 200, b.body);
      assert.deepEqual(b.json<DashboardNodeReply>().queues, {
        total: 0,
        omitted: 0,
        queues: [],
        error: 'Connection is closed.',
      });
    } finally {
      await broken.close();
    }
  });

  it('the node route needs a token like any public route, and takes the cluster secret', async () => {
    assert.equal((await node2.inject({ method: 'GET', url: '/dashboard/api/node' })).statusCode, 401);
    const withSecret = await node2.inject({
      method: 'GET',
      url: '/dashboard/api/node',
      headers: { authorization: `Bearer ${SECRET}` },
    });
    assert.equal(withSecret.statusCode, 200);
  });

  it('GET /dashboard/api/cluster: every node, unreachable and hanging peers marked within the deadline', async () => {
    const started = Date.now();
    const r = await node1.inject({ method: 'GET', url: '/dashboard/api/cluster', headers: auth });
    const took = Date.now() - started;
    assert.equal(r.statusCode, 200, r.body);
    assert.ok(took < 4_000, `answered in ${took} ms (peer deadline 400 ms)`);
    const c = r.json<DashboardClusterReply>();
    assert.equal(c.served_by, 'node1');
    assert.deepEqual(
      c.nodes.map((n) => [n.id, n.reachable, n.snapshot !== null]),
      [
        ['node1', true, true],
        ['node2', true, true],
        ['node3', false, false],
        ['node4', false, false],
      ],
    );
    assert.deepEqual(c.nodes[1]!.roles, ['lock']);
    assert.equal(c.nodes[1]!.url, cluster[1]!.url);
    assert.equal(c.nodes[1]!.snapshot!.raft!.state, 'leader');
    assert.equal(c.nodes[0]!.snapshot!.locks!.resources.length, LIMIT);
    assert.ok(c.nodes[2]!.error, 'refused connection has a reason');
    assert.match(c.nodes[3]!.error ?? '', /no answer within 400 ms/);
    assert.ok(
      c.nodes[3]!.elapsed_ms >= 350 && c.nodes[3]!.elapsed_ms < 3_000,
      String(c.nodes[3]!.elapsed_ms),
    );
    assert.deepEqual(c.leader, { id: 'node2', term: 4 });
    assert.equal(c.lock_view, 'node1', "the leader has no lock table here: node1's is the freshest");
  });

  it('without a cluster secret, the browser token is passed on to peers', async () => {
    const peers = new PeerSnapshots({ clusterSecret: null, timeoutMs: 1_000 });
    try {
      const target = cluster[1]!;
      const denied = await peers.fetch(target, undefined);
      assert.equal(denied.reachable, true);
      assert.equal(denied.snapshot, null);
      assert.match(denied.error ?? '', /^answered 401/);
      const ok = await peers.fetch(target, `Bearer ${USER_TOKEN}`);
      assert.equal(ok.error, null);
      assert.equal(ok.snapshot?.node_id, 'node2');
    } finally {
      await peers.close();
    }
  });

  it('serves the page, its script and style without a token, and redirects / to it', async () => {
    // API_TOKENS is set on these nodes: the page must load anyway (a browser sends no bearer token
    // when it opens a URL), while the JSON routes stay closed.
    assert.equal((await node2.inject({ method: 'GET', url: '/dashboard/api/cluster' })).statusCode, 401);
    const page = await node2.inject({ method: 'GET', url: '/dashboard' });
    assert.equal(page.statusCode, 200);
    assert.match(String(page.headers['content-type']), /^text\/html/);
    assert.match(String(page.headers['content-security-policy']), /script-src 'self'/);
    assert.match(page.body, /<script src="dashboard\/app\.js" defer><\/script>/);
    const js = await node2.inject({ method: 'GET', url: '/dashboard/app.js' });
    assert.equal(js.statusCode, 200);
    assert.match(String(js.headers['content-type']), /^text\/javascript/);
    assert.doesNotMatch(js.body, /innerHTML/, 'data goes in through textContent only');
    assert.doesNotThrow(() => new Script(js.body), 'the script parses');
    const css = await node2.inject({ method: 'GET', url: '/dashboard/app.css' });
    assert.equal(css.statusCode, 200);
    assert.match(String(css.headers['content-type']), /^text\/css/);
    const root = await node2.inject({ method: 'GET', url: '/' });
    assert.equal(root.statusCode, 302);
    assert.equal(root.headers.location, 'dashboard');
    const slash = await node2.inject({ method: 'GET', url: '/dashboard/' });
    assert.equal(slash.statusCode, 302);
    assert.equal(slash.headers.location, '../dashboard');
  });

  it('the JSON routes are in the OpenAPI document', async () => {
    const r = await node1.inject({ method: 'GET', url: '/openapi.json' });
    const doc = r.json<{ paths: Record<string, unknown> }>();
    assert.ok(doc.paths['/dashboard/api/node'], Object.keys(doc.paths).join(' '));
    assert.ok(doc.paths['/dashboard/api/cluster']);
    assert.equal(doc.paths['/dashboard/app.js'], undefined);
  });
});
