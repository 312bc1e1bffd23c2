// Cache benchmark (`npm run bench -- cache`): a 3-node cache cluster (roles cache, write-back) on its
// own redis-server.
//
// Hits: CLIENTS concurrent keep-alive clients read keys already in the target node's L1 (every read a
// hit), against two test-hook routes on the same node process: a constant (the HTTP ceiling) and one
// Redis GET (a cache-less read-through). In a round the three routes take turns in short slices, so
// that drift in the machine's load hits all alike; Redis commands per request come from INFO
// commandstats around each slice, with an idle interval as long as the cache row for comparison.
//
// Latency: sequential samples of each operation kind on the target node (fresh keys, set up by reads
// and writes on the other nodes first; the kinds take turns in blocks of 10), with the coherence
// messages of the kind (the sum over all nodes of cache_coherence_messages_total, which each home
// counts as it sends) and the Redis commands the nodes sent (MONITOR) per operation.
import { rmSync } from 'node:fs';
import { cpus } from 'node:os';
import { Redis } from 'ioredis';
import { Pool } from 'undici';
import { memKey } from '../src/cache/memory.js';
import { DEFAULT_VNODES, HashRing } from '../src/queue/ring.js';
import { TestCluster, type TestNode } from '../test/helpers/cluster.js';
import { RedisServer } from '../test/helpers/redis.js';
import { waitFor } from '../test/helpers/wait.js';
import { cpuBetween, cpuTextFor, measureUndisturbed, sampleCpu, waitQuiet, type CpuSample } from './cpu.js';
import { fmt, summarize } from './stats.js';

const CLIENTS = Number(process.env.BENCH_CACHE_CLIENTS ?? 50);
/** Keys the hit phase reads round-robin (all in the target's L1 beforehand). */
const HIT_KEYS = Number(process.env.BENCH_CACHE_KEYS ?? 1000);
/** Rounds of the three hit rows (const, cache hit, Redis GET). */
const ROUNDS = Number(process.env.BENCH_CACHE_ROUNDS ?? 2);
/** Slices per round and kind: the kinds take turns slice by slice, against drift in the machine's load. */
const SLICES = Number(process.env.BENCH_CACHE_SLICES ?? 5);
/** Measured sequential samples per operation kind, after WARM_SAMPLES unmeasured ones. */
const SAMPLES = Number(process.env.BENCH_CACHE_SAMPLES ?? 300);
const WARM_SAMPLES = 30;
/**
 * CACHE_MAX_SIZE of the nodes: above every key the run touches, so no eviction (and no write-back of
 * an evicted M line) lands inside a measurement.
 */
const MAX_SIZE = Number(process.env.BENCH_CACHE_MAX_SIZE ?? 20_000);
const LEASE_MS = 2000;
const REQUEST_TIMEOUT_MS = 15_000;
/** The node every measured request goes to. */
const TARGET = 'node1';

/** The bench's cache cluster: 3 cache-only nodes, direct peers, write-back, nothing evicted in a run. */
export function startCacheCluster(redisUrl: string): Promise<TestCluster> {
  return TestCluster.start({
    nodes: 3,
    roles: 'cache',
    direct: true,
    env: {
      REDIS_URL: redisUrl,
      LOG_LEVEL: 'warn',
      CACHE_MAX_SIZE: String(MAX_SIZE),
      CACHE_WRITE_POLICY: 'write-back',
      CACHE_LEASE_MS: String(LEASE_MS),
    },
  });
}
const OTHER = 'node2';
const THIRD = 'node3';

// Ctrl-C or a kill of the runner: exit normally so the exit hooks of TestCluster and RedisServer reap
// their children (bench/lock.ts installs the same when loaded); data dirs not stopped are removed.
const liveDirs = new Set<string>();
process.on('exit', () => {
  for (const d of liveDirs) rmSync(d, { recursive: true, force: true });
});
if (process.listenerCount('SIGINT') === 0) process.once('SIGINT', () => process.exit(130));
if (process.listenerCount('SIGTERM') === 0) process.once('SIGTERM', () => process.exit(143));

