// Lock benchmarks. `lock`: DSS side by side with etcd 3.4 (its v3 lock service through the JSON
// gateway) and a single Redis (SET NX PX / compare-and-delete), all started here on loopback.
// `lock-memory`: DSS RSS and Raft disk use under 100k held locks and a long run of acquire/release
// pairs, to show that snapshots and log compaction keep both flat. Run through `npm run bench`.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { Pool } from 'undici';
import { TestCluster } from '../test/helpers/cluster.js';
import { freePort } from '../test/helpers/proxy.js';
import { waitFor } from '../test/helpers/wait.js';
import { fmt, summarize } from './stats.js';
import {
  CLK_TCK,
  cpuBetween,
  cpuTextFor,
  cpuYardstickMs,
  measureUndisturbed,
  sampleCpu,
  waitQuiet,
  type CpuSample,
} from './cpu.js';

const ELECTION_MIN_MS = 1000;
const ELECTION_MAX_MS = 2000;
const HEARTBEAT_MS = 200;
/** Hold lifetime of benchmark locks: far longer than any pair, so nothing expires mid-run. */
const PAIR_TTL_MS = 30_000;
/** How long a blocked acquire may wait (DSS wait_ms, the Redis retry loop, the etcd request). */
const WAIT_MS = 10_000;
const REQUEST_TIMEOUT_MS = WAIT_MS + 5_000;
/**
 * Unmeasured load each system gets once, after it started and before its first row. A freshly
 * started DSS node runs cold JavaScript: on a fresh 3-node cluster, single-client acquires measured
 * in turns of 4 s (each after 3 s of requests to a constant route) took 2.5, 1.9, 1.5 and 1.5 ms at
 * p50, so without it the first row (1 client) measured mostly V8's warm-up. Every system gets the same.
 */
export const WARM_UP_MS = Number(process.env.BENCH_LOCK_WARM_UP_MS ?? 10_000);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const DIRECT_DSS = 'DSS (3 nodes, peers direct)';
const ETCD_BIN = process.env.ETCD_BIN ?? '/usr/bin/etcd';
const REDIS_BIN = process.env.REDIS_BIN ?? 'redis-server';

// ------------------------------------------------------------------ child processes we start

const children = new Set<ChildProcess>();
const tempDirs = new Set<string>();
process.on('exit', () => {
  for (const p of children) p.kill('SIGKILL');
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});
// Ctrl-C or a kill of the runner: exit normally, so the exit hooks (these and TestCluster's) reap
// every child process.
process.once('SIGINT', () => process.exit(130));
process.once('SIGTERM', () => process.exit(143));

function makeTempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

function removeTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

/** Start `bin` with stdout and stderr appended to `logFile`; it is killed at exit if still running. */
function startChild(bin: string, args: string[], logFile: string): ChildProcess {
  const fd = openSync(logFile, 'a');
  try {
    const proc = spawn(bin, args, { cwd: ROOT, stdio: ['ignore', fd, fd] });
    children.add(proc);
    proc.on('exit', () => children.delete(proc));
    proc.on('error', () => children.delete(proc));
    return proc;
  } finally {
    closeSync(fd);
  }
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
async function stopChild(proc: ChildProcess, graceMs = 5000): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null || proc.pid === undefined) return;
  const gone = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  proc.kill('SIGTERM');
  const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
  await gone;
  clearTimeout(timer);
}

function tail(file: string, lines = 20): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

// ------------------------------------------------------------------ HTTP

type Outcome = 'ok' | 'error' | 'timeout';

interface Reply {
  status: number;
  text: string;
  timedOut: boolean;
}

/**
 * The load generator's HTTP client: one keep-alive undici Pool per origin, asked for a path. An
 * Agent given the whole URL did the same with more work per call (URL parsing and its dispatch
 * path): about 100 µs of the bench's CPU per request against 60-70 µs for a Pool in an A/B of the
 * same 64-client DSS script, CPU that the systems under test then lacked on this 2-core machine.
 */
class HttpClient {
  private readonly pools = new Map<string, Pool>();

  private pool(url: string): { pool: Pool; path: string } {
    // scheme://host:port/path: the origin ends at the first '/' after the "//".
    const cut = url.indexOf('/', url.indexOf('//') + 2);
    const origin = cut < 0 ? url : url.slice(0, cut);
    let pool = this.pools.get(origin);
    if (!pool) {
      pool = new Pool(origin, { connections: 256, keepAliveTimeout: 60_000, keepAliveMaxTimeout: 60_000 });
      this.pools.set(origin, pool);
    }
    return { pool, path: cut < 0 ? '/' : url.slice(cut) };
  }

