// Private Redis topologies for tests, loopback only, never the system Redis:
// - RedisClusterServers: a Redis Cluster of N masters (no replicas), each a redis-server on its own
//   free port (client port and cluster bus port both chosen free) with its nodes-<port>.conf in a
//   temp dir, joined with `redis-cli --cluster create`; `nodesEnv` is the REDIS_CLUSTER_NODES value
//   for DSS nodes. Faults for tests: kill() / restart() a master, reshard() slots between masters,
//   and (started `proxied`) loseReplyTo() a command.
// - RedisSentinelServers: one master redis-server and one sentinel monitoring it (quorum 1);
//   `sentinelsEnv` / `masterName` are REDIS_SENTINELS / REDIS_SENTINEL_NAME.
// Children are always reaped: stop() in an `after` hook, plus an exit-time safety net that kills
// them and removes their dirs.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { waitForPong } from '../../src/cli/local-redis.js';
import { freePort } from './proxy.js';
import { waitFor } from './wait.js';

const run = promisify(execFile);

const live = new Set<ChildProcess>();
const liveDirs = new Set<string>();
process.on('exit', () => {
  for (const p of live) p.kill('SIGKILL');
  for (const d of liveDirs) rmSync(d, { recursive: true, force: true });
});

/** One redis-server child with its port, dir and captured stderr. */
class Server {
  private readonly exited: Promise<void>;
  private stderr = '';

  constructor(
    readonly port: number,
    readonly proc: ChildProcess,
  ) {
    live.add(proc);
    proc.stderr?.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise<void>((resolve) => {
      proc.once('exit', () => {
        live.delete(proc);
        resolve();
      });
    });
  }

  static spawn(port: number, args: string[]): Server {
    return new Server(port, spawn('redis-server', args, { stdio: ['ignore', 'ignore', 'pipe'] }));
  }

  /** Resolves once the server answers PING; rejects at once if it exits first. */
  async ready(timeoutMs: number): Promise<void> {
    const early = this.exited.then(() => {
      throw new Error(`redis-server on port ${this.port} exited during startup: ${this.stderr.trim()}`);
    });
    early.catch(() => undefined);
    await Promise.race([waitForPong(this.port, timeoutMs), early]);
  }

  /** SIGKILL by pid, as a crash; resolves once the process is gone. */
  async kill(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill('SIGCONT');
    this.proc.kill('SIGKILL');
    await this.exited;
  }

  /** SIGTERM (SIGKILL after 5 s) by pid, and wait for the exit. */
  async stop(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill('SIGCONT');
    this.proc.kill('SIGTERM');
    const force = setTimeout(() => this.proc.kill('SIGKILL'), 5_000);
    await this.exited;
    clearTimeout(force);
  }
}

function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  liveDirs.add(dir);
  return dir;
}

function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  liveDirs.delete(dir);
}

/** A plain connection to one server, for the test's own inspection; the caller disconnects it. */
function connect(port: number): Redis {
  const r = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 1 });
  // A master killed by a test: its clients' reconnect errors are expected, not worth a print each.
  r.on('error', () => undefined);
  return r;
}

/**
 * A TCP proxy in front of one Redis that can lose a reply: armed with a marker, the first reply on a
 * connection that has sent the marker is dropped and that connection is closed at once. The
 * command did run on the server; only its answer is gone (a crash or cut between the two).
 */
class ReplyLosingProxy {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private marker: string | null = null;
  private lost: (() => void) | null = null;

  constructor(private readonly target: number) {
    this.server = net.createServer((client) => this.onConnection(client));
  }

  async listen(port: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => resolve());
    });
  }

  /** Calls `lost` once a reply to a command containing `marker` has been lost (one-shot). */
  arm(marker: string, lost: () => void): void {
    this.marker = marker;
    this.lost = lost;
  }

  disarm(): void {
    this.marker = null;
    this.lost = null;
  }

  private onConnection(client: net.Socket): void {
    const upstream = net.connect(this.target, '127.0.0.1');
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    }
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    let armed = false;
    client.on('data', (d: Buffer) => {
      if (this.marker !== null && d.includes(this.marker)) {
        armed = true;
        this.marker = null;
      }
      upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      if (!armed) {
        client.write(d);
        return;
      }
      client.destroy();
      const lost = this.lost;
      this.disarm();
      lost?.();
    });
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

interface Master {
  port: number;
  /** The port the cluster announces for this master (the proxy's when proxied). */
  announcedPort: number;
  args: string[];
  server: Server;
  proxy: ReplyLosingProxy | null;
}

