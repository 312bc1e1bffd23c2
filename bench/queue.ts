// Queue benchmark (`npm run bench -- queue`): end-to-end push → pop → ack through the 3-node DSS
// queue service, side by side with BullMQ (Queue.add / addBulk and Workers) and a raw Redis
// LPUSH / BLMOVE / LREM loop (the ceiling), each on its own fresh private redis-server started here.
// 32 producers and 32 consumers move small JSON messages, unbatched and in batches of 50, flat out and
// at a fixed offered rate; then DSS spreads the same load over 1,000 queues.
//
// Push→ack latency: every message carries the time it was pushed (for paced producers, its scheduled
// send time, so a system that makes producers fall behind is charged for the wait); the latency is
// taken when the ack of that message completes.
import { readFileSync, rmSync } from 'node:fs';
import { cpus } from 'node:os';
import { setTimeout as delay } from 'node:timers/promises';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { Pool } from 'undici';
import { DEFAULT_VNODES, HashRing } from '../src/queue/ring.js';
import { TestCluster } from '../test/helpers/cluster.js';
import { RedisServer } from '../test/helpers/redis.js';
import { waitFor } from '../test/helpers/wait.js';
import { fmt, summarize } from './stats.js';
import { cpuBetween, cpuTextFor, measureUndisturbed, sampleCpu, waitQuiet, type CpuSample } from './cpu.js';

const PRODUCERS = Number(process.env.BENCH_QUEUE_PRODUCERS ?? 32);
const CONSUMERS = Number(process.env.BENCH_QUEUE_CONSUMERS ?? 32);
const BATCH = Number(process.env.BENCH_QUEUE_BATCH ?? 50);
/** The issue's fixed offered rate, msgs/s over all producers. */
const RATE = Number(process.env.BENCH_QUEUE_RATE ?? 6000);
const MANY = Number(process.env.BENCH_QUEUE_MANY ?? 1000);
/** Flat out, producers hold back while this many messages per producer and batch slot are unacked. */
const BACKLOG_PER_SLOT = 8;
/** A paced producer has at most this many pushes in flight; beyond, it falls behind its schedule. */
const PACED_IN_FLIGHT = 16;
/** Long-poll of a consumer waiting on one queue (DSS wait_ms, BLMOVE timeout). */
const POLL_MS = 500;
/**
 * wait_ms of a DSS consumer of one queue (default POLL_MS). 0 (diagnostics: pops that never park on
 * the node) makes a consumer that found the queue empty sleep 5 ms before it pops again.
 */
const DSS_WAIT_MS = Number(process.env.BENCH_QUEUE_DSS_WAIT_MS ?? POLL_MS);
const REQUEST_TIMEOUT_MS = 15_000;
/**
 * Length of an unmeasured row (unbatched, flat out; DSS on many queues; plus the row's own warm-up)
 * each system gets once, after all are up and before the first row: otherwise that row measures
 * cold JavaScript (the DSS nodes, BullMQ's client code and the bench's own). A fresh 3-node DSS lock cluster took some 10 s of load to settle
 * (single-client acquire p50 2.5 -> 1.5 ms; see the lock bench). Every system gets the same.
 */
export const QUEUE_WARM_UP_S = Number(process.env.BENCH_QUEUE_SYSTEM_WARM_UP_S ?? 10);
/** Extra node(1) flags for the DSS nodes, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof` (profiling). */
const NODE_ARGS = (process.env.BENCH_QUEUE_NODE_ARGS ?? '').split(' ').filter(Boolean);

/**
 * BENCH_QUEUE_ROUTING=any sends requests through any node (which relays to the owner) instead of
 * straight to the owner as a client that knows the ring does (the SDK computes the owner the same way).
 */
const ROUTE_TO_OWNER = process.env.BENCH_QUEUE_ROUTING !== 'any';
const DSS = ROUTE_TO_OWNER
  ? 'DSS (3 nodes, clients to the owner)'
  : 'DSS (3 nodes, clients through any node)';
const RAW = 'LPUSH / BLMOVE / LREM (ceiling)';

/** Facts of the last run, for the report: the redis-server version, and queues whose owner as the
 * nodes reported it differed from the ring computed here. */
let redisVersionSeen = '';
let ownerCheck: number | null = null;

// Ctrl-C or a kill of the runner: exit normally, so the exit hooks of TestCluster and RedisServer
// reap every child process (bench/lock.ts installs the same when it is loaded), and this one removes
// the data dirs of systems that were not stopped.
const liveDirs = new Set<string>();
process.on('exit', () => {
  for (const d of liveDirs) rmSync(d, { recursive: true, force: true });
});
if (process.listenerCount('SIGINT') === 0) process.once('SIGINT', () => process.exit(130));
if (process.listenerCount('SIGTERM') === 0) process.once('SIGTERM', () => process.exit(143));

// ------------------------------------------------------------------ messages

/** A small JSON message (about 110 bytes); `t` is its push time (performance.now() of this process). */
interface Msg {
  t: number;
  p: number;
  s: number;
  kind: string;
  order: string;
  amount: number;
  tags: string[];
}

function message(producer: number, seq: number, t: number): Msg {
  return {
    t,
    p: producer,
    s: seq,
    kind: 'order.created',
    order: `o-${producer}-${seq}`,
    amount: 42.5,
    tags: ['bench', 'queue'],
  };
}

// ------------------------------------------------------------------ scenarios

export interface Scenario {
  key: string;
  label: string;
  /** Messages per push, per pop (max) and per ack (ids). */
  batch: number;
  /** Offered msgs/s over all producers; undefined = flat out. */
  rate?: number;
  queues: number;
  /** Systems that run it. */
  systems: SystemKind[];
}

type SystemKind = 'dss' | 'bullmq' | 'raw';