  async postJson(url: string, body: unknown, timeoutMs: number): Promise<Reply> {
    try {
      const { pool, path } = this.pool(url);
      const res = await pool.request({
        method: 'POST',
        path,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
        // undici's own timeouts, not AbortSignal.timeout: that timer cannot be cleared, so at 64
        // clients some 100,000 of them stay armed at once, and the load generator spent so much on
        // them that every system's row lost throughput (about 20 % for DSS in one A/B run).
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
      return { status: res.statusCode, text: await res.body.text(), timedOut: false };
    } catch (e) {
      const timedOut =
        e instanceof Error && (e.name === 'HeadersTimeoutError' || e.name === 'BodyTimeoutError');
      return { status: 0, text: e instanceof Error ? e.message : String(e), timedOut };
    }
  }

  async getText(url: string, timeoutMs = 5000): Promise<string> {
    const { pool, path } = this.pool(url);
    const res = await pool.request({
      method: 'GET',
      path,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    });
    const text = await res.body.text();
    if (res.statusCode !== 200) throw new Error(`GET ${url}: ${res.statusCode} ${text.slice(0, 200)}`);
    return text;
  }

  async close(): Promise<void> {
    await Promise.all([...this.pools.values()].map((p) => p.close()));
    this.pools.clear();
  }
}

// ------------------------------------------------------------------ systems under test

interface LockClient {
  acquire(resource: string, wait: boolean): Promise<Outcome>;
  release(resource: string): Promise<Outcome>;
  close(): Promise<void>;
}

interface LockSystem {
  readonly name: string;
  /** Name with the version found at start, for the tables. */
  readonly label: string;
  /** Server processes, for CPU accounting. */
  processes(): { label: string; pid: number }[];
  clients(n: number, scenario: string): Promise<LockClient[]>;
  /** A few error texts seen, for the console. */
  readonly errorSamples: string[];
  stop(): Promise<void>;
}

function noteError(samples: string[], what: string): void {
  if (samples.length < 5) samples.push(what.slice(0, 300));
}

/**
 * DSS on TestCluster: 3 node processes, clients POST /lock/acquire and /lock/release to the leader.
 * `direct`: the nodes reach each other directly instead of through TestCluster's TCP proxies (which
 * run inside the load generator), as etcd's members do.
 */
class DssSystem implements LockSystem {
  readonly errorSamples: string[] = [];
  /** Failed requests by kind ("acquire 503 no_leader"), for the report. */
  readonly errorKinds = new Map<string, number>();
  private readonly http = new HttpClient();

  private constructor(
    readonly name: string,
    readonly cluster: TestCluster,
    readonly leaderId: string,
  ) {}

  static async start(direct = false): Promise<DssSystem> {
    const cluster = await TestCluster.start({
      nodes: 3,
      electionMinMs: ELECTION_MIN_MS,
      electionMaxMs: ELECTION_MAX_MS,
      heartbeatMs: HEARTBEAT_MS,
      env: { LOG_LEVEL: 'warn' },
      direct,
    });
    tempDirs.add(cluster.dir); // removed by cluster.stop(); here only for an interrupted run
    try {
      const leader = await cluster.leader();
      return new DssSystem(direct ? DIRECT_DSS : 'DSS (3 nodes)', cluster, leader.id);
    } catch (e) {
      await cluster.stop();
      throw e;
    }
  }

  get label(): string {
    return this.name;
  }

  get url(): string {
    return this.cluster.node(this.leaderId).url;
  }

  processes(): { label: string; pid: number }[] {
    return this.cluster.nodes.flatMap((n) =>
      n.proc?.pid === undefined
        ? []
        : [{ label: n.id === this.leaderId ? 'leader' : 'follower', pid: n.proc.pid }],
    );
  }

  clients(n: number, scenario: string): Promise<LockClient[]> {
    return Promise.resolve(
      Array.from({ length: n }, (_, i) => this.client(`${scenario}-c${i}`, PAIR_TTL_MS, REQUEST_TIMEOUT_MS)),
    );
  }

  client(clientId: string, ttlMs: number, timeoutMs: number): LockClient {
    const url = this.url;
    const outcome = (r: Reply, what: string): Outcome => {
      if (r.status === 200) return 'ok';
      if (r.timedOut || (r.status === 409 && r.text.includes('wait_timeout'))) return 'timeout';
      noteError(this.errorSamples, `${what} ${r.status} ${r.text}`);
      const code = /"code":"([^"]+)"/.exec(r.text)?.[1] ?? r.text.slice(0, 60);
      const kind = `${what} ${r.status} ${code}`;
      this.errorKinds.set(kind, (this.errorKinds.get(kind) ?? 0) + 1);
      return 'error';
    };
    return {
      acquire: async (resource, wait) =>
        outcome(
          await this.http.postJson(
            `${url}/lock/acquire`,
            { resource, client_id: clientId, mode: 'exclusive', ttl_ms: ttlMs, wait_ms: wait ? WAIT_MS : 0 },
            timeoutMs,
          ),
          'acquire',
        ),
      release: async (resource) =>
        outcome(
          await this.http.postJson(`${url}/lock/release`, { resource, client_id: clientId }, timeoutMs),
          'release',
        ),
      close: () => Promise.resolve(),
    };
  }

