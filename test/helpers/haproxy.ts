// A real HAProxy for the deploy tests, run from deploy/haproxy/haproxy.cfg with its addresses set
// through the environment variables that file reads, plus a throwaway self-signed certificate.
// Children are always reaped: stop() in an `after` hook, plus an exit-time safety net.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ROOT } from './deploy.js';
import { freePort } from './proxy.js';
import { waitFor } from './wait.js';

const run = promisify(execFile);
export const HAPROXY_CFG = join(ROOT, 'deploy/haproxy/haproxy.cfg');

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

/** The haproxy binary: on PATH, or Debian's /usr/sbin/haproxy (not on a non-root PATH). */
export function haproxyBinary(): string {
  for (const dir of [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/usr/local/sbin']) {
    if (!dir) continue;
    const p = join(dir, 'haproxy');
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  throw new Error('haproxy not found: the deploy tests need it (apt-get install haproxy)');
}

export interface TestCert {
  /** PEM of the self-signed certificate: the CA a client trusts. */
  cert: string;
  /** Certificate then key in one file, as HAProxy's `crt` wants. */
  pemFile: string;
}

/** A self-signed certificate for localhost and 127.0.0.1, valid one day, made with openssl(1). */
export async function makeCert(dir: string): Promise<TestCert> {
  const certFile = join(dir, 'cert.pem');
  const keyFile = join(dir, 'key.pem');
  await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-subj',
    '/CN=localhost',
    '-addext',
    'subjectAltName=DNS:localhost,IP:127.0.0.1',
    '-days',
    '1',
    '-keyout',
    keyFile,
    '-out',
    certFile,
  ]);
  const cert = readFileSync(certFile, 'utf8');
  const pemFile = join(dir, 'dss.pem');
  writeFileSync(pemFile, cert + readFileSync(keyFile, 'utf8'));
  return { cert, pemFile };
}

/** `haproxy -c -f <cfg>` with `env` added to this process's environment. */
export async function checkConfig(
  env: Record<string, string>,
  cfg = HAPROXY_CFG,
): Promise<{ ok: boolean; output: string }> {
  try {
    const r = await run(haproxyBinary(), ['-c', '-f', cfg], { env: { ...process.env, ...env } });
    return { ok: true, output: r.stdout + r.stderr };
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    return { ok: false, output: `${err.stdout ?? ''}${err.stderr ?? err.message}` };
  }
}

export interface HaproxyOptions {
  /** host:port of the three backends (DSS_NODE1..3). */
  nodes: [string, string, string];
  pemFile: string;
  /** DSS_CHECK_INTER; the config's default is 2s. */
  checkInter?: string;
}

export class Haproxy {
  private output = '';
  private proc: ChildProcess | null;
  private readonly exited: Promise<void>;

  private constructor(
    p: ChildProcess,
    readonly httpsPort: number,
    readonly statsPort: number,
  ) {
    this.proc = p;
    const keep = (d: Buffer): void => {
      this.output = (this.output + d.toString()).slice(-20_000);
    };
    p.stdout?.on('data', keep);
    p.stderr?.on('data', keep);
    this.exited = new Promise((resolve) =>
      p.once('exit', () => {
        live.delete(p);
        this.proc = null;
        resolve();
      }),
    );
  }

  static async start(opts: HaproxyOptions): Promise<Haproxy> {
    const httpsPort = await freePort();
    const statsPort = await freePort();
    const proc = spawn(haproxyBinary(), ['-f', HAPROXY_CFG, '-db'], {
      env: {
        ...process.env,
        DSS_NODE1: opts.nodes[0],
        DSS_NODE2: opts.nodes[1],
        DSS_NODE3: opts.nodes[2],
        DSS_TLS_PEM: opts.pemFile,
        DSS_HTTPS_BIND: `127.0.0.1:${httpsPort}`,
        DSS_STATS_BIND: `127.0.0.1:${statsPort}`,
        DSS_CHECK_INTER: opts.checkInter ?? '2s',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    live.add(proc);
    const h = new Haproxy(proc, httpsPort, statsPort);
    try {
      await waitFor('haproxy to serve its stats page', async () => {
        if (!h.proc) throw new Error(`haproxy exited: ${h.output}`);
        return (await fetch(h.statsUrl, { signal: AbortSignal.timeout(1000) })).ok;
      });
    } catch (e) {
      await h.stop();
      throw e;
    }
    return h;
  }

  get baseUrl(): string {
    return `https://127.0.0.1:${this.httpsPort}`;
  }

  get statsUrl(): string {
    return `http://127.0.0.1:${this.statsPort}/stats;csv`;
  }

  /** Server states from the stats CSV: `backend/server` -> status (UP, DOWN, "UP 1/2", ...). */
  async serverStates(): Promise<Map<string, string>> {
    const res = await fetch(this.statsUrl, { signal: AbortSignal.timeout(1000) });
    const lines = (await res.text()).split('\n').filter((l) => l.trim() !== '');
    const header = lines[0]!.replace(/^# /, '').split(',');
    const px = header.indexOf('pxname');
    const sv = header.indexOf('svname');
    const st = header.indexOf('status');
    const out = new Map<string, string>();
    for (const line of lines.slice(1)) {
      const cols = line.split(',');
      if (cols[sv] === 'FRONTEND' || cols[sv] === 'BACKEND') continue;
      out.set(`${cols[px]}/${cols[sv]}`, cols[st] ?? '');
    }
    return out;
  }

  /** Waits until every listed `backend/server` has exactly the status `want`. */
  async waitStates(servers: string[], want: 'UP' | 'DOWN', timeoutMs = 15_000): Promise<void> {
    await waitFor(
      `${servers.join(', ')} ${want} in haproxy`,
      async () => {
        const states = await this.serverStates();
        return servers.every((s) => states.get(s) === want);
      },
      { timeoutMs, intervalMs: 100 },
    );
  }

  log(): string {
    return this.output;
  }

  /** SIGTERM, then SIGKILL if it has not exited within 5 s. */
  async stop(): Promise<void> {
    const p = this.proc;
    if (!p) return;
    p.kill('SIGTERM');
    const timer = setTimeout(() => p.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(timer);
  }
}