const ALL: SystemKind[] = ['dss', 'bullmq', 'raw'];
const n = (x: number): string => x.toLocaleString('en-US');

export const SCENARIOS: Scenario[] = [
  { key: 'unbatched', label: 'unbatched, flat out', batch: 1, queues: 1, systems: ALL },
  { key: 'batched', label: `batched ×${BATCH}, flat out`, batch: BATCH, queues: 1, systems: ALL },
  {
    key: 'rate-unbatched',
    label: `unbatched, offered ${n(RATE)} msgs/s`,
    batch: 1,
    rate: RATE,
    queues: 1,
    systems: ALL,
  },
  {
    key: 'rate-batched',
    label: `batched ×${BATCH}, offered ${n(RATE)} msgs/s`,
    batch: BATCH,
    rate: RATE,
    queues: 1,
    systems: ALL,
  },
  {
    key: 'many-unbatched',
    label: `unbatched, flat out, ${n(MANY)} queues`,
    batch: 1,
    queues: MANY,
    systems: ['dss'],
  },
  {
    key: 'many-batched',
    label: `batched ×${BATCH}, flat out, ${n(MANY)} queues`,
    batch: BATCH,
    queues: MANY,
    systems: ['dss'],
  },
];

// ------------------------------------------------------------------ one row's bookkeeping

/** What producers and consumers report to, and what they ask whether to go on. */
interface RunContext {
  batch: number;
  /** Queues consumer `c` takes from (every queue is some consumer's). */
  queuesOf(c: number): string[];
  running(): boolean;
  /** Resolves when the measured window is over. */
  ended: Promise<void>;
  acked(stamps: number[]): void;
  error(kind: string): void;
}

class Collector {
  /** Messages whose push was sent and not failed. */
  issued = 0;
  ackedTotal = 0;
  acked = 0;
  pushed = 0;
  readonly latencies: number[] = [];
  readonly errors = new Map<string, number>();
  private waiters: (() => void)[] = [];
  private over = false;

  constructor(
    readonly from: number,
    readonly to: number,
    /** Flat out: most unacked messages before producers hold back. */
    readonly cap: number,
  ) {}

  onPushed(count: number): void {
    const now = performance.now();
    if (now >= this.from && now <= this.to) this.pushed += count;
  }

  onAcked(stamps: number[]): void {
    const now = performance.now();
    this.ackedTotal += stamps.length;
    if (now >= this.from && now <= this.to) {
      this.acked += stamps.length;
      for (const t of stamps) this.latencies.push(now - t);
    }
    if (this.waiters.length > 0 && this.issued - this.ackedTotal < this.cap) {
      for (const w of this.waiters.splice(0)) w();
    }
  }

  onError(kind: string): void {
    this.errors.set(kind, (this.errors.get(kind) ?? 0) + 1);
  }

  /** Resolves once fewer than `cap` messages are unacked or the row is over (see release). */
  async room(): Promise<void> {
    while (this.issued - this.ackedTotal >= this.cap && !this.over) {
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  /** The row is over: nobody waits for room any more. */
  release(): void {
    this.over = true;
    for (const w of this.waiters.splice(0)) w();
  }
}

// ------------------------------------------------------------------ systems under test

interface Session {
  /** One push of `msgs` (1 = unbatched) to `queue` by producer `p`; throws on failure. */
  push(p: number, queue: string, msgs: Msg[]): Promise<void>;
  /** Runs every consumer until the window ends; resolves once they all stopped. */
  consume(ctx: RunContext): Promise<void>;
  close(): Promise<void>;
}

interface Proc {
  label: string;
  pid: number;
}

interface QueueSystem {
  readonly kind: SystemKind;
  readonly label: string;
  /** Server processes (for CPU accounting), labelled for the queues of a row. */
  processes(queues: string[]): Proc[];
  open(sc: Scenario, queues: string[]): Promise<Session>;
  /** Between rows: drop everything the row left in Redis. */
  reset(): Promise<void>;
  stop(): Promise<void>;
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** A private redis-server (no persistence) whose dir is removed at exit if it was not stopped. */
async function startRedis(): Promise<RedisServer> {
  const r = await RedisServer.start();
  liveDirs.add(r.dir);
  return r;
}

async function stopRedis(r: RedisServer): Promise<void> {
  await r.stop();
  liveDirs.delete(r.dir);
}

async function connectRedis(port: number): Promise<Redis> {
  const r = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 1 });
  // Failures surface as rejected commands (counted there); the event needs a listener.
  r.on('error', () => undefined);
  await r.connect();
  return r;
}

async function redisVersion(port: number): Promise<string> {
  const r = await connectRedis(port);
  try {
    return /redis_version:(\S+)/.exec(await r.info('server'))?.[1] ?? '?';
  } finally {
    r.disconnect();
  }
}

async function flushAll(port: number): Promise<void> {
  const r = await connectRedis(port);
  try {
    await r.flushall();
  } finally {
    r.disconnect();
  }
}

/** Each consumer's share of the queues: queue i belongs to consumer i mod CONSUMERS. */
function partition(queues: string[], k: number, parts: number): string[] {
  if (queues.length === 1) return queues;
  return queues.filter((_, i) => i % parts === k);
}

interface HttpReply {
  status: number;
  text: string;
}

/**
 * DSS: 3 queue-only node processes (TestCluster, peers direct, LOG_LEVEL=warn) on their own Redis.
 * Producer i talks to node i mod 3 and consumer i to node (i + 1) mod 3, each through an undici Pool
 * (keep-alive) per node; a node that does not own the queue relays to the owner, as for any client.
 */
class DssQueueSystem implements QueueSystem {
  readonly kind = 'dss';
  readonly label = DSS;
  readonly ring: HashRing;
  private readonly pools: Pool[];