export interface RedisClusterOptions {
  /** Masters (default 3; Redis Cluster needs at least 3). */
  masters?: number;
  /** cluster-node-timeout in ms (default 2000: a dead master fails the cluster within seconds). */
  nodeTimeoutMs?: number;
  /**
   * Clients reach each master through a ReplyLosingProxy in this process (the masters announce
   * the proxies' ports), so a test can lose a reply; see loseReplyTo().
   */
  proxied?: boolean;
  /** Deadline for the whole start: processes up, cluster created, `cluster_state:ok` everywhere. */
  startTimeoutMs?: number;
}

export class RedisClusterServers {
  private constructor(
    private readonly masters: Master[],
    readonly dir: string,
  ) {}

  /** The masters' own client ports (not the proxies'), for direct inspection. */
  get ports(): number[] {
    return this.masters.map((m) => m.port);
  }

  /** REDIS_CLUSTER_NODES for DSS nodes: every master as host:port (through the proxies if proxied). */
  get nodesEnv(): string {
    return this.masters.map((m) => `127.0.0.1:${m.announcedPort}`).join(',');
  }

  static async start(opts: RedisClusterOptions = {}): Promise<RedisClusterServers> {
    const n = opts.masters ?? 3;
    const deadline = Date.now() + (opts.startTimeoutMs ?? 30_000);
    const left = (): number => Math.max(1, deadline - Date.now());
    const dir = tempDir('dss-redis-cluster-');
    const masters: Master[] = [];
    const c = new RedisClusterServers(masters, dir);
    try {
      for (let i = 0; i < n; i++) {
        // The bus port defaults to port + 10000, which may be taken or beyond 65535: choose it too.
        const port = await freePort();
        const busPort = await freePort();
        const proxyPort = opts.proxied ? await freePort() : port;
        const args = [
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          '--dir',
          dir,
          '--cluster-enabled',
          'yes',
          '--cluster-port',
          String(busPort),
          '--cluster-config-file',
          join(dir, `nodes-${port}.conf`),
          '--cluster-node-timeout',
          String(opts.nodeTimeoutMs ?? 2000),
          ...(opts.proxied ? ['--cluster-announce-port', String(proxyPort)] : []),
          '--save',
          '',
          '--appendonly',
          'no',
        ];
        let proxy: ReplyLosingProxy | null = null;
        if (opts.proxied) {
          proxy = new ReplyLosingProxy(port);
          await proxy.listen(proxyPort);
        }
        masters.push({ port, announcedPort: proxyPort, args, server: Server.spawn(port, args), proxy });
      }
      await Promise.all(masters.map((m) => m.server.ready(left())));
      await run(
        'redis-cli',
        [
          '--cluster',
          'create',
          ...masters.map((m) => `127.0.0.1:${m.announcedPort}`),
          '--cluster-replicas',
          '0',
          '--cluster-yes',
        ],
        { timeout: left() },
      );
      await c.waitClusterOk(left());
      return c;
    } catch (e) {
      await c.stop();
      throw e;
    }
  }

  /** Waits (polling CLUSTER INFO, with a deadline) until every master reports cluster_state:ok. */
  async waitClusterOk(timeoutMs = 20_000): Promise<void> {
    const clients = await this.masterClients();
    try {
      await waitFor(
        'cluster_state:ok on every Redis Cluster node',
        async () => {
          for (const r of clients) {
            const info = await r.cluster('INFO');
            if (!/^cluster_state:ok\r?$/m.test(info)) return false;
            if (!new RegExp(`^cluster_known_nodes:${this.masters.length}\\r?$`, 'm').test(info)) return false;
          }
          return true;
        },
        { timeoutMs },
      );
    } finally {
      for (const r of clients) r.disconnect();
    }
  }

  /** A plain (non-cluster) connection to each master, in `ports` order; the caller disconnects them. */
  async masterClients(): Promise<Redis[]> {
    const clients = this.ports.map(connect);
    await Promise.all(clients.map((r) => r.connect()));
    return clients;
  }

  /** SIGKILL master `i` (its data is gone: no persistence). */
  async kill(i: number): Promise<void> {
    await this.masters[i]!.server.kill();
  }

  /**
   * Starts master `i` again on the same ports with its nodes.conf, so it rejoins the cluster with its
   * slots (empty), and waits until every master reports cluster_state:ok.
   */
  async restart(i: number, timeoutMs = 20_000): Promise<void> {
    const m = this.masters[i]!;
    await m.server.kill();
    m.server = Server.spawn(m.port, m.args);
    await m.server.ready(timeoutMs);
    await this.waitClusterOk(timeoutMs);
  }

