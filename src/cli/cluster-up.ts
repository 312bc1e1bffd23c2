// `dss cluster up`: a local cluster in the foreground. Spawns one `dss node` child per node (plus a
// private redis-server unless a Redis was given), prefixes their output, and on Ctrl-C/SIGTERM stops
// the nodes first, then Redis, leaving no process behind.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { ALL_ROLES, type NodeRole } from '../config/index.js';
import { humanizeLogLine } from './format.js';
import { RedisNotInstalledError, startLocalRedis, type LocalRedis } from './local-redis.js';
import {
  isPortFree,
  isRunning,
  pipePrefixed,
  signal,
  spawnReaper,
  stopChild,
  waitExit,
} from './processes.js';

export interface ClusterUpOptions {
  nodes: number;
  basePort: number;
  topology: 'combined' | 'split';
  redis?: string;
  dataDir: string;
  fast: boolean;
}

export interface NodeSpec {
  id: string;
  port: number;
  roles: NodeRole[];
}

const NODE_STOP_GRACE_MS = 10_000;
const REDIS_STOP_GRACE_MS = 5_000;
const STARTUP_TIMEOUT_MS = 30_000;

/** combined: node1..N with every role; split: N nodes per role, node_lock_1.., node_queue_1.., node_cache_1.. */
export function planNodes(opts: Pick<ClusterUpOptions, 'nodes' | 'basePort' | 'topology'>): NodeSpec[] {
  const specs: NodeSpec[] = [];
  if (opts.topology === 'combined') {
    for (let i = 1; i <= opts.nodes; i++) specs.push({ id: `node${i}`, port: 0, roles: [...ALL_ROLES] });
  } else {
    for (const role of ALL_ROLES) {
      for (let i = 1; i <= opts.nodes; i++) specs.push({ id: `node_${role}_${i}`, port: 0, roles: [role] });
    }
  }
  specs.forEach((s, i) => (s.port = opts.basePort + i));
  return specs;
}

export function clusterAddrs(specs: NodeSpec[]): string {
  return specs.map((s) => `${s.id}=127.0.0.1:${s.port}#${s.roles.join('+')}`).join(',');
}

function hasRedisInEnv(env: NodeJS.ProcessEnv): boolean {
  return ['REDIS_URL', 'REDIS_HOST', 'REDIS_CLUSTER_NODES', 'REDIS_SENTINELS'].some(
    (k) => (env[k] ?? '').trim() !== '',
  );
}

function fail(message: string): never {
  process.stderr.write(`dss: ${message}\n`);
  process.exit(1);
}

async function waitHealthy(url: string, child: ChildProcess, deadline: number): Promise<void> {
  while (Date.now() < deadline) {
    if (!isRunning(child)) throw new Error('exited during startup');
    try {
      const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) });
      await res.body?.cancel();
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`not healthy within ${STARTUP_TIMEOUT_MS / 1000} s`);
}