/** A small JSON value (about 100 bytes as text), the same for every system. */
function value(i: number): unknown {
  return { id: i, name: `item-${i}`, price: 42.5, tags: ['bench', 'cache'], stock: { a: 3, b: 7 } };
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

// ------------------------------------------------------------------ the system under test

interface Proc {
  label: string;
  pid: number;
}

/**
 * Redis commands as MONITOR sees them, between two ECHO markers the bench sends: those a client sent
 * (the nodes' round trips) apart from those a Lua script ran (MONITOR's source "lua"; INFO
 * commandstats counts both alike).
 */
class CommandLog {
  readonly sent = new Map<string, number>();
  readonly inScripts = new Map<string, number>();
  private recording = false;
  private marks = 0;
  private readonly waiters = new Map<string, () => void>();

  /** `monitor()` opens a second connection (in monitor mode); both are closed by close(). */
  private constructor(private readonly conns: Redis[]) {}

  static async open(port: number): Promise<CommandLog> {
    const conn = new Redis({ host: '127.0.0.1', port, lazyConnect: true });
    conn.on('error', () => undefined);
    await conn.connect();
    const monitor = await conn.monitor();
    monitor.on('error', () => undefined);
    const log = new CommandLog([conn, monitor]);
    monitor.on('monitor', (_time: string, args: string[], source: string) => log.line(args, source));
    return log;
  }

  private line(args: string[], source: string): void {
    const name = (args[0] ?? '?').toUpperCase();
    const mark = name === 'ECHO' ? /^bench-mark-(start|stop)-\d+$/.exec(args[1] ?? '') : null;
    if (mark) {
      this.recording = mark[1] === 'start';
      this.waiters.get(args[1]!)?.();
      this.waiters.delete(args[1]!);
      return;
    }
    if (!this.recording) return;
    const into = source === 'lua' ? this.inScripts : this.sent;
    into.set(name, (into.get(name) ?? 0) + 1);
  }

  /** Sends a marker through `client` and resolves once MONITOR has shown it. */
  private async mark(client: Redis, kind: 'start' | 'stop'): Promise<void> {
    const token = `bench-mark-${kind}-${++this.marks}`;
    const seen = new Promise<void>((resolve) => this.waiters.set(token, resolve));
    await client.echo(token);
    await seen;
  }

  async start(client: Redis): Promise<void> {
    this.sent.clear();
    this.inScripts.clear();
    await this.mark(client, 'start');
  }

  stop(client: Redis): Promise<void> {
    return this.mark(client, 'stop');
  }

  close(): void {
    for (const c of this.conns) c.disconnect();
  }
}

const total = (m: Map<string, number>): number => [...m.values()].reduce((a, b) => a + b, 0);
const names = (m: Map<string, number>): string => [...m].map(([k, n]) => `${k} ${n}`).join(', ') || 'none';

class CacheSystem {
  readonly ring: HashRing;
  readonly pools: Map<string, Pool>;
  private keySeq = 0;

  private constructor(
    readonly redisServer: RedisServer,
    readonly cluster: TestCluster,
    readonly redis: Redis,
  ) {
    this.ring = new HashRing(
      cluster.nodes.map((n) => n.id),
      DEFAULT_VNODES,
    );
    this.pools = new Map(
      cluster.nodes.map((n) => [
        n.id,
        new Pool(n.url, {
          connections: n.id === TARGET ? CLIENTS : 8,
          keepAliveTimeout: 60_000,
          keepAliveMaxTimeout: 60_000,
        }),
      ]),
    );
  }

  static async start(): Promise<CacheSystem> {
    const redisServer = await RedisServer.start();
    liveDirs.add(redisServer.dir);
    let cluster: TestCluster | null = null;
    let redis: Redis | null = null;
    try {
      cluster = await startCacheCluster(redisServer.url);
      liveDirs.add(cluster.dir);
      const c = cluster;
      // Each home grants only after its epoch and one lease of grace.
      await waitFor(
        'every cache node ready',
        async () => {
          for (const n of c.nodes) {
            const res = await fetch(`${n.url}/ready`, { signal: AbortSignal.timeout(1000) });
            if (!res.ok) return false;
          }
          return true;
        },
        { timeoutMs: 30_000, intervalMs: 100 },
      );
      redis = new Redis({ host: '127.0.0.1', port: redisServer.port, lazyConnect: true });
      redis.on('error', () => undefined);
      await redis.connect();
      return new CacheSystem(redisServer, c, redis);
    } catch (e) {
      redis?.disconnect();
      if (cluster) {
        await cluster.stop();
        liveDirs.delete(cluster.dir);
      }
      await redisServer.stop();
      liveDirs.delete(redisServer.dir);
      throw e;
    }
  }

  node(id: string): TestNode {
    return this.cluster.node(id);
  }

  pool(id: string): Pool {
    return this.pools.get(id)!;
  }

  processes(): Proc[] {
    const out: Proc[] = this.cluster.nodes.flatMap((n) =>
      n.proc?.pid === undefined ? [] : [{ label: n.id === TARGET ? 'target' : 'node', pid: n.proc.pid }],
    );
    if (this.redisServer.pid !== undefined) out.push({ label: 'redis', pid: this.redisServer.pid });
    return out;
  }

  async redisVersion(): Promise<string> {
    return /redis_version:(\S+)/.exec(await this.redis.info('server'))?.[1] ?? '?';
  }

  /** Commands Redis has run so far, by command, without INFO (which only the bench sends). */
  async commandStats(): Promise<Map<string, number>> {
    const text = await this.redis.info('commandstats');
    const out = new Map<string, number>();
    for (const m of text.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
      if (m[1] !== 'info') out.set(m[1]!, Number(m[2]));
    }
    return out;
  }

  /** Fresh key names whose home (ring owner) is `home`, each with a value in Redis. */
  async freshKeys(tag: string, home: string | null, n: number): Promise<string[]> {
    const keys: string[] = [];
    while (keys.length < n) {
      const k = `bench.${tag}.${++this.keySeq}`;
      if (home === null || this.ring.owner(k) === home) keys.push(k);
    }
    const pipe = this.redis.pipeline();
    keys.forEach((k, i) => pipe.set(memKey(k), JSON.stringify(value(i))));
    await pipe.exec();
    return keys;
  }

  async get(nodeId: string, key: string): Promise<{ status: number; source?: string; state?: string }> {
    const res = await this.pool(nodeId).request({
      path: `/cache/${key}`,
      method: 'GET',
      headersTimeout: REQUEST_TIMEOUT_MS,
      bodyTimeout: REQUEST_TIMEOUT_MS,
    });
    const text = await res.body.text();
    if (res.statusCode !== 200) return { status: res.statusCode };
    const body = JSON.parse(text) as { source?: string; state?: string };
    return { status: 200, source: body.source ?? '?', state: body.state ?? '?' };
  }

  async put(nodeId: string, key: string, v: unknown): Promise<{ status: number; state?: string }> {
    const res = await this.pool(nodeId).request({
      path: `/cache/${key}`,
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ value: v }),
      headersTimeout: REQUEST_TIMEOUT_MS,
      bodyTimeout: REQUEST_TIMEOUT_MS,
    });
    const text = await res.body.text();
    if (res.statusCode !== 200) return { status: res.statusCode };
    return { status: 200, state: (JSON.parse(text) as { state?: string }).state ?? '' };
  }

  /** Every `cache_*` counter sample of a node, by its metric name and labels (without node_id). */
  async metrics(nodeId: string): Promise<Map<string, number>> {
    const res = await this.pool(nodeId).request({ path: '/metrics', method: 'GET' });
    const text = await res.body.text();
    const out = new Map<string, number>();
    for (const m of text.matchAll(/^(cache_[a-z_]+)(?:\{([^}]*)\})? ([0-9.e+-]+)$/gm)) {
      const labels = (m[2] ?? '')
        .split(',')
        .filter((l) => l && !l.startsWith('node_id='))
        .join(',');
      out.set(labels ? `${m[1]}{${labels}}` : m[1]!, Number(m[3]));
    }
    return out;
  }

  async allMetrics(): Promise<Map<string, Map<string, number>>> {
    const out = new Map<string, Map<string, number>>();
    for (const n of this.cluster.nodes) out.set(n.id, await this.metrics(n.id));
    return out;
  }

  async stop(): Promise<void> {
    for (const p of this.pools.values()) await p.close();
    this.redis.disconnect();
    await this.cluster.stop();
    liveDirs.delete(this.cluster.dir);
    await this.redisServer.stop();
    liveDirs.delete(this.redisServer.dir);
  }
}

