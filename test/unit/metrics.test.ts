// Metrics of a node (SPEC 8): bounded labels (queue_depth capped at METRICS_MAX_QUEUES with an
// "(other)" sum; http_request_duration_seconds by route pattern, one value for unmatched requests,
// no cache key in a label) and the exposition rules promtool lints for.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildServer } from '../../src/api/server.js';
import { cacheRoutes } from '../../src/api/routes/cache.js';
import { parseClusterAddrs } from '../../src/config/index.js';
import {
  capQueueDepths,
  createMetrics,
  OTHER_QUEUES,
  UNMATCHED_ROUTE,
  type QueueDepth,
} from '../../src/metrics/index.js';
import type { RaftStatus } from '../../src/raft/types.js';
import { SPEC_METRICS } from '../helpers/promql.js';

const q = (queue: string, ready: number, pending = 0, dead = 0): QueueDepth => ({
  queue,
  ready,
  pending,
  dead,
});

const totals = (ds: QueueDepth[]): [number, number, number] => [
  ds.reduce((s, d) => s + d.ready, 0),
  ds.reduce((s, d) => s + d.pending, 0),
  ds.reduce((s, d) => s + d.dead, 0),
];

/** Samples of one metric in an exposition: labels text -> value. */
function samples(text: string, name: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$/.exec(line);
    if (m && m[1] === name) out.set(m[2] ?? '', Number(m[3]));
  }
  return out;
}

const raftStatus = (): RaftStatus => ({
  id: 'node1',
  role: 'leader',
  term: 3,
  leaderId: 'node1',
  commitIndex: 9,
  lastApplied: 9,
  lastIndex: 9,
  firstIndex: 1,
  snapshotIndex: 0,
});

describe('capQueueDepths', () => {
  it('keeps every queue when there are at most `max`', () => {
    const ds = [q('a', 1), q('b', 0, 2)];
    assert.deepEqual(capQueueDepths(ds, 2), ds);
    assert.deepEqual(capQueueDepths([], 0), []);
    assert.deepEqual(capQueueDepths([], -1), []);
  });

  it('keeps the deepest (ready + pending + dead, ties by name) and sums the rest as (other)', () => {
    const ds = [
      q('small', 1),
      q('big', 5, 5),
      q('dead', 0, 0, 7),
      q('tie-b', 3),
      q('tie-a', 2, 1),
      q('x', 0),
    ];
    const capped = capQueueDepths(ds, 3);
    assert.deepEqual(
      capped.map((d) => d.queue),
      ['big', 'dead', 'tie-a', OTHER_QUEUES],
    );
    assert.deepEqual(capped[3], q(OTHER_QUEUES, 4, 0, 0));
    assert.deepEqual(totals(capped), totals(ds));
  });

  it('with max 0 sums every queue into (other)', () => {
    const ds = [q('a', 1, 2, 3), q('b', 4, 5, 6)];
    assert.deepEqual(capQueueDepths(ds, 0), [q(OTHER_QUEUES, 5, 7, 9)]);
  });

  it('keeps totals and at most max + 1 entries for any input', () => {
    for (let seed = 1; seed <= 50; seed++) {
      let x = seed;
      const rnd = (n: number): number => (x = (x * 1103515245 + 12345) % 2147483648) % n;
      const ds = Array.from({ length: rnd(40) }, (_, i) => q(`q${i}`, rnd(5), rnd(5), rnd(3)));
      const max = rnd(30);
      const capped = capQueueDepths(ds, max);
      assert.ok(capped.length <= max + 1);
      assert.deepEqual(totals(capped), totals(ds));
      assert.equal(new Set(capped.map((d) => d.queue)).size, capped.length, 'one entry per label value');
    }
  });

  it('(other) can never be a queue name (SPEC 3 identifiers)', () => {
    assert.doesNotMatch(OTHER_QUEUES, /^[A-Za-z0-9._:/-]+$/);
  });
});

