// Prometheus metrics of one node. Each node owns its Registry (never prom-client's global one) so
// several nodes can live in one process (tests) without mixing their numbers.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { LockMetricsSink } from '../lock/service.js';
import type { QueueMetricsSink } from '../queue/service.js';
import type { CacheMetricsSink } from '../cache/service.js';
import type { RaftStatus } from '../raft/types.js';

/** Buckets from 0.5 ms (a local lock grant) to 30 s (the longest long poll). */
export const HTTP_DURATION_BUCKETS = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];

/** Raft counters the driver's events feed. */
export interface RaftMetrics {
  elections: Counter;
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
   */
  bindQueue(depths: () => Promise<QueueDepth[]>): QueueMetricsSink;
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

export interface MetricsOptions {
  nodeId: string;
  /** Process metrics (CPU, memory, event loop lag); off in unit tests to keep them light. */
  defaultMetrics?: boolean;
}

export function createMetrics(opts: MetricsOptions): Metrics {
  const registry = new Registry();
  // A node label survives relabelling and makes dashboard legends readable.
  registry.setDefaultLabels({ node_id: opts.nodeId });
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry });

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
    bindQueue(depths: () => Promise<QueueDepth[]>): QueueMetricsSink {
      const messages = new Counter({
        name: 'queue_messages_total',
        help: 'Queue messages handled by this node, by operation (push, pop, ack, nack, dead)',
        labelNames: ['op'] as const,
        registers: [registry],
      });
      for (const op of ['push', 'pop', 'ack', 'nack', 'dead']) messages.inc({ op }, 0);
      new Gauge({
        name: 'queue_depth',
        help: 'Messages per queue owned by this node, by state (ready, pending, dead)',
        labelNames: ['queue', 'state'] as const,
        registers: [registry],
        async collect() {
          this.reset();
          try {
            for (const d of await depths()) {
              this.set({ queue: d.queue, state: 'ready' }, d.ready);
              this.set({ queue: d.queue, state: 'pending' }, d.pending);
              this.set({ queue: d.queue, state: 'dead' }, d.dead);
            }
          } catch {
            // Redis down: no depths this scrape; the rest of the exposition still answers.
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
        snapshotsInstalled: new Counter({
          name: 'raft_snapshots_installed_total',
          help: 'Snapshots received from a leader and installed (InstallSnapshot)',
          registers: [registry],
        }),
      };
    },
  };
}
