// The PromQL tokenizer the Prometheus integration test uses to check a Grafana dashboard against
// the nodes' exposition.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  exposedMetricNames,
  exprsInDashboard,
  exprsInTemplating,
  grafanaToPromql,
  metricNamesInExpr,
} from '../helpers/promql.js';

describe('metricNamesInExpr', () => {
  const cases: [string, string[]][] = [
    ['raft_is_leader', ['raft_is_leader']],
    ['sum(raft_is_leader)', ['raft_is_leader']],
    ['raft_term{node_id="node1"}', ['raft_term']],
    ['raft_term{node_id=~"$node", job!="x"} offset 5m', ['raft_term']],
    [
      'histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket{route!="unmatched"}[$__rate_interval])))',
      ['http_request_duration_seconds_bucket'],
    ],
    ['sum(rate(queue_messages_total[1m])) by (op)', ['queue_messages_total']],
    ['sum without (instance, node_id) (queue_depth)', ['queue_depth']],
    [
      'sum(rate(cache_hits_total[5m])) / (sum(rate(cache_hits_total[5m])) + sum(rate(cache_misses_total[5m])))',
      ['cache_hits_total', 'cache_misses_total'],
    ],
    ['lock_held + on(node_id) group_left(role) lock_waiters', ['lock_held', 'lock_waiters']],
    ['a > bool 0 and b or c unless d', ['a', 'b', 'c', 'd']],
    ['topk(5, queue_depth{state="ready"})', ['queue_depth']],
    ['count_values("term", raft_term)', ['raft_term']],
    ['quantile(0.5, x) * inf - nan', ['x']],
    ['label_replace(raft_term, "n", "$1", "node_id", "node(.*)")', ['raft_term']],
    ['max_over_time(raft_term[1h:1m]) @ end()', ['raft_term']],
    ['rate(x[1h30m]) * 1e-3 + 0x1F + .5', ['x']],
    ['{__name__="raft_commit_index", node_id="n1"}', ['raft_commit_index']],
    ['sum by(route) (rate(m[$__interval])) / ${scale} * [[factor]]', ['m']],
    ['# a comment naming not_a_metric\nup == 0', ['up']],
    ['SUM BY (job) (x) AND y', ['x', 'y']],
    ['recording:rule:rate5m', ['recording:rule:rate5m']],
    ['sum(rate(x[5m:30s]))', ['x']],
  ];
  for (const [expr, want] of cases) {
    it(expr.replace(/\n/g, ' '), () => {
      assert.deepEqual(metricNamesInExpr(expr), want);
    });
  }

  it('rejects what it cannot tokenize', () => {
    assert.throws(() => metricNamesInExpr('x{a="b}'), /unterminated string/);
    assert.throws(() => metricNamesInExpr('sum(x'), /unbalanced/);
    assert.throws(() => metricNamesInExpr('rate(x[5m)]'), /unbalanced/);
    assert.throws(() => metricNamesInExpr('x ; y'), /unexpected/);
  });
});

describe('exprsInDashboard', () => {
  it('collects expr from panels, targets and collapsed rows at any depth', () => {
    const dash = {
      title: 'd',
      templating: { list: [{ name: 'node', query: 'label_values(raft_term, node_id)' }] },
      panels: [
        { type: 'timeseries', targets: [{ expr: 'a', refId: 'A' }, { expr: 'b' }] },
        { type: 'row', collapsed: true, panels: [{ targets: [{ expr: 'c' }] }] },
        { type: 'text', options: { content: 'expr' } },
      ],
    };
    assert.deepEqual(exprsInDashboard(dash), ['a', 'b', 'c']);
  });
});

describe('exprsInTemplating', () => {
  it('reads the selector of label_values and the expression of query_result', () => {
    const dash = {
      templating: {
        list: [
          { name: 'node', query: 'label_values(process_cpu_seconds_total, node_id)' },
          { name: 'q', query: { query: 'label_values(queue_depth{state="ready"}, queue)', refId: 'q' } },
          { name: 'r', query: 'query_result(topk(3, raft_term))' },
          { name: 'all', query: 'label_values(node_id)' },
          { name: 'custom', type: 'custom', query: 'a,b,c' },
          { name: 'none' },
        ],
      },
    };
    assert.deepEqual(exprsInTemplating(dash), [
      'process_cpu_seconds_total',
      'queue_depth{state="ready"}',
      'topk(3, raft_term)',
    ]);
    assert.deepEqual(exprsInTemplating({}), []);
  });
});

describe('exposedMetricNames', () => {
  it('lists families and the series of histograms and summaries', () => {
    const text = [
      '# HELP h a histogram',
      '# TYPE h histogram',
      'h_bucket{le="1"} 0',
      '# HELP g a gauge',
      '# TYPE g gauge',
      'g 1',
      '# TYPE s summary',
      '# TYPE c_total counter',
      'c_total 1',
    ].join('\n');
    assert.deepEqual(
      [...exposedMetricNames(text)].sort(),
      ['c_total', 'g', 'h', 'h_bucket', 'h_count', 'h_sum', 's', 's_count', 's_sum'].sort(),
    );
  });
});

describe('grafanaToPromql', () => {
  it("replaces Grafana's interval variables and a dashboard's own, not regex back-references", () => {
    assert.equal(
      grafanaToPromql('rate(x{node_id=~"$node"}[$__rate_interval]) + y[${__interval}] + z[$__range]'),
      'rate(x{node_id=~".*"}[5s]) + y[5s] + z[1m]',
    );
    assert.equal(grafanaToPromql('x{a=~"[[node]]"} * $__interval_ms'), 'x{a=~".*"} * 5000');
    assert.equal(
      grafanaToPromql('label_replace(x, "a", "$1", "b", "(.*)")'),
      'label_replace(x, "a", "$1", "b", "(.*)")',
    );
    assert.equal(grafanaToPromql('x{a=~"${node:regex}"}'), 'x{a=~".*"}');
  });
});
