// SPEC 1.1's split topology as a user starts it: `dss cluster up --topology split` runs 9 nodes
// (3 per role) on one Redis it starts itself. Every service works end to end through any node of its
// role, and a node asked for a role it does not run answers 421 role_not_served naming the nodes
// that do. Every child is reaped, also when a test fails.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { isPortFree } from '../../src/cli/processes.js';
import { waitFor } from '../helpers/wait.js';
import { DSS_ENTRY } from '../helpers/entry.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const ROLES = ['lock', 'queue', 'cache'] as const;
type Role = (typeof ROLES)[number];

interface Answer {
  status: number;
  body: Record<string, unknown>;
  node: string | null;
}

async function call(url: string, method: string, path: string, body?: unknown): Promise<Answer> {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  return {
    status: res.status,
    body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>),
    node: res.headers.get('x-dss-node'),
  };
}

/**
 * Nine consecutive free ports: cluster up numbers the nodes from the base port. They are taken below
 * the kernel's ephemeral range, or an outgoing connection of an early node (to Redis, to a peer) can
 * land on a later node's port before that node binds it.
 */
async function freeBasePort(): Promise<number> {
  const [ephemeralLow] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8')
    .trim()
    .split(/\s+/)
    .map(Number);
  const top = Math.min(ephemeralLow ?? 32_768, 65_536) - 9;
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 10_000 + Math.floor(Math.random() * (top - 10_000));
    let free = true;
    for (let p = base; p < base + 9 && free; p++) free = await isPortFree(p);
    if (free) return base;
  }
  throw new Error('no 9 consecutive free ports found');
}

