// A real Prometheus (Debian's `prometheus` package) scraping a local 3-node cluster with every role
// (SPEC 8): promtool's linter accepts every node's exposition, every target is up, exactly one
// node reports raft_is_leader, and the Grafana dashboard (deploy/grafana/dashboards/dss.json, or
// the file DSS_GRAFANA_DASHBOARD names) only uses metrics the nodes expose, in queries Prometheus
// accepts (its variables' label_values/query_result queries too).
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { OTHER_QUEUES } from '../../src/metrics/index.js';
import { TestCluster } from '../helpers/cluster.js';
import {
  exposedMetricNames,
  exprsInDashboard,
  exprsInTemplating,
  grafanaToPromql,
  metricNamesInExpr,
  SPEC_METRICS,
  SYNTHETIC_METRICS,
} from '../helpers/promql.js';
import { freePort } from '../helpers/proxy.js';
import { RedisServer } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const PROMETHEUS = '/usr/bin/prometheus';
const PROMTOOL = '/usr/bin/promtool';
const DASHBOARD = process.env.DSS_GRAFANA_DASHBOARD ?? join(ROOT, 'deploy/grafana/dashboards/dss.json');

/** METRICS_MAX_QUEUES of the nodes, and queues beyond the 3 of the traffic below. */
const MAX_QUEUES = 2;
const EXTRA_QUEUES = 9;

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

/** Runs a command to completion with `input` on its stdin; output is stdout and stderr together. */
function run(cmd: string, args: string[], input: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    live.add(p);
    let output = '';
    p.stdout.on('data', (d: Buffer) => (output += d.toString()));
    p.stderr.on('data', (d: Buffer) => (output += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => {
      live.delete(p);
      resolve({ code, output });
    });
    p.stdin.on('error', () => undefined); // a linter that exits early closes its stdin
    p.stdin.end(input);
  });
}

async function call(url: string, method: string, path: string, body?: unknown): Promise<number> {
  const res = await fetch(url + path, {
    method,
    signal: AbortSignal.timeout(10_000),
    ...(body !== undefined
      ? { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }
      : {}),
  });
  await res.arrayBuffer();
  return res.status;
}

interface PromAnswer<T> {
  status: string;
  data?: T;
  errorType?: string;
  error?: string;
}
interface Target {
  labels: { instance?: string };
  health: string;
  lastError: string;
}
interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

/** A Prometheus child with its own storage; stop() always reaps it. */
class PrometheusServer {
  readonly url: string;
  private readonly logFile: string;
  private readonly exited: Promise<void>;

  private constructor(
    private readonly proc: ChildProcess,
    port: number,
    private readonly dir: string,
  ) {
    this.url = `http://127.0.0.1:${port}`;
    this.logFile = join(dir, 'prometheus.log');
    const log = createWriteStream(this.logFile);
    proc.stdout?.pipe(log, { end: false });
    proc.stderr?.pipe(log, { end: false });
    this.exited = new Promise((resolve) =>
      proc.once('exit', () => {
        live.delete(proc);
        log.end();
        resolve();
      }),
    );
  }

