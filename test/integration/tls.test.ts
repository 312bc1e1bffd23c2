// HTTPS end to end (issue 7): nodes serve TLS_CERT/TLS_KEY and trust TLS_CA for each other, so Raft,
// lock relays to the leader, queue relays to the owner and cache coherence all cross TLS; clients
// that trust the CA (the SDK with `ca`) get answers, clients that do not are refused.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Agent, getGlobalDispatcher, request, setGlobalDispatcher, type Dispatcher } from 'undici';
import { DssClient } from '../../src/client/index.js';
import { TestCluster } from '../helpers/cluster.js';
import { makeCert } from '../helpers/haproxy.js';
import { RedisServer } from '../helpers/redis.js';

describe('HTTPS between clients and nodes, and between nodes', { timeout: 120_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'dss-tls-'));
  let redis: RedisServer;
  let cluster: TestCluster;
  let ca = '';
  let previous: Dispatcher;
  let client: DssClient;

  before(async () => {
    const cert = await makeCert(dir);
    ca = cert.cert;
    // TestCluster's own requests (health, status) go through the global dispatcher.
    previous = getGlobalDispatcher();
    setGlobalDispatcher(new Agent({ connect: { ca } }));
    redis = await RedisServer.start();
    cluster = await TestCluster.start({
      nodes: 3,
      roles: 'lock,queue,cache',
      https: true,
      direct: true,
      env: {
        REDIS_URL: redis.url,
        TLS_CERT: join(dir, 'cert.pem'),
        TLS_KEY: join(dir, 'key.pem'),
        TLS_CA: join(dir, 'cert.pem'),
        CLUSTER_SECRET: 'tls-secret',
        LOG_LEVEL: 'warn',
      },
    });
    client = new DssClient({ urls: cluster.nodes.map((n) => n.url), ca });
  });

  after(async () => {
    await client?.close();
    await cluster?.stop();
    await redis?.stop();
    setGlobalDispatcher(previous);
    rmSync(dir, { recursive: true, force: true });
  });

  it('every node is https:// and elects a leader over TLS', async () => {
    for (const n of cluster.nodes) assert.match(n.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    const { id } = await cluster.leader();
    const view = await client.clusterStatus();
    assert.equal(view.nodes.filter((p) => p.status !== undefined).length, 3, 'every node answers over TLS');
    for (const p of view.nodes) assert.equal(p.reachable, true, `${p.id} is reachable from ${view.via}`);
    assert.ok(id);
  });

  it('locks, queues and the cache work through every node (relays and coherence over TLS)', async () => {
    const { id: leader } = await cluster.leader();
    const followers = cluster.nodes.filter((n) => n.id !== leader);
    const viaFollower = new DssClient({ urls: [followers[0]!.url], ca });
    try {
      const g = await viaFollower.lock.acquire('tls-r', 'c1', { ttlMs: 30_000 });
      assert.equal(g.granted, true);
      await viaFollower.lock.release('tls-r', 'c1');
    } finally {
      await viaFollower.close();
    }
    // Several queues, so that some are owned by a node other than the one asked.
    for (const n of cluster.nodes) {
      const c = new DssClient({ urls: [n.url], ca });
      try {
        for (let i = 0; i < 4; i++) {
          const q = `tls-q-${n.id}-${i}`;
          await c.queue.push(q, { i });
          const [got] = (await c.queue.pop(q)) ?? [];
          assert.deepEqual(got?.message, { i });
          await c.queue.ack(q, got?.id ?? 'missing');
        }
      } finally {
        await c.close();
      }
    }
    const [a, b] = cluster.nodes.map((n) => new DssClient({ urls: [n.url], ca }));
    try {
      await a!.cache.put('tls/k', 'v1');
      const peerRead = await b!.cache.get('tls/k');
      assert.equal(peerRead?.value, 'v1');
      await b!.cache.put('tls/k', 'v2');
      assert.equal((await a!.cache.get('tls/k'))?.value, 'v2', 'the write invalidated the other copy');
    } finally {
      await a!.close();
      await b!.close();
    }
  });

  it('a client that does not trust the CA is refused, and plain HTTP gets no service', async () => {
    const url = cluster.nodes[0]!.url;
    const untrusting = new Agent();
    try {
      await assert.rejects(
        request(`${url}/health`, { dispatcher: untrusting }),
        (e: unknown) =>
          /certificate/i.test(String((e as { cause?: unknown }).cause ?? e)) ||
          /self[- ]signed/i.test(String(e)),
      );
    } finally {
      await untrusting.close();
    }
    const plain = url.replace('https://', 'http://');
    const answer = await request(`${plain}/health`).then(
      async (r) => {
        await r.body.dump();
        return r.statusCode;
      },
      () => 'refused',
    );
    assert.notEqual(answer, 200, 'no answer in clear text');
  });
});