  /** The named samples of one scrape of the node's /metrics, in order (NaN for one not found). */
  async metrics(nodeUrl: string, names: string[]): Promise<number[]> {
    const text = await this.http.getText(`${nodeUrl}/metrics`);
    return names.map((name) => {
      const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+]+)$`, 'm').exec(text);
      return m ? Number(m[1]) : NaN;
    });
  }

  async stop(): Promise<void> {
    try {
      await this.http.close();
    } finally {
      await this.cluster.stop();
      tempDirs.delete(this.cluster.dir);
    }
  }
}

interface EtcdMember {
  name: string;
  clientUrl: string;
  peerUrl: string;
  logFile: string;
  proc: ChildProcess | null;
  memberId: string;
}

interface EtcdStatus {
  header?: { member_id?: string };
  leader?: string;
}

class EtcdSystem implements LockSystem {
  readonly name = 'etcd 3.4 (3 members)';
  readonly errorSamples: string[] = [];
  readonly members: EtcdMember[] = [];
  private readonly http = new HttpClient();
  private leaderUrl = '';
  private leaderName = '';
  private version = '';

  private constructor(readonly dir: string) {}

  static async start(): Promise<EtcdSystem> {
    const sys = new EtcdSystem(makeTempDir('dss-bench-etcd-'));
    try {
      for (let i = 1; i <= 3; i++) {
        sys.members.push({
          name: `m${i}`,
          clientUrl: `http://127.0.0.1:${await freePort()}`,
          peerUrl: `http://127.0.0.1:${await freePort()}`,
          logFile: join(sys.dir, `m${i}.log`),
          proc: null,
          memberId: '',
        });
      }
      const initialCluster = sys.members.map((m) => `${m.name}=${m.peerUrl}`).join(',');
      for (const m of sys.members) {
        m.proc = startChild(
          ETCD_BIN,
          [
            '--name',
            m.name,
            '--data-dir',
            join(sys.dir, m.name),
            '--listen-client-urls',
            m.clientUrl,
            '--advertise-client-urls',
            m.clientUrl,
            '--listen-peer-urls',
            m.peerUrl,
            '--initial-advertise-peer-urls',
            m.peerUrl,
            '--initial-cluster',
            initialCluster,
            '--initial-cluster-token',
            'dss-bench',
            '--initial-cluster-state',
            'new',
            '--logger',
            'zap',
            '--log-outputs',
            'stderr',
            '--log-level',
            'warn',
          ],
          m.logFile,
        );
      }
      try {
        await sys.findLeader();
      } catch (e) {
        for (const m of sys.members) process.stderr.write(`--- etcd ${m.name} log:\n${tail(m.logFile)}\n`);
        throw e;
      }
      return sys;
    } catch (e) {
      await sys.stop();
      throw e;
    }
  }

  /** The member every member names as leader (POST /v3/maintenance/status on each). */
  private async findLeader(): Promise<void> {
    const leader = await waitFor(
      'an etcd leader agreed by all members',
      async () => {
        const sts = await Promise.all(
          this.members.map(async (m) => {
            const r = await this.http.postJson(`${m.clientUrl}/v3/maintenance/status`, {}, 1000);
            if (r.status !== 200) return null;
            const s = JSON.parse(r.text) as EtcdStatus & { version?: string };
            m.memberId = s.header?.member_id ?? '';
            this.version = s.version ?? this.version;
            return s;
          }),
        );
        const lead = sts[0]?.leader;
        if (!lead || lead === '0' || !sts.every((s) => s?.leader === lead)) return undefined;
        return this.members.find((m) => m.memberId === lead);
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    );
    this.leaderUrl = leader.clientUrl;
    this.leaderName = leader.name;
  }

  get label(): string {
    return this.version ? `etcd ${this.version} (3 members)` : this.name;
  }

  processes(): { label: string; pid: number }[] {
    return this.members.flatMap((m) =>
      m.proc?.pid === undefined
        ? []
        : [{ label: m.name === this.leaderName ? 'leader' : 'follower', pid: m.proc.pid }],
    );
  }

  async clients(n: number): Promise<LockClient[]> {
    // One lease per client (TTL 60 s, longer than a scenario); revoked when the scenario ends.
    return Promise.all(
      Array.from({ length: n }, async () => {
        const r = await this.http.postJson(`${this.leaderUrl}/v3/lease/grant`, { TTL: 60 }, 5000);
        const lease = r.status === 200 ? (JSON.parse(r.text) as { ID?: string }).ID : undefined;
        if (!lease) throw new Error(`etcd lease grant: ${r.status} ${r.text}`);
        return this.client(lease);
      }),
    );
  }

  private client(lease: string): LockClient {
    const url = this.leaderUrl;
    const keys = new Map<string, string>();
    const failed = (r: Reply, what: string): Outcome => {
      if (r.timedOut) return 'timeout';
      noteError(this.errorSamples, `${what} ${r.status} ${r.text}`);
      return 'error';
    };
    return {
      acquire: async (resource) => {
        const name = Buffer.from(resource).toString('base64');
        const r = await this.http.postJson(`${url}/v3/lock/lock`, { name, lease }, REQUEST_TIMEOUT_MS);
        if (r.status !== 200) return failed(r, 'lock');
        const key = (JSON.parse(r.text) as { key?: string }).key;
        if (!key) return failed(r, 'lock (no key)');
        keys.set(resource, key);
        return 'ok';
      },
      release: async (resource) => {
        const key = keys.get(resource);
        if (!key) return 'error';
        keys.delete(resource);
        const r = await this.http.postJson(`${url}/v3/lock/unlock`, { key }, REQUEST_TIMEOUT_MS);
        return r.status === 200 ? 'ok' : failed(r, 'unlock');
      },
      close: async () => {
        await this.http.postJson(`${url}/v3/lease/revoke`, { ID: lease }, 5000);
      },
    };
  }

  async stop(): Promise<void> {
    try {
      await this.http.close();
    } finally {
      await Promise.all(this.members.map((m) => (m.proc ? stopChild(m.proc) : Promise.resolve())));
      removeTempDir(this.dir);
    }
  }
}

