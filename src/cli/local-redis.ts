// A private redis-server child for `dss cluster up` when no Redis was given: bound to loopback on a
// free port, AOF with fsync on every write (SPEC 5: nothing acknowledged is lost), no RDB snapshots.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import net from 'node:net';
import { resolve } from 'node:path';
import { freePort, pipePrefixed } from './processes.js';

export class RedisNotInstalledError extends Error {
  constructor() {
    super(
      'redis-server is not on PATH. Install it (Debian/Ubuntu: `apt-get install redis-server`, ' +
        'macOS: `brew install redis`) or point DSS at a Redis with --redis redis://host:port or REDIS_URL.',
    );
    this.name = 'RedisNotInstalledError';
  }
}

export interface LocalRedis {
  url: string;
  port: number;
  dir: string;
  child: ChildProcess;
}

export function redisServerAvailable(): boolean {
  const r = spawnSync('redis-server', ['--version'], { stdio: 'ignore' });
  return r.error === undefined && r.status === 0;
}

export async function startLocalRedis(dataDir: string, opts: { quiet?: boolean } = {}): Promise<LocalRedis> {
  if (!redisServerAvailable()) throw new RedisNotInstalledError();
  const dir = resolve(dataDir, 'redis');
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const child = spawn(
    'redis-server',
    [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--dir',
      dir,
      '--appendonly',
      'yes',
      '--appendfsync',
      'always',
      '--save',
      '',
    ],
    // Own process group: the terminal's Ctrl-C reaches only `dss`, which stops Redis last, after
    // the nodes have written back their dirty cache lines.
    { stdio: ['ignore', opts.quiet ? 'ignore' : 'pipe', 'pipe'], detached: true },
  );
  if (!opts.quiet) pipePrefixed(child, 'redis');
  const exited = new Promise<never>((_, reject) =>
    child.once('exit', (code) => reject(new Error(`redis-server exited during startup (code ${code})`))),
  );
  exited.catch(() => undefined);
  await Promise.race([waitForPong(port, 10_000), exited]);
  return { url: `redis://127.0.0.1:${port}`, port, dir, child };
}

/** Redis answers PING with +PONG once it has loaded its AOF (-LOADING before). */
export async function waitForPong(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await ping(port)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`redis-server on port ${port} did not answer PING within ${timeoutMs} ms`);
}

function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    let buf = '';
    const done = (ok: boolean): void => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(500, () => done(false));
    sock.once('error', () => done(false));
    sock.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      if (buf.includes('\r\n')) done(buf.startsWith('+PONG'));
    });
    sock.once('connect', () => sock.write('PING\r\n'));
  });
}
