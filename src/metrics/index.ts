// Prometheus metrics of one node. Each node owns its Registry (never prom-client's global one) so
// several nodes can live in one process (tests) without mixing their numbers.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { LockMetricsSink } from '../lock/service.js';
import type { QueueMetricsSink } from '../queue/service.js';
import type { CacheMetricsSink } from '../cache/service.js';
import type { RaftStatus } from '../raft/types.js';

/**
 * Buckets from 0.1 ms (an L1 cache hit) through 0.5 ms (a local lock grant) to 30 s (the longest
 * long poll); requests that wait longer (a lock acquire's wait_ms) land in +Inf.
 */
export const HTTP_DURATION_BUCKETS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];

/** Label value of http_request_duration_seconds for requests that matched no route (404, 405). */
export const UNMATCHED_ROUTE = 'unmatched';

/** METRICS_MAX_QUEUES' default: queues exported one by one in queue_depth. */
export const DEFAULT_METRICS_MAX_QUEUES = 50;

/**
 * queue_depth's `queue` label for the sum of the queues beyond METRICS_MAX_QUEUES. Parentheses are
 * not allowed in queue names (SPEC 3 identifiers), so it never collides with a real queue.
 */
export const OTHER_QUEUES = '(other)';

/**
 * prom-client's default metrics include three gauges named *_total (promtool lint: only counters
 * may end in _total). Their per-type siblings (nodejs_active_handles{type}, ...) stay; the totals
 * are their sums.
 */
const LINT_FAILING_DEFAULT_METRICS = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
];

/** Raft counters the driver's events feed. */
export interface RaftMetrics {
  elections: Counter;
  snapshotSeconds: Histogram;
  snapshotsInstalled: Counter;
}

export interface Metrics {
  readonly registry: Registry;
  readonly httpDuration: Histogram<'method' | 'route' | 'status_code'>;
  /**
   * Registers the raft_* metrics, gauges read from `source` at scrape time. Called once by nodes
   * that run Raft; nodes without the lock role export no raft_* metrics rather than misleading zeros.
   * `fsyncs` reads the storage's running fsync count (exported as raft_fsync_total).
   */
  bindRaft(source: () => RaftStatus, fsyncs?: () => number): RaftMetrics;
  /** Registers the lock_* metrics; `held`/`waiters` are read from the lock table at scrape time. */
  bindLock(source: { held: () => number; waiters: () => number }): LockMetricsSink;
  /**
   * Registers the queue_* metrics. `depths` lists the queues this node owns with their counts, read
   * from Redis at scrape time (a failure leaves the gauge empty rather than failing the scrape).
   * queue_depth exports the `maxQueues` deepest queues one by one and the rest summed under
   * queue="(other)" (see capQueueDepths), so its series stay bounded however many queues exist.
   */
  bindQueue(depths: () => Promise<QueueDepth[]>, opts?: { maxQueues?: number }): QueueMetricsSink;
  /**
   * Registers the cache_* metrics; `lines` counts this node's L1 lines by MESI state at scrape time.
   */
  bindCache(lines: () => Record<'M' | 'E' | 'S', number>, capacity: number): CacheMetricsSink;
  /** Prometheus exposition text. */
  scrape(): Promise<string>;
  readonly contentType: string;
}

export interface QueueDepth {
  queue: string;
  ready: number;
  pending: number;
  dead: number;
}

/** Messages of a queue in every state: what capQueueDepths ranks queues by. */
function total(d: QueueDepth): number {
  return d.ready + d.pending + d.dead;
}

/**
 * Bounds queue_depth's series: the `max` deepest queues (ready + pending + dead; ties by name, so
 * the choice is stable) one by one, then one `(other)` entry summing the rest, present only when
 * something was folded into it. Totals over all entries equal those over `depths`.
 */
export function capQueueDepths(depths: readonly QueueDepth[], max: number): QueueDepth[] {
  const keep = Math.max(0, max);
  if (depths.length <= keep) return [...depths];
  const ranked = [...depths].sort(
    (a, b) => total(b) - total(a) || (a.queue < b.queue ? -1 : a.queue > b.queue ? 1 : 0),
  );
  const kept = ranked.slice(0, keep);
  const other: QueueDepth = { queue: OTHER_QUEUES, ready: 0, pending: 0, dead: 0 };
  for (const d of ranked.slice(kept.length)) {
    other.ready += d.ready;
    other.pending += d.pending;
    other.dead += d.dead;
  }
  return [...kept, other];
}

