// The CLI run from source (no build needed). Every child is reaped, also when a test fails.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { freePort } from '../../src/cli/processes.js';
import { DSS_ENTRY } from '../helpers/entry.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const live = new Set<ChildProcess>();
const tmp = mkdtempSync(join(tmpdir(), 'dss-cli-'));

after(() => {
  for (const p of live) p.kill('SIGKILL');
  rmSync(tmp, { recursive: true, force: true });
});

interface Run {
  proc: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `dss <args>` with only the given environment (plus PATH), so the developer's env cannot leak in. */
function dss(args: string[], env: Record<string, string>): Run {
  const proc = spawn(process.execPath, [...DSS_ENTRY, ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(proc);
  let out = '';
  let err = '';
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('exit', (code, signal) => {
      live.delete(proc);
      resolve({ code, signal });
    }),
  );
  return { proc, stdout: () => out, stderr: () => err, exit };
}

async function waitForHttp(url: string, pred: (status: number) => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(500) });
      await res.body?.cancel();
      if (pred(res.status)) return;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`${url} not ready within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('dss node: configuration errors', () => {
  const cases: [Record<string, string>, string][] = [
    [{ NODE_PORT: 'abc' }, 'NODE_PORT'],
    [{ RAFT_ELECTION_TIMEOUT_MIN: '6', RAFT_ELECTION_TIMEOUT_MAX: '5' }, 'RAFT_ELECTION_TIMEOUT_MIN'],
    [{ NODE_ROLES: 'lock,dns' }, 'NODE_ROLES'],
    [{ NODE_ID: 'node7' }, 'CLUSTER_ADDRS'],
    [{ LOG_LEVEL: 'chatty' }, 'LOG_LEVEL'],
    [{ TLS_CERT: '/nonexistent.pem' }, 'TLS_CERT'],
  ];
  for (const [env, variable] of cases) {
    it(`${JSON.stringify(env)} exits 2 with one line naming ${variable}`, async () => {
      const run = dss(['node'], env);
      const { code } = await run.exit;
      assert.equal(code, 2, run.stderr());
      const lines = run.stderr().trimEnd().split('\n');
      assert.equal(lines.length, 1, run.stderr());
      assert.match(lines[0]!, new RegExp(`^dss: ${variable}: `));
      assert.ok(!run.stderr().includes('    at '), 'no stack trace');
    });
  }
});

describe('dss node: lifecycle', () => {
  it('a single lock node becomes ready, then stops cleanly on SIGTERM', async () => {
    const port = await freePort();
    const run = dss(['node'], {
      NODE_ID: 'solo',
      NODE_HOST: '127.0.0.1',
      NODE_PORT: String(port),
      CLUSTER_ADDRS: `solo=127.0.0.1:${port}#lock`,
      DATA_DIR: join(tmp, 'solo'),
      RAFT_ELECTION_TIMEOUT_MIN: '0.15',
      RAFT_ELECTION_TIMEOUT_MAX: '0.3',
      RAFT_HEARTBEAT_INTERVAL: '0.05',
      LOG_LEVEL: 'warn',
    });
    await waitForHttp(`http://127.0.0.1:${port}/ready`, (s) => s === 200, 15_000);
    const status = (await (await fetch(`http://127.0.0.1:${port}/status`)).json()) as {
      raft: { state: string; leader_id: string };
    };
    assert.equal(status.raft.state, 'leader');
    assert.equal(status.raft.leader_id, 'solo');
    run.proc.kill('SIGTERM');
    const { code } = await run.exit;
    assert.equal(code, 0, run.stderr());
  });

  it('reports a busy port in one line', async () => {
    const port = await freePort();
    const first = dss(['node'], {
      NODE_ID: 'a',
      NODE_HOST: '127.0.0.1',
      NODE_PORT: String(port),
      CLUSTER_ADDRS: `a=127.0.0.1:${port}#queue`,
      LOG_LEVEL: 'silent',
    });
    await waitForHttp(`http://127.0.0.1:${port}/health`, (s) => s === 200, 15_000);
    const second = dss(['node'], {
      NODE_ID: 'a',
      NODE_HOST: '127.0.0.1',
      NODE_PORT: String(port),
      CLUSTER_ADDRS: `a=127.0.0.1:${port}#queue`,
      LOG_LEVEL: 'silent',
    });
    const { code } = await second.exit;
    assert.equal(code, 1);
    assert.match(second.stderr(), /^dss: cannot listen on .*address already in use\n$/);
    first.proc.kill('SIGTERM');
    assert.equal((await first.exit).code, 0);
  });
});

describe('dss cluster up / status', () => {
  it('starts nodes, shows them in `dss status`, and stops every child on SIGTERM', async () => {
    const port = await freePort();
    const run = dss(
      [
        'cluster',
        'up',
        '--nodes',
        '1',
        '--base-port',
        String(port),
        '--fast',
        '--data-dir',
        join(tmp, 'cluster'),
      ],
      // No REDIS_URL: cluster up starts (and must stop) its own redis-server, as for a user.
      { LOG_LEVEL: 'warn' },
    );
    const deadline = Date.now() + 20_000;
    while (!run.stdout().includes('Press Ctrl-C')) {
      if (Date.now() > deadline) assert.fail(`cluster did not come up:\n${run.stdout()}\n${run.stderr()}`);
      if (run.proc.exitCode !== null) assert.fail(`cluster up exited:\n${run.stderr()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.match(run.stdout(), new RegExp(`node1\\s+http://127\\.0\\.0\\.1:${port}`));
    assert.match(run.stdout(), new RegExp(`Dashboard: http://127\\.0\\.0\\.1:${port}/`));

    await waitForHttp(`http://127.0.0.1:${port}/ready`, (s) => s === 200, 10_000);
    const pushed = await fetch(`http://127.0.0.1:${port}/queue/push`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ queue: 'up-q', message: 'hello' }),
    });
    assert.equal(pushed.status, 201, 'the queue works on the Redis that cluster up started');
    const status = dss(['status', '--url', `http://127.0.0.1:${port}`], {});
    assert.equal((await status.exit).code, 0, status.stderr());
    assert.match(status.stdout(), /^ID\s+ROLES\s+STATE\s+TERM\s+LEADER\s+COMMIT\s+REACHABLE/);
    assert.match(status.stdout(), /node1\s+lock\+queue\+cache\s+leader\s+\d+\s+node1\s+\d+\s+yes/);

    run.proc.kill('SIGTERM');
    const { code } = await run.exit;
    assert.equal(code, 0, run.stderr());
    assert.match(run.stdout(), /cluster stopped/);
    // The node child is gone: nothing listens on its port any more.
    await assert.rejects(fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(500) }));
  });

  it('dss status against nothing exits 1 with a message', async () => {
    const port = await freePort();
    const run = dss(['status', '--url', `http://127.0.0.1:${port}`], {});
    const { code } = await run.exit;
    assert.equal(code, 1);
    assert.match(run.stderr(), /^dss: cannot reach/);
  });
});