  private constructor(
    readonly redis: RedisServer,
    readonly cluster: TestCluster,
  ) {
    this.ring = new HashRing(
      cluster.nodes.map((x) => x.id),
      DEFAULT_VNODES,
    );
    this.pools = cluster.nodes.map(
      (x) => new Pool(x.url, { connections: 128, keepAliveTimeout: 60_000, keepAliveMaxTimeout: 60_000 }),
    );
  }

  static async start(): Promise<DssQueueSystem> {
    const redis = await startRedis();
    let cluster: TestCluster | null = null;
    try {
      cluster = await TestCluster.start({
        nodes: 3,
        roles: 'queue',
        direct: true,
        env: { REDIS_URL: redis.url, LOG_LEVEL: 'warn' },
        nodeArgs: NODE_ARGS,
      });
      const c = cluster;
      liveDirs.add(c.dir);
      // Relaying needs each node's peer probes to have seen the others.
      await waitFor(
        'every DSS node to see its peers',
        async () => {
          for (const node of c.nodes) {
            const res = await fetch(`${node.url}/status`, { signal: AbortSignal.timeout(1000) });
            const st = (await res.json()) as { peers?: { reachable: boolean }[] };
            if (!st.peers?.every((p) => p.reachable)) return false;
          }
          return true;
        },
        { timeoutMs: 20_000, intervalMs: 100 },
      );
      return new DssQueueSystem(redis, c);
    } catch (e) {
      await cluster?.stop();
      if (cluster) liveDirs.delete(cluster.dir);
      await stopRedis(redis);
      throw e;
    }
  }

  processes(queues: string[]): Proc[] {
    const owner = queues.length === 1 ? this.ring.owner(queues[0]!) : null;
    const out: Proc[] = this.cluster.nodes.flatMap((x) =>
      x.proc?.pid === undefined ? [] : [{ label: x.id === owner ? 'owner' : 'node', pid: x.proc.pid }],
    );
    if (this.redis.pid !== undefined) out.push({ label: 'redis', pid: this.redis.pid });
    return out;
  }

  /** Queue owners by node id, from the ring built as the nodes build it. */
  owners(queues: string[]): Map<string, number> {
    const counts = new Map<string, number>(this.cluster.nodes.map((x) => [x.id, 0]));
    for (const q of queues) {
      const o = this.ring.owner(q);
      counts.set(o, (counts.get(o) ?? 0) + 1);
    }
    return counts;
  }

  /** How many queues' owner as the nodes report it (GET /queue/stats) differs from the ring here. */
  async ownerMismatches(queues: string[]): Promise<number> {
    let mismatches = 0;
    let next = 0;
    await Promise.all(
      Array.from({ length: 16 }, async (_, w) => {
        while (next < queues.length) {
          const q = queues[next++]!;
          const pool = this.pools[w % this.pools.length]!;
          const res = await pool.request({
            path: `/queue/stats?queue=${encodeURIComponent(q)}`,
            method: 'GET',
          });
          const body = (await res.body.json()) as { owner?: string };
          if (body.owner !== this.ring.owner(q)) mismatches++;
        }
      }),
    );
    return mismatches;
  }

  private async post(pool: Pool, path: string, body: unknown): Promise<HttpReply> {
    const res = await pool.request({
      path,
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      headersTimeout: REQUEST_TIMEOUT_MS,
      bodyTimeout: REQUEST_TIMEOUT_MS,
    });
    return { status: res.statusCode, text: await res.body.text() };
  }

  private static failure(op: string, r: HttpReply): string {
    const code = /"code":"([^"]+)"/.exec(r.text)?.[1] ?? r.text.slice(0, 60);
    return `${op} ${r.status} ${code}`;
  }

  open(sc: Scenario): Promise<Session> {
    const session: Session = {
      push: async (p, queue, msgs) => {
        const body =
          msgs.length === 1 && sc.batch === 1 ? { queue, message: msgs[0] } : { queue, messages: msgs };
        const r = await this.post(this.poolFor(queue, p), '/queue/push', body);
        if (r.status !== 201) throw new Error(DssQueueSystem.failure('push', r));
      },
      consume: async (ctx) => {
        await Promise.all(
          Array.from({ length: CONSUMERS }, (_, c) => this.consumer(c, (q) => this.poolFor(q, c + 1), ctx)),
        );
      },
      close: () => Promise.resolve(),
    };
    return Promise.resolve(session);
  }

  /**
   * Pops from its queues in turn (wait_ms 0, so an empty queue costs one round trip), long-polling
   * once a whole round found nothing; a consumer of one queue always long-polls. Acks what it got.
   */
  /** The owner's pool, or (BENCH_QUEUE_ROUTING=any) the client's own node, which relays. */
  private poolFor(queue: string, client: number): Pool {
    if (!ROUTE_TO_OWNER) return this.pools[client % this.pools.length]!;
    const owner = this.ring.owner(queue);
    return this.pools[this.cluster.nodes.findIndex((x) => x.id === owner)]!;
  }

  private async consumer(c: number, poolOf: (queue: string) => Pool, ctx: RunContext): Promise<void> {
    const mine = ctx.queuesOf(c);
    let k = 0;
    let empty = 0;
    while (ctx.running()) {
      const queue = mine[k % mine.length]!;
      k++;
      const wait = mine.length === 1 ? DSS_WAIT_MS : empty >= mine.length ? 100 : 0;
      const body =
        ctx.batch === 1
          ? { queue, consumer_id: `c${c}`, wait_ms: wait }
          : { queue, consumer_id: `c${c}`, max: ctx.batch, wait_ms: wait };
      try {
        const pool = poolOf(queue);
        const r = await this.post(pool, '/queue/pop', body);
        if (r.status === 204) {
          empty++;
          if (wait === 0 && mine.length === 1) await delay(5);
          continue;
        }
        if (r.status !== 200) {
          ctx.error(DssQueueSystem.failure('pop', r));
          await delay(10);
          continue;
        }
        empty = 0;
        const got = JSON.parse(r.text) as
          { id: string; message: Msg } | { messages: { id: string; message: Msg }[] };
        const msgs = 'messages' in got ? got.messages : [got];
        const ack =
          msgs.length === 1 && ctx.batch === 1
            ? { queue, id: msgs[0]!.id }
            : { queue, ids: msgs.map((m) => m.id) };
        const a = await this.post(pool, '/queue/ack', ack);
        if (a.status !== 200) {
          ctx.error(DssQueueSystem.failure('ack', a));
          continue;
        }
        ctx.acked(msgs.map((m) => m.message.t));
      } catch (e) {
        ctx.error(`pop/ack ${errorText(e)}`);
        await delay(10);
      }
    }
  }

  reset(): Promise<void> {
    return flushAll(this.redis.port);
  }

  async stop(): Promise<void> {
    try {
      await Promise.all(this.pools.map((p) => p.destroy()));
      // A node run with --cpu-prof writes its profile only when it exits by itself; a node that has
      // not exited after 10 s is killed below anyway.
      if (NODE_ARGS.length > 0) {
        const terms = Promise.all(this.cluster.nodes.map((x) => this.cluster.kill(x.id, 'SIGTERM')));
        await Promise.race([terms, delay(10_000, undefined, { ref: false })]);
      }
    } finally {
      try {
        await this.cluster.stop();
        liveDirs.delete(this.cluster.dir);
      } finally {
        await stopRedis(this.redis);
      }
    }
  }
}

