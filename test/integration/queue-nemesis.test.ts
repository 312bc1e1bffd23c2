// The queue under faults, checked by history (Jepsen style, a "total queue" check): producers push
// unique payloads and consumers pop and ack them, each request through a random node, some
// consumers crashing without acking, while a nemesis SIGKILLs and restarts queue nodes, SIGKILLs and
// restarts Redis (AOF with `appendfsync always`), and SIGSTOPs nodes and Redis for a moment. Then
// everything is healed, every queue drained, and the recorded history must show that every
// acknowledged push was delivered and acked at least once and nothing unexpected was delivered.
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { TestCluster, type TestNode } from '../helpers/cluster.js';
import {
  outcomeOfStatus,
  QueueHistory,
  type DeliveryRecord,
  type QueueCheckResult,
} from '../helpers/queue-history.js';
import { RedisServer } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

const QUEUES = ['nemesis-a', 'nemesis-b', 'nemesis-c'];
const PRODUCERS = 4;
const CONSUMERS = 4;
const SECONDS = Number(process.env.QUEUE_NEMESIS_SECONDS ?? 20);
/** Consumers' visibility: short, so crashed consumers' messages come back during the run. */
const VISIBILITY_MS = 1500;
const POP_WAIT_MS = 300;
/** Chance that a consumer "crashes" after a pop: drops its deliveries without acking them. */
const CRASH_RATE = 0.1;
const REQUEST_TIMEOUT_MS = 3000;

interface Answer {
  /** 0: no answer (connection error or timeout). */
  status: number;
  body: Record<string, unknown> | null;
  servedBy: string | undefined;
  code: string;
}

