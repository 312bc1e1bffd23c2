// deploy/haproxy/haproxy.cfg: `haproxy -c` accepts it (with the test's addresses and with the
// compose defaults) and rejects a broken copy; then a real HAProxy in front of three fake nodes
// whose /ready and /health the test switches, to check the routing rules the config promises:
// HTTPS with the given certificate, round-robin, X-Forwarded-For/-Proto, a node failing /ready is
// taken out, when no node is ready the live ones still serve (the /health fallback), and with no
// live node HAProxy answers 503 in SPEC's JSON error format with Retry-After.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Agent, request } from 'undici';
import { checkConfig, Haproxy, HAPROXY_CFG, makeCert, type TestCert } from '../helpers/haproxy.js';

interface FakeNode {
  name: string;
  port: number;
  ready: boolean;
  alive: boolean;
  server: http.Server;
}

async function startFake(name: string): Promise<FakeNode> {
  const node: FakeNode = { name, port: 0, ready: true, alive: true, server: http.createServer() };
  node.server.on('request', (req, res) => {
    const send = (status: number, body: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json', 'x-dss-node': name });
      res.end(JSON.stringify(body));
    };
    if (req.url === '/health') return send(node.alive ? 200 : 503, { status: 'ok', node_id: name });
    if (req.url === '/ready') return send(node.ready && node.alive ? 200 : 503, { node_id: name });
    req.resume();
    req.on('end', () =>
      send(200, {
        node: name,
        method: req.method,
        url: req.url,
        xff: req.headers['x-forwarded-for'] ?? null,
        proto: req.headers['x-forwarded-proto'] ?? null,
      }),
    );
  });
  await new Promise<void>((resolve) => node.server.listen(0, '127.0.0.1', () => resolve()));
  node.port = (node.server.address() as AddressInfo).port;
  return node;
}

describe('haproxy.cfg: haproxy -c', () => {
  let dir: string;
  let cert: TestCert;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'dss-haproxy-c-'));
    cert = await makeCert(dir);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('is valid with loopback backends, without a warning', async () => {
    const r = await checkConfig({
      DSS_TLS_PEM: cert.pemFile,
      DSS_NODE1: '127.0.0.1:18001',
      DSS_NODE2: '127.0.0.1:18002',
      DSS_NODE3: '127.0.0.1:18003',
      DSS_HTTPS_BIND: '127.0.0.1:18443',
      DSS_STATS_BIND: '127.0.0.1:18404',
    });
    assert.ok(r.ok, r.output);
    assert.match(r.output, /Configuration file is valid/);
    assert.doesNotMatch(r.output, /WARNING|ALERT/, r.output);
  });

  it('is valid with the compose defaults (node1:8001..., names HAProxy may not resolve here)', async () => {
    const r = await checkConfig({ DSS_TLS_PEM: cert.pemFile });
    assert.ok(r.ok, r.output);
  });

  it('rejects a broken copy, so the check can fail', async () => {
    const broken = join(dir, 'broken.cfg');
    writeFileSync(
      broken,
      readFileSync(HAPROXY_CFG, 'utf8').replace('balance roundrobin', 'balance roundrobbin'),
    );
    const r = await checkConfig({ DSS_TLS_PEM: cert.pemFile }, broken);
    assert.equal(r.ok, false);
    assert.match(r.output, /balance only supports/);
  });
});