/**
 * BullMQ on its own Redis: producer i adds through its own Queue instance (own connection),
 * `add` unbatched and `addBulk` batched; consumers are Worker instances (each with its normal and
 * blocking connection), concurrency 1 unbatched and the batch size batched. Jobs are removed on
 * completion (as a DSS ack deletes the message); a job counts as acked at the Worker's `completed`
 * event, which fires once its move to completed (BullMQ's ack) has returned.
 */
class BullSystem implements QueueSystem {
  readonly kind = 'bullmq';
  readonly label: string;

  private constructor(
    readonly redis: RedisServer,
    version: string,
  ) {
    this.label = `BullMQ ${version}`;
  }

  static async start(): Promise<BullSystem> {
    const redis = await startRedis();
    try {
      const pkg = JSON.parse(
        readFileSync(new URL('../node_modules/bullmq/package.json', import.meta.url), 'utf8'),
      ) as { version: string };
      return new BullSystem(redis, pkg.version);
    } catch (e) {
      await stopRedis(redis);
      throw e;
    }
  }

  private get connection(): { host: string; port: number; maxRetriesPerRequest: null } {
    return { host: '127.0.0.1', port: this.redis.port, maxRetriesPerRequest: null };
  }

  processes(): Proc[] {
    return this.redis.pid === undefined ? [] : [{ label: 'redis', pid: this.redis.pid }];
  }

  async open(sc: Scenario, queues: string[]): Promise<Session> {
    if (queues.length !== 1) throw new Error('the BullMQ rows use one queue');
    const name = queues[0]!;
    const producers: Queue<Msg>[] = [];
    const closeProducers = async (): Promise<void> => {
      await Promise.all(producers.map((q) => q.close().catch(() => undefined)));
    };
    try {
      for (let p = 0; p < PRODUCERS; p++) {
        const q = new Queue<Msg>(name, {
          connection: this.connection,
          defaultJobOptions: { removeOnComplete: true, removeOnFail: true },
        });
        q.on('error', () => undefined); // failures surface in add(), counted there
        producers.push(q);
      }
      await Promise.all(producers.map((q) => q.waitUntilReady()));
    } catch (e) {
      await closeProducers();
      throw e;
    }
    return {
      push: async (p, _queue, msgs) => {
        const q = producers[p]!;
        if (sc.batch === 1 && msgs.length === 1) await q.add('m', msgs[0]!);
        else await q.addBulk(msgs.map((data) => ({ name: 'm', data })));
      },
      consume: async (ctx) => {
        const workers: Worker<Msg>[] = [];
        try {
          for (let c = 0; c < CONSUMERS; c++) {
            const w = new Worker<Msg>(name, () => Promise.resolve(), {
              connection: this.connection,
              concurrency: ctx.batch,
            });
            w.on('completed', (job) => ctx.acked([job.data.t]));
            w.on('failed', () => ctx.error('job failed'));
            w.on('error', (e) => ctx.error(`worker error ${e.message}`));
            workers.push(w);
          }
          await Promise.all(workers.map((w) => w.waitUntilReady()));
          await ctx.ended;
        } finally {
          // close() lets active jobs finish; a worker that hangs is forced after 5 s.
          await Promise.all(
            workers.map(async (w) => {
              const timer = setTimeout(() => void w.close(true).catch(() => undefined), 5000);
              try {
                await w.close();
              } catch (e) {
                ctx.error(`worker close ${errorText(e)}`);
              } finally {
                clearTimeout(timer);
              }
            }),
          );
        }
      },
      close: closeProducers,
    };
  }

  reset(): Promise<void> {
    return flushAll(this.redis.port);
  }

  async stop(): Promise<void> {
    await stopRedis(this.redis);
  }
}

/**
 * The ceiling: no ids, no delivery counts, no visibility deadline, no redelivery; what any reliable
 * Redis list queue does at least. Push = LPUSH of the JSON text(s); a consumer BLMOVEs the oldest
 * message to a processing list (batched: then up to batch − 1 more with pipelined LMOVEs), and acks
 * with LREM of each (pipelined). Every producer and consumer has its own connection.
 */
class RawRedisSystem implements QueueSystem {
  readonly kind = 'raw';

  private constructor(
    readonly redis: RedisServer,
    readonly label: string,
  ) {}