const addInto = (into: Map<string, number>, from: Map<string, number>): void => {
  for (const [k, n] of from) into.set(k, (into.get(k) ?? 0) + n);
};

function delta(a: Map<string, number>, b: Map<string, number>, name: string): number {
  return (b.get(name) ?? 0) - (a.get(name) ?? 0);
}

/** Sum of cache_coherence_messages_total over its kinds, between two scrapes of one node. */
function messagesBetween(a: Map<string, number>, b: Map<string, number>): number {
  let n = 0;
  for (const [k, v] of b) if (k.startsWith('cache_coherence_messages_total')) n += v - (a.get(k) ?? 0);
  return n;
}

function commandsBetween(a: Map<string, number>, b: Map<string, number>): number {
  let n = 0;
  for (const [k, v] of b) n += v - (a.get(k) ?? 0);
  return n;
}

function commandNames(a: Map<string, number>, b: Map<string, number>): string {
  const parts: string[] = [];
  for (const [k, v] of b) {
    const d = v - (a.get(k) ?? 0);
    if (d > 0) parts.push(`${k.toUpperCase()} ${d}`);
  }
  return parts.join(', ') || 'none';
}

// ------------------------------------------------------------------ CPU text

const cpuText = cpuTextFor([
  ['target', 'target'],
  ['node', 'nodes'],
  ['redis', 'redis'],
  ['bench', 'bench'],
  ['other', 'other'],
]);

// ------------------------------------------------------------------ hit throughput

type HitKind = 'const' | 'cache' | 'redis';

const HIT_LABEL: Record<HitKind, string> = {
  const: 'constant route (HTTP ceiling)',
  cache: 'cache hit (GET /cache/{key}, in L1)',
  redis: 'one Redis GET (read-through, no cache)',
};

export interface HitRow {
  kind: HitKind;
  label: string;
  round: number;
  seconds: number;
  requests: number;
  perSecond: number;
  p50: number;
  p99: number;
  errors: number;
  errorKinds: [string, number][];
  cpu: { label: string; pct: number }[];
  /** Every request of the row, warm-up included (for the per-request counts below). */
  totalRequests: number;
  /** Redis commands during the whole row (warm-up included), INFO excluded, and which. */
  redisCommands: number;
  redisCommandNames: string;
  /** Cache rows: the target's cache_hits_total and cache_misses_total over the whole row. */
  hits?: number;
  misses?: number;
  /** Length of the whole row (warm-up included), ms: the idle interval is as long. */
  spanMs: number;
}

/** What one slice of one kind measured. */
interface Slice {
  windowMs: number;
  spanMs: number;
  latencies: number[];
  errors: Map<string, number>;
  total: number;
  cpu: { label: string; pct: number }[];
  commands: Map<string, number>;
  hits: number;
  misses: number;
}

/**
 * CLIENTS closed-loop clients on one kind for `warmMs` (not measured) and then `windowMs`. Redis
 * commands and the target's hit and miss counters are read around the whole slice.
 */
async function hitSlice(
  sys: CacheSystem,
  paths: string[],
  procs: Proc[],
  warmMs: number,
  windowMs: number,
): Promise<Slice> {
  const pool = sys.pool(TARGET);
  const m0 = await sys.metrics(TARGET);
  const c0 = await sys.commandStats();
  const start = performance.now();
  const from = start + warmMs;
  const end = from + windowMs;
  let cpu0: CpuSample | null = null;
  if (warmMs === 0) cpu0 = sampleCpu(procs);
  const t0 = setTimeout(() => (cpu0 = sampleCpu(procs)), warmMs);
  const latencies: number[] = [];
  const errors = new Map<string, number>();
  let total = 0;
  await Promise.all(
    Array.from({ length: CLIENTS }, async (_, c) => {
      let i = c;
      while (performance.now() < end) {
        const path = paths[i % paths.length]!;
        i += CLIENTS;
        const t = performance.now();
        let err = '';
        try {
          const res = await pool.request({
            path,
            method: 'GET',
            headersTimeout: REQUEST_TIMEOUT_MS,
            bodyTimeout: REQUEST_TIMEOUT_MS,
          });
          const text = await res.body.text();
          if (res.statusCode !== 200) {
            err = `${res.statusCode} ${/"code":"([^"]+)"/.exec(text)?.[1] ?? text.slice(0, 60)}`;
          }
        } catch (e) {
          err = errorText(e).slice(0, 100);
        }
        const now = performance.now();
        total++;
        if (err) errors.set(err, (errors.get(err) ?? 0) + 1);
        else if (t >= from && now <= end) latencies.push(now - t);
      }
    }),
  );
  const cpu1 = sampleCpu(procs);
  clearTimeout(t0);
  const spanMs = performance.now() - start;
  const c1 = await sys.commandStats();
  const m1 = await sys.metrics(TARGET);
  const commands = new Map<string, number>();
  for (const [k, v] of c1) if (v - (c0.get(k) ?? 0) > 0) commands.set(k.toUpperCase(), v - (c0.get(k) ?? 0));
  return {
    windowMs,
    spanMs,
    latencies,
    errors,
    total,
    cpu: cpuBetween(cpu0 ?? sampleCpu(procs), cpu1),
    commands,
    hits: delta(m0, m1, 'cache_hits_total'),
    misses: delta(m0, m1, 'cache_misses_total'),
  };
}

