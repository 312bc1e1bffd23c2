// Real node processes on loopback for integration tests. Every node reaches every other node
// through its own TcpProxy, so a test can partition the network for real; tests talk to nodes
// directly. Children are always reaped: stop() in an `after` hook, plus an exit-time safety net.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdtempSync, readFileSync, rmSync, type WriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DSS_ENTRY } from './entry.js';
import { reservePorts, TcpProxy, type ProxyMode } from './proxy.js';
import { waitFor } from './wait.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

export interface ClusterOptions {
  nodes?: number;
  electionMinMs?: number;
  electionMaxMs?: number;
  heartbeatMs?: number;
  roles?: string;
  env?: Record<string, string>;
  /**
   * Nodes reach each other directly instead of through a TcpProxy per pair (benchmarks: the proxies
   * cost a hop in the test process). partition() is then unavailable.
   */
  direct?: boolean;
  /** Extra node(1) flags for every node process, e.g. ['--cpu-prof'] when profiling. */
  nodeArgs?: string[];
  /**
   * Nodes serve HTTPS (pass TLS_CERT/TLS_KEY/TLS_CA in `env`); node URLs are https://. This process
   * must trust the CA for the helper's own requests (e.g. undici's setGlobalDispatcher).
   */
  https?: boolean;
}

export interface NodeStatus {
  node_id: string;
  raft: { state: string; term: number; leader_id: string | null; commit_index: number; last_applied: number };
}

export interface TestNode {
  id: string;
  port: number;
  url: string;
  dataDir: string;
  env: Record<string, string>;
  proc: ChildProcess | null;
  paused: boolean;
  logFile: string;
}

/** A node process ended while the test waited for it to become healthy. */
export class NodeExitedError extends Error {
  readonly portTaken: boolean;
  constructor(id: string, logTail: string) {
    super(`${id} exited before it became healthy; its output ends with:\n${logTail}`);
    this.portTaken = logTail.includes('address already in use');
  }
}

export class TestCluster {
  readonly dir: string;
  readonly nodes: TestNode[] = [];
  /** proxies.get(`${from}->${to}`): the path `from` uses to reach `to`. */
  private readonly proxies = new Map<string, TcpProxy>();
  private readonly logs: WriteStream[] = [];
  private nodeArgs: string[] = [];
  /** The end of each process's stderr: why it died, when it did. */
  private readonly stderrTails = new WeakMap<ChildProcess, string>();

  private constructor(dir: string) {
    this.dir = dir;
  }