  static async start(): Promise<RawRedisSystem> {
    const redis = await startRedis();
    try {
      redisVersionSeen = await redisVersion(redis.port);
      return new RawRedisSystem(redis, `Redis ${redisVersionSeen} ${RAW}`);
    } catch (e) {
      await stopRedis(redis);
      throw e;
    }
  }

  processes(): Proc[] {
    return this.redis.pid === undefined ? [] : [{ label: 'redis', pid: this.redis.pid }];
  }

  async open(): Promise<Session> {
    const conns: Redis[] = [];
    const closeAll = (): Promise<void> => {
      for (const c of conns.splice(0)) c.disconnect();
      return Promise.resolve();
    };
    try {
      for (let p = 0; p < PRODUCERS; p++) conns.push(await connectRedis(this.redis.port));
    } catch (e) {
      await closeAll();
      throw e;
    }
    const producers = [...conns];
    return {
      push: async (p, queue, msgs) => {
        await producers[p]!.lpush(queue, ...msgs.map((m) => JSON.stringify(m)));
      },
      consume: async (ctx) => {
        const mine: Redis[] = [];
        for (let c = 0; c < CONSUMERS; c++) {
          const r = await connectRedis(this.redis.port);
          conns.push(r);
          mine.push(r);
        }
        await Promise.all(mine.map((r, c) => this.consumer(r, ctx.queuesOf(c)[0]!, ctx)));
      },
      close: closeAll,
    };
  }

  private async consumer(r: Redis, queue: string, ctx: RunContext): Promise<void> {
    const processing = `${queue}:processing`;
    while (ctx.running()) {
      try {
        const first = await r.blmove(queue, processing, 'RIGHT', 'LEFT', POLL_MS / 1000);
        if (first === null) continue;
        const got = [first];
        if (ctx.batch > 1) {
          const pipe = r.pipeline();
          for (let i = 1; i < ctx.batch; i++) pipe.lmove(queue, processing, 'RIGHT', 'LEFT');
          for (const [err, v] of (await pipe.exec()) ?? []) {
            if (err) ctx.error(`LMOVE ${err.message}`);
            else if (typeof v === 'string') got.push(v);
          }
        }
        if (got.length === 1) {
          await r.lrem(processing, 1, first);
        } else {
          const pipe = r.pipeline();
          for (const m of got) pipe.lrem(processing, 1, m);
          for (const [err] of (await pipe.exec()) ?? []) if (err) ctx.error(`LREM ${err.message}`);
        }
        ctx.acked(got.map((m) => (JSON.parse(m) as Msg).t));
      } catch (e) {
        ctx.error(`BLMOVE/LREM ${errorText(e)}`);
        await delay(10);
      }
    }
  }

  reset(): Promise<void> {
    return flushAll(this.redis.port);
  }

  async stop(): Promise<void> {
    await stopRedis(this.redis);
  }
}

// ------------------------------------------------------------------ CPU text

const cpuText = cpuTextFor([
  ['owner', 'owner'],
  ['node', 'nodes'],
  ['redis', 'redis'],
  ['bench', 'bench'],
  ['other', 'other'],
]);

// ------------------------------------------------------------------ running a row

export interface QueueRow {
  scenario: Scenario;
  kind: SystemKind;
  system: string;
  seconds: number;
  acked: number;
  /** Acks completed per second in the window. */
  perSecond: number;
  /** Pushes accepted per second in the window (for paced rows: the rate actually offered). */
  pushedPerSecond: number;
  p50: number;
  p99: number;
  errors: number;
  errorKinds: [string, number][];
  /** Messages pushed and not acked when the consumers stopped. */
  unacked: number;
  cpu: { label: string; pct: number }[];
  /** DSS, several queues: how many each node owns. */
  owners?: Map<string, number>;
}

let rowSeq = 0;

function queueNames(sc: Scenario): string[] {
  const tag = `bench.${sc.key}.${++rowSeq}`;
  return sc.queues === 1 ? [tag] : Array.from({ length: sc.queues }, (_, i) => `${tag}.q${i}`);
}

