// The cache's coherence guarantee checked by history (SPEC 6): clients on all three nodes read,
// write and delete a few hot keys concurrently; every call and return is recorded with one clock and
// the per-key histories must be linearizable (Wing-Gong/Porcupine search, test/helpers/
// linearizability.ts). Three runs: write-back without faults; write-back while nodes stall for less
// than a lease (a slow node must lose nothing); write-through with a nemesis that SIGSTOPs, SIGKILLs
// (then restarts) and partitions nodes. Write-through there, because a node that is frozen past its
// lease or killed while holding a dirty M line loses it under write-back by design (SPEC 6), which
// would make an acknowledged write disappear.
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import type { Json } from '../../src/raft/types.js';
import { TestCluster } from '../helpers/cluster.js';
import { checkLinearizable, type Operation } from '../helpers/linearizability.js';
import { RedisServer } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

const KEYS = ['k0', 'k1', 'k2', 'k3', 'k4', 'k5'];
const CLIENTS_PER_NODE = 3;
const LEASE_MS = 500;
const CALL_TIMEOUT_MS = 8_000;
const SECONDS = Number(process.env.CACHE_NEMESIS_SECONDS ?? 20);

type Outcome = { ok: true; status: number; body: unknown } | { ok: false; neverSent: boolean };

async function call(url: string, method: string, path: string, body?: unknown): Promise<Outcome> {
  try {
    const res = await fetch(url + path, {
      method,
      signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
      ...(body !== undefined
        ? { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }
        : {}),
    });
    const text = await res.text();
    return { ok: true, status: res.status, body: text ? (JSON.parse(text) as unknown) : null };
  } catch (e) {
    const code = (e as { cause?: { code?: string } }).cause?.code;
    return { ok: false, neverSent: code === 'ECONNREFUSED' };
  }
}

class Workload {
  readonly ops: Operation[] = [];
  readonly counts = { reads: 0, writes: 0, deletes: 0, failed: 0, pending: 0 };
  private running = true;
  private loops: Promise<void>[] = [];

  constructor(
    private readonly c: TestCluster,
    private readonly prefix: string,
  ) {}

  start(): void {
    this.loops = this.c.nodes.flatMap((node, n) =>
      Array.from({ length: CLIENTS_PER_NODE }, (_, i) => this.client(`c${n}.${i}`, node.id)),
    );
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }

  private async client(name: string, nodeId: string): Promise<void> {
    let seq = 0;
    while (this.running) {
      const node = this.c.node(nodeId);
      if (node.proc === null || node.paused) {
        // The client is "on" that node: wait for it rather than spreading to others, so that the
        // frozen node's clients are exactly the ones whose calls hang.
        await delay(20);
      }
      const key = `${this.prefix}${KEYS[Math.floor(Math.random() * KEYS.length)]}`;
      const dice = Math.random();
      const invokedAt = performance.now();
      if (dice < 0.55) {
        const r = await call(node.url, 'GET', `/cache/${key}`);
        const returnedAt = performance.now();
        if (r.ok && r.status === 200) {
          this.ops.push({
            client: name,
            key,
            kind: 'read',
            value: (r.body as { value: Json }).value,
            invokedAt,
            returnedAt,
          });
          this.counts.reads++;
        } else if (r.ok && r.status === 404) {
          this.ops.push({ client: name, key, kind: 'read', value: null, invokedAt, returnedAt });
          this.counts.reads++;
        } else this.counts.failed++;
        continue;
      }
      const del = dice > 0.93;
      const value = `${name}#${seq++}`;
      const r = del
        ? await call(node.url, 'DELETE', `/cache/${key}`)
        : await call(node.url, 'PUT', `/cache/${key}`, { value });
      const returnedAt = performance.now();
      const kind = del ? ('delete' as const) : ('write' as const);
      if (r.ok && r.status === 200) {
        this.ops.push({ client: name, key, kind, ...(del ? {} : { value }), invokedAt, returnedAt });
        if (del) this.counts.deletes++;
        else this.counts.writes++;
      } else if (
        (!r.ok && r.neverSent) ||
        (r.ok && (r.body as { outcome?: string } | null)?.outcome !== 'unknown')
      ) {
        // Refused before it was sent, or answered with an error that does not leave the outcome open.
        this.counts.failed++;
      } else {
        // A timeout, a reset, or an error saying the outcome is unknown: it may have taken effect.
        this.ops.push({ client: name, key, kind, ...(del ? {} : { value }), invokedAt, returnedAt: null });
        this.counts.pending++;
      }
    }
  }
}

async function startCluster(redis: RedisServer, policy: string): Promise<TestCluster> {
  const c = await TestCluster.start({
    nodes: 3,
    roles: 'cache',
    env: {
      REDIS_URL: redis.url,
      CACHE_LEASE_MS: String(LEASE_MS),
      CACHE_WRITE_POLICY: policy,
      CACHE_MAX_SIZE: '4',
    },
  });
  await waitFor(
    'every cache node ready',
    async () => {
      for (const n of c.nodes) if ((await fetch(`${n.url}/ready`)).status !== 200) return false;
      return true;
    },
    { timeoutMs: 15_000 },
  );
  return c;
}