/** CPU shares of several windows, each weighted by its length (same processes in the same order). */
function cpuAverage(
  parts: { cpu: { label: string; pct: number }[]; ms: number }[],
): { label: string; pct: number }[] {
  const first = parts[0]?.cpu ?? [];
  const ms = parts.reduce((a, p) => a + p.ms, 0);
  return first.map((c, i) => ({
    label: c.label,
    pct: parts.reduce((a, p) => a + (p.cpu[i]?.pct ?? 0) * p.ms, 0) / ms,
  }));
}

const HIT_KINDS: HitKind[] = ['const', 'cache', 'redis'];

/**
 * Seconds of unmeasured load on the three routes (a third each) before round 1: otherwise round 1
 * measures cold JavaScript on the target (HTTP stack, cache, ioredis) and in the load generator. A
 * fresh DSS lock cluster took some 10 s of load to settle (see the lock bench).
 */
export const CACHE_WARM_UP_S = Number(process.env.BENCH_CACHE_SYSTEM_WARM_UP_S ?? 9);

function hitPaths(keys: string[]): Record<HitKind, string[]> {
  return {
    const: keys.map(() => '/debug/bench/const'),
    cache: keys.map((k) => `/cache/${k}`),
    redis: keys.map((k) => `/debug/bench/redis_get?key=${encodeURIComponent(memKey(k))}`),
  };
}

/**
 * One round: the three kinds take turns in SLICES slices of `seconds / SLICES` s each (const,
 * cache, redis, const, ...), so that a change in the machine's load over the round hits all three
 * alike; each kind's first slice starts with a warm-up. A kind's row pools its slices.
 */
async function hitRound(
  sys: CacheSystem,
  keys: string[],
  seconds: number,
  round: number,
): Promise<{ rows: HitRow[]; cpu: { label: string; pct: number }[] }> {
  const paths = hitPaths(keys);
  const procs = [...sys.processes(), { label: 'bench', pid: process.pid }];
  await waitQuiet(procs);
  const warmMs = Math.min(Number(process.env.BENCH_CACHE_WARMUP_S ?? 2) * 1000, seconds * 200);
  const slices: Record<HitKind, Slice[]> = { const: [], cache: [], redis: [] };
  for (let s = 0; s < SLICES; s++) {
    for (const kind of HIT_KINDS) {
      slices[kind].push(
        await hitSlice(sys, paths[kind], procs, s === 0 ? warmMs : 0, (seconds * 1000) / SLICES),
      );
    }
  }
  const rows = HIT_KINDS.map((kind): HitRow => {
    const parts = slices[kind];
    const latencies = parts.flatMap((p) => p.latencies);
    const errors = new Map<string, number>();
    const commands = new Map<string, number>();
    for (const p of parts) {
      addInto(errors, p.errors);
      addInto(commands, p.commands);
    }
    const elapsed = parts.reduce((a, p) => a + p.windowMs, 0) / 1000;
    const lat = summarize(latencies);
    return {
      kind,
      label: HIT_LABEL[kind],
      round,
      seconds: elapsed,
      requests: latencies.length,
      perSecond: latencies.length / elapsed,
      p50: lat.p50,
      p99: lat.p99,
      errors: [...errors.values()].reduce((a, b) => a + b, 0),
      errorKinds: [...errors.entries()].sort((a, b) => b[1] - a[1]),
      cpu: cpuAverage(parts.map((p) => ({ cpu: p.cpu, ms: p.windowMs }))),
      totalRequests: parts.reduce((a, p) => a + p.total, 0),
      redisCommands: total(commands),
      redisCommandNames: names(commands),
      ...(kind === 'cache'
        ? { hits: parts.reduce((a, p) => a + p.hits, 0), misses: parts.reduce((a, p) => a + p.misses, 0) }
        : {}),
      spanMs: parts.reduce((a, p) => a + p.spanMs, 0),
    };
  });
  return { rows, cpu: cpuAverage(rows.map((r) => ({ cpu: r.cpu, ms: r.seconds }))) };
}

// ------------------------------------------------------------------ latency per operation kind

interface OpKind {
  key: string;
  label: string;
  /** Where the key's home is, and who else holds it, in words. */
  placement: string;
  home: string;
  /** Done on each key before it is measured, in order: a read or a write on a node. */
  setup: { node: string; op: 'get' | 'put' }[];
  op: 'get' | 'put';
  /** What a measured read must say it came from (reads only). */
  source?: 'memory' | 'peer';
  /** The coherence messages per operation SPEC 6 calls for. */
  messages: number;
}