async function runRow(sys: QueueSystem, sc: Scenario, seconds: number, others: Proc[]): Promise<QueueRow> {
  const queues = queueNames(sc);
  const session = await sys.open(sc, queues);
  try {
    const procs = [
      ...sys.processes(queues),
      { label: 'bench', pid: process.pid },
      ...others.map((p) => ({ label: 'idle system', pid: p.pid })),
    ];
    await waitQuiet(procs);
    const warmMs = Math.min(Number(process.env.BENCH_QUEUE_WARMUP_S ?? 2) * 1000, seconds * 200);
    const start = performance.now();
    const from = start + warmMs;
    const end = from + seconds * 1000;
    const col = new Collector(from, end, BACKLOG_PER_SLOT * PRODUCERS * sc.batch);
    let cpu0: CpuSample | null = null;
    let cpu1: CpuSample | null = null;
    const t0 = setTimeout(() => (cpu0 = sampleCpu(procs)), warmMs);
    let endTimer: NodeJS.Timeout | undefined;
    const ended = new Promise<void>((resolve) => {
      endTimer = setTimeout(() => {
        cpu1 = sampleCpu(procs);
        resolve();
      }, end - start);
    });
    void ended.then(() => col.release());
    const running = (): boolean => performance.now() < end;
    const ctx: RunContext = {
      batch: sc.batch,
      queuesOf: (c) => partition(queues, c, CONSUMERS),
      running,
      ended,
      acked: (stamps) => col.onAcked(stamps),
      error: (kind) => col.onError(kind),
    };

    // One push of a batch stamped `stamp`, to producer p's next queue.
    const seqs = new Array<number>(PRODUCERS).fill(0);
    const nextQueue = new Array<number>(PRODUCERS).fill(0);
    const producerQueues = Array.from({ length: PRODUCERS }, (_, p) =>
      partition(queues, p % CONSUMERS, CONSUMERS),
    );
    const send = async (p: number, stamp: number): Promise<void> => {
      const mine = producerQueues[p]!;
      const queue = mine[nextQueue[p]!++ % mine.length]!;
      const msgs = Array.from({ length: sc.batch }, () => message(p, seqs[p]!++, stamp));
      col.issued += msgs.length;
      try {
        await session.push(p, queue, msgs);
        col.onPushed(msgs.length);
      } catch (e) {
        col.issued -= msgs.length;
        col.onError(`push ${errorText(e)}`.slice(0, 120));
        await delay(10);
      }
    };
    const flatOut = async (p: number): Promise<void> => {
      while (running()) {
        await col.room();
        if (!running()) break;
        await send(p, performance.now());
      }
    };
    // Open loop: producer p sends on a fixed schedule (staggered against the others), several pushes
    // in flight if need be; a message is stamped with its scheduled time, or its send time if earlier.
    const paced = async (p: number, rate: number): Promise<void> => {
      const interval = (1000 * sc.batch * PRODUCERS) / rate;
      let next = start + (p / PRODUCERS) * interval;
      const inFlight = new Set<Promise<void>>();
      while (running()) {
        const wait = next - performance.now();
        if (wait >= 1) await delay(wait);
        if (!running()) break;
        while (inFlight.size >= PACED_IN_FLIGHT) await Promise.race(inFlight);
        const task: Promise<void> = send(p, Math.min(next, performance.now())).finally(() =>
          inFlight.delete(task),
        );
        inFlight.add(task);
        next += interval;
      }
      await Promise.all(inFlight);
    };

    const consuming = session.consume(ctx);
    const producing = Promise.all(
      Array.from({ length: PRODUCERS }, (_, p) => (sc.rate === undefined ? flatOut(p) : paced(p, sc.rate))),
    );
    const settled = await Promise.allSettled([consuming, producing, ended]);
    clearTimeout(t0);
    clearTimeout(endTimer);
    for (const s of settled) if (s.status === 'rejected') throw s.reason;
    const first = cpu0 ?? sampleCpu(procs);
    const last = cpu1 ?? sampleCpu(procs);
    const elapsed = (end - from) / 1000;
    const lat = summarize(col.latencies);
    return {
      scenario: sc,
      kind: sys.kind,
      system: sys.label,
      seconds: elapsed,
      acked: col.acked,
      perSecond: col.acked / elapsed,
      pushedPerSecond: col.pushed / elapsed,
      p50: lat.p50,
      p99: lat.p99,
      errors: [...col.errors.values()].reduce((a, b) => a + b, 0),
      errorKinds: [...col.errors.entries()].sort((a, b) => b[1] - a[1]),
      unacked: col.issued - col.ackedTotal,
      cpu: cpuBetween(first, last),
      ...(sys instanceof DssQueueSystem && queues.length > 1 ? { owners: sys.owners(queues) } : {}),
    };
  } finally {
    await session.close();
    await sys.reset();
  }
}

/**
 * All three systems up at once (idle ones cost little), the scenarios interleaved (for each
 * scenario: DSS, BullMQ, raw Redis), so a drift in the machine's load hits all alike.
 * BENCH_QUEUE_SCENARIOS=key,key and BENCH_QUEUE_SYSTEMS=dss,bullmq,raw run a subset.
 */
export async function queueComparison(seconds: number): Promise<QueueRow[]> {
  const only = process.env.BENCH_QUEUE_SCENARIOS?.split(',').filter(Boolean);
  const scenarios = only ? SCENARIOS.filter((s) => only.includes(s.key)) : SCENARIOS;
  const systems: QueueSystem[] = [];
  const rows: QueueRow[] = [];
  try {
    const wanted = process.env.BENCH_QUEUE_SYSTEMS?.split(',').filter(Boolean) ?? ALL;
    const dss = wanted.includes('dss') ? await DssQueueSystem.start() : null;
    if (dss) systems.push(dss);
    if (wanted.includes('bullmq')) systems.push(await BullSystem.start());
    if (wanted.includes('raw')) systems.push(await RawRedisSystem.start());
    const manyNames = Array.from({ length: MANY }, (_, i) => `bench.ring.q${i}`);
    if (dss && scenarios.some((s) => s.queues > 1)) {
      const bad = await dss.ownerMismatches(manyNames);
      console.log(
        `owners of ${n(MANY)} queue names by the ring (DEFAULT_VNODES = ${DEFAULT_VNODES}): ` +
          `${[...dss.owners(manyNames)].map(([id, k]) => `${id} ${k}`).join(', ')}; ` +
          `nodes' own answer (GET /queue/stats) differs for ${bad}`,
      );
      ownerCheck = bad;
    }
    // DSS warms up on queues spread over all three nodes: the measured single queue's owner may be any.
    const warmWith = (sys: QueueSystem): Scenario =>
      SCENARIOS.find((s) => s.key === (sys.kind === 'dss' ? 'many-unbatched' : 'unbatched'))!;
    if (QUEUE_WARM_UP_S > 0) for (const sys of systems) await runRow(sys, warmWith(sys), QUEUE_WARM_UP_S, []);
    for (const sc of scenarios) {
      for (const sys of systems) {
        if (!sc.systems.includes(sys.kind)) continue;
        const others = systems
          .filter((x) => x !== sys)
          .flatMap((x) => x.processes(['-']).map((p) => ({ ...p, label: 'idle system' })));
        const r = await measureUndisturbed(sys.label, () => runRow(sys, sc, seconds, others));
        console.log(
          `${sc.label} | ${r.system}: ${fmt(r.perSecond, 0)} msgs/s acked (${fmt(r.pushedPerSecond, 0)} pushed/s), ` +
            `push→ack p50 ${fmt(r.p50, 1)} ms, p99 ${fmt(r.p99, 1)} ms, errors ${r.errors}, ` +
            `unacked at end ${r.unacked}; CPU % of a core: ${cpuText(r.cpu)}` +
            (r.owners ? `; owners ${[...r.owners].map(([id, k]) => `${id} ${k}`).join(', ')}` : ''),
        );
        for (const [kind, count] of r.errorKinds.slice(0, 5)) console.log(`  error: ${count} × ${kind}`);
        rows.push(r);
      }
    }
    return rows;
  } finally {
    for (const sys of systems.reverse()) {
      try {
        await sys.stop();
      } catch (e) {
        process.stderr.write(`stopping ${sys.label}: ${errorText(e)}\n`);
      }
    }
  }
}