/** Compare-and-delete: release only a lock this client holds. */
const RELEASE_LUA = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end`;
type LockRedis = Redis & { releaseIfOwner(key: string, owner: string): Promise<number> };

class RedisSystem implements LockSystem {
  readonly name = 'Redis (single, no replication)';
  readonly errorSamples: string[] = [];
  private readonly conns: Redis[] = [];
  private proc: ChildProcess | null = null;
  private port = 0;
  private version = '';

  private constructor(readonly dir: string) {}

  static async start(): Promise<RedisSystem> {
    const sys = new RedisSystem(makeTempDir('dss-bench-redis-'));
    const logFile = join(sys.dir, 'redis.log');
    try {
      sys.port = await freePort();
      sys.proc = startChild(
        REDIS_BIN,
        [
          '--port',
          String(sys.port),
          '--bind',
          '127.0.0.1',
          '--save',
          '',
          '--appendonly',
          'no',
          '--dir',
          sys.dir,
        ],
        logFile,
      );
      const probe = await sys.connect();
      try {
        const info = await probe.info('server');
        sys.version = /redis_version:(\S+)/.exec(info)?.[1] ?? '';
      } finally {
        probe.disconnect();
      }
      return sys;
    } catch (e) {
      process.stderr.write(`--- redis log:\n${tail(logFile)}\n`);
      await sys.stop();
      throw e;
    }
  }

  get label(): string {
    return this.version ? `Redis ${this.version} (single, no replication)` : this.name;
  }

  private async connect(): Promise<LockRedis> {
    const r = new Redis({
      host: '127.0.0.1',
      port: this.port,
      lazyConnect: true,
      maxRetriesPerRequest: 1,
      retryStrategy: (times) => (times > 50 ? null : 100),
    });
    // Connection errors surface as failed commands (counted there); the event needs a listener.
    r.on('error', () => undefined);
    r.defineCommand('releaseIfOwner', { numberOfKeys: 1, lua: RELEASE_LUA });
    await waitFor(
      'redis-server to answer',
      async () => {
        if (r.status === 'wait' || r.status === 'end') await r.connect();
        return (await r.ping()) === 'PONG';
      },
      { timeoutMs: 10_000, intervalMs: 100 },
    );
    return r as LockRedis;
  }

  processes(): { label: string; pid: number }[] {
    return this.proc?.pid === undefined ? [] : [{ label: 'redis', pid: this.proc.pid }];
  }

  async clients(n: number, scenario: string): Promise<LockClient[]> {
    return Promise.all(
      Array.from({ length: n }, async (_, i) => {
        const r = await this.connect();
        this.conns.push(r);
        return this.client(r, `${scenario}-c${i}`);
      }),
    );
  }

  private client(r: LockRedis, clientId: string): LockClient {
    const fail = (e: unknown, what: string): Outcome => {
      noteError(this.errorSamples, `${what} ${e instanceof Error ? e.message : String(e)}`);
      return 'error';
    };
    return {
      acquire: async (resource, wait) => {
        const deadline = performance.now() + WAIT_MS;
        try {
          for (;;) {
            if ((await r.set(`lock:${resource}`, clientId, 'PX', PAIR_TTL_MS, 'NX')) === 'OK') return 'ok';
            if (!wait) return fail(new Error('held'), 'SET NX');
            if (performance.now() > deadline) return 'timeout';
            await delay(1);
          }
        } catch (e) {
          return fail(e, 'SET NX');
        }
      },
      release: async (resource) => {
        try {
          return (await r.releaseIfOwner(`lock:${resource}`, clientId)) === 1
            ? 'ok'
            : fail(new Error('not the owner'), 'release');
        } catch (e) {
          return fail(e, 'release');
        }
      },
      close: async () => {
        const i = this.conns.indexOf(r);
        if (i >= 0) this.conns.splice(i, 1);
        await r.quit().catch(() => r.disconnect());
      },
    };
  }

  async stop(): Promise<void> {
    for (const c of this.conns.splice(0)) c.disconnect();
    if (this.proc) await stopChild(this.proc);
    removeTempDir(this.dir);
  }
}

// ------------------------------------------------------------------ CPU text

const cpuText = cpuTextFor([
  ['leader', 'leader'],
  ['follower', 'followers'],
  ['redis', 'redis'],
  ['bench', 'bench'],
  ['other', 'other'],
]);

// ------------------------------------------------------------------ scenarios

export interface Scenario {
  key: string;
  label: string;
  clients: number;
  resource: (i: number) => string;
  /** Whether acquires block until granted (hot resources). */
  wait: boolean;
}

export const SCENARIOS: Scenario[] = [
  { key: 'one', label: '1 client', clients: 1, resource: () => 'bench.one', wait: false },
  {
    key: 'distinct',
    label: '64 clients, 64 distinct resources',
    clients: 64,
    resource: (i) => `bench.distinct.${i}`,
    wait: false,
  },
  {
    key: 'hot',
    label: '64 clients, 4 hot resources',
    clients: 64,
    resource: (i) => `bench.hot.${i % 4}`,
    wait: true,
  },
];

export interface LockRunResult {
  system: string;
  scenario: Scenario;
  seconds: number;
  pairs: number;
  perSecond: number;
  pairP50: number;
  pairP99: number;
  acquireP50: number;
  errors: number;
  timeouts: number;
  cpu: { label: string; pct: number }[];
}

async function runScenario(
  sys: LockSystem,
  sc: Scenario,
  seconds: number,
  others: { label: string; pid: number }[],
): Promise<LockRunResult> {
  const clients = await sys.clients(sc.clients, sc.key);
  try {
    // The idle systems' processes count too (as "idle system"), so they are not "other" load.
    const procs = [
      ...sys.processes(),
      { label: 'bench', pid: process.pid },
      ...others.map((p) => ({ label: 'idle system', pid: p.pid })),
    ];
    await waitQuiet(procs);
    const warmMs = Math.min(2000, seconds * 200);
    const start = performance.now();
    const measureFrom = start + warmMs;
    const end = measureFrom + seconds * 1000;
    let cpu0: CpuSample | null = null;
    const timer = setTimeout(() => (cpu0 = sampleCpu(procs)), warmMs);
    const pairs: number[] = [];
    const acquires: number[] = [];
    let errors = 0;
    let timeouts = 0;
    const count = (o: Outcome): void => {
      if (o === 'error') errors++;
      else if (o === 'timeout') timeouts++;
    };
    await Promise.all(
      clients.map(async (client, i) => {
        const resource = sc.resource(i);
        while (performance.now() < end) {
          const t0 = performance.now();
          const a = await client.acquire(resource, sc.wait);
          const t1 = performance.now();
          if (a !== 'ok') {
            count(a);
            await delay(10);
            continue;
          }
          const r = await client.release(resource);
          const t2 = performance.now();
          if (r !== 'ok') {
            count(r);
            await delay(10);
            continue;
          }
          if (t0 >= measureFrom) {
            pairs.push(t2 - t0);
            acquires.push(t1 - t0);
          }
        }
      }),
    );
    clearTimeout(timer);
    const cpu1 = sampleCpu(procs);
    const first = cpu0 ?? sampleCpu(procs);
    const elapsed = (cpu1.at - first.at) / 1000;
    const p = summarize(pairs);
    return {
      system: sys.label,
      scenario: sc,
      seconds: elapsed,
      pairs: p.n,
      perSecond: p.n / elapsed,
      pairP50: p.p50,
      pairP99: p.p99,
      acquireP50: summarize(acquires).p50,
      errors,
      timeouts,
      cpu: cpuBetween(first, cpu1),
    };
  } finally {
    await Promise.all(clients.map((c) => c.close()));
  }
}

/** 64 clients acquiring and releasing distinct resources for WARM_UP_MS; nothing is recorded. */
async function warmUp(sys: LockSystem): Promise<void> {
  const clients = await sys.clients(64, 'warm');
  try {
    const end = performance.now() + WARM_UP_MS;
    await Promise.all(
      clients.map(async (client, i) => {
        while (performance.now() < end) {
          if ((await client.acquire(`bench.warm.${i}`, false)) === 'ok')
            await client.release(`bench.warm.${i}`);
          else await delay(10);
        }
      }),
    );
  } finally {
    await Promise.all(clients.map((c) => c.close()));
  }
}

/**
 * All three systems up at once (idle ones cost only their heartbeats), the scenarios interleaved
 * (for each scenario: DSS, etcd, Redis) so a drift in the machine's load hits all three alike.
 */
export async function lockComparison(seconds: number): Promise<LockRunResult[]> {
  const systems: LockSystem[] = [];
  const results: LockRunResult[] = [];
  try {
    systems.push(await DssSystem.start());
    if (process.env.BENCH_LOCK_DIRECT !== '0') systems.push(await DssSystem.start(true));
    systems.push(await EtcdSystem.start());
    systems.push(await RedisSystem.start());
    for (const sys of systems) await warmUp(sys);
    for (const sc of SCENARIOS) {
      for (const sys of systems) {
        const others = systems.filter((x) => x !== sys).flatMap((x) => x.processes());
        const r = await measureUndisturbed(sys.label, () => runScenario(sys, sc, seconds, others));
        console.log(
          `${sc.label} | ${r.system}: ${fmt(r.perSecond, 0)} pairs/s, p50 ${fmt(r.pairP50, 2)} ms, ` +
            `p99 ${fmt(r.pairP99, 2)} ms, acquire p50 ${fmt(r.acquireP50, 2)} ms, ` +
            `errors ${r.errors}, timeouts ${r.timeouts}; CPU % of a core: ${cpuText(r.cpu)}`,
        );
        for (const e of sys.errorSamples.splice(0)) console.log(`  error sample: ${e}`);
        results.push(r);
      }
    }
    return results;
  } finally {
    for (const sys of systems.reverse()) {
      try {
        await sys.stop();
      } catch (e) {
        process.stderr.write(`stopping ${sys.name}: ${e instanceof Error ? e.message : String(e)}\n`);
      }
    }
  }
}

export function lockMarkdown(rs: LockRunResult[]): string {
  return [
    '| scenario | system | pairs | pairs/s | pair p50 (ms) | pair p99 (ms) | acquire p50 (ms) | errors / timeouts | CPU, % of one core (servers · load generator · rest of the machine) · machine idle |',
    '|---|---|---|---|---|---|---|---|---|',
    ...rs.map(
      (r) =>
        `| ${r.scenario.label} | ${r.system} | ${r.pairs} | ${fmt(r.perSecond, 0)} | ${fmt(r.pairP50, 2)} | ` +
        `${fmt(r.pairP99, 2)} | ${fmt(r.acquireP50, 2)} | ${r.errors} / ${r.timeouts} | ${cpuText(r.cpu)} |`,
    ),
  ].join('\n');
}

/**
 * The targets, each stated as met or not with the numbers behind it, for the system named
 * `dss` (the TestCluster rows by default).
 */
export function lockTargets(rs: LockRunResult[], dss = 'DSS (3 nodes)'): string {
  const find = (key: string, sys: string): LockRunResult | undefined =>
    rs.find((r) => r.scenario.key === key && r.system.startsWith(sys));
  const lines: string[] = [];
  for (const key of ['distinct', 'hot']) {
    const d = rs.find((r) => r.scenario.key === key && r.system === dss);
    const e = find(key, 'etcd');
    if (!d || !e) continue;
    const tput = d.perSecond / e.perSecond;
    const p99 = d.pairP99 / e.pairP99;
    const label = d.scenario.label;
    lines.push(
      `- ${label}, throughput ≥ 2× etcd: **${tput >= 2 ? 'met' : 'not met'}** ` +
        `(DSS ${fmt(d.perSecond, 0)} vs etcd ${fmt(e.perSecond, 0)} pairs/s = ${fmt(tput, 2)}×).`,
      `- ${label}, p99 ≤ ½ etcd's: **${p99 <= 0.5 ? 'met' : 'not met'}** ` +
        `(DSS ${fmt(d.pairP99, 1)} vs etcd ${fmt(e.pairP99, 1)} ms = ${fmt(p99, 2)}×).`,
    );
  }
  const one = rs.find((r) => r.scenario.key === 'one' && r.system === dss);
  if (one)
    lines.push(
      `- Single-client acquire p50 ≤ 1 ms: **${one.acquireP50 <= 1 ? 'met' : 'not met'}** ` +
        `(${fmt(one.acquireP50, 2)} ms).`,
    );
  return lines.join('\n');
}