const OP_KINDS: OpKind[] = [
  {
    key: 'miss-local',
    label: 'read miss, served from memory (Redis)',
    placement: `home ${TARGET} (the reader itself); no copy anywhere`,
    home: TARGET,
    setup: [],
    op: 'get',
    source: 'memory',
    messages: 0,
  },
  {
    key: 'miss-remote',
    label: 'read miss, served from memory (Redis)',
    placement: `home ${THIRD}; no copy anywhere`,
    home: THIRD,
    setup: [],
    op: 'get',
    source: 'memory',
    messages: 0,
  },
  {
    key: 'peer-e',
    label: 'peer hit (holder in E)',
    placement: `home ${THIRD}; ${OTHER} holds it in E`,
    home: THIRD,
    setup: [{ node: OTHER, op: 'get' }],
    op: 'get',
    source: 'peer',
    messages: 1,
  },
  {
    key: 'peer-m',
    label: 'peer hit (holder in M: writes back first)',
    placement: `home ${THIRD}; ${OTHER} holds it in M`,
    home: THIRD,
    setup: [{ node: OTHER, op: 'put' }],
    op: 'get',
    source: 'peer',
    messages: 1,
  },
  {
    key: 'write-e',
    label: 'write on E',
    placement: `home ${THIRD}; ${TARGET} holds it in E (read it first)`,
    home: THIRD,
    setup: [{ node: TARGET, op: 'get' }],
    op: 'put',
    messages: 0,
  },
  {
    key: 'write-m',
    label: 'write on M',
    placement: `home ${THIRD}; ${TARGET} holds it in M (wrote it first)`,
    home: THIRD,
    setup: [{ node: TARGET, op: 'put' }],
    op: 'put',
    messages: 0,
  },
  {
    key: 'write-s1',
    label: 'write on S, 1 sharer',
    placement: `home ${THIRD}; ${TARGET} and ${OTHER} hold it in S`,
    home: THIRD,
    setup: [
      { node: TARGET, op: 'get' },
      { node: OTHER, op: 'get' },
    ],
    op: 'put',
    messages: 1,
  },
  {
    key: 'write-s2',
    label: 'write on S, 2 sharers',
    placement: `home ${THIRD}; ${TARGET}, ${OTHER} and ${THIRD} hold it in S`,
    home: THIRD,
    setup: [
      { node: TARGET, op: 'get' },
      { node: OTHER, op: 'get' },
      { node: THIRD, op: 'get' },
    ],
    op: 'put',
    messages: 2,
  },
];

export interface OpRow {
  kind: OpKind;
  samples: number;
  p50: number;
  p99: number;
  mean: number;
  /** Sum over all nodes of cache_coherence_messages_total during the measured operations. */
  messages: number;
  /** Per node, for the console (the home counts them). */
  messagesByNode: [string, number][];
  /** Commands the nodes sent Redis during the measured operations (MONITOR), and which. */
  redisCommands: number;
  redisCommandNames: string;
  /** Commands the Lua scripts among them ran inside Redis. */
  scriptCommands: number;
  scriptCommandNames: string;
  /** Measured operations whose answer was not the expected one (status, source, state). */
  unexpected: number;
  unexpectedKinds: string[];
  setupFailures: number;
}