// ------------------------------------------------------------------ report

export function queueMarkdown(rows: QueueRow[]): string {
  return [
    '| scenario | system | msgs/s acked | pushed/s | push→ack p50 (ms) | push→ack p99 (ms) | errors | unacked at end | CPU, % of one core (servers · load generator · rest of the machine) · machine idle |',
    '|---|---|---|---|---|---|---|---|---|',
    ...rows.map(
      (r) =>
        `| ${r.scenario.label} | ${r.system} | ${fmt(r.perSecond, 0)} | ${fmt(r.pushedPerSecond, 0)} | ` +
        `${fmt(r.p50, 1)} | ${fmt(r.p99, 1)} | ${r.errors} | ${n(r.unacked)} | ${cpuText(r.cpu)} |`,
    ),
  ].join('\n');
}

const cap = (s: string): string => s.charAt(0).toUpperCase() + s.slice(1);

/** The issue's targets, each met or not with its numbers. */
export function queueTargets(rows: QueueRow[]): string {
  const find = (key: string, kind: SystemKind): QueueRow | undefined =>
    rows.find((r) => r.scenario.key === key && r.kind === kind);
  const lines: string[] = [];
  const bullUnbatched = find('unbatched', 'bullmq');
  const dssUnbatched = find('unbatched', 'dss');
  if (bullUnbatched && dssUnbatched) {
    const x = dssUnbatched.perSecond / bullUnbatched.perSecond;
    lines.push(
      `- Unbatched throughput ≥ BullMQ's: **${x >= 1 ? 'met' : 'not met'}** (DSS ${fmt(dssUnbatched.perSecond, 0)} ` +
        `vs BullMQ ${fmt(bullUnbatched.perSecond, 0)} msgs/s = ${fmt(x, 2)}×).`,
    );
  }
  const dssBatched = find('batched', 'dss');
  if (bullUnbatched && dssBatched) {
    const x = dssBatched.perSecond / bullUnbatched.perSecond;
    lines.push(
      `- Batched throughput ≥ 2× BullMQ's unbatched: **${x >= 2 ? 'met' : 'not met'}** (DSS batched ` +
        `${fmt(dssBatched.perSecond, 0)} vs BullMQ unbatched ${fmt(bullUnbatched.perSecond, 0)} msgs/s = ${fmt(x, 2)}×).`,
    );
  }
  for (const key of ['rate-unbatched', 'rate-batched']) {
    const d = find(key, 'dss');
    if (!d || d.scenario.rate === undefined) continue;
    const kept = d.perSecond >= 0.97 * d.scenario.rate;
    const ok = kept && d.p99 < 100;
    const b = find(key, 'bullmq');
    lines.push(
      `- ${cap(d.scenario.label)}: push→ack p99 < 100 ms with the rate ` +
        `sustained (≥ 97 % acked): **${ok ? 'met' : 'not met'}** (DSS p99 ${fmt(d.p99, 1)} ms, p50 ${fmt(d.p50, 1)} ms, ` +
        `${fmt(d.perSecond, 0)} msgs/s acked` +
        (b ? `; BullMQ p99 ${fmt(b.p99, 1)} ms at ${fmt(b.perSecond, 0)} msgs/s` : '') +
        `).`,
    );
  }
  for (const [many, one] of [
    ['many-unbatched', 'unbatched'],
    ['many-batched', 'batched'],
  ] as const) {
    const m = find(many, 'dss');
    const o = find(one, 'dss');
    if (!m) continue;
    const owners = m.owners ? [...m.owners].map(([id, k]) => `${id} ${k}`).join(', ') : '';
    lines.push(
      `- ${cap(m.scenario.label)} (no target; for scale): ${fmt(m.perSecond, 0)} msgs/s` +
        (o ? ` vs ${fmt(o.perSecond, 0)} on one queue (${fmt(m.perSecond / o.perSecond, 2)}×)` : '') +
        (owners ? `; queues owned: ${owners}` : '') +
        '.',
    );
  }
  return lines.join('\n');
}