/** What the nodes warned about (a home giving up on a holder, a write-back fenced out...): the post-mortem of a failure. */
function warnings(c: TestCluster): string {
  return c.nodes
    .map((n) => {
      const lines = c
        .logTail(n.id, 100_000)
        .split('\n')
        .filter((l) => /"level":(4|5|6)0/.test(l));
      return `${n.id}: ${lines.length} warnings\n${lines.slice(0, 30).join('\n')}`;
    })
    .join('\n');
}

function verdict(w: Workload, c: TestCluster): void {
  const r = checkLinearizable(w.ops, { timeoutMs: 30_000 });
  const summary = JSON.stringify(w.counts);
  if (r.ok !== true) {
    const detail = r.ok === false ? `${r.reason}\n${JSON.stringify(r.witness, null, 1)}` : 'search timed out';
    assert.fail(
      `history of ${w.ops.length} calls ${summary} is not linearizable on ${r.key}: ${detail}\n${warnings(c)}`,
    );
  }
  assert.ok(w.counts.writes > 50 && w.counts.reads > 50, `enough traffic: ${summary}`);
}

describe('cache linearizability by history (3 real processes)', () => {
  let redis: RedisServer | undefined;
  let c: TestCluster | undefined;

  after(async () => {
    await c?.stop();
    await redis?.stop();
  });

  it('write-back, no faults: concurrent readers and writers on every node', async () => {
    redis = await RedisServer.start();
    c = await startCluster(redis, 'write-back');
    const w = new Workload(c, 'wb-');
    w.start();
    await delay(6_000);
    await w.stop();
    verdict(w, c);
    await c.stop();
    c = undefined;
  });

  it('write-back under stalls shorter than a lease (SIGSTOP of 255-300 ms, as a long GC pause)', async () => {
    // Longer than a snoop's timeout (half the lease), so a home's snoop to a stalled holder fails
    // at least once; shorter than what the holder's lease still covers (the home retries until it
    // has surely run out). A holder that is only slow must keep its dirty lines: nothing acknowledged
    // may be lost, even under write-back.
    redis ??= await RedisServer.start();
    c = await startCluster(redis, 'write-back');
    const cluster = c;
    const w = new Workload(cluster, 'wbp-');
    w.start();
    const end = Date.now() + 8_000;
    try {
      while (Date.now() < end) {
        await delay(300 + Math.random() * 500);
        const victim = cluster.nodes[Math.floor(Math.random() * cluster.nodes.length)]!.id;
        cluster.pause(victim);
        await delay(255 + Math.random() * 45);
        cluster.resume(victim);
      }
    } finally {
      for (const n of cluster.nodes) if (n.paused) cluster.resume(n.id);
      await w.stop();
    }
    verdict(w, cluster);
    let revocations = 0;
    for (const n of cluster.nodes) {
      const text = await (await fetch(`${n.url}/metrics`)).text();
      const m = /^cache_lease_revocations_total(?:\{[^}]*\})? (\S+)$/m.exec(text);
      revocations += Number(m?.[1] ?? NaN);
    }
    // Each stall makes snoops time out; none may cost the stalled node its membership.
    assert.equal(revocations, 0, `holders given up on\n${warnings(cluster)}`);
    await cluster.stop();
    c = undefined;
  });

  it(`write-through under SIGSTOP, SIGKILL and partitions of nodes (${SECONDS} s)`, async () => {
    redis ??= await RedisServer.start();
    c = await startCluster(redis, 'write-through');
    const cluster = c;
    const w = new Workload(cluster, 'wt-');
    w.start();
    const end = Date.now() + SECONDS * 1000;
    let round = 0;
    try {
      while (Date.now() < end) {
        await delay(1_000 + Math.random() * 1_000);
        const victim = cluster.nodes[Math.floor(Math.random() * cluster.nodes.length)]!.id;
        const others = cluster.nodes.map((n) => n.id).filter((id) => id !== victim);
        switch (round++ % 3) {
          case 0:
            // Shorter and longer than a lease: a short freeze must not let the node serve a hit
            // that a write elsewhere has made stale meanwhile.
            cluster.pause(victim);
            await delay(100 + Math.random() * 3 * LEASE_MS);
            cluster.resume(victim);
            break;
          case 1:
            await cluster.kill(victim);
            await delay(Math.random() * LEASE_MS);
            await cluster.restart(victim);
            break;
          default:
            // Cut off from its peers while its own clients still reach it: it must stop serving
            // hits before the others could write (coherence leases).
            cluster.partition([[victim], others]);
            await delay(LEASE_MS + Math.random() * 3 * LEASE_MS);
            cluster.heal();
        }
      }
    } finally {
      for (const n of cluster.nodes) if (n.paused) cluster.resume(n.id);
      cluster.heal();
      await w.stop();
    }
    verdict(w, cluster);
  });
});