  static async start(targets: string[]): Promise<PrometheusServer> {
    const dir = mkdtempSync(join(tmpdir(), 'dss-prometheus-'));
    const port = await freePort();
    const config = join(dir, 'prometheus.yml');
    writeFileSync(
      config,
      [
        'global:',
        '  scrape_interval: 1s',
        '  scrape_timeout: 1s',
        '  evaluation_interval: 1s',
        'scrape_configs:',
        '  - job_name: dss',
        '    static_configs:',
        `      - targets: [${targets.map((t) => `'${t}'`).join(', ')}]`,
        '',
      ].join('\n'),
    );
    const proc = spawn(
      PROMETHEUS,
      [
        `--config.file=${config}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
      ],
      { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    live.add(proc);
    const s = new PrometheusServer(proc, port, dir);
    try {
      await waitFor(
        'prometheus ready',
        async () => {
          if (proc.exitCode !== null) throw new Error(`prometheus exited:\n${s.logTail()}`);
          return (await fetch(`${s.url}/-/ready`, { signal: AbortSignal.timeout(1000) })).ok;
        },
        { timeoutMs: 30_000, intervalMs: 100 },
      );
    } catch (e) {
      await s.stop();
      throw e;
    }
    return s;
  }

  async api<T>(path: string): Promise<PromAnswer<T>> {
    const res = await fetch(this.url + path, { signal: AbortSignal.timeout(5000) });
    return (await res.json()) as PromAnswer<T>;
  }

  query(expr: string): Promise<PromAnswer<{ resultType: string; result: Sample[] }>> {
    return this.api(`/api/v1/query?query=${encodeURIComponent(expr)}`);
  }

  logTail(lines = 30): string {
    try {
      return readFileSync(this.logFile, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill('SIGTERM');
      const timer = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
      await this.exited;
      clearTimeout(timer);
    }
    if (process.env.DSS_KEEP_TEST_DIRS === '1') process.stderr.write(`kept ${this.dir}\n`);
    else rmSync(this.dir, { recursive: true, force: true });
  }
}

describe('Prometheus scraping a 3-node cluster (real prometheus and promtool)', () => {
  let redis: RedisServer | undefined;
  let c: TestCluster | undefined;
  let prom: PrometheusServer | undefined;
  let urls: string[] = [];
  /** Each node's /metrics after the traffic. */
  let expositions: string[] = [];

  before(async () => {
    for (const bin of [PROMETHEUS, PROMTOOL])
      assert.ok(existsSync(bin), `${bin} is missing: apt-get install prometheus`);
    redis = await RedisServer.start();
    c = await TestCluster.start({
      nodes: 3,
      roles: 'lock,queue,cache',
      // Small, so the 12 queues below overflow it on some node and "(other)" appears.
      env: { REDIS_URL: redis.url, METRICS_MAX_QUEUES: String(MAX_QUEUES) },
      direct: true,
    });
    urls = c.nodes.map((n) => n.url);
    await waitFor(
      'every node ready (Redis, a Raft leader) and seeing its peers',
      async () => {
        for (const u of urls) {
          if ((await fetch(`${u}/ready`)).status !== 200) return false;
          const st = (await (await fetch(`${u}/status`)).json()) as { peers: { reachable: boolean }[] };
          if (!st.peers.every((p) => p.reachable)) return false;
        }
        return true;
      },
      { timeoutMs: 20_000 },
    );
    prom = await PrometheusServer.start(c.nodes.map((n) => `127.0.0.1:${n.port}`));

    // A little of every service through every node, so labelled series and histograms exist.
    for (const [i, u] of urls.entries()) {
      // Lock calls retry a 503 (a leader change under load); acquiring again is reentrant, and a
      // retried release may find the lock already released.
      const lock = { resource: `prom/lock-${i}`, client_id: `prom-client-${i}`, ttl_ms: 30_000 };
      const lockCall = (path: string): Promise<number> =>
        waitFor(`${path} through node${i + 1}`, async () => {
          const status = await call(u, 'POST', path, lock);
          return status === 503 ? false : status;
        });
      assert.equal(await lockCall('/lock/acquire'), 200);
      assert.ok([200, 409].includes(await lockCall('/lock/release')));
      const queue = `prom-queue-${i}`;
      assert.equal(await call(u, 'POST', '/queue/push', { queue, message: { n: i } }), 201);
      const popped = await fetch(`${u}/queue/pop`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ queue }),
      });
      assert.equal(popped.status, 200);
      const { id } = (await popped.json()) as { id: string };
      assert.equal(await call(u, 'POST', '/queue/ack', { queue, id }), 200);
      assert.equal(await call(u, 'POST', '/queue/push', { queue, message: 'stays ready' }), 201);
      assert.equal(await call(u, 'PUT', `/cache/prom-key/${i}`, { value: { i } }), 200);
      assert.equal(await call(u, 'GET', `/nope/prom-${i}`), 404);
    }
    for (let k = 0; k < EXTRA_QUEUES; k++)
      assert.equal(
        await call(urls[k % 3]!, 'POST', '/queue/push', { queue: `prom-extra-${k}`, messages: [k, k] }),
        201,
      );
    // Hits, misses served by peers, and invalidations of the readers' copies by the next write.
    for (const u of urls)
      for (let k = 0; k < 3; k++) assert.equal(await call(u, 'GET', `/cache/prom-key/${k}`), 200);
    assert.equal(await call(urls[0]!, 'PUT', '/cache/prom-key/1', { value: 'again' }), 200);
    expositions = await Promise.all(urls.map(async (u) => (await fetch(`${u}/metrics`)).text()));
  });

  after(async () => {
    await prom?.stop();
    await c?.stop();
    await redis?.stop();
  });

  it('promtool check metrics accepts every node exposition', async () => {
    for (const [i, text] of expositions.entries()) {
      const { code, output } = await run(PROMTOOL, ['check', 'metrics'], text);
      assert.equal(code, 0, `promtool check metrics on node${i + 1} exited ${code}:\n${output}`);
    }
  });

  it('every node exposes every SPEC 8 metric with help text, and no key or URL in a label', () => {
    for (const [i, text] of expositions.entries()) {
      for (const name of SPEC_METRICS) {
        assert.match(text, new RegExp(`^# HELP ${name} \\S`, 'm'), `node${i + 1}: help of ${name}`);
        assert.match(text, new RegExp(`^# TYPE ${name} `, 'm'), `node${i + 1}: type of ${name}`);
      }
      assert.match(text, /^http_request_duration_seconds_bucket\{.*route="\/cache\/\*"/m);
      assert.match(text, /^http_request_duration_seconds_bucket\{.*route="unmatched",status_code="404"/m);
      for (const leak of ['prom-key', 'nope', 'prom-lock', 'prom-client'])
        assert.ok(!text.includes(leak), `node${i + 1} exposes "${leak}" in a label`);
    }
  });

  it('queue_depth: at most METRICS_MAX_QUEUES queues per node plus (other), totals intact', () => {
    const depth = /^queue_depth\{queue="([^"]*)",state="([^"]*)",[^}]*\} (\S+)$/gm;
    let ready = 0;
    let owned = 0;
    let folded = false;
    for (const text of expositions) {
      const queues = new Set<string>();
      for (const [, queue, state, value] of text.matchAll(depth)) {
        queues.add(queue!);
        if (state === 'ready') ready += Number(value);
      }
      folded ||= queues.has(OTHER_QUEUES);
      assert.ok(queues.size <= MAX_QUEUES + 1, `${[...queues].join(', ')}`);
      owned += Number(/^queue_owned_queues\{[^}]*\} (\S+)$/m.exec(text)?.[1]);
    }
    assert.equal(owned, 3 + EXTRA_QUEUES, 'every queue has one owner');
    assert.equal(ready, 3 + 2 * EXTRA_QUEUES, 'every ready message is counted once');
    assert.ok(folded, 'some node owns more queues than METRICS_MAX_QUEUES');
  });

  it('Prometheus reports all 3 targets up and sum(raft_is_leader) = 1', async () => {
    const p = prom!;
    await waitFor(
      'all 3 targets up',
      async () => {
        const r = await p.api<{ activeTargets: Target[] }>('/api/v1/targets?state=active');
        const targets = r.data?.activeTargets ?? [];
        return targets.length === 3 && targets.every((t) => t.health === 'up');
      },
      { timeoutMs: 30_000, intervalMs: 200 },
    ).catch(async (e: unknown) => {
      const r = await p.api<{ activeTargets: Target[] }>('/api/v1/targets').catch(() => null);
      throw new Error(
        `${e instanceof Error ? e.message : String(e)}\ntargets: ${JSON.stringify(r?.data)}\n${p.logTail()}`,
      );
    });
    await waitFor(
      'sum(raft_is_leader) = 1',
      async () => {
        const r = await p.query('sum(raft_is_leader)');
        return r.status === 'success' && r.data?.result[0]?.value[1] === '1';
      },
      { timeoutMs: 30_000, intervalMs: 200 },
    );
    const perNode = await p.query('raft_is_leader');
    assert.equal(perNode.data?.result.length, 3, 'one raft_is_leader series per node');
  });

  it('the Grafana dashboard uses only exposed metrics, in queries Prometheus accepts', async (t) => {
    assert.ok(existsSync(DASHBOARD), `the Grafana dashboard ${DASHBOARD} is missing`);
    const doc = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as unknown;
    const exprs = exprsInDashboard(doc);
    assert.ok(exprs.length > 0, `${DASHBOARD} has no panel query (no "expr")`);
    const variables = exprsInTemplating(doc);

    const known = new Set(SYNTHETIC_METRICS);
    for (const text of expositions) for (const n of exposedMetricNames(text)) known.add(n);
    const unknown: string[] = [];
    for (const expr of [...exprs, ...variables])
      for (const name of metricNamesInExpr(expr)) if (!known.has(name)) unknown.push(`${name} in ${expr}`);
    assert.deepEqual(unknown, [], 'metrics the dashboard uses but no node exposes');

    // Wait until Prometheus holds a few scrapes, so rates have samples to work with.
    const p = prom!;
    await waitFor(
      'a few scrapes stored',
      async () => {
        const r = await p.query('count_over_time(raft_term[10s])');
        return r.data?.result.length === 3 && r.data.result.every((s) => Number(s.value[1]) >= 3);
      },
      { timeoutMs: 30_000, intervalMs: 200 },
    );
    const failed: string[] = [];
    let empty = 0;
    for (const expr of [...exprs, ...variables]) {
      const promql = grafanaToPromql(expr);
      const r = await p.query(promql);
      if (r.status !== 'success') failed.push(`${promql}: ${r.errorType}: ${r.error}`);
      else if (r.data?.result.length === 0) empty++;
    }
    assert.deepEqual(failed, [], 'panel queries Prometheus rejects');
    t.diagnostic(
      `${exprs.length} panel and ${variables.length} variable queries valid, ${empty} with no data yet`,
    );
  });
});