describe('haproxy.cfg in front of three fake nodes', () => {
  let dir: string;
  let cert: TestCert;
  let fakes: FakeNode[] = [];
  let hx: Haproxy | undefined;
  let agent: Agent;
  const ALL = ['node1', 'node2', 'node3'];
  const ready = (ids: string[]): string[] => ids.map((s) => `dss_ready/${s}`);
  const live = (ids: string[]): string[] => ids.map((s) => `dss_live/${s}`);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'dss-haproxy-'));
    cert = await makeCert(dir);
    agent = new Agent({ connect: { ca: cert.cert } });
    fakes = await Promise.all(ALL.map(startFake));
    hx = await Haproxy.start({
      nodes: fakes.map((f) => `127.0.0.1:${f.port}`) as [string, string, string],
      pemFile: cert.pemFile,
      checkInter: '200ms',
    });
    await hx.waitStates([...ready(ALL), ...live(ALL)], 'UP');
  });

  after(async () => {
    await hx?.stop();
    await agent?.close();
    await Promise.all(fakes.map((f) => new Promise((resolve) => f.server.close(resolve))));
    rmSync(dir, { recursive: true, force: true });
  });

  const send = async (
    path: string,
    method: 'GET' | 'POST' = 'GET',
    headers: Record<string, string> = {},
  ): Promise<{
    status: number;
    node: string;
    body: Record<string, unknown>;
    headers: Record<string, unknown>;
  }> => {
    const res = await request(`${hx!.baseUrl}${path}`, {
      method,
      dispatcher: agent,
      headers: { ...headers, ...(method === 'POST' ? { 'content-type': 'application/json' } : {}) },
      ...(method === 'POST' ? { body: '{}' } : {}),
    });
    const body = (await res.body.json()) as Record<string, unknown>;
    return { status: res.statusCode, node: String(res.headers['x-dss-node']), body, headers: res.headers };
  };
  const servedBy = async (n: number): Promise<Set<string>> => {
    const seen = new Set<string>();
    for (let i = 0; i < n; i++) {
      const r = await send(`/lock/status?i=${i}`);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      seen.add(r.node);
    }
    return seen;
  };

  it('serves HTTPS with the configured certificate; a client that does not trust it is refused', async () => {
    const r = await send('/lock/status');
    assert.equal(r.status, 200);
    await assert.rejects(request(`${hx!.baseUrl}/lock/status`), /certificate/i);
  });

  it('balances round-robin over the nodes and adds X-Forwarded-For and X-Forwarded-Proto', async () => {
    assert.deepEqual([...(await servedBy(9))].sort(), ALL);
    // A client's own X-Forwarded-For is not passed on: HAProxy is the edge.
    const r = await send('/queue/push', 'POST', { 'x-forwarded-for': '203.0.113.9' });
    assert.equal(r.body.xff, '127.0.0.1');
    assert.equal(r.body.proto, 'https');
    assert.equal(r.body.method, 'POST');
  });

  it('takes a node that fails /ready out of rotation, and brings it back', async () => {
    fakes[0]!.ready = false;
    await hx!.waitStates(ready(['node1']), 'DOWN');
    await hx!.waitStates(live(['node1']), 'UP');
    assert.deepEqual([...(await servedBy(9))].sort(), ['node2', 'node3']);
    fakes[0]!.ready = true;
    await hx!.waitStates(ready(['node1']), 'UP');
    assert.deepEqual([...(await servedBy(9))].sort(), ALL);
  });

  it('when no node is ready (election, Redis down), live nodes still answer', async () => {
    for (const f of fakes) f.ready = false;
    await hx!.waitStates(ready(ALL), 'DOWN');
    assert.deepEqual([...(await servedBy(9))].sort(), ALL);
  });

  it('with no live node at all, answers 503 in the JSON error format with Retry-After', async () => {
    for (const f of fakes) f.alive = false;
    await hx!.waitStates([...ready(ALL), ...live(ALL)], 'DOWN');
    const r = await send('/lock/status');
    assert.equal(r.status, 503);
    assert.equal(r.headers['retry-after'], '1');
    assert.match(String(r.headers['content-type']), /application\/json/);
    assert.equal((r.body.error as { code: string }).code, 'unavailable');
    for (const f of fakes) {
      f.alive = true;
      f.ready = true;
    }
    await hx!.waitStates([...ready(ALL), ...live(ALL)], 'UP');
    assert.equal((await send('/lock/status')).status, 200);
  });
});
