// The cache service of one node (SPEC 6): wires its L1 (l1.ts), its share of the homes (home.ts)
// and main memory (memory.ts) together, routes coherence messages to this node directly and to
// others over the link, and offers the public operations.
import { performance } from 'node:perf_hooks';
import type {
  HomeGrantWire,
  HomeRequestWire,
  LeaseReplyWire,
  LeaseWire,
  SnoopReplyWire,
  SnoopWire,
} from '../api/schemas/cache.js';
import type { CacheWritePolicy } from '../config/index.js';
import type { Logger } from '../log.js';
import type { HashRing } from '../queue/ring.js';
import { CacheHome, type HomeMetricsSink } from './home.js';
import { CacheL1, type GetResult, type L1MetricsSink } from './l1.js';
import type { CacheLink, SnoopKind } from './link.js';
import type { MainMemory } from './memory.js';
import { MAX_CACHE_MESSAGE_TIMEOUT_MS, type Data, type HeldState, type NodeId } from './types.js';

export type CacheMetricsSink = L1MetricsSink & HomeMetricsSink;

export interface CacheServiceOptions {
  nodeId: NodeId;
  /** Hash ring of the cache nodes: a key's owner is its home. */
  ring: HashRing;
  link: CacheLink;
  memory: MainMemory;
  capacity: number;
  writePolicy: CacheWritePolicy;
  /** Coherence lease (CACHE_LEASE_MS): how long a node cut off from a home keeps serving its lines. */
  leaseMs: number;
  metrics?: CacheMetricsSink;
  logger?: Logger;
}

export interface CacheStatus {
  size: number;
  capacity: number;
  write_policy: CacheWritePolicy;
  lease_ms: number;
  home: { epoch: number; ready: boolean; entries: number };
}

export class CacheService {
  readonly home: CacheHome;
  readonly l1: CacheL1;
  private starting: Promise<void> | null = null;
  private stopped = false;

  constructor(private readonly opts: CacheServiceOptions) {
    const self = opts.nodeId;
    const messageTimeoutMs = Math.max(
      50,
      Math.min(MAX_CACHE_MESSAGE_TIMEOUT_MS, Math.floor(opts.leaseMs / 2)),
    );
    const log = opts.logger;
    this.home = new CacheHome({
      nodeId: self,
      memory: opts.memory,
      leaseMs: opts.leaseMs,
      messageTimeoutMs,
      ...(opts.metrics ? { metrics: opts.metrics } : {}),
      snoop: (node, kind, msg) => {
        const wire: SnoopWire = { from: self, epoch: this.home.currentEpoch, ...msg };
        return node === self
          ? this.l1.handleSnoop(self, kind, wire)
          : opts.link.snoop(node, kind, wire, messageTimeoutMs);
      },
      onRevoke: (node, reason) => log?.warn({ node, reason }, 'cache home gave up on a holder'),
    });
    this.l1 = new CacheL1({
      nodeId: self,
      capacity: opts.capacity,
      writePolicy: opts.writePolicy,
      homeOf: (key) => opts.ring.owner(key),
      peers: opts.ring.nodes().filter((id) => id !== self),
      home: this.home,
      link: opts.link,
      memory: opts.memory,
      leaseMs: opts.leaseMs,
      messageTimeoutMs,
      ...(opts.metrics ? { metrics: opts.metrics } : {}),
      onEvent: (msg, fields) => log?.warn(fields, msg),
    });
  }

  /**
   * Once memory hands this node's home an epoch (retried while Redis is down), joins every home;
   * this node's own home then waits out the leases of its previous run before granting.
   */
  start(): void {
    this.starting = (async () => {
      for (let attempt = 0; !this.stopped; attempt++) {
        try {
          await this.home.start();
          // The home's epoch numbers this run of the node: the L1's generations at other homes
          // start from it, so they exceed every earlier run's.
          this.l1.start(this.home.currentEpoch);
          this.opts.logger?.info({ epoch: this.home.currentEpoch }, 'cache home started');
          return;
        } catch (err) {
          // The Redis connection is usually still being made on the first tries.
          if (attempt === 20) {
            this.opts.logger?.warn({ err }, 'cache home cannot start yet (Redis?); retrying');
          }
          await new Promise((r) => setTimeout(r, attempt < 20 ? 50 : 500));
        }
      }
    })();
  }

  /** Graceful stop: every M line goes to memory first. Returns how many were written back. */
  async stop(): Promise<number> {
    this.stopped = true;
    await this.starting;
    return this.l1.stop();
  }

  ready(): boolean {
    return this.home.ready();
  }

  /** A local hit answered without waiting for anything, or null (then use get). */
  hitNow(key: string): GetResult | null {
    return this.l1.hitNow(key);
  }

  get(key: string): Promise<GetResult> {
    return this.l1.get(key);
  }

  put(key: string, data: Data): Promise<void> {
    return this.l1.put(key, data);
  }

  lines(): Array<{ key: string; state: HeldState }> {
    return this.l1.lines();
  }

  flush(): Promise<number> {
    return this.l1.flush();
  }

  status(): CacheStatus {
    return {
      size: this.l1.size,
      capacity: this.l1.capacity,
      write_policy: this.opts.writePolicy,
      lease_ms: this.opts.leaseMs,
      home: { epoch: this.home.currentEpoch, ready: this.home.ready(), entries: this.home.size },
    };
  }

  // ---- internal endpoints

  handleRequest(body: HomeRequestWire): Promise<HomeGrantWire> {
    return this.home.request(body, performance.now());
  }

  handleSnoop(kind: SnoopKind, body: SnoopWire): Promise<SnoopReplyWire> {
    return this.l1.handleSnoop(body.from, kind, body);
  }

  handleLease(body: LeaseWire): LeaseReplyWire {
    return this.home.lease(body);
  }
}