/** The whole `queue` section of docs/BENCHMARKS.md. */
export function queueSection(
  rows: QueueRow[],
  meta: { date: string; machine: string; seconds: number; revision: string },
): string {
  const settings = Object.entries(process.env)
    .filter(([k, v]) => k.startsWith('BENCH_') && v !== undefined)
    .map(([k, v]) => `${k}=${v} `)
    .sort()
    .join('');
  const short =
    meta.seconds < 10
      ? `**Short validation run (${meta.seconds} s per row): not a measurement to quote.**\n\n`
      : '';
  const warm = Math.min(Number(process.env.BENCH_QUEUE_WARMUP_S ?? 2), meta.seconds / 5);
  const ring = (() => {
    const ids = ['node1', 'node2', 'node3'];
    const r = new HashRing(ids, DEFAULT_VNODES);
    const counts = new Map(ids.map((id) => [id, 0]));
    for (let i = 0; i < MANY; i++) {
      const o = r.owner(`bench.ring.q${i}`);
      counts.set(o, (counts.get(o) ?? 0) + 1);
    }
    return [...counts].map(([id, k]) => `${id} ${k}`).join(', ');
  })();
  const errors = rows
    .filter((r) => r.errors > 0)
    .map(
      (r) =>
        `- ${r.scenario.label}, ${r.system}: ` +
        r.errorKinds
          .slice(0, 4)
          .map(([k, c]) => `${c} × \`${k}\``)
          .join(', '),
    );
  return (
    `## Queue: DSS vs BullMQ vs raw Redis\n\n${short}${meta.date}, ${meta.machine}; ` +
    `\`${settings}npm run bench -- queue\` ` +
    `(${meta.seconds} s measured per row after a ${fmt(warm, 1)} s warm-up; ` +
    (QUEUE_WARM_UP_S > 0
      ? `each system first gets an unmeasured ${QUEUE_WARM_UP_S} s row, after its own warm-up (unbatched, flat out; for DSS on ` +
        `${n(MANY)} queues, so every node gets its share) once all are up, so that no row measures cold ` +
        `JavaScript; `
      : '') +
    `every system on loopback on ` +
    `this machine, started by the bench; for each scenario the systems run one after the other, never ` +
    `at once; ${meta.revision}).\n\n` +
    `${PRODUCERS} producers and ${CONSUMERS} consumers in the bench process move small JSON messages ` +
    `(about 110 bytes: \`{t, p, s, kind, order, amount, tags}\`). A message carries its push time; its ` +
    `push→ack latency is taken when the ack that removes it has completed. Flat out, each producer ` +
    `pushes as fast as its answers come back, holding back while more than ` +
    `${BACKLOG_PER_SLOT} × ${PRODUCERS} × batch messages are unacked, so the latency there is mostly ` +
    `the time spent waiting in that backlog. At a fixed offered rate, producers are paced open-loop ` +
    `(each sends on its own fixed schedule, up to ${PACED_IN_FLIGHT} pushes in flight, and stamps ` +
    `the scheduled time, so falling behind counts as latency); "pushed/s" is the rate actually ` +
    `offered. Batched: pushes of ${BATCH} messages, pops of up to ${BATCH}, acks of the ids popped. ` +
    `"Unacked at end" is what was pushed but not acked when the row stopped (backlog plus deliveries ` +
    `in flight).\n\n` +
    `Each system has its own fresh \`redis-server\` (${redisVersionSeen ? `Redis ${redisVersionSeen}, ` : ''}\`--save "" ` +
    `--appendonly no\`: no persistence, for all three alike), flushed between rows.\n\n` +
    `- **${DSS}**: 3 queue-only node processes (TestCluster, peers direct, LOG_LEVEL=warn, defaults ` +
    `otherwise: ack timeout 30 s, 10 deliveries), an undici Pool per node (keep-alive). ` +
    (ROUTE_TO_OWNER
      ? `Clients send each request straight to the queue's owner, computed from the hash ring as the ` +
        `nodes (and the SDK) compute it, so nothing is relayed. `
      : `Producer i talks to node i mod 3 and consumer i to node (i + 1) mod 3, so about two requests ` +
        `in three reach a node that relays them to the queue's owner. `) +
    `Unbatched: \`POST /queue/push {queue, ` +
    `message}\`, \`/queue/pop {queue, wait_ms: ${DSS_WAIT_MS}}\`, \`/queue/ack {queue, id}\`; batched: ` +
    `\`messages\`, \`max: ${BATCH}\`, \`ids\`. Each is one Lua script on Redis.\n` +
    `- **BullMQ**: each producer its own \`Queue\` (\`add\`, batched \`addBulk\` of ${BATCH}); ` +
    `${CONSUMERS} \`Worker\`s with an empty processor, concurrency 1 unbatched and ${BATCH} batched; ` +
    `jobs \`removeOnComplete\`/\`removeOnFail\`; other options default. A job counts as acked at the ` +
    `Worker's \`completed\` event, emitted after its move to completed has returned.\n` +
    `- **Raw Redis (ceiling)**: \`LPUSH\` of the JSON text(s); a consumer \`BLMOVE\`s the oldest to a ` +
    `processing list (batched: then up to ${BATCH - 1} pipelined \`LMOVE\`s) and acks with \`LREM\` ` +
    `(pipelined). No ids, delivery counts, deadlines or redelivery. A connection per producer and ` +
    `per consumer.\n\n` +
    `CPU is each process's utime+stime over the measured window, in % of one core (the machine has ` +
    `${cpus().length}); for DSS, "owner" is the node owning the queue and "nodes" the other two; ` +
    `"bench" is the load generator (producers, consumers and, for BullMQ, its Workers); "other" is ` +
    `the rest of the machine's busy time (loopback softirqs, and other people's processes: each row ` +
    `waits first for under 25 % of a core of that). The load generator is one Node thread: where ` +
    `"bench" is near 100, it (for BullMQ: the Workers' own client work) is what limits the row.\n\n` +
    `${queueMarkdown(rows)}\n\n` +
    (errors.length ? `Errors:\n\n${errors.join('\n')}\n\n` : '') +
    `Targets from the issue (measured as is, not tuned):\n\n${queueTargets(rows)}\n\n` +
    `Owner balance: of ${n(MANY)} queue names (\`bench.ring.q0\`…), the ring (md5, ${DEFAULT_VNODES} ` +
    `vnodes per node) gives ${ring}` +
    (ownerCheck === null
      ? ''
      : `; the nodes' own answer (\`GET /queue/stats\` → owner) differed for ${ownerCheck}`) +
    `. In the ${n(MANY)}-queue rows consumer i takes queues i, i + ${CONSUMERS}, … in turn (\`wait_ms: 0\`, ` +
    `a 100 ms long poll after a whole round found nothing) and producer i pushes to the same queues ` +
    `round-robin.\n`
  );
}
