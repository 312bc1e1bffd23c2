// deploy/grafana: the provisioned Prometheus datasource and the dashboard. Every metric a panel
// queries is one a node exports (names taken from a real metrics registry with every role bound,
// plus prom-client's process metrics), and the panels SPEC 8 asks for are there.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createMetrics } from '../../src/metrics/index.js';
import { readText, readYaml } from '../helpers/deploy.js';

interface Target {
  expr: string;
  refId: string;
  datasource?: { uid: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type: string; uid: string };
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: Target[];
}
interface Dashboard {
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: { name: string; datasource?: { uid: string } }[] };
}

const dashboard = JSON.parse(readText('deploy/grafana/dashboards/dss.json')) as Dashboard;
const graphs = dashboard.panels.filter((p) => p.type !== 'row');
const exprs = graphs.flatMap((p) => (p.targets ?? []).map((t) => t.expr));

/** Every metric name a node with all three roles exports (histograms with their series suffixes). */
async function exportedNames(): Promise<Set<string>> {
  const m = createMetrics({ nodeId: 'n1' });
  // A Raft that is not started: the gauges are still registered (empty).
  m.bindRaft(
    () => {
      throw new Error('not started');
    },
    () => 0,
  );
  m.bindLock({ held: () => 0, waiters: () => 0 });
  m.bindQueue(() => Promise.resolve([{ queue: 'q', ready: 1, pending: 0, dead: 0 }]));
  m.bindCache(() => ({ M: 0, E: 0, S: 0 }), 10);
  const names = new Set<string>();
  for (const line of (await m.scrape()).split('\n')) {
    const t = /^# TYPE (\S+) (\S+)/.exec(line);
    if (!t) continue;
    names.add(t[1]!);
    if (t[2] === 'histogram') for (const s of ['_bucket', '_count', '_sum']) names.add(t[1]! + s);
  }
  return names;
}

/** Metric names in a PromQL expression: every selector in these panels has a `{...}` matcher. */
function metricsIn(expr: string): string[] {
  return [...expr.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)\{/g)].map((m) => m[1]!);
}

describe('deploy/grafana', () => {
  it('the datasource is the compose Prometheus, and every panel and variable uses its uid', () => {
    const ds = readYaml<{ datasources: { uid: string; type: string; url: string }[] }>(
      'deploy/grafana/provisioning/datasources/prometheus.yml',
    ).datasources;
    assert.equal(ds.length, 1);
    assert.equal(ds[0]!.type, 'prometheus');
    assert.equal(ds[0]!.url, 'http://prometheus:9090');
    for (const p of graphs) {
      assert.equal(p.datasource?.uid, ds[0]!.uid, p.title);
      for (const t of p.targets ?? []) assert.equal(t.datasource?.uid ?? ds[0]!.uid, ds[0]!.uid, p.title);
    }
    for (const v of dashboard.templating.list) assert.equal(v.datasource?.uid, ds[0]!.uid, v.name);
  });

  it('panels have unique ids, fit the 24-column grid, and each has a query', () => {
    const ids = dashboard.panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length);
    for (const p of dashboard.panels) assert.ok(p.gridPos.x + p.gridPos.w <= 24, p.title);
    for (const p of graphs) {
      assert.ok((p.targets ?? []).length > 0, p.title);
      const refs = p.targets!.map((t) => t.refId);
      assert.equal(new Set(refs).size, refs.length, p.title);
    }
  });

  it('every metric in an expr is one a node exports', async () => {
    const names = await exportedNames();
    // A node with every role bound exports at least SPEC 8's list; a sanity check of the source.
    for (const n of [
      'raft_is_leader',
      'lock_held',
      'queue_depth',
      'cache_hits_total',
      'process_cpu_seconds_total',
    ])
      assert.ok(names.has(n), n);
    for (const expr of exprs) {
      const used = metricsIn(expr);
      assert.ok(used.length > 0, `no metric found in ${expr}`);
      for (const m of used) assert.ok(names.has(m), `${m} (in ${expr}) is not exported by a node`);
    }
  });

  it('has the panels SPEC 8 asks for: throughput, p99 latency, Raft leader and term, cache, queue, locks', () => {
    const all = exprs.join('\n');
    const want: [string, RegExp][] = [
      ['request throughput', /rate\(http_request_duration_seconds_count/],
      ['queue throughput', /rate\(queue_messages_total/],
      ['lock throughput', /rate\(lock_acquire_total/],
      [
        'p99 latency by route',
        /histogram_quantile\(0\.99, sum by \(le, route\) \(rate\(http_request_duration_seconds_bucket/,
      ],
      ['Raft leader', /raft_is_leader/],
      ['Raft term', /raft_term/],
      ['elections', /raft_elections_total/],
      ['cache hit ratio', /cache_hits_total.*\/.*cache_misses_total/],
      ['invalidations', /cache_invalidations_total/],
      ['write-backs', /cache_writebacks_total/],
      ['queue depth', /queue_depth/],
      ['redeliveries', /queue_redeliveries_total/],
      ['lock waiters', /lock_waiters/],
      ['deadlocks', /lock_deadlocks_total/],
      ['locks held', /lock_held/],
    ];
    for (const [what, re] of want) assert.match(all, re, what);
  });
});