async function inParallel<T>(items: T[], width: number, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

/** One operation kind while it is measured. */
interface OpRun {
  kind: OpKind;
  keys: string[];
  setupFailures: number;
  times: number[];
  byNode: Map<string, number>;
  sent: Map<string, number>;
  inScripts: Map<string, number>;
  unexpected: string[];
}

/** Fresh keys for the kind, each brought to the kind's starting state. */
async function prepare(sys: CacheSystem, kind: OpKind): Promise<OpRun> {
  const keys = await sys.freshKeys(kind.key, kind.home, WARM_SAMPLES + SAMPLES);
  let setupFailures = 0;
  await inParallel(keys, 8, async (k) => {
    for (const s of kind.setup) {
      const r = s.op === 'get' ? await sys.get(s.node, k) : await sys.put(s.node, k, { setup: s.node });
      if (r.status !== 200) setupFailures++;
    }
  });
  return {
    kind,
    keys,
    setupFailures,
    times: [],
    byNode: new Map(),
    sent: new Map(),
    inScripts: new Map(),
    unexpected: [],
  };
}

/** The measured operation on the i-th key of the kind; returns its latency in ms. */
async function runOp(sys: CacheSystem, r: OpRun, i: number): Promise<number> {
  const k = r.keys[i]!;
  const t = performance.now();
  const a: { status: number; source?: string; state?: string } =
    r.kind.op === 'get' ? await sys.get(TARGET, k) : await sys.put(TARGET, k, value(i));
  const ms = performance.now() - t;
  if (a.status !== 200) r.unexpected.push(`status ${a.status}`);
  else if (r.kind.op === 'get' && a.source !== r.kind.source) r.unexpected.push(`source ${a.source ?? '?'}`);
  else if (r.kind.op === 'put' && a.state !== 'M') r.unexpected.push(`state ${a.state ?? '?'}`);
  return ms;
}

/**
 * Every kind's keys are set up first; then the kinds take turns in blocks of BLOCK sequential
 * operations, so that a change in the machine's load hits all kinds alike. Metrics and MONITOR
 * bracket each block, so its messages and commands are the block's alone.
 */
async function opRows(
  sys: CacheSystem,
  log: CommandLog,
): Promise<{ rows: OpRow[]; cpu: { label: string; pct: number }[] }> {
  const BLOCK = 10;
  const runs: OpRun[] = [];
  for (const kind of OP_KINDS) runs.push(await prepare(sys, kind));
  for (let i = 0; i < WARM_SAMPLES; i++) for (const r of runs) await runOp(sys, r, i);
  for (const r of runs) r.unexpected.length = 0;
  const procs = [...sys.processes(), { label: 'bench', pid: process.pid }];
  await waitQuiet(procs);
  const cpu0 = sampleCpu(procs);
  for (let b = WARM_SAMPLES; b < WARM_SAMPLES + SAMPLES; b += BLOCK) {
    for (const r of runs) {
      const m0 = await sys.allMetrics();
      await log.start(sys.redis);
      for (let i = b; i < Math.min(b + BLOCK, WARM_SAMPLES + SAMPLES); i++)
        r.times.push(await runOp(sys, r, i));
      await log.stop(sys.redis);
      const m1 = await sys.allMetrics();
      for (const [id, after] of m1)
        r.byNode.set(id, (r.byNode.get(id) ?? 0) + messagesBetween(m0.get(id)!, after));
      addInto(r.sent, log.sent);
      addInto(r.inScripts, log.inScripts);
    }
  }
  const cpu = cpuBetween(cpu0, sampleCpu(procs));
  const rows = runs.map((r): OpRow => {
    const lat = summarize(r.times);
    const byNode = [...r.byNode];
    return {
      kind: r.kind,
      samples: r.times.length,
      p50: lat.p50,
      p99: lat.p99,
      mean: lat.mean,
      messages: byNode.reduce((a, [, n]) => a + n, 0),
      messagesByNode: byNode,
      redisCommands: total(r.sent),
      redisCommandNames: names(r.sent),
      scriptCommands: total(r.inScripts),
      scriptCommandNames: names(r.inScripts),
      unexpected: r.unexpected.length,
      unexpectedKinds: [...new Set(r.unexpected)],
      setupFailures: r.setupFailures,
    };
  });
  return { rows, cpu };
}

// ------------------------------------------------------------------ the whole run

export interface CacheResult {
  hits: HitRow[];
  /** Redis commands (INFO excluded) over idle intervals as long as the cache-hit rows. */
  idle: { ms: number; commands: number; names: string }[];
  ops: OpRow[];
  /** CPU over the measured part of the latency phase. */
  opCpu: { label: string; pct: number }[];
  redisVersion: string;
  hitKeys: number;
}

export async function cacheBench(seconds: number): Promise<CacheResult> {
  const sys = await CacheSystem.start();
  try {
    const redisVersion = await sys.redisVersion();
    // Hit keys: in Redis, then read once on the target (each a miss, then E there).
    const hitKeys = await sys.freshKeys('hit', null, HIT_KEYS);
    let loadFailures = 0;
    await inParallel(hitKeys, 16, async (k) => {
      const r = await sys.get(TARGET, k);
      if (r.status !== 200) loadFailures++;
    });
    if (loadFailures > 0) throw new Error(`${loadFailures} of the hit keys could not be loaded into L1`);
    const homes = new Map<string, number>();
    for (const k of hitKeys) homes.set(sys.ring.owner(k), (homes.get(sys.ring.owner(k)) ?? 0) + 1);
    console.log(
      `${HIT_KEYS} hit keys in ${TARGET}'s L1; their homes: ${[...homes].map(([id, n]) => `${id} ${n}`).join(', ')}`,
    );

    if (CACHE_WARM_UP_S > 0) {
      const paths = hitPaths(hitKeys);
      const procs = [...sys.processes(), { label: 'bench', pid: process.pid }];
      for (const kind of HIT_KINDS) await hitSlice(sys, paths[kind], procs, 0, (CACHE_WARM_UP_S * 1000) / 3);
    }
    const hits: HitRow[] = [];
    const idle: CacheResult['idle'] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      const { rows } = await measureUndisturbed(`hit round ${round}`, () =>
        hitRound(sys, hitKeys, seconds, round),
      );
      for (const r of rows) {
        console.log(
          `round ${round} | ${r.label}: ${fmt(r.perSecond, 0)} req/s, p50 ${fmt(r.p50, 2)} ms, ` +
            `p99 ${fmt(r.p99, 2)} ms, errors ${r.errors}; Redis commands ${r.redisCommands} ` +
            `(${r.redisCommandNames}) for ${r.totalRequests} requests` +
            (r.hits !== undefined ? `; target hits ${r.hits}, misses ${r.misses}` : '') +
            `; target CPU ${fmt(targetUs(r), 1)} µs per request; CPU % of a core: ${cpuText(r.cpu)}`,
        );
        for (const [k, n] of r.errorKinds.slice(0, 5)) console.log(`  error: ${n} × ${k}`);
        hits.push(r);
      }
      // Background commands over an idle interval as long as the cache row's slices.
      const cacheRow = rows.find((r) => r.kind === 'cache')!;
      const c0 = await sys.commandStats();
      const t = performance.now();
      await new Promise((res) => setTimeout(res, cacheRow.spanMs));
      const c1 = await sys.commandStats();
      idle.push({
        ms: performance.now() - t,
        commands: commandsBetween(c0, c1),
        names: commandNames(c0, c1),
      });
      console.log(
        `  idle ${fmt(cacheRow.spanMs / 1000, 1)} s: Redis commands ${idle.at(-1)!.commands} (${idle.at(-1)!.names})`,
      );
    }

    const log = await CommandLog.open(sys.redisServer.port);
    let measured: Awaited<ReturnType<typeof opRows>>;
    try {
      measured = await opRows(sys, log);
    } finally {
      log.close();
    }
    const ops = measured.rows;
    console.log(`latency phase: CPU % of a core: ${cpuText(measured.cpu)}`);
    for (const r of ops) {
      const kind = r.kind;
      console.log(
        `${kind.label} (${kind.placement}): p50 ${fmt(r.p50, 2)} ms, p99 ${fmt(r.p99, 2)} ms over ` +
          `${r.samples}; coherence messages ${r.messages} (${r.messagesByNode.map(([id, n]) => `${id} ${n}`).join(', ')}); ` +
          `Redis commands sent ${r.redisCommands} (${r.redisCommandNames}; inside scripts ` +
          `${r.scriptCommandNames}); unexpected answers ${r.unexpected}` +
          (r.unexpectedKinds.length ? ` (${r.unexpectedKinds.join(', ')})` : '') +
          (r.setupFailures ? `; setup failures ${r.setupFailures}` : ''),
      );
    }
    return { hits, idle, ops, opCpu: measured.cpu, redisVersion, hitKeys: HIT_KEYS };
  } finally {
    await sys.stop();
  }
}

// ------------------------------------------------------------------ report

const ratio = (a: number, b: number): string => `${fmt(a / b, 2)}×`;