export async function clusterUp(opts: ClusterUpOptions): Promise<void> {
  const specs = planNodes(opts);
  const last = specs[specs.length - 1]!;
  if (last.port > 65535) fail(`ports ${opts.basePort}-${last.port} do not fit below 65536`);
  for (const s of specs) {
    if (!(await isPortFree(s.port)))
      fail(`port ${s.port} (for ${s.id}) is in use; is another cluster running? Try --base-port`);
  }

  const dataDir = resolve(opts.dataDir);
  const children = new Map<string, ChildProcess>();
  let redis: LocalRedis | null = null;
  let stopping = false;

  // Safety net: whatever path leads to exit, no child survives us.
  process.on('exit', () => {
    for (const c of children.values()) signal(c, 'SIGKILL');
    if (redis) signal(redis.child, 'SIGKILL');
  });

  const stopAll = async (code: number): Promise<never> => {
    stopping = true;
    process.stdout.write('dss: stopping the cluster...\n');
    // Nodes first (they write back dirty cache lines to Redis), then Redis.
    await Promise.all([...children.values()].map((c) => stopChild(c, NODE_STOP_GRACE_MS)));
    if (redis) await stopChild(redis.child, REDIS_STOP_GRACE_MS);
    process.stdout.write('dss: cluster stopped\n');
    process.exit(code);
  };

  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      if (stopping) {
        // Second Ctrl-C: no more waiting.
        process.stderr.write('dss: killing everything now\n');
        process.exit(1);
      }
      void stopAll(0);
    });
  }

  const childEnv: NodeJS.ProcessEnv = { ...process.env };
  if (opts.redis !== undefined) {
    childEnv.REDIS_URL = opts.redis;
  } else if (!hasRedisInEnv(process.env)) {
    try {
      redis = await startLocalRedis(dataDir);
    } catch (e) {
      if (e instanceof RedisNotInstalledError) fail(e.message);
      fail(`cannot start redis-server: ${e instanceof Error ? e.message : String(e)}`);
    }
    childEnv.REDIS_URL = redis.url;
    const redisChild = redis.child;
    void waitExit(redisChild).then(({ code, signal: sig }) => {
      if (!stopping)
        process.stderr.write(`dss: redis-server exited unexpectedly (${sig ?? `code ${code}`})\n`);
    });
  }

  // Internal routes (Raft, queue relays, cache coherence) are never left open: without a
  // CLUSTER_SECRET in the environment, this cluster gets a fresh random one, shared by its nodes only.
  let secretNote = 'from CLUSTER_SECRET';
  if ((childEnv.CLUSTER_SECRET ?? '').trim() === '') {
    childEnv.CLUSTER_SECRET = randomBytes(32).toString('hex');
    secretNote = 'generated for this run (set CLUSTER_SECRET to choose one)';
  }

  const addrs = clusterAddrs(specs);
  const entry = process.argv[1];
  if (entry === undefined) fail('cannot tell where the dss CLI lives (process.argv[1] is empty)');
  for (const s of specs) {
    const env: NodeJS.ProcessEnv = {
      ...childEnv,
      NODE_ID: s.id,
      NODE_HOST: '127.0.0.1',
      NODE_PORT: String(s.port),
      NODE_ROLES: s.roles.join(','),
      CLUSTER_ADDRS: addrs,
      DATA_DIR: resolve(dataDir, s.id),
      DSS_STOP_ON_STDIN_EOF: '1',
      ...(opts.fast
        ? {
            RAFT_ELECTION_TIMEOUT_MIN: '0.15',
            RAFT_ELECTION_TIMEOUT_MAX: '0.3',
            RAFT_HEARTBEAT_INTERVAL: '0.05',
          }
        : {}),
    };
    // execArgv keeps loaders such as `--import tsx` when the CLI itself runs from source.
    const child = spawn(process.execPath, [...process.execArgv, entry, 'node'], {
      env,
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
    });
    children.set(s.id, child);
    pipePrefixed(child, s.id, humanizeLogLine);
    void waitExit(child).then(({ code, signal: sig }) => {
      if (stopping) return;
      process.stderr.write(`dss: ${s.id} exited unexpectedly (${sig ?? `code ${code}`})\n`);
      if ([...children.values()].every((c) => !isRunning(c))) {
        process.stderr.write('dss: every node has exited\n');
        void stopAll(1);
      }
    });
  }

  if (redis?.child.pid !== undefined) {
    // Nodes stop by themselves when we die (their stdin closes); Redis does not, so a watchdog
    // stops it after them even if we are SIGKILLed.
    const nodePids = [...children.values()].flatMap((c) => (c.pid === undefined ? [] : [c.pid]));
    const reaper = spawnReaper(nodePids, [redis.child.pid], NODE_STOP_GRACE_MS + 2000);
    process.on('exit', () => signal(reaper, 'SIGKILL'));
  }

  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  try {
    await Promise.all(
      specs.map((s) =>
        waitHealthy(`http://127.0.0.1:${s.port}`, children.get(s.id)!, deadline).catch((e: unknown) => {
          throw new Error(`${s.id}: ${e instanceof Error ? e.message : String(e)}`);
        }),
      ),
    );
  } catch (e) {
    if (stopping) return;
    process.stderr.write(`dss: the cluster did not start: ${e instanceof Error ? e.message : String(e)}\n`);
    await stopAll(1);
  }

  const width = Math.max(...specs.map((s) => s.id.length));
  const lines = [
    '',
    `DSS cluster is up (${opts.topology}, ${specs.length} nodes${opts.fast ? ', fast Raft timeouts' : ''})`,
    ...specs.map((s) => `  ${s.id.padEnd(width)}  http://127.0.0.1:${s.port}  ${s.roles.join('+')}`),
    `  redis  ${redis ? `${redis.url} (AOF in ${redis.dir})` : (childEnv.REDIS_URL ?? 'from REDIS_* environment')}`,
    `Internal routes: protected by a cluster secret, ${secretNote}`,
    `Dashboard: http://127.0.0.1:${specs[0]!.port}/`,
    `Data: ${dataDir}`,
    'Press Ctrl-C to stop.',
    '',
  ];
  process.stdout.write(lines.join('\n') + '\n');
}