export interface MetricsOptions {
  nodeId: string;
  /** Process metrics (CPU, memory, event loop lag); off in unit tests to keep them light. */
  defaultMetrics?: boolean;
}

export function createMetrics(opts: MetricsOptions): Metrics {
  const registry = new Registry();
  // A node label survives relabelling and makes dashboard legends readable.
  registry.setDefaultLabels({ node_id: opts.nodeId });
  if (opts.defaultMetrics !== false) {
    collectDefaultMetrics({ register: registry });
    for (const name of LINT_FAILING_DEFAULT_METRICS) registry.removeSingleMetric(name);
  }

  const httpDuration = new Histogram({
    name: 'http_request_duration_seconds',
    help: 'HTTP request duration by method, route pattern and status code',
    labelNames: ['method', 'route', 'status_code'] as const,
    buckets: HTTP_DURATION_BUCKETS,
    registers: [registry],
  });
  let bound = false;
  return {
    registry,
    httpDuration,
    contentType: registry.contentType,
    scrape: () => registry.metrics(),
    bindLock(source: { held: () => number; waiters: () => number }): LockMetricsSink {
      new Gauge({
        name: 'lock_held',
        help: 'Holds in the lock table (a shared lock with 3 holders counts 3)',
        registers: [registry],
        collect() {
          this.set(source.held());
        },
      });
      new Gauge({
        name: 'lock_waiters',
        help: 'Acquires queued behind a conflicting hold',
        registers: [registry],
        collect() {
          this.set(source.waiters());
        },
      });
      const acquires = new Counter({
        name: 'lock_acquire_total',
        help: 'Acquire requests answered by this node as leader, by result',
        labelNames: ['result'] as const,
        registers: [registry],
      });
      for (const r of ['granted', 'conflict', 'deadlock', 'wait_timeout', 'error'])
        acquires.inc({ result: r }, 0);
      const deadlocks = new Counter({
        name: 'lock_deadlocks_total',
        help: 'Deadlock cycles broken by aborting their youngest waiter (counted as applied)',
        registers: [registry],
      });
      return {
        acquire: (result) => acquires.inc({ result }),
        deadlock: () => deadlocks.inc(),
      };
    },
    bindQueue(depths: () => Promise<QueueDepth[]>, queueOpts: { maxQueues?: number } = {}): QueueMetricsSink {
      const maxQueues = queueOpts.maxQueues ?? DEFAULT_METRICS_MAX_QUEUES;
      const messages = new Counter({
        name: 'queue_messages_total',
        help: 'Queue messages handled by this node, by operation (push, pop, ack, nack, dead)',
        labelNames: ['op'] as const,
        registers: [registry],
      });
      for (const op of ['push', 'pop', 'ack', 'nack', 'dead']) messages.inc({ op }, 0);
      // One Redis read per scrape feeds both gauges: prom-client starts every collect() of a scrape
      // before any finishes, so the second one joins the read the first started.
      let inflight: Promise<QueueDepth[]> | null = null;
      const read = (): Promise<QueueDepth[]> =>
        (inflight ??= depths().finally(() => {
          inflight = null;
        }));
      new Gauge({
        name: 'queue_depth',
        help:
          `Messages per queue owned by this node, by state (ready, pending, dead); the ${maxQueues} ` +
          `deepest queues one by one (METRICS_MAX_QUEUES), the rest summed as queue="${OTHER_QUEUES}"`,
        labelNames: ['queue', 'state'] as const,
        registers: [registry],
        async collect() {
          let shown: QueueDepth[] = [];
          try {
            shown = capQueueDepths(await read(), maxQueues);
          } catch {
            // Redis down: no depths this scrape; the rest of the exposition still answers.
          }
          // Replaced in one synchronous step, so a concurrent scrape never sees a half-filled gauge.
          this.reset();
          for (const d of shown) {
            this.set({ queue: d.queue, state: 'ready' }, d.ready);
            this.set({ queue: d.queue, state: 'pending' }, d.pending);
            this.set({ queue: d.queue, state: 'dead' }, d.dead);
          }
        },
      });
      new Gauge({
        name: 'queue_owned_queues',
        help: 'Queues this node owns on the hash ring (queue_depth lists at most METRICS_MAX_QUEUES of them)',
        registers: [registry],
        async collect() {
          try {
            this.set((await read()).length);
          } catch {
            // Redis down: 0 (a gauge without labels cannot be absent); queue_depth has no series then.
            this.reset();
          }
        },
      });
      const redeliveries = new Counter({
        name: 'queue_redeliveries_total',
        help: 'Deliveries whose visibility timeout passed and that went back to ready',
        registers: [registry],
      });
      return {
        messages: (op, n) => messages.inc({ op }, n),
        redeliveries: (n) => redeliveries.inc(n),
      };
    },
    bindCache(lines: () => Record<'M' | 'E' | 'S', number>, capacity: number): CacheMetricsSink {
      const counter = (name: string, help: string): Counter =>
        new Counter({ name, help, registers: [registry] });
      // Hits are counted in a plain number and handed to prom-client at scrape time: a hit costs a
      // few microseconds, and Counter.inc() a noticeable share of that.
      let hitCount = 0;
      let hitsSeen = 0;
      new Counter({
        name: 'cache_hits_total',
        help: "Reads served from this node's L1 (no message, no Redis)",
        registers: [registry],
        collect() {
          if (hitCount > hitsSeen) this.inc(hitCount - hitsSeen);
          hitsSeen = hitCount;
        },
      });
      const misses = counter('cache_misses_total', "Reads that went to the key's home (a peer or memory)");
      const invalidations = counter(
        'cache_invalidations_total',
        'Lines of this node invalidated by their home',
      );
      const writebacks = counter('cache_writebacks_total', 'M lines written back to Redis by this node');
      const revocations = counter(
        'cache_lease_revocations_total',
        'Holders this node (as home) gave up on after they did not answer, waiting out their lease',
      );
      const messages = new Counter({
        name: 'cache_coherence_messages_total',
        help: 'Snoops and invalidations this node sent as home, by kind',
        labelNames: ['kind'] as const,
        registers: [registry],
      });
      for (const kind of ['snoop_read', 'invalidate']) messages.inc({ kind }, 0);
      new Gauge({
        name: 'cache_lines',
        help: "Lines in this node's L1, by MESI state",
        labelNames: ['state'] as const,
        registers: [registry],
        collect() {
          const n = lines();
          for (const state of ['M', 'E', 'S'] as const) this.set({ state }, n[state]);
        },
      });
      new Gauge({
        name: 'cache_capacity',
        help: 'CACHE_MAX_SIZE: most lines the L1 holds',
        registers: [registry],
      }).set(capacity);
      return {
        hit: () => {
          hitCount++;
        },
        miss: () => misses.inc(),
        invalidation: () => invalidations.inc(),
        writeback: () => writebacks.inc(),
        message: (kind) => messages.inc({ kind }),
        revocation: () => revocations.inc(),
      };
    },
    bindRaft(source: () => RaftStatus, fsyncs?: () => number): RaftMetrics {
      if (bound) throw new Error('raft metrics already bound');
      bound = true;
      const gauge = (name: string, help: string, read: (s: RaftStatus) => number): void => {
        new Gauge({
          name,
          help,
          registers: [registry],
          collect() {
            // A Raft node that is not started (or failed) must not break the whole scrape.
            try {
              this.set(read(source()));
            } catch {
              this.reset();
            }
          },
        });
      };
      gauge('raft_is_leader', '1 when this node is the Raft leader', (s) => (s.role === 'leader' ? 1 : 0));
      gauge('raft_term', 'Current Raft term', (s) => s.term);
      gauge('raft_commit_index', 'Highest log index known committed', (s) => s.commitIndex);
      gauge('raft_last_applied', 'Highest log index applied to the state machine', (s) => s.lastApplied);
      gauge('raft_last_log_index', 'Highest log index stored', (s) => s.lastIndex);
      gauge('raft_snapshot_index', 'Log index covered by the latest snapshot', (s) => s.snapshotIndex);
      if (fsyncs) {
        let seen = 0;
        new Counter({
          name: 'raft_fsync_total',
          help: 'fsync/fdatasync calls of the Raft log storage (group commit: one covers a batch)',
          registers: [registry],
          collect() {
            const now = fsyncs();
            if (now > seen) this.inc(now - seen);
            seen = now;
          },
        });
      }
      return {
        elections: new Counter({
          name: 'raft_elections_total',
          help: 'Elections (campaigns) this node started',
          registers: [registry],
        }),
        snapshotSeconds: new Histogram({
          name: 'raft_snapshot_duration_seconds',
          help: 'Local snapshots (log compaction): time the Raft loop was held by each',
          buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
          registers: [registry],
        }),
        snapshotsInstalled: new Counter({
          name: 'raft_snapshots_installed_total',
          help: 'Snapshots received from a leader and installed (InstallSnapshot)',
          registers: [registry],
        }),
      };
    },
  };
}