export function hitMarkdown(r: CacheResult): string {
  const rows = r.hits.map((h) => {
    const same = (k: HitKind): HitRow | undefined => r.hits.find((x) => x.round === h.round && x.kind === k);
    const c = same('const');
    const g = same('redis');
    const vsConst = h.kind === 'cache' && c ? ratio(h.perSecond, c.perSecond) : '';
    const vsRedis = h.kind === 'cache' && g ? ratio(h.perSecond, g.perSecond) : '';
    const perReq = h.totalRequests > 0 ? fmt(h.redisCommands / h.totalRequests, 3) : 'n/a';
    return (
      `| ${h.round} | ${h.label} | ${fmt(h.perSecond, 0)} | ${fmt(h.p50, 2)} | ${fmt(h.p99, 2)} | ` +
      `${vsConst} | ${vsRedis} | ${perReq} | ${fmt(targetUs(h), 0)} | ${h.errors} | ${cpuText(h.cpu)} |`
    );
  });
  return [
    '| round | route | req/s | p50 (ms) | p99 (ms) | cache hits ÷ const | cache hits ÷ Redis GET | Redis commands per request | target CPU per request (µs) | errors | CPU, % of one core · machine idle |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
    ...rows,
  ].join('\n');
}

/** CPU time of the target node per request answered in the measured window, µs. */
function targetUs(h: HitRow): number {
  const pct = h.cpu.find((c) => c.label === 'target')?.pct ?? NaN;
  return ((pct / 100) * 1e6) / h.perSecond;
}

/** Per round: cache hits ÷ const and ÷ Redis GET, in req/s and in target CPU per request. */
function hitRatios(
  r: CacheResult,
): { round: number; vsConst: number; vsRedis: number; cpuConst: number; cpuRedis: number }[] {
  const out = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const find = (k: HitKind): HitRow | undefined => r.hits.find((x) => x.round === round && x.kind === k);
    const c = find('const');
    const h = find('cache');
    const g = find('redis');
    if (!c || !h || !g) continue;
    out.push({
      round,
      vsConst: h.perSecond / c.perSecond,
      vsRedis: h.perSecond / g.perSecond,
      // A CPU ratio > 1: a hit costs the target less than the other route's request.
      cpuConst: targetUs(c) / targetUs(h),
      cpuRedis: targetUs(g) / targetUs(h),
    });
  }
  return out;
}

/** Redis commands per hit, each cache row less its idle interval. */
function perHit(r: CacheResult): { row: HitRow; idle: CacheResult['idle'][number]; net: number }[] {
  return r.hits
    .filter((h) => h.kind === 'cache')
    .map((row, i) => {
      const idle = r.idle[i] ?? { ms: 0, commands: 0, names: 'none' };
      return { row, idle, net: (row.redisCommands - idle.commands) / Math.max(1, row.hits ?? 0) };
    });
}

export function hitTargets(r: CacheResult): string {
  const lines: string[] = [];
  const ratios = hitRatios(r);
  const list = (xs: number[]): string => xs.map((x) => `${fmt(x, 2)}×`).join(', ');
  if (ratios.length > 0) {
    // Pooled over the rounds: all requests of a route in the window over all its seconds.
    const pooled = (k: HitKind): number => {
      const rows = r.hits.filter((h) => h.kind === k);
      return rows.reduce((a, h) => a + h.requests, 0) / rows.reduce((a, h) => a + h.seconds, 0);
    };
    const mc = pooled('cache') / pooled('const');
    const mg = pooled('cache') / pooled('redis');
    const okC = ratios.filter((x) => x.vsConst >= 0.8).length;
    const okG = ratios.filter((x) => x.vsRedis >= 1.3).length;
    lines.push(
      `- Hit throughput ≥ 0.8× the constant route's: **${mc >= 0.8 ? 'met' : 'not met'}** over all ` +
        `rounds (${fmt(pooled('cache'), 0)} vs ${fmt(pooled('const'), 0)} req/s = ${fmt(mc, 2)}×; by round ` +
        `${list(ratios.map((x) => x.vsConst))}: met in ${okC} of ${ratios.length}).`,
      `- Hit throughput ≥ 1.3× one Redis GET's: **${mg >= 1.3 ? 'met' : 'not met'}** over all ` +
        `rounds (${fmt(pooled('cache'), 0)} vs ${fmt(pooled('redis'), 0)} req/s = ${fmt(mg, 2)}×; by round ` +
        `${list(ratios.map((x) => x.vsRedis))}: met in ${okG} of ${ratios.length}).`,
      `- (No target; CPU of the target node per request, the other route's ÷ the hit's, by round: ` +
        `constant ${list(ratios.map((x) => x.cpuConst))}; Redis GET ${list(ratios.map((x) => x.cpuRedis))}.)`,
    );
  }
  for (const [i, p] of perHit(r).entries()) {
    lines.push(
      `- Redis commands per hit = 0, round ${i + 1}: **${p.net <= 0 ? 'met' : 'not met'}** ` +
        `(${p.row.redisCommands} commands [${p.row.redisCommandNames}] during ${(p.row.hits ?? 0).toLocaleString('en-US')} ` +
        `hits (${(p.row.misses ?? 0).toLocaleString('en-US')} misses) in ${fmt(p.row.spanMs / 1000, 1)} s; ` +
        `${p.idle.commands} [${p.idle.names}] in an idle ${fmt(p.idle.ms / 1000, 1)} s after it; ` +
        `net ${fmt(p.net, 4)} per hit).`,
    );
  }
  return lines.join('\n');
}

/** Commands sent per operation, by command, with what the scripts among them ran. */
function perOp(o: OpRow): string {
  const each = (text: string): string =>
    text === 'none'
      ? '0'
      : text
          .split(', ')
          .map((part) => {
            const [name, n] = part.split(' ');
            return `${fmt(Number(n) / o.samples, 2)} ${name}`;
          })
          .join(' + ');
  return each(o.redisCommandNames) + (o.scriptCommands > 0 ? ` (inside: ${each(o.scriptCommandNames)})` : '');
}

