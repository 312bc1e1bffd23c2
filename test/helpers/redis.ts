// A private redis-server for tests: loopback, a free port, its own temp dir, never the system Redis.
// kill() (SIGKILL), pause()/resume() and restart() on the same port and dir are there for fault
// tests. Children are always reaped: stop() in an `after` hook, plus an exit-time safety net.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './proxy.js';
import { waitForPong } from '../../src/cli/local-redis.js';

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

export interface RedisServerOptions {
  /** AOF with fsync on every write (SPEC 5's durability setting); default: no persistence at all. */
  appendonly?: boolean;
  /** Milliseconds to wait for PONG on start and restart. */
  startTimeoutMs?: number;
}

export class RedisServer {
  readonly port: number;
  readonly dir: string;
  private proc: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();
  private readonly opts: Required<RedisServerOptions>;

  private constructor(port: number, dir: string, opts: Required<RedisServerOptions>) {
    this.port = port;
    this.dir = dir;
    this.opts = opts;
  }

  static async start(opts: RedisServerOptions = {}): Promise<RedisServer> {
    const dir = mkdtempSync(join(tmpdir(), 'dss-redis-'));
    const s = new RedisServer(await freePort(), dir, {
      appendonly: opts.appendonly ?? false,
      startTimeoutMs: opts.startTimeoutMs ?? 10_000,
    });
    try {
      await s.spawn();
    } catch (e) {
      s.remove();
      throw e;
    }
    return s;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  private async spawn(): Promise<void> {
    const persistence = this.opts.appendonly
      ? ['--appendonly', 'yes', '--appendfsync', 'always']
      : ['--appendonly', 'no'];
    const proc = spawn(
      'redis-server',
      ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir, '--save', '', ...persistence],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    this.proc = proc;
    live.add(proc);
    let stderr = '';
    proc.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    this.exited = new Promise<void>((resolve) => {
      proc.once('exit', () => {
        live.delete(proc);
        resolve();
      });
    });
    const early = this.exited.then(() => {
      throw new Error(`redis-server on port ${this.port} exited during startup: ${stderr.trim()}`);
    });
    early.catch(() => undefined);
    await Promise.race([waitForPong(this.port, this.opts.startTimeoutMs), early]);
  }

  /** SIGKILL, as a crash: whatever was not fsynced is gone. Resolves once the process is gone. */
  async kill(): Promise<void> {
    if (!this.proc) return;
    this.proc.kill('SIGCONT');
    this.proc.kill('SIGKILL');
    await this.exited;
    this.proc = null;
  }

  /** SIGSTOP: the socket stays open but nothing answers, as with a hung server. */
  pause(): void {
    this.proc?.kill('SIGSTOP');
  }

  resume(): void {
    this.proc?.kill('SIGCONT');
  }

  /** Starts again on the same port and dir (so an AOF is replayed); kills first if still running. */
  async restart(): Promise<void> {
    await this.kill();
    await this.spawn();
  }

  /** SIGTERM and wait for exit, then remove the data dir. */
  async stop(): Promise<void> {
    if (this.proc) {
      this.proc.kill('SIGCONT');
      this.proc.kill('SIGTERM');
      await this.exited;
      this.proc = null;
    }
    this.remove();
  }

  private remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
