// Child-process plumbing for `dss cluster up`: free ports, prefixed output, and stopping a child
// (SIGTERM, then SIGKILL after a deadline) so that nothing is left behind.
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { createInterface } from 'node:readline';

export function isPortFree(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen({ port, host, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen({ port: 0, host }, () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Copies each line of the child's stdout/stderr to ours, prefixed with its name. */
export function pipePrefixed(
  child: ChildProcess,
  name: string,
  format: (line: string) => string = (l) => l,
): void {
  const prefix = `[${name}] `;
  for (const [stream, out] of [
    [child.stdout, process.stdout],
    [child.stderr, process.stderr],
  ] as const) {
    if (!stream) continue;
    createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => {
      out.write(prefix + format(line) + '\n');
    });
  }
}

export function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

/** Signals the child's whole process group when it leads one (spawned detached), else the child. */
export function signal(child: ChildProcess, sig: NodeJS.Signals): void {
  if (!isRunning(child) || child.pid === undefined) return;
  try {
    process.kill(-child.pid, sig);
  } catch {
    try {
      child.kill(sig);
    } catch {
      // already gone
    }
  }
}

/** SIGTERM, wait up to `graceMs`, then SIGKILL; resolves once the child has exited. */
export async function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (!isRunning(child)) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  signal(child, 'SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(true), graceMs);
  });
  const late = await Promise.race([exited.then(() => false), timedOut]);
  clearTimeout(timer);
  if (late) {
    signal(child, 'SIGKILL');
    await exited;
  }
}

export function waitExit(
  child: ChildProcess,
): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (!isRunning(child)) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once('exit', (code, sig) => resolve({ code, signal: sig })));
}

/**
 * A tiny detached watchdog that outlives us only to clean up: when our end of its stdin closes
 * (we exited, even by SIGKILL) it waits for the `waitFor` processes to finish their own graceful
 * stop (up to `graceMs`), then sends SIGTERM to the process groups in `terminate`.
 */
export function spawnReaper(waitFor: number[], terminate: number[], graceMs: number): ChildProcess {
  const script = `
    const waitFor = ${JSON.stringify(waitFor)}, terminate = ${JSON.stringify(terminate)};
    const alive = (p) => { try { process.kill(p, 0); return true; } catch { return false; } };
    process.stdin.on('data', () => {});
    process.stdin.on('close', () => {
      const deadline = Date.now() + ${graceMs};
      const tick = () => {
        if (waitFor.some(alive) && Date.now() < deadline) return setTimeout(tick, 100);
        for (const p of terminate) { try { process.kill(-p, 'SIGTERM'); } catch {} }
        process.exit(0);
      };
      tick();
    });`;
  const child = spawn(process.execPath, ['-e', script], {
    stdio: ['pipe', 'ignore', 'ignore'],
    detached: true,
  });
  // The watchdog must not keep us alive, and must not count as one of our children.
  child.unref();
  return child;
}