  /**
   * Starts the nodes and waits until each is healthy. A node that dies because its port was taken
   * between choosing it and listening on it (another process's listener or the like) costs a fresh
   * start on new ports, at most twice.
   */
  static async start(opts: ClusterOptions = {}): Promise<TestCluster> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await TestCluster.startOnce(opts);
      } catch (e) {
        if (!(e instanceof NodeExitedError && e.portTaken) || attempt === 2) throw e;
      }
    }
  }

  private static async startOnce(opts: ClusterOptions): Promise<TestCluster> {
    const n = opts.nodes ?? 3;
    const c = new TestCluster(mkdtempSync(join(tmpdir(), 'dss-cluster-')));
    c.nodeArgs = opts.nodeArgs ?? [];
    try {
      // Held until the proxies listen, so no proxy is handed a node's port.
      const reserved = await reservePorts(n);
      const ports = reserved.ports;
      const ids = ports.map((_, i) => `node${i + 1}`);
      try {
        for (let i = 0; i < n && !opts.direct; i++) {
          for (let j = 0; j < n; j++) {
            if (i === j) continue;
            const p = new TcpProxy(ports[j]!);
            await p.listen();
            c.proxies.set(`${ids[i]}->${ids[j]}`, p);
          }
        }
      } finally {
        await reserved.release();
      }
      // Every node runs the same roles; CLUSTER_ADDRS says so, or peers would assume all roles.
      const roleSuffix = `#${(opts.roles ?? 'lock').split(',').join('+')}`;
      for (let i = 0; i < n; i++) {
        const id = ids[i]!;
        const addrs = ids
          .map(
            (peer, j) =>
              (peer === id || opts.direct
                ? `${peer}=127.0.0.1:${ports[j]}`
                : `${peer}=127.0.0.1:${c.proxies.get(`${id}->${peer}`)!.port}`) + roleSuffix,
          )
          .join(',');
        const dataDir = join(c.dir, id);
        c.nodes.push({
          id,
          port: ports[i]!,
          url: `${opts.https ? 'https' : 'http'}://127.0.0.1:${ports[i]}`,
          dataDir,
          logFile: join(c.dir, `${id}.log`),
          proc: null,
          paused: false,
          env: {
            NODE_ID: id,
            NODE_HOST: '127.0.0.1',
            NODE_PORT: String(ports[i]),
            CLUSTER_ADDRS: addrs,
            NODE_ROLES: opts.roles ?? 'lock',
            RAFT_ELECTION_TIMEOUT_MIN: String((opts.electionMinMs ?? 150) / 1000),
            RAFT_ELECTION_TIMEOUT_MAX: String((opts.electionMaxMs ?? 300) / 1000),
            RAFT_HEARTBEAT_INTERVAL: String((opts.heartbeatMs ?? 50) / 1000),
            DATA_DIR: dataDir,
            LOG_LEVEL: 'info',
            DSS_TEST_HOOKS: '1',
            ...opts.env,
          },
        });
      }
      for (const node of c.nodes) c.spawn(node);
      await Promise.all(c.nodes.map((node) => c.waitHealthy(node.id)));
      return c;
    } catch (e) {
      await c.stop();
      throw e;
    }
  }

  node(id: string): TestNode {
    const n = this.nodes.find((x) => x.id === id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  private spawn(node: TestNode): void {
    const log = createWriteStream(node.logFile, { flags: 'a' });
    this.logs.push(log);
    const args = [...this.nodeArgs, ...DSS_ENTRY, 'node'];
    const proc = spawn(process.execPath, args, {
      cwd: ROOT,
      env: { ...process.env, ...node.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    live.add(proc);
    proc.stdout.pipe(log, { end: false });
    proc.stderr.pipe(log, { end: false });
    proc.stderr.on('data', (chunk: Buffer) => {
      this.stderrTails.set(proc, ((this.stderrTails.get(proc) ?? '') + chunk.toString()).slice(-4_000));
    });
    proc.on('exit', () => {
      live.delete(proc);
      if (node.proc === proc) node.proc = null;
    });
    node.proc = proc;
    node.paused = false;
  }

  /**
   * A node from source (tsx) starts in 1–3 s on an idle machine, but three at once on 2 busy cores
   * were seen to take over 20 s: the deadline is for a start that is stuck, not a slow one.
   */
  async waitHealthy(id: string, timeoutMs = 45_000): Promise<void> {
    const node = this.node(id);
    const proc = node.proc;
    const outcome = await waitFor(
      `${id} healthy`,
      async () => {
        // A process that is gone will not become healthy: say why now, not at the deadline.
        if (proc === null || node.proc !== proc) return 'exited';
        return (await fetch(`${node.url}/health`)).ok ? 'healthy' : undefined;
      },
      { timeoutMs },
    );
    if (outcome === 'exited') {
      // stderr is complete once the process's pipes close.
      if (proc !== null && proc.stderr?.readableEnded === false) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, 2_000);
          proc.once('close', () => {
            clearTimeout(t);
            resolve();
          });
        });
      }
      throw new NodeExitedError(id, (proc !== null ? this.stderrTails.get(proc) : undefined) ?? '');
    }
  }

  /** SIGKILL (default) or another signal; waits until a killed process is gone. */
  async kill(id: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const node = this.node(id);
    const proc = node.proc;
    if (!proc) return;
    if (node.paused) proc.kill('SIGCONT');
    const gone = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    proc.kill(signal);
    await gone;
  }

  pause(id: string): void {
    const node = this.node(id);
    node.proc?.kill('SIGSTOP');
    node.paused = true;
  }

  resume(id: string): void {
    const node = this.node(id);
    node.proc?.kill('SIGCONT');
    node.paused = false;
  }

  async restart(id: string): Promise<void> {
    const node = this.node(id);
    if (node.proc) await this.kill(id);
    this.spawn(node);
    await this.waitHealthy(id);
  }

  /** Cut every link between the groups (both directions); nodes not named keep all their links. */
  partition(groups: string[][], mode: ProxyMode = 'blackhole'): void {
    if (this.proxies.size === 0) throw new Error('partition() needs a cluster started without `direct`');
    for (let a = 0; a < groups.length; a++) {
      for (let b = 0; b < groups.length; b++) {
        if (a === b) continue;
        for (const x of groups[a]!) for (const y of groups[b]!) this.proxies.get(`${x}->${y}`)?.setMode(mode);
      }
    }
  }

  heal(): void {
    for (const p of this.proxies.values()) p.setMode('pass');
  }

  async status(id: string): Promise<NodeStatus> {
    const res = await fetch(`${this.node(id).url}/status`, { signal: AbortSignal.timeout(1000) });
    if (!res.ok) throw new Error(`${id} /status: ${res.status}`);
    return (await res.json()) as NodeStatus;
  }

  /** Statuses of the nodes that are running and not paused. */
  async statuses(): Promise<NodeStatus[]> {
    const up = this.nodes.filter((n) => n.proc && !n.paused);
    const all = await Promise.allSettled(up.map((n) => this.status(n.id)));
    return all.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  }

  /** Wait until the given nodes (default: all running) agree on one leader; returns its id and term. */
  async leader(among?: string[], timeoutMs = 15_000): Promise<{ id: string; term: number }> {
    return waitFor(
      'a single agreed leader',
      async () => {
        const sts = (await this.statuses()).filter((s) => !among || among.includes(s.node_id));
        const expected = among?.length ?? this.nodes.filter((n) => n.proc && !n.paused).length;
        if (sts.length < expected) return undefined;
        const leaders = sts.filter((s) => s.raft.state === 'leader');
        if (leaders.length !== 1) return undefined;
        const l = leaders[0]!;
        if (!sts.every((s) => s.raft.leader_id === l.node_id && s.raft.term === l.raft.term))
          return undefined;
        return { id: l.node_id, term: l.raft.term };
      },
      { timeoutMs },
    );
  }

  /** Propose a test command through the debug hook of node `id` (must be leader). */
  async propose(id: string, command: unknown, timeoutMs = 5000): Promise<{ index: number }> {
    const res = await fetch(`${this.node(id).url}/debug/raft/propose`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ command }),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const body = (await res.json()) as { index?: number; error?: { code: string } };
    if (!res.ok || body.index === undefined)
      throw new Error(`propose on ${id}: ${res.status} ${JSON.stringify(body)}`);
    return { index: body.index };
  }

  /**
   * Propose through whichever node leads, following a leader change (503) until `timeoutMs`:
   * for tests about durability, where a legitimate re-election must not fail the test.
   */
  async proposeToLeader(command: unknown, timeoutMs = 10_000): Promise<{ index: number }> {
    return waitFor(
      'a leader to commit the proposal',
      async () => {
        const { id } = await this.leader(undefined, timeoutMs);
        return this.propose(id, command);
      },
      { timeoutMs },
    );
  }

  /** The debug state machine of node `id`: applied command count, digest and applied ids. */
  async smState(id: string): Promise<{ count: number; digest: string; ids: string[] }> {
    const res = await fetch(`${this.node(id).url}/debug/raft/state`, { signal: AbortSignal.timeout(2000) });
    if (!res.ok) throw new Error(`${id} /debug/raft/state: ${res.status}`);
    return (await res.json()) as { count: number; digest: string; ids: string[] };
  }

  logTail(id: string, lines = 40): string {
    try {
      return readFileSync(this.node(id).logFile, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }

  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((n) => this.kill(n.id)));
    await Promise.all([...this.proxies.values()].map((p) => p.close()));
    for (const l of this.logs) l.end();
    // DSS_KEEP_TEST_DIRS=1 keeps node logs and data for post-mortems.
    if (process.env.DSS_KEEP_TEST_DIRS === '1') process.stderr.write(`kept ${this.dir}\n`);
    else rmSync(this.dir, { recursive: true, force: true });
  }
}