// ------------------------------------------------------------------ lock-memory

interface DirUsage {
  /** Bytes of every file under the directory. */
  total: number;
  /** WAL segments (wal-*.log): how many, and their bytes. */
  walFiles: number;
  walBytes: number;
  /** Snapshot files (snap-*): how many, and their bytes. */
  snapFiles: number;
  snapBytes: number;
}

/** What a node's DATA_DIR holds (files may vanish while we look: compaction runs meanwhile). */
function dirUsage(
  dir: string,
  into: DirUsage = { total: 0, walFiles: 0, walBytes: 0, snapFiles: 0, snapBytes: 0 },
): DirUsage {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return into;
  }
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      dirUsage(p, into);
      continue;
    }
    let size: number;
    try {
      size = statSync(p).size;
    } catch {
      continue; // deleted between readdir and stat
    }
    into.total += size;
    if (e.name.startsWith('wal-')) {
      into.walFiles++;
      into.walBytes += size;
    } else if (e.name.startsWith('snap-')) {
      into.snapFiles++;
      into.snapBytes += size;
    }
  }
  return into;
}

export interface MemoryPoint {
  label: string;
  /** RSS per node, leader first, bytes. */
  rss: number[];
  /** DATA_DIR usage per node, leader first. */
  disk: DirUsage[];
  commitIndex: number;
  held: number;
  /** Pairs per second since the previous point (pair phase only). */
  rate?: number;
  /** The leader's CPU time per pair since the previous point, µs (pair phase only). */
  leaderCpuPerPairUs?: number;
  /** cpuYardstickMs() in the bench process at this point. */
  yardstickMs: number;
  /** CPU use since the previous point, as in the lock table. */
  cpu?: string;
  /** Failed pairs since the previous point. */
  errors?: number;
  /** Per node, leader first: local snapshots taken so far and the seconds they held the Raft loop. */
  snapshots: { count: number; seconds: number }[];
  /** Per node, leader first: Raft term and elections started so far. */
  terms: number[];
  elections: number[];
}