  /**
   * Moves `slots` hash slots (the lowest ones it serves) with their keys from master `from` to
   * master `to` with `redis-cli --cluster reshard`, as an operator would, while clients keep going.
   */
  async reshard(from: number, to: number, slots: number, timeoutMs = 60_000): Promise<void> {
    const ids = await Promise.all(
      [from, to].map(async (i) => {
        const out = await run('redis-cli', ['-p', String(this.masters[i]!.port), 'CLUSTER', 'MYID']);
        return out.stdout.trim();
      }),
    );
    await run(
      'redis-cli',
      [
        '--cluster',
        'reshard',
        `127.0.0.1:${this.masters[from]!.announcedPort}`,
        '--cluster-from',
        ids[0]!,
        '--cluster-to',
        ids[1]!,
        '--cluster-slots',
        String(slots),
        '--cluster-yes',
      ],
      { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 },
    );
    await this.waitClusterOk(timeoutMs);
  }

  /**
   * Proxied clusters only: the next reply to a command containing `marker`, sent to any master,
   * is lost (its connection closed instead). Resolves once that happened.
   */
  loseReplyTo(marker: string): Promise<void> {
    const proxies = this.masters.flatMap((m) => (m.proxy ? [m.proxy] : []));
    if (proxies.length !== this.masters.length) {
      throw new Error('loseReplyTo() needs a cluster started with `proxied`');
    }
    return new Promise<void>((resolve) => {
      const lost = (): void => {
        for (const p of proxies) p.disarm();
        resolve();
      };
      for (const p of proxies) p.arm(marker, lost);
    });
  }

  /** Kills every server by pid, closes the proxies and removes the dir. */
  async stop(): Promise<void> {
    await Promise.all(this.masters.map((m) => m.server.stop()));
    await Promise.all(this.masters.flatMap((m) => (m.proxy ? [m.proxy.close()] : [])));
    removeDir(this.dir);
  }
}

export interface RedisSentinelOptions {
  /** The monitored master's name (REDIS_SENTINEL_NAME); default dss-test-master. */
  masterName?: string;
  startTimeoutMs?: number;
}

export class RedisSentinelServers {
  private constructor(
    private readonly master: Server,
    private readonly sentinel: Server,
    readonly masterName: string,
    readonly dir: string,
  ) {}

  get masterPort(): number {
    return this.master.port;
  }

  /** REDIS_SENTINELS for DSS nodes. */
  get sentinelsEnv(): string {
    return `127.0.0.1:${this.sentinel.port}`;
  }

  static async start(opts: RedisSentinelOptions = {}): Promise<RedisSentinelServers> {
    const name = opts.masterName ?? 'dss-test-master';
    const deadline = Date.now() + (opts.startTimeoutMs ?? 20_000);
    const left = (): number => Math.max(1, deadline - Date.now());
    const dir = tempDir('dss-redis-sentinel-');
    let master: Server | null = null;
    let sentinel: Server | null = null;
    try {
      const masterPort = await freePort();
      master = Server.spawn(masterPort, [
        '--port',
        String(masterPort),
        '--bind',
        '127.0.0.1',
        '--dir',
        dir,
        '--save',
        '',
        '--appendonly',
        'no',
      ]);
      await master.ready(left());
      // A sentinel rewrites its config file, so it gets its own writable copy.
      const sentinelPort = await freePort();
      const conf = join(dir, 'sentinel.conf');
      writeFileSync(
        conf,
        [
          `port ${sentinelPort}`,
          'bind 127.0.0.1',
          `dir ${dir}`,
          `sentinel monitor ${name} 127.0.0.1 ${masterPort} 1`,
          `sentinel down-after-milliseconds ${name} 5000`,
          '',
        ].join('\n'),
      );
      sentinel = Server.spawn(sentinelPort, [conf, '--sentinel']);
      await sentinel.ready(left());
      const probe = connect(sentinelPort);
      try {
        await probe.connect();
        await waitFor(
          'the sentinel to name the master',
          async () => {
            const addr = (await probe.call('SENTINEL', 'get-master-addr-by-name', name)) as string[] | null;
            return addr?.[1] === String(masterPort);
          },
          { timeoutMs: left() },
        );
      } finally {
        probe.disconnect();
      }
      return new RedisSentinelServers(master, sentinel, name, dir);
    } catch (e) {
      await Promise.all([sentinel?.stop(), master?.stop()]);
      removeDir(dir);
      throw e;
    }
  }

  /** A plain connection to the master; the caller disconnects it. */
  async masterClient(): Promise<Redis> {
    const r = connect(this.masterPort);
    await r.connect();
    return r;
  }

  async stop(): Promise<void> {
    await Promise.all([this.sentinel.stop(), this.master.stop()]);
    removeDir(this.dir);
  }
}