export function opMarkdown(r: CacheResult): string {
  return [
    `| operation on ${TARGET} | placement | samples | p50 (ms) | p99 (ms) | coherence messages per op (all nodes) | expected | Redis commands sent per op | unexpected answers |`,
    '|---|---|---|---|---|---|---|---|---|',
    ...r.ops.map(
      (o) =>
        `| ${o.kind.label} | ${o.kind.placement} | ${o.samples} | ${fmt(o.p50, 2)} | ${fmt(o.p99, 2)} | ` +
        `${fmt(o.messages / o.samples, 2)} | ${o.kind.messages} | ${perOp(o)} | ` +
        `${o.unexpected}${o.unexpectedKinds.length ? ` (${o.unexpectedKinds.join(', ')})` : ''} |`,
    ),
  ].join('\n');
}

export function opTargets(r: CacheResult): string {
  const writes = r.ops.filter((o) => o.kind.op === 'put');
  const bad = writes.filter((o) => o.messages !== o.kind.messages * o.samples);
  return (
    `- Coherence messages per write = number of other sharers (0 on E/M, 1, 2): ` +
    `**${bad.length === 0 ? 'met' : 'not met'}** (` +
    writes.map((o) => `${o.kind.label}: ${o.messages} for ${o.samples}`).join('; ') +
    `).`
  );
}

export function cacheSection(
  r: CacheResult,
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
  const warm = Math.min(Number(process.env.BENCH_CACHE_WARMUP_S ?? 2), meta.seconds / 5);
  return (
    `## Cache: hits vs the HTTP ceiling and a Redis GET; latency and messages per operation\n\n${short}` +
    `${meta.date}, ${meta.machine}; \`${settings}npm run bench -- cache\` (${meta.revision}).\n\n` +
    `A 3-node cache cluster (TestCluster, \`NODE_ROLES=cache\`, peers direct, LOG_LEVEL=warn, ` +
    `\`CACHE_WRITE_POLICY=write-back\`, \`CACHE_LEASE_MS=${LEASE_MS}\`, \`CACHE_MAX_SIZE=${MAX_SIZE}\` so ` +
    `that nothing is evicted during the run) on its own \`redis-server\` (Redis ${r.redisVersion}, ` +
    `no persistence). Every measured request goes to **${TARGET}** (the target), from the bench ` +
    `process on the same machine through an undici Pool (keep-alive).\n\n` +
    `### Hit throughput\n\n` +
    `${CLIENTS} concurrent clients, each sending its next request as soon as the previous one ` +
    `answered. In each of ${ROUNDS} rounds the three routes take turns in ${SLICES} slices of ` +
    `${fmt(meta.seconds / SLICES, 1)} s each (constant, cache, Redis GET, constant, …; never at once; ` +
    `a route's first slice starts with a ${fmt(warm, 1)} s warm-up), so that a change in the ` +
    `machine's load hits all three alike; a row pools its route's ${fmt(meta.seconds, 0)} s of a round` +
    (CACHE_WARM_UP_S > 0
      ? ` (before round 1, ${CACHE_WARM_UP_S} s of unmeasured load, a third on each route, so that no ` +
        `round measures cold JavaScript)`
      : '') +
    `. The cache row reads ` +
    `${r.hitKeys.toLocaleString('en-US')} keys round-robin that were read once on ${TARGET} ` +
    `beforehand (a miss each, then E there; their homes spread over the three nodes), so every read ` +
    `is an L1 hit (checked: the target's \`cache_misses_total\` did not move). The two comparison ` +
    `routes are test hooks (\`DSS_TEST_HOOKS=1\`) of the same node process, with the same Fastify ` +
    `stack and a response schema like the cache's: \`GET /debug/bench/const\` answers a constant, ` +
    `\`GET /debug/bench/redis_get?key=dss:mem:K\` does one Redis GET of the same keys' values, parses ` +
    `the JSON and sends it back. Ratios compare rows of one round, and the targets the rows pooled ` +
    `over all rounds. Redis commands are read from \`INFO commandstats\` (INFO itself left out) ` +
    `before and after each slice, warm-up included, and divided by all the requests; after each ` +
    `round as long an idle interval is read too, for background commands. CPU is each process's utime+stime over the measured window, in % of one core (the ` +
    `machine has ${cpus().length}): "target" is ${TARGET}, "nodes" the other two, "bench" the load ` +
    `generator, "other" the rest of the machine's busy time. "Target CPU per request" is the ` +
    `target's CPU time in the window divided by the requests it answered there: what one request ` +
    `costs the node, however fast the load generator (which shares the 2 cores) keeps up.\n\n` +
    `${hitMarkdown(r)}\n\nTargets from the issue:\n\n${hitTargets(r)}\n\n` +
    `### Latency and coherence messages per operation\n\n` +
    `Sequential requests (one at a time) to ${TARGET}: ${SAMPLES} measured per row after ` +
    `${WARM_SAMPLES} unmeasured ones, each on a fresh key whose value is in Redis and whose home ` +
    `(the ring owner that orders its transactions) is the node named. First every key of every row ` +
    `is brought to its starting state by reads and writes on the nodes named; then the rows take ` +
    `turns in blocks of 10 requests, so that a change in the machine's load hits all rows alike ` +
    `(CPU over the measured part, % of one core: ${cpuText(r.opCpu)}). Coherence ` +
    `messages are the snoops and invalidations homes sent (the sum over all nodes of ` +
    `\`cache_coherence_messages_total\` around each block), ` +
    `divided by the samples; a home's message to itself (a sharer that is the home) counts too but ` +
    `crosses no network. Redis commands per op are those the nodes sent, counted with \`MONITOR\` ` +
    `over the measured requests (each script call is one; what the script ran inside Redis is ` +
    `shown in parentheses). "Unexpected answers": a non-200, a read ` +
    `whose \`source\` was not the one the row is about, or a write not answered with state M.\n\n` +
    `${opMarkdown(r)}\n\nTargets from the issue:\n\n${opTargets(r)}\n`
  );
}