export interface MemoryResult {
  held: number;
  heldSeconds: number;
  heldErrors: number;
  pairs: number;
  pairsSeconds: number;
  pairErrors: number;
  /** Failed requests by kind, e.g. "acquire 503 no_leader". */
  errorKinds: [string, number][];
  snapshotEvery: string;
  points: MemoryPoint[];
}

/** Run `total` jobs with `concurrency` workers; job(k, worker) for k = 0..total-1. */
async function pool(
  total: number,
  concurrency: number,
  job: (k: number, worker: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async (_, w) => {
      while (next < total) await job(next++, w);
    }),
  );
}

export async function lockMemory(held: number, pairs: number, concurrency = 64): Promise<MemoryResult> {
  const dss = await DssSystem.start();
  try {
    const c = dss.cluster;
    const order = [dss.leaderId, ...c.nodes.map((n) => n.id).filter((id) => id !== dss.leaderId)];
    const nodes = order.map((id) => c.node(id));
    const procs = [...dss.processes(), { label: 'bench', pid: process.pid }];
    let lastCpu = sampleCpu(procs);
    const point = async (
      label: string,
      rate?: number,
      errors?: number,
      pairsSince?: number,
    ): Promise<MemoryPoint> => {
      const cpuNow = sampleCpu(procs);
      const cpu = cpuNow.at - lastCpu.at > 500 ? cpuText(cpuBetween(lastCpu, cpuNow)) : '';
      const leaderTicks = (s: CpuSample): number => s.procs.find((p) => p.label === 'leader')?.ticks ?? NaN;
      const leaderCpuPerPairUs =
        pairsSince === undefined
          ? undefined
          : (((leaderTicks(cpuNow) - leaderTicks(lastCpu)) / CLK_TCK) * 1e6) / pairsSince;
      lastCpu = cpuNow;
      const yardstickMs = cpuYardstickMs();
      // One scrape per node; leader first, like `nodes`.
      const names = [
        'process_resident_memory_bytes',
        'lock_held',
        'raft_snapshot_duration_seconds_count',
        'raft_snapshot_duration_seconds_sum',
        'raft_term',
        'raft_elections_total',
      ] as const;
      const [scrapes, st] = await Promise.all([
        Promise.all(nodes.map((n) => dss.metrics(n.url, [...names]))),
        c.status(dss.leaderId),
      ]);
      const col = (name: (typeof names)[number]): number[] => scrapes.map((v) => v[names.indexOf(name)]!);
      const [rss, snapCount, snapSum, terms, elections] = [
        col('process_resident_memory_bytes'),
        col('raft_snapshot_duration_seconds_count'),
        col('raft_snapshot_duration_seconds_sum'),
        col('raft_term'),
        col('raft_elections_total'),
      ];
      const heldNow = col('lock_held')[0]!;
      const p: MemoryPoint = {
        label,
        rss,
        disk: nodes.map((n) => dirUsage(n.dataDir)),
        commitIndex: st.raft.commit_index,
        held: heldNow,
        ...(rate === undefined ? {} : { rate }),
        ...(leaderCpuPerPairUs === undefined ? {} : { leaderCpuPerPairUs }),
        yardstickMs,
        ...(errors === undefined ? {} : { errors }),
        cpu,
        snapshots: snapCount.map((count, i) => ({ count, seconds: snapSum[i]! })),
        terms,
        elections,
      };
      console.log(
        `${label}: RSS ${p.rss.map((b) => fmt(b / 2 ** 20, 0)).join('/')} MiB, ` +
          `Raft dirs ${p.disk.map((d) => fmt(d.total / 2 ** 20, 1)).join('/')} MiB (leader first; leader: ` +
          `${p.disk[0]!.walFiles} WAL segments ${fmt(p.disk[0]!.walBytes / 2 ** 20, 1)} MiB, ` +
          `${p.disk[0]!.snapFiles} snapshots ${fmt(p.disk[0]!.snapBytes / 2 ** 20, 1)} MiB), ` +
          `commit index ${p.commitIndex}, locks held ${p.held}` +
          (rate === undefined ? '' : `, ${fmt(rate, 0)} pairs/s`) +
          (leaderCpuPerPairUs === undefined ? '' : `, leader CPU ${fmt(leaderCpuPerPairUs, 0)} µs/pair`) +
          `, yardstick ${fmt(yardstickMs, 1)} ms` +
          (errors === undefined ? '' : `, ${errors} failed pairs`) +
          `, snapshots ${snapText(p)}, terms ${terms.join('/')}, elections ${elections.join('/')}` +
          `; CPU % of a core: ${cpu}`,
      );
      for (const e of dss.errorSamples.splice(0)) console.log(`  error sample: ${e}`);
      return p;
    };
    const points: MemoryPoint[] = [await point('fresh cluster')];

    // Phase 1: `held` exclusive locks on distinct resources, held for the rest of the run.
    let heldErrors = 0;
    const t0 = performance.now();
    const holders = Array.from({ length: concurrency }, (_, w) =>
      dss.client(`holder-${w}`, 86_400_000, REQUEST_TIMEOUT_MS),
    );
    await pool(held, concurrency, async (k, w) => {
      if ((await holders[w]!.acquire(`mem.held.${k}`, false)) !== 'ok') heldErrors++;
    });
    const heldSeconds = (performance.now() - t0) / 1000;
    points.push(await point(`after ${held.toLocaleString('en-US')} locks taken`));

    // Phase 2: acquire/release pairs, 64 workers each on its own resource; a point every 100k.
    let pairErrors = 0;
    let done = 0;
    let lastErrors = 0;
    const workers = Array.from({ length: concurrency }, (_, w) =>
      dss.client(`pair-${w}`, PAIR_TTL_MS, REQUEST_TIMEOUT_MS),
    );
    const t1 = performance.now();
    let lastAt = t1;
    let lastDone = 0;
    await pool(pairs, concurrency, async (_k, w) => {
      const resource = `mem.pair.${w}`;
      const a = await workers[w]!.acquire(resource, false);
      const r = a === 'ok' ? await workers[w]!.release(resource) : a;
      if (r !== 'ok') pairErrors++;
      done++;
      if (done % 100_000 === 0 || done === pairs) {
        const now = performance.now();
        const since = done - lastDone;
        const rate = (since / (now - lastAt)) * 1000;
        lastAt = now;
        lastDone = done;
        const errors = pairErrors - lastErrors;
        lastErrors = pairErrors;
        // Only this worker waits for the metrics; the other 63 keep the load on.
        points.push(await point(`${done.toLocaleString('en-US')} pairs`, rate, errors, since));
      }
    });
    const pairsSeconds = (performance.now() - t1) / 1000;
    return {
      held,
      heldSeconds,
      heldErrors,
      pairs,
      pairsSeconds,
      pairErrors,
      errorKinds: [...dss.errorKinds.entries()].sort((a, b) => b[1] - a[1]),
      snapshotEvery: process.env.RAFT_SNAPSHOT_EVERY ?? '10000 (default)',
      points,
    };
  } finally {
    await dss.stop();
  }
}