describe('queue_depth and queue_owned_queues', () => {
  it('exports at most maxQueues queues plus (other), with the right totals, from one read per scrape', async () => {
    const metrics = createMetrics({ nodeId: 'node1', defaultMetrics: false });
    const depths = Array.from({ length: 120 }, (_, i) => q(`queue-${i}`, i, i % 3, i % 2));
    let reads = 0;
    metrics.bindQueue(
      () => {
        reads++;
        return Promise.resolve(depths);
      },
      { maxQueues: 5 },
    );
    const text = await metrics.scrape();
    assert.equal(reads, 1, 'queue_depth and queue_owned_queues share one read');
    const series = samples(text, 'queue_depth');
    const queues = new Set([...series.keys()].map((labels) => /queue="([^"]*)"/.exec(labels)![1]));
    assert.deepEqual(
      [...queues].sort(),
      [OTHER_QUEUES, 'queue-115', 'queue-116', 'queue-117', 'queue-118', 'queue-119'].sort(),
    );
    assert.equal(series.size, 6 * 3, 'ready, pending and dead for each');
    for (const [state, i] of [
      ['ready', 0],
      ['pending', 1],
      ['dead', 2],
    ] as const) {
      const sum = [...series].filter(([l]) => l.includes(`state="${state}"`)).reduce((s, [, v]) => s + v, 0);
      assert.equal(sum, totals(depths)[i], `sum of ${state}`);
    }
    assert.deepEqual([...samples(text, 'queue_owned_queues').values()], [120]);
    assert.match(text, /^# HELP queue_depth .*deepest/m);
  });

  it('defaults to 50 queues', async () => {
    const metrics = createMetrics({ nodeId: 'node1', defaultMetrics: false });
    metrics.bindQueue(() => Promise.resolve(Array.from({ length: 80 }, (_, i) => q(`q${i}`, 1))));
    const text = await metrics.scrape();
    assert.equal(samples(text, 'queue_depth').size, 51 * 3);
  });

  it('a failing read leaves no queue_depth series and does not fail the scrape', async () => {
    const metrics = createMetrics({ nodeId: 'node1', defaultMetrics: false });
    let fail = false;
    metrics.bindQueue(() => (fail ? Promise.reject(new Error('redis down')) : Promise.resolve([q('a', 1)])));
    assert.equal(samples(await metrics.scrape(), 'queue_depth').size, 3);
    fail = true;
    const text = await metrics.scrape();
    assert.equal(samples(text, 'queue_depth').size, 0);
    assert.match(text, /^queue_messages_total\{/m);
  });
});

describe('exposition lint (what promtool check metrics enforces)', () => {
  it('every family has help text; counters end in _total and nothing else does; no colons', async () => {
    const metrics = createMetrics({ nodeId: 'node1' });
    metrics.bindRaft(raftStatus, () => 1);
    metrics.bindLock({ held: () => 0, waiters: () => 0 });
    metrics.bindQueue(() => Promise.resolve([q('a', 1)]));
    metrics.bindCache(() => ({ M: 0, E: 1, S: 0 }), 10);
    metrics.httpDuration.observe({ method: 'GET', route: '/health', status_code: '200' }, 0.001);
    const text = await metrics.scrape();
    const types = new Map<string, string>();
    const helps = new Map<string, string>();
    for (const line of text.split('\n')) {
      const t = /^# TYPE (\S+) (\S+)$/.exec(line);
      if (t) types.set(t[1]!, t[2]!);
      const h = /^# HELP (\S+) (.*)$/.exec(line);
      if (h) helps.set(h[1]!, h[2]!);
    }
    assert.ok(types.size > 20);
    for (const [name, type] of types) {
      assert.ok((helps.get(name) ?? '').trim().length > 0, `${name} has help text`);
      assert.ok(!name.includes(':'), `${name}: colons are for recording rules`);
      if (type === 'counter') assert.ok(name.endsWith('_total'), `counter ${name} ends in _total`);
      else assert.ok(!name.endsWith('_total'), `${type} ${name} must not end in _total`);
    }
    for (const name of SPEC_METRICS) assert.ok(types.has(name), `SPEC 8 names ${name}`);
    assert.equal(types.get('http_request_duration_seconds'), 'histogram');
    assert.ok(types.has('nodejs_active_handles'), 'the per-type default gauges stay');
  });
});

describe('http_request_duration_seconds labels', () => {
  it('route is the pattern: one value for unmatched requests, no cache key, no raw URL', async () => {
    const metrics = createMetrics({ nodeId: 'node3', defaultMetrics: false });
    const cluster = parseClusterAddrs(
      'node1=127.0.0.1:8001#cache,node3=127.0.0.1:8003#queue',
      'http',
    ).members;
    const app = await buildServer({
      nodeId: 'node3',
      roles: ['queue'],
      cluster,
      raft: null,
      metrics,
      plugins: [cacheRoutes({ service: null })],
    });
    try {
      await app.ready();
      const codes = await Promise.all(
        [
          ['GET', '/nope/123'],
          ['GET', '/nope/456?x=1'],
          ['DELETE', '/health'],
          ['GET', '/cache/users/secret-key-42'],
          ['PUT', '/cache/other-secret'],
          ['PROPFIND', '/coffee/pot-7'],
          ['GET', '/health'],
        ].map(async ([method, url]) => (await app.inject({ method: method as 'GET', url: url! })).statusCode),
      );
      assert.deepEqual(codes, [404, 404, 405, 421, 421, 404, 200]);
      const text = (await app.inject({ method: 'GET', url: '/metrics' })).body;
      const routes = new Map<string, number>();
      for (const [labels, v] of samples(text, 'http_request_duration_seconds_count')) {
        const m = /method="([^"]*)",route="([^"]*)",status_code="([^"]*)"/.exec(labels);
        assert.ok(m, labels);
        routes.set(`${m[1]} ${m[2]} ${m[3]}`, v);
      }
      assert.deepEqual(
        [...routes].sort(),
        [
          [`GET ${UNMATCHED_ROUTE} 404`, 2],
          [`DELETE ${UNMATCHED_ROUTE} 405`, 1],
          ['GET /cache/* 421', 1],
          ['PUT /cache/* 421', 1],
          [`OTHER ${UNMATCHED_ROUTE} 404`, 1],
          ['GET /health 200', 1],
        ].sort(),
      );
      // Only names and labels can leak a URL; sample values are numbers that may contain any digits.
      const series = text
        .split('\n')
        .filter((l) => !l.startsWith('#'))
        .map((l) => l.replace(/ \S+$/, ''))
        .join('\n');
      for (const leak of ['nope', 'secret', 'coffee', 'PROPFIND', '123'])
        assert.ok(!series.includes(leak), leak);
    } finally {
      await app.close();
    }
  });
});