describe('split topology (dss cluster up --topology split)', { timeout: 180_000 }, () => {
  const tmp = mkdtempSync(join(tmpdir(), 'dss-split-'));
  let proc: ChildProcess | null = null;
  let out = '';
  let err = '';
  let exited: Promise<number | null> = Promise.resolve(null);
  const urls = new Map<string, string>();
  const byRole = (role: Role): string[] =>
    [1, 2, 3].map((i) => urls.get(`node_${role}_${i}`)).filter((u): u is string => u !== undefined);

  before(async () => {
    const base = await freeBasePort();
    proc = spawn(
      process.execPath,
      [
        ...DSS_ENTRY,
        'cluster',
        'up',
        '--topology',
        'split',
        '--nodes',
        '3',
        '--base-port',
        String(base),
        '--fast',
        '--data-dir',
        join(tmp, 'data'),
      ],
      // No REDIS_URL: cluster up starts its own redis-server (and must stop it).
      {
        cwd: ROOT,
        env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'warn' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const child = proc;
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    await waitFor(
      'the split cluster to come up',
      () => {
        if (child.exitCode !== null) return 'exited';
        return out.includes('Press Ctrl-C');
      },
      { timeoutMs: 90_000, intervalMs: 100 },
    ).catch((e: unknown) => assert.fail(`${String(e)}\n${out}\n${err}`));
    if (child.exitCode !== null) assert.fail(`cluster up exited:\n${out}\n${err}`);
    for (const m of out.matchAll(
      /^\s+(node_(?:lock|queue|cache)_\d)\s+(http:\/\/127\.0\.0\.1:\d+)\s+(\S+)$/gm,
    )) {
      urls.set(m[1]!, m[2]!);
      assert.equal(m[3], m[1]!.split('_')[1], `${m[1]} runs only its own role`);
    }
    assert.equal(urls.size, 9, `nine nodes listed:\n${out}`);
    // Lock nodes are ready once they have elected a leader; queue and cache nodes once Redis answers.
    await waitFor(
      'all nine nodes ready',
      async () => {
        const ready = await Promise.all(
          [...urls.values()].map((u) =>
            call(u, 'GET', '/ready').then(
              (a) => a.status === 200,
              () => false,
            ),
          ),
        );
        return ready.every(Boolean);
      },
      { timeoutMs: 60_000, intervalMs: 100 },
    );
  });

  after(async () => {
    if (proc !== null && proc.exitCode === null) {
      proc.kill('SIGTERM');
      const code = await Promise.race([exited, new Promise((r) => setTimeout(r, 30_000, 'timeout'))]);
      if (code === 'timeout') proc.kill('SIGKILL');
    }
    rmSync(tmp, { recursive: true, force: true });
  });

  it('only lock nodes are Raft voters, and they agree on one leader', async () => {
    const states = await Promise.all(byRole('lock').map((u) => call(u, 'GET', '/status')));
    const raft = states.map((s) => s.body.raft as { state: string; leader_id: string | null });
    assert.equal(raft.filter((r) => r.state === 'leader').length, 1);
    const leader = raft.find((r) => r.state === 'leader');
    assert.match(String(leader && states[raft.indexOf(leader)]!.body.node_id), /^node_lock_\d$/);
    for (const u of [...byRole('queue'), ...byRole('cache')]) {
      const s = await call(u, 'GET', '/status');
      assert.equal(s.status, 200);
      assert.deepEqual(s.body.roles, [String(s.body.node_id).split('_')[1]]);
      assert.equal((s.body.peers as unknown[]).length, 9, 'every node knows the whole cluster');
    }
  });

  it('locks work through every lock node (followers forward to the leader)', async () => {
    const [a, b, c] = byRole('lock') as [string, string, string];
    const got = await call(a, 'POST', '/lock/acquire', {
      resource: 'split-r',
      client_id: 'c1',
      ttl_ms: 30_000,
    });
    assert.equal(got.status, 200, JSON.stringify(got.body));
    const busy = await call(b, 'POST', '/lock/acquire', {
      resource: 'split-r',
      client_id: 'c2',
      ttl_ms: 30_000,
    });
    assert.equal(busy.status, 409, JSON.stringify(busy.body));
    const status = await call(c, 'GET', '/lock/status?resource=split-r');
    assert.equal(status.status, 200);
    assert.match(JSON.stringify(status.body), /"c1"/);
    const released = await call(c, 'POST', '/lock/release', { resource: 'split-r', client_id: 'c1' });
    assert.equal(released.status, 200, JSON.stringify(released.body));
  });

  it('queues work through every queue node (requests reach the owner)', async () => {
    const [a, b, c] = byRole('queue') as [string, string, string];
    const pushed = await call(a, 'POST', '/queue/push', { queue: 'split-q', message: { n: 1 } });
    assert.equal(pushed.status, 201, JSON.stringify(pushed.body));
    const popped = await call(b, 'POST', '/queue/pop', { queue: 'split-q' });
    assert.equal(popped.status, 200, JSON.stringify(popped.body));
    assert.deepEqual(popped.body.message, { n: 1 });
    const acked = await call(c, 'POST', '/queue/ack', { queue: 'split-q', id: popped.body.id });
    assert.equal(acked.status, 200, JSON.stringify(acked.body));
    const stats = await call(a, 'GET', '/queue/stats?queue=split-q');
    assert.equal(stats.status, 200);
    assert.match(String(stats.body.owner), /^node_queue_\d$/);
  });

  it('the cache is coherent across the cache nodes', async () => {
    const [a, b, c] = byRole('cache') as [string, string, string];
    assert.equal((await call(a, 'PUT', '/cache/split/k', { value: 'v1' })).status, 200);
    const read = await call(b, 'GET', '/cache/split/k');
    assert.equal(read.status, 200, JSON.stringify(read.body));
    assert.equal(read.body.value, 'v1');
    assert.equal((await call(c, 'PUT', '/cache/split/k', { value: 'v2' })).status, 200);
    const again = await call(b, 'GET', '/cache/split/k');
    assert.equal(again.body.value, 'v2', 'the write on another node invalidated the old copy');
  });

  it('a node asked for a role it does not run answers 421 naming the nodes that do', async () => {
    const asks: Record<Role, { method: string; path: string; body?: unknown }[]> = {
      lock: [
        { method: 'POST', path: '/lock/acquire', body: { resource: 'r', client_id: 'c' } },
        { method: 'POST', path: '/lock/release', body: { resource: 'r', client_id: 'c' } },
        { method: 'GET', path: '/lock/status?resource=r' },
      ],
      queue: [
        { method: 'POST', path: '/queue/push', body: { queue: 'q', message: 1 } },
        { method: 'POST', path: '/queue/pop', body: { queue: 'q' } },
        { method: 'GET', path: '/queue/stats?queue=q' },
      ],
      cache: [
        { method: 'GET', path: '/cache/k' },
        { method: 'PUT', path: '/cache/k', body: { value: 1 } },
        { method: 'DELETE', path: '/cache/k' },
      ],
    };
    for (const role of ROLES) {
      const expected = byRole(role).sort();
      for (const other of ROLES.filter((r) => r !== role)) {
        for (const url of byRole(other)) {
          for (const ask of asks[role]) {
            const a = await call(url, ask.method, ask.path, ask.body);
            const what = `${ask.method} ${ask.path} on ${a.node}`;
            assert.equal(a.status, 421, `${what}: ${JSON.stringify(a.body)}`);
            assert.equal((a.body.error as { code: string }).code, 'role_not_served', what);
            const nodes = a.body.nodes as { id: string; url: string }[];
            assert.deepEqual(nodes.map((n) => n.url).sort(), expected, `${what} names the ${role} nodes`);
          }
        }
      }
    }
  });

  it('internal routes are protected by a secret cluster up generated', async () => {
    assert.match(out, /Internal routes: protected by a cluster secret, generated/);
    const internal: [Role, string, unknown][] = [
      ['lock', '/raft/request_vote', { messages: [] }],
      ['queue', '/queue/internal_push', { queue: 'q', message: 1 }],
      ['cache', '/cache/handle_request', { key: 'k' }],
    ];
    for (const [role, path, body] of internal) {
      const a = await call(byRole(role)[0]!, 'POST', path, body);
      assert.equal(a.status, 401, `${path}: ${JSON.stringify(a.body)}`);
      assert.equal((a.body.error as { code: string }).code, 'unauthorized');
    }
  });

  it('stops every node and its Redis on SIGTERM', async () => {
    proc!.kill('SIGTERM');
    assert.equal(await exited, 0, err);
    assert.match(out, /cluster stopped/);
    for (const u of urls.values()) {
      await assert.rejects(fetch(`${u}/health`, { signal: AbortSignal.timeout(1000) }), `${u} is down`);
    }
  });
});