async function post(url: string, path: string, body: unknown, timeoutMs: number): Promise<Answer> {
  try {
    const res = await fetch(`${url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    const parsed = text ? (JSON.parse(text) as Record<string, unknown>) : null;
    const err = parsed?.error as { code?: unknown } | undefined;
    return {
      status: res.status,
      body: parsed,
      servedBy: res.headers.get('x-dss-served-by') ?? undefined,
      code: typeof err?.code === 'string' ? err.code : String(res.status),
    };
  } catch (e) {
    const cause = (e as { cause?: { code?: unknown } }).cause;
    const code =
      typeof cause?.code === 'string' ? cause.code : e instanceof Error ? e.name : 'request_failed';
    return { status: 0, body: null, servedBy: undefined, code };
  }
}

async function get(url: string, path: string): Promise<Answer> {
  try {
    const res = await fetch(`${url}${path}`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    const text = await res.text();
    return {
      status: res.status,
      body: text ? (JSON.parse(text) as Record<string, unknown>) : null,
      servedBy: undefined,
      code: String(res.status),
    };
  } catch {
    return { status: 0, body: null, servedBy: undefined, code: 'request_failed' };
  }
}

function pick<T>(xs: readonly T[]): T {
  return xs[Math.floor(Math.random() * xs.length)]!;
}

const backoff = (): Promise<void> => delay(20 + Math.random() * 60);

/** The unique payload a message carries (the tests push strings). */
function payloadOf(message: unknown): string {
  return typeof message === 'string' ? message : JSON.stringify(message);
}

function isDelivery(x: unknown): x is { id: string; message: unknown; delivery_count: number } {
  const d = x as { id?: unknown; delivery_count?: unknown } | null;
  return typeof d?.id === 'string' && typeof d.delivery_count === 'number' && 'message' in d;
}

/** A 200 pop body: one delivery (max 1) or `messages` (max > 1). null when malformed. */
function deliveriesOf(body: Record<string, unknown> | null, max: number): DeliveryRecord[] | null {
  const raw = max === 1 ? [body] : (body?.messages as unknown[] | undefined);
  if (!Array.isArray(raw) || raw.length === 0 || !raw.every(isDelivery)) return null;
  return raw.map((d) => ({ id: d.id, payload: payloadOf(d.message), delivery_count: d.delivery_count }));
}

class Workload {
  readonly history = new QueueHistory();
  readonly counters = { crashes: 0, malformed: 0 };
  private running = true;
  private loops: Promise<void>[] = [];

  constructor(private readonly c: TestCluster) {}

  /** A random running node (a paused one included: clients do not know). */
  node(): TestNode {
    const up = this.c.nodes.filter((n) => n.proc);
    return pick(up.length > 0 ? up : this.c.nodes);
  }

  start(): void {
    this.loops = [
      ...Array.from({ length: PRODUCERS }, (_, i) => this.producer(`p${i}`)),
      ...Array.from({ length: CONSUMERS }, (_, i) => this.consumer(`c${i}`)),
    ];
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }

  /** Pushes unique payloads; retries a payload whose push had an unknown outcome (at-least-once). */
  private async producer(name: string): Promise<void> {
    for (let i = 0; this.running; i++) {
      const queue = pick(QUEUES);
      const payload = `${name}-${i}`;
      for (let attempt = 0; attempt < 10 && this.running; attempt++) {
        const node = this.node();
        const op = this.history.push(name, queue, payload, node.id);
        const r = await post(node.url, '/queue/push', { queue, message: payload }, REQUEST_TIMEOUT_MS);
        const served = r.servedBy !== undefined ? { servedBy: r.servedBy } : {};
        let outcome = outcomeOfStatus('push', r.status);
        if (outcome === 'ok' && typeof r.body?.id !== 'string') {
          this.counters.malformed++;
          outcome = 'unknown';
        }
        if (outcome === 'ok') {
          this.history.complete(op, 'ok', { messageId: r.body!.id as string, ...served });
          break;
        }
        this.history.complete(op, outcome, { code: r.code, ...served });
        if (outcome === 'failed') break;
        await backoff();
      }
      // Pacing, so the consumers keep up and the final drain stays short.
      await delay(5 + Math.random() * 10);
    }
  }

  private async consumer(name: string): Promise<void> {
    let generation = 0;
    while (this.running) {
      const client = `${name}.${generation}`;
      const queue = pick(QUEUES);
      const max = Math.random() < 0.5 ? 1 : 3;
      const node = this.node();
      const op = this.history.pop(client, queue, node.id);
      const r = await post(
        node.url,
        '/queue/pop',
        { queue, consumer_id: client, max, wait_ms: POP_WAIT_MS, visibility_ms: VISIBILITY_MS },
        POP_WAIT_MS + REQUEST_TIMEOUT_MS,
      );
      const served = r.servedBy !== undefined ? { servedBy: r.servedBy } : {};
      const outcome = outcomeOfStatus('pop', r.status);
      if (outcome !== 'ok') {
        this.history.complete(op, outcome, { code: r.code, ...served });
        if (outcome === 'unknown') await backoff();
        continue;
      }
      const deliveries = deliveriesOf(r.body, max);
      if (!deliveries) {
        this.counters.malformed++;
        this.history.complete(op, 'unknown', { code: 'malformed_body', ...served });
        continue;
      }
      this.history.complete(op, 'ok', { deliveries, ...served });
      if (Math.random() < CRASH_RATE) {
        // Crash: the deliveries are dropped unacked; a new consumer takes over.
        this.counters.crashes++;
        generation++;
        continue;
      }
      for (const d of deliveries) await this.ack(client, queue, d.id);
    }
  }

  /** Acks one message, retrying while the outcome is unknown. */
  async ack(client: string, queue: string, id: string, attempts = 5): Promise<void> {
    for (let attempt = 0; attempt < attempts; attempt++) {
      const node = this.node();
      const op = this.history.ack(client, queue, id, node.id);
      const r = await post(node.url, '/queue/ack', { queue, id }, REQUEST_TIMEOUT_MS);
      const outcome = outcomeOfStatus('ack', r.status);
      this.history.complete(op, outcome, {
        code: r.code,
        ...(r.servedBy !== undefined ? { servedBy: r.servedBy } : {}),
      });
      if (outcome !== 'unknown') return;
      await backoff();
    }
  }

  /**
   * One drain round on a healed cluster: pops everything ready in `queue` (visibility long enough
   * to ack it) and acks it all. Pending messages come back after their visibility; the caller
   * repeats rounds until Redis holds nothing.
   */
  async drainRound(queue: string): Promise<void> {
    for (;;) {
      const node = this.node();
      const op = this.history.pop('drain', queue, node.id);
      const r = await post(
        node.url,
        '/queue/pop',
        { queue, consumer_id: 'drain', max: 100, wait_ms: 0, visibility_ms: 10_000 },
        REQUEST_TIMEOUT_MS,
      );
      const served = r.servedBy !== undefined ? { servedBy: r.servedBy } : {};
      const outcome = outcomeOfStatus('pop', r.status);
      const deliveries = outcome === 'ok' ? deliveriesOf(r.body, 100) : null;
      if (!deliveries) {
        if (outcome === 'ok') this.counters.malformed++;
        this.history.complete(op, outcome === 'ok' ? 'unknown' : outcome, { code: r.code, ...served });
        return;
      }
      this.history.complete(op, 'ok', { deliveries, ...served });
      await Promise.all(deliveries.map((d) => this.ack('drain', queue, d.id)));
    }
  }
}

/** "push 503 unavailable ×12, ..." for the operations whose outcome stayed unknown. */
function unknownCodes(h: QueueHistory): string {
  const ops = new Map<number, string>();
  const n = new Map<string, number>();
  for (const e of h.events) {
    if (e.type === 'invoke') ops.set(e.id, e.op);
    else if (e.type === 'complete' && e.outcome === 'unknown') {
      const key = `${ops.get(e.id)} ${e.code ?? '?'}`;
      n.set(key, (n.get(key) ?? 0) + 1);
    }
  }
  return [...n]
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ×${v}`)
    .join(', ');
}

type NemesisKind = 'kill-node' | 'kill-redis' | 'pause-node' | 'pause-redis';

describe('total-queue check under faults (real processes, Redis AOF fsync always)', () => {
  let redis: RedisServer | undefined;
  let c: TestCluster | undefined;
  let workload: Workload | undefined;
  let nemesis: Promise<void> | undefined;
  let stopNemesis = false;

  before(async () => {
    redis = await RedisServer.start({ appendonly: true });
    c = await TestCluster.start({
      nodes: 3,
      roles: 'queue',
      env: {
        REDIS_URL: redis.url,
        // Crashed consumers' messages come back quickly; nothing is dead-lettered during the chaos.
        QUEUE_ACK_TIMEOUT: '1',
        QUEUE_MAX_DELIVERIES: '0',
        LOG_LEVEL: 'warn',
      },
    });
    await waitAllServing(c);
  });

  after(async () => {
    // Reap everything even when the test failed midway: stop the nemesis first (it may be about to
    // restart a process), then the clients, then the processes.
    stopNemesis = true;
    await nemesis?.catch(() => undefined);
    if (redis) redis.resume();
    await workload?.stop();
    await c?.stop();
    await redis?.stop();
  });

  /** Every node healthy, ready (Redis reachable) and seeing every peer, so routing is normal. */
  async function waitAllServing(cluster: TestCluster): Promise<void> {
    await waitFor(
      'every queue node ready and seeing its peers',
      async () => {
        for (const n of cluster.nodes) {
          if ((await get(n.url, '/ready')).status !== 200) return false;
          const st = (await get(n.url, '/status')).body as { peers?: { reachable: boolean }[] } | null;
          if (!st?.peers?.every((p) => p.reachable)) return false;
        }
        return true;
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    );
  }

  async function runNemesis(
    cluster: TestCluster,
    r: RedisServer,
    history: QueueHistory,
    until: number,
    events: Record<NemesisKind, number>,
  ): Promise<void> {
    // A fixed rotation makes sure every kind of fault happens in every run; victims are random.
    const rotation: NemesisKind[] = ['kill-node', 'kill-redis', 'pause-node', 'kill-node', 'pause-redis'];
    for (let i = 0; Date.now() < until && !stopNemesis; i++) {
      const kind = rotation[i % rotation.length]!;
      const hold = 200 + Math.random() * 600;
      events[kind]++;
      if (kind === 'kill-node') {
        const victim = pick(cluster.nodes).id;
        history.note(`SIGKILL ${victim}`);
        await cluster.kill(victim);
        await delay(hold);
        if (stopNemesis) return;
        await cluster.restart(victim);
        history.note(`${victim} restarted and healthy`);
      } else if (kind === 'kill-redis') {
        history.note('SIGKILL redis');
        await r.kill();
        await delay(hold);
        if (stopNemesis) return;
        await r.restart();
        history.note('redis restarted (AOF loaded)');
      } else if (kind === 'pause-node') {
        const victim = pick(cluster.nodes).id;
        history.note(`SIGSTOP ${victim}`);
        cluster.pause(victim);
        await delay(hold + 300);
        cluster.resume(victim);
        history.note(`SIGCONT ${victim}`);
      } else {
        history.note('SIGSTOP redis');
        r.pause();
        await delay(hold);
        r.resume();
        history.note('SIGCONT redis');
      }
      // Calm between faults so that the workload makes progress.
      await delay(300 + Math.random() * 400);
    }
  }

  it(
    'every acknowledged push is delivered and acked at least once; nothing unexpected appears',
    { timeout: 150_000 },
    async (t) => {
      const cluster = c!;
      const r = redis!;
      const w = (workload = new Workload(cluster));
      const started = Date.now();
      const events: Record<NemesisKind, number> = {
        'kill-node': 0,
        'kill-redis': 0,
        'pause-node': 0,
        'pause-redis': 0,
      };
      w.start();
      try {
        nemesis = runNemesis(cluster, r, w.history, Date.now() + SECONDS * 1000, events);
        await nemesis;
      } finally {
        // Heal: every node running and resumed, Redis up, then let the clients finish.
        for (const n of cluster.nodes) {
          if (n.paused) cluster.resume(n.id);
          if (!n.proc) await cluster.restart(n.id);
        }
        r.resume();
        w.history.note('healed');
        await waitAllServing(cluster);
        await w.stop();
      }
      const chaosMs = Date.now() - started;

      // Drain: pop and ack until Redis holds nothing; pending messages come back after their
      // visibility (crashed consumers, unknown pops and acks), so keep going past it.
      const drainStart = Date.now();
      let left = '';
      let drainError: Error | undefined;
      try {
        await waitFor(
          'every queue drained (ready, pending and dead all 0)',
          async () => {
            for (const q of QUEUES) await w.drainRound(q);
            const stats = await Promise.all(
              QUEUES.map(async (q) => (await get(w.node().url, `/queue/stats?queue=${q}`)).body),
            );
            left = JSON.stringify(stats);
            return stats.every((st) => st?.ready === 0 && st.pending === 0 && st.dead === 0);
          },
          { timeoutMs: 40_000, intervalMs: 200 },
        );
      } catch (e) {
        // Still check and report the history, then fail on the drain.
        drainError = e as Error;
      }
      const drainMs = Date.now() - drainStart;

      const res: QueueCheckResult = w.history.check();
      const k = res.counts;
      const summary =
        `pushes ${k.pushes.ok} ok / ${k.pushes.unknown} unknown / ${k.pushes.failed} refused ` +
        `(${k.payloads.acknowledged} acknowledged payloads, ${k.payloads.indeterminate} indeterminate: ` +
        `${k.indeterminate.delivered} delivered, ${k.indeterminate.notDelivered} not); ` +
        `pops ${k.pops.ok} ok / ${k.pops.empty} empty / ${k.pops.unknown} unknown, ${k.deliveries} deliveries ` +
        `(max delivery_count ${k.maxDeliveryCount}); acks ${k.acks.ok} ok / ${k.acks.not_pending} not pending / ` +
        `${k.acks.unknown} unknown; acked payloads ${k.acked} (+${k.ackedIndeterminately} only by unknown acks); ` +
        `duplicates ${k.duplicates.total} (${k.duplicates.redeliveries} redeliveries, ${k.duplicates.extraIds} ` +
        `stored twice); consumer crashes ${w.counters.crashes}; lost ${k.lost}, unexpected ${k.unexpected}, ` +
        `anomalies ${k.anomalies}`;
      const faults = Object.entries(events)
        .map(([kind, n]) => `${kind} ×${n}`)
        .join(', ');
      t.diagnostic(summary);
      t.diagnostic(`nemesis: ${faults}; chaos ${chaosMs} ms, drain ${drainMs} ms`);
      t.diagnostic(`unknown outcomes by code: ${unknownCodes(w.history)}`);

      if (!res.ok) {
        const report: string[] = [];
        for (const x of [...res.lost.slice(0, 5), ...res.unexpected.slice(0, 5)]) {
          report.push(
            x.detail,
            ...w.history.excerpt({ payload: x.payload }, { notes: true }).map((l) => `  ${l}`),
          );
        }
        report.push(...res.anomalies.slice(0, 10));
        process.stderr.write(`${report.join('\n')}\n`);
      }
      if (drainError !== undefined) {
        assert.fail(`${drainError.message}; queues at the end: ${left}`);
      }
      assert.deepEqual(
        res.lost.map((l) => l.detail),
        [],
        'every acknowledged push must be delivered and acked',
      );
      assert.deepEqual(
        res.unexpected.map((u) => u.detail),
        [],
        'nothing but pushed payloads may be delivered',
      );
      assert.deepEqual(res.anomalies, [], 'no acknowledged write may be forgotten');
      assert.equal(w.counters.malformed, 0, 'every 201/200 answer has the documented shape');
      assert.equal(k.pending, 0, 'every request was answered or timed out');
      // The run must have been meaningful: progress through the faults, and every fault kind.
      assert.ok(k.payloads.acknowledged >= 300, `only ${k.payloads.acknowledged} acknowledged pushes`);
      for (const [kind, n] of Object.entries(events)) assert.ok(n >= 1, `no ${kind} happened`);
    },
  );
});
