// End to end through deploy/haproxy/haproxy.cfg: a private redis-server, 3 real nodes with every
// role, and a real HAProxy terminating HTTPS (a throwaway self-signed certificate the client trusts
// as its CA) in front of them. Locks, queues and the cache work through it; requests are spread over
// the nodes; a SIGKILLed node is taken out by the health check while requests keep succeeding. Also
// runs the Dockerfile's and the compose files' HEALTHCHECK commands against a live node.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { Agent, request } from 'undici';
import { TestCluster } from '../helpers/cluster.js';
import { execForm, parseDockerfile, readText, readYaml, type ComposeFile } from '../helpers/deploy.js';
import { Haproxy, makeCert } from '../helpers/haproxy.js';
import { freePort } from '../helpers/proxy.js';
import { RedisServer } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

const run = promisify(execFile);

interface Reply {
  status: number;
  body: Record<string, unknown> | null;
  node: string;
}

describe('HAProxy (HTTPS) in front of a real 3-node cluster', () => {
  let dir: string;
  let redis: RedisServer | undefined;
  let cluster: TestCluster | undefined;
  let hx: Haproxy | undefined;
  let agent: Agent | undefined;
  const IDS = ['node1', 'node2', 'node3'];
  const servers = (ids: string[]): string[] => ids.flatMap((id) => [`dss_ready/${id}`, `dss_live/${id}`]);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'dss-deploy-e2e-'));
    redis = await RedisServer.start();
    const opts = {
      nodes: 3,
      roles: 'lock,queue,cache',
      env: { REDIS_URL: redis.url, CLUSTER_SECRET: 'deploy-e2e-secret', LOG_LEVEL: 'warn' },
      direct: true,
    };
    cluster = await TestCluster.start(opts);
    await cluster.leader();
    const cert = await makeCert(dir);
    agent = new Agent({ connect: { ca: cert.cert } });
    hx = await Haproxy.start({
      nodes: cluster.nodes.map((n) => `127.0.0.1:${n.port}`) as [string, string, string],
      pemFile: cert.pemFile,
      checkInter: '500ms',
    });
    // /ready needs a leader, Redis and a started cache home on every node.
    await hx.waitStates(servers(IDS), 'UP', 20_000);
  });

  after(async () => {
    await hx?.stop();
    await agent?.close();
    await cluster?.stop();
    await redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  async function call(method: 'GET' | 'POST' | 'PUT', path: string, body?: unknown): Promise<Reply> {
    const res = await request(`${hx!.baseUrl}${path}`, {
      method,
      dispatcher: agent,
      headersTimeout: 10_000,
      ...(body !== undefined
        ? { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }
        : {}),
    });
    const text = await res.body.text();
    return {
      status: res.statusCode,
      body: text ? (JSON.parse(text) as Record<string, unknown>) : null,
      node: String(res.headers['x-dss-node']),
    };
  }

  async function lockRoundTrip(resource: string): Promise<void> {
    const a = await call('POST', '/lock/acquire', { resource, client_id: 'deploy-c1', ttl_ms: 30_000 });
    assert.equal(a.status, 200, JSON.stringify(a.body));
    assert.equal(a.body!.granted, true);
    assert.equal(typeof a.body!.fencing_token, 'number');
    const r = await call('POST', '/lock/release', { resource, client_id: 'deploy-c1' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body!.released, true);
  }

  async function queueRoundTrip(queue: string): Promise<void> {
    const push = await call('POST', '/queue/push', { queue, message: { via: 'haproxy' } });
    assert.equal(push.status, 201, JSON.stringify(push.body));
    const pop = await call('POST', '/queue/pop', { queue, wait_ms: 2000 });
    assert.equal(pop.status, 200, JSON.stringify(pop.body));
    assert.equal(pop.body!.id, push.body!.id);
    assert.deepEqual(pop.body!.message, { via: 'haproxy' });
    const ack = await call('POST', '/queue/ack', { queue, id: pop.body!.id });
    assert.equal(ack.status, 200, JSON.stringify(ack.body));
    assert.deepEqual(ack.body, { acked: 1 });
  }

  async function nodesServing(n: number): Promise<Map<string, number>> {
    const seen = new Map<string, number>();
    for (let i = 0; i < n; i++) {
      const r = await call('GET', '/status');
      assert.equal(r.status, 200, JSON.stringify(r.body));
      seen.set(r.node, (seen.get(r.node) ?? 0) + 1);
    }
    return seen;
  }

  it('lock acquire and release over HTTPS', async () => {
    await lockRoundTrip('deploy/https-1');
  });

  it('queue push, pop and ack over HTTPS', async () => {
    await queueRoundTrip('deploy-https-q1');
  });

  it('cache put and get over HTTPS', async () => {
    const put = await call('PUT', '/cache/deploy/k1', { value: { n: 1, via: 'haproxy' } });
    assert.equal(put.status, 200, JSON.stringify(put.body));
    const get = await call('GET', '/cache/deploy/k1');
    assert.equal(get.status, 200, JSON.stringify(get.body));
    assert.deepEqual(get.body!.value, { n: 1, via: 'haproxy' });
  });

  it('spreads requests over the nodes (X-DSS-Node), round-robin', async () => {
    const seen = await nodesServing(12);
    assert.ok(seen.size > 1, `one node answered everything: ${JSON.stringify([...seen])}`);
    for (const id of seen.keys()) assert.ok(IDS.includes(id), id);
  });

  it("the Dockerfile's and compose files' HEALTHCHECK commands pass on a live node, fail on a dead port", async () => {
    const hc = parseDockerfile(readText('deploy/Dockerfile')).find((i) => i.op === 'HEALTHCHECK')!;
    const commands = [execForm(hc.args)];
    for (const file of ['deploy/docker-compose.yml', 'deploy/docker-compose.split.yml']) {
      const compose = readYaml<ComposeFile>(file);
      const test = compose.services[Object.keys(compose.services)[0]!]!.healthcheck!.test as string[];
      assert.equal(test[0], 'CMD');
      commands.push(test.slice(1));
    }
    const deadPort = await freePort();
    for (const [bin, ...args] of commands) {
      assert.equal(bin, 'node');
      const env = (port: number): NodeJS.ProcessEnv => ({ ...process.env, NODE_PORT: String(port) });
      await run(process.execPath, args, { env: env(cluster!.nodes[1]!.port), timeout: 10_000 });
      await assert.rejects(run(process.execPath, args, { env: env(deadPort), timeout: 10_000 }));
    }
  });

  it('a SIGKILLed node is taken out by the health check, and requests still succeed', async () => {
    const leader = await cluster!.leader();
    const victim = IDS.find((id) => id !== leader.id)!;
    const survivors = IDS.filter((id) => id !== victim);
    // A queue owned by a survivor: its owner does not change when the victim dies.
    const queue = await waitFor('a queue owned by a surviving node', async () => {
      for (let i = 0; i < 50; i++) {
        const st = await call('GET', `/queue/stats?queue=deploy-after-${i}`);
        if (st.status === 200 && survivors.includes(String(st.body!.owner))) return `deploy-after-${i}`;
      }
      return undefined;
    });

    await cluster!.kill(victim, 'SIGKILL');
    // Before the health check notices, a refused connection is retried on another node.
    for (let i = 0; i < 6; i++) assert.equal((await call('GET', '/health')).status, 200);

    await hx!.waitStates(servers([victim]), 'DOWN', 10_000);
    await hx!.waitStates(servers(survivors), 'UP');
    const seen = await nodesServing(12);
    assert.deepEqual([...seen.keys()].sort(), survivors);
    await lockRoundTrip('deploy/https-after-kill');
    await queueRoundTrip(queue);
  });
});