/** Snapshots taken per node so far, leader first, with the seconds they held the Raft loop. */
function snapText(p: MemoryPoint): string {
  return p.snapshots.map((s) => `${s.count} (${fmt(s.seconds, 1)} s)`).join(' / ');
}

export function lockMemoryMarkdown(r: MemoryResult): string {
  const mib = (b: number | undefined): string => fmt((b ?? NaN) / 2 ** 20, 0);
  const mibDisk = (d: DirUsage | undefined): string => fmt((d?.total ?? NaN) / 2 ** 20, 1);
  const parts = (d: DirUsage | undefined): string =>
    d
      ? `${d.walFiles} × WAL ${fmt(d.walBytes / 2 ** 20, 1)} + ${d.snapFiles} × snapshot ${fmt(d.snapBytes / 2 ** 20, 1)}`
      : '';
  return [
    '| point | leader RSS (MiB) | follower RSS (MiB) | leader Raft dir (MiB) | of which (MiB) | follower Raft dirs (MiB) | commit index | locks held | pairs/s since previous point | leader CPU per pair since previous point (µs) | CPU yardstick (ms) | failed pairs since previous point | snapshots so far, leader / followers (s the Raft loop was held) | term · elections started (leader / followers) | CPU since previous point, % of one core |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    ...r.points.map(
      (p) =>
        `| ${p.label} | ${mib(p.rss[0])} | ${mib(p.rss[1])} / ${mib(p.rss[2])} | ${mibDisk(p.disk[0])} | ` +
        `${parts(p.disk[0])} | ${mibDisk(p.disk[1])} / ${mibDisk(p.disk[2])} | ${p.commitIndex} | ${p.held} | ` +
        `${p.rate === undefined ? '' : fmt(p.rate, 0)} | ` +
        `${p.leaderCpuPerPairUs === undefined ? '' : fmt(p.leaderCpuPerPairUs, 0)} | ${fmt(p.yardstickMs, 1)} | ` +
        `${p.errors ?? ''} | ${snapText(p)} | ` +
        `${p.terms.join('/')} · ${p.elections.join('/')} | ${p.cpu ?? ''} |`,
    ),
  ].join('\n');
}

/** The commit measured, and the files under src/ that differed from it (others work in this tree). */
export function revision(): string {
  try {
    const git = (...args: string[]): string => execFileSync('git', args, { cwd: ROOT, encoding: 'utf8' });
    const sha = git('rev-parse', '--short', 'HEAD').trim();
    const dirty = git('status', '--porcelain', '--', 'src')
      .split('\n')
      .filter(Boolean)
      .map((l) => l.slice(3));
    return dirty.length ? `DSS at ${sha} plus uncommitted changes to ${dirty.join(', ')}` : `DSS at ${sha}`;
  } catch {
    return 'DSS revision unknown';
  }
}
