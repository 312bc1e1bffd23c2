// The queue service on one node (SPEC 5): runs operations against Redis for the queues routed here,
// parks long-polling pops in memory (no Redis connection or poll per waiting client), and runs the
// redelivery monitor for the queues this node owns on the hash ring.
import type { Logger } from 'pino';
import { DssError } from '../errors.js';
import { anchoredWallClock } from '../clock.js';
import type { Json } from '../raft/types.js';
import { withCommandDeadline } from './redis.js';
import type { HashRing } from './ring.js';
import type { NackOutcome, PoppedMessage, PopResult, QueueStats, QueueStore, RedisClient } from './store.js';

/** Every queue ever pushed to; the monitor's work list. A plain key: SADD/SSCAN work on Redis Cluster. */
export const QUEUE_REGISTRY_KEY = 'dss:queues';

const REGISTER_EVERY_MS = 5_000;
/** Most messages one pop script takes for parked pops (the API's own batch limit). */
const MAX_POP_BATCH = 1000;
/** Queues whose counts one metrics scrape reads at once. */
const DEPTH_BATCH = 256;
/** Queues whose expired deliveries the monitor handles at once. */
const MONITOR_CONCURRENCY = 64;
/**
 * How long the monitor may fail to reach Redis after start before it says so: a node starting beside
 * its Redis (or before it) is usually still connecting, and a warning on every healthy start would
 * teach operators to ignore the one that matters.
 */
export const MONITOR_STARTUP_GRACE_MS = 5_000;

export interface QueueMetricsSink {
  messages(op: 'push' | 'pop' | 'ack' | 'nack' | 'dead', n: number): void;
  redeliveries(n: number): void;
}

export interface QueueServiceOptions {
  nodeId: string;
  store: QueueStore;
  redis: RedisClient;
  ring: HashRing;
  /** Whether a queue node answers (cached probes); decides who runs the monitor for a dead owner's queues. */
  isUp: (nodeId: string) => boolean;
  ackTimeoutMs: number;
  /** 0 = never dead-letter. */
  maxDeliveries: number;
  /** QUEUE_MAX_LENGTH: most messages a queue holds (ready, pending, dead); 0 = no limit. */
  maxLength?: number;
  /** QUEUE_MAX_MESSAGE_BYTES: largest message as JSON text. */
  maxMessageBytes?: number;
  /** Redelivery monitor period. */
  monitorIntervalMs: number;
  /**
   * How often parked pops look at Redis themselves. Pushes through this node wake them at once;
   * this covers pushes that reached Redis through another node (owner fallback after a failure).
   */
  recheckIntervalMs: number;
  metrics: QueueMetricsSink;
  logger: Logger;
  now?: () => number;
}

export interface PopRequest {
  max: number;
  waitMs: number;
  visibilityMs?: number;
}

interface ParkedPop {
  queue: string;
  req: PopRequest;
  resolve: (msgs: PoppedMessage[]) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export class QueueService {
  private readonly opts: QueueServiceOptions;
  private readonly now: () => number;
  /**
   * When each queue was last added to the registry: a push costs one SADD per queue every few
   * seconds, not one per push. Not forever: a Redis that lost data (no AOF, a failover to a lagging
   * replica) must get the queue back, or the monitor would never redeliver its messages again.
   */
  private readonly registered = new Map<string, number>();
  /** Parked pops per queue, oldest first (FIFO among consumers). */
  private readonly parked = new Map<string, ParkedPop[]>();
  /** Queues whose parked pops are being served: one drain per queue at a time keeps FIFO. */
  private readonly draining = new Set<string>();
  /**
   * Queues woken while their drain had a pop in flight: that pop may have run in Redis before the
   * push that woke them, so an empty answer from it proves nothing and the drain must look again.
   */
  private readonly wokenDuringDrain = new Set<string>();
  private monitor: NodeJS.Timeout | null = null;
  private recheck: NodeJS.Timeout | null = null;
  private monitorRunning = false;
  /** When the monitor's passes began failing (this.now()), or null while they succeed. */
  private monitorFailingSince: number | null = null;
  private monitorWarned = false;
  private monitorEverSucceeded = false;
  private startedAt = 0;
  private stopped = false;

  constructor(opts: QueueServiceOptions) {
    this.opts = opts;
    this.now = opts.now ?? anchoredWallClock();
  }

  start(): void {
    this.startedAt = this.now();
    this.monitor = setInterval(() => void this.runMonitor(), this.opts.monitorIntervalMs);
    this.recheck = setInterval(() => {
      for (const q of this.parked.keys()) this.wake(q);
    }, this.opts.recheckIntervalMs);
  }

  stop(): void {
    this.stopped = true;
    if (this.monitor) clearInterval(this.monitor);
    if (this.recheck) clearInterval(this.recheck);
    // Parked pops hold nothing yet: answering "empty" is exact, and the client simply polls again.
    // Copies: unpark removes each pop from the list being walked.
    for (const list of [...this.parked.values()]) for (const p of [...list]) this.unpark(p, []);
    this.parked.clear();
  }

  /** The node owning `queue` now: the first reachable one clockwise from its ring position. */
  ownerOf(queue: string): string {
    return (
      this.opts.ring.ownerAmong(queue, (id) => id === this.opts.nodeId || this.opts.isUp(id)) ??
      this.opts.nodeId
    );
  }

  // ---------------------------------------------------------------- operations (run here)

  async push(queue: string, messages: Json[]): Promise<string[]> {
    await this.register(queue);
    const ids = await this.opts.store.push(queue, messages, {
      ...(this.opts.maxLength !== undefined ? { maxLength: this.opts.maxLength } : {}),
      ...(this.opts.maxMessageBytes !== undefined ? { maxMessageBytes: this.opts.maxMessageBytes } : {}),
    });
    this.opts.metrics.messages('push', ids.length);
    this.wake(queue);
    return ids;
  }

  /**
   * Up to req.max deliveries; waits up to req.waitMs for the first one. Empty list: nothing came.
   * `gone` (the client went away) ends a wait at once, with nothing, so no message is handed to it.
   */
  async pop(queue: string, req: PopRequest, gone?: AbortSignal): Promise<PoppedMessage[]> {
    if (gone?.aborted) return [];
    const parked = this.parked.get(queue);
    // Earlier long polls come first: a new one may not overtake them, so it only takes what is there
    // when nobody is parked. A pop that may not wait always looks (an empty answer must mean empty).
    if (req.waitMs === 0 || !parked || parked.length === 0) {
      const got = await this.popNow(queue, req);
      if (got.length > 0 || req.waitMs === 0 || this.stopped || gone?.aborted) return got;
    }
    return new Promise<PoppedMessage[]>((resolve, reject) => {
      const p: ParkedPop = {
        queue,
        req,
        resolve,
        reject,
        timer: setTimeout(() => this.unpark(p, []), req.waitMs),
      };
      let list = this.parked.get(queue);
      if (!list) this.parked.set(queue, (list = []));
      list.push(p);
      gone?.addEventListener('abort', () => this.unpark(p, []), { once: true });
      // Something may have arrived between the empty pop and parking.
      this.wake(queue);
    });
  }

  /**
   * Deliveries that reached no consumer (the client went away before its answer was sent, or its
   * long poll ended while the pop was in Redis) go back to the head of ready at once, in order and
   * uncounted, instead of waiting out their visibility.
   */
  async giveBack(queue: string, msgs: PoppedMessage[]): Promise<void> {
    if (msgs.length === 0) return;
    try {
      await this.opts.store.unpop(queue, msgs);
      this.wake(queue);
    } catch (err) {
      // Still pending: the monitor redelivers them after their visibility timeout.
      this.opts.logger.warn({ err, queue, n: msgs.length }, 'could not return unclaimed deliveries');
    }
  }

  /**
   * `id` (one message) answers 404 unknown_message when it is not pending; a list counts what it
   * acked and skips the rest, however many ids it has.
   */
  async ack(queue: string, ids: string | readonly string[], receipt?: number): Promise<number> {
    const n =
      typeof ids === 'string'
        ? await this.opts.store.ack(queue, ids, receipt)
        : await this.opts.store.ack(queue, ids);
    this.opts.metrics.messages('ack', n);
    return n;
  }

  async nack(queue: string, id: string, receipt?: number): Promise<NackOutcome> {
    const state = await this.opts.store.nack(queue, id, this.opts.maxDeliveries, receipt);
    this.opts.metrics.messages(state === 'dead' ? 'dead' : 'nack', 1);
    if (state === 'ready') this.wake(queue);
    return state;
  }

  stats(queue: string): Promise<QueueStats> {
    return this.opts.store.stats(queue);
  }

  /** Queues in the registry (for status pages and metrics); at most `limit`. */
  async knownQueues(limit = 10_000): Promise<string[]> {
    const out: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await this.opts.redis.sscan(QUEUE_REGISTRY_KEY, cursor, 'COUNT', 1000);
      out.push(...batch);
      cursor = next;
    } while (cursor !== '0' && out.length < limit);
    return out.slice(0, limit);
  }

  /**
   * Counts of every queue this node owns (of the first `limit` in the registry), for the queue_depth
   * gauge, which picks the deepest itself: a partial list would make its totals wrong. Read in
   * batches, so a scrape never puts thousands of scripts ahead of client requests at once.
   */
  async depths(limit = 10_000): Promise<(QueueStats & { queue: string })[]> {
    const owned = (await this.knownQueues(limit)).filter((q) => this.ownerOf(q) === this.opts.nodeId);
    const out: (QueueStats & { queue: string })[] = [];
    for (let i = 0; i < owned.length; i += DEPTH_BATCH) {
      const batch = owned.slice(i, i + DEPTH_BATCH);
      out.push(...(await Promise.all(batch.map(async (q) => ({ queue: q, ...(await this.stats(q)) })))));
    }
    return out;
  }

  /** Pops parked here now, for GET /status. */
  parkedCount(): number {
    let n = 0;
    for (const list of this.parked.values()) n += list.length;
    return n;
  }

  // ---------------------------------------------------------------- internals

  private async register(queue: string): Promise<void> {
    const at = this.registered.get(queue);
    if (at !== undefined && this.now() - at < REGISTER_EVERY_MS) return;
    // Before the push: a queue whose messages exist is always in the registry, so the monitor can
    // never miss its expired deliveries. A push that then fails leaves a harmless empty entry.
    try {
      await withCommandDeadline(this.opts.redis.sadd(QUEUE_REGISTRY_KEY, queue));
    } catch (e) {
      throw new DssError('unavailable', `Redis unavailable: ${e instanceof Error ? e.message : String(e)}`);
    }
    this.registered.set(queue, this.now());
  }

  private async popNow(queue: string, req: PopRequest): Promise<PoppedMessage[]> {
    const out: PoppedMessage[] = [];
    // Each script call dead-letters a bounded number of exhausted ids (a long run of them can only
    // come from a lowered QUEUE_MAX_DELIVERIES); go on until it finds enough or ready runs out.
    for (;;) {
      let res: PopResult;
      try {
        res = await this.opts.store.pop(queue, {
          max: req.max - out.length,
          visibilityMs: req.visibilityMs ?? this.opts.ackTimeoutMs,
          nowMs: this.now(),
          maxDeliveries: this.opts.maxDeliveries,
        });
      } catch (e) {
        // What earlier calls took would reach nobody: back to the queue rather than wait out its visibility.
        if (out.length > 0) await this.giveBack(queue, out);
        throw e;
      }
      if (res.deadLettered > 0) this.opts.metrics.messages('dead', res.deadLettered);
      if (res.messages.length > 0) this.opts.metrics.messages('pop', res.messages.length);
      out.push(...res.messages);
      if (!res.more || out.length >= req.max || this.stopped) return out;
    }
  }

  /** Serve parked pops of `queue` in arrival order while Redis has messages for them. */
  private wake(queue: string): void {
    if (!this.parked.get(queue)?.length) return;
    if (this.draining.has(queue)) {
      this.wokenDuringDrain.add(queue);
      return;
    }
    this.draining.add(queue);
    void this.drain(queue).finally(() => {
      this.draining.delete(queue);
      // A wake between the drain's last look and here found it still running: serve it now.
      if (this.wokenDuringDrain.delete(queue)) this.wake(queue);
    });
  }

  private async drain(queue: string): Promise<void> {
    for (;;) {
      const list = this.parked.get(queue);
      const first = list?.[0];
      if (!list || !first) {
        this.parked.delete(queue);
        return;
      }
      // One pop for the parked pops at the head that share a visibility: one Redis round trip
      // serves many waiting consumers, who then get their shares in arrival order.
      const vis = first.req.visibilityMs;
      let want = 0;
      for (const p of list) {
        if (p.req.visibilityMs !== vis || want + p.req.max > MAX_POP_BATCH) break;
        want += p.req.max;
      }
      let got: PoppedMessage[];
      // Cleared before the pop leaves: a wake from here on may concern a push this pop misses.
      this.wokenDuringDrain.delete(queue);
      try {
        got = await this.popNow(queue, {
          max: Math.max(1, want),
          waitMs: 0,
          ...(vis !== undefined ? { visibilityMs: vis } : {}),
        });
      } catch (e) {
        // Redis trouble: every parked pop of this queue learns it now rather than at its timeout.
        for (const p of list.splice(0)) this.fail(p, e instanceof Error ? e : new Error(String(e)));
        this.parked.delete(queue);
        return;
      }
      if (got.length === 0) {
        if (this.wokenDuringDrain.has(queue)) continue;
        return;
      }
      // Waiters may have timed out during the pop: what nobody takes goes back to ready at once
      // instead of waiting out its visibility.
      let given = 0;
      while (given < got.length) {
        const taker = list[0];
        if (!taker || taker.req.visibilityMs !== vis) break;
        const share = got.slice(given, given + taker.req.max);
        given += share.length;
        this.unpark(taker, share);
      }
      if (given < got.length) {
        // Rare: a long poll ended while its pop was in flight. The rest go back as if never popped.
        await this.giveBack(queue, got.slice(given));
        continue;
      }
      // Redis ran dry: the rest keep waiting, unless a push came in meanwhile.
      if (got.length < want && !this.wokenDuringDrain.has(queue)) return;
    }
  }

  private unpark(p: ParkedPop, msgs: PoppedMessage[]): void {
    clearTimeout(p.timer);
    this.removeParked(p);
    p.resolve(msgs);
  }

  private fail(p: ParkedPop, e: Error): void {
    clearTimeout(p.timer);
    p.reject(e);
  }

  private removeParked(p: ParkedPop): void {
    const list = this.parked.get(p.queue);
    const i = list?.indexOf(p) ?? -1;
    if (!list || i < 0) return;
    list.splice(i, 1);
    if (list.length === 0 && !this.draining.has(p.queue)) this.parked.delete(p.queue);
  }

  /**
   * Redelivers expired deliveries of the queues this node owns. Two nodes that briefly both think
   * they own a queue both run it; each step is one atomic script, so a message moves once.
   */
  private async redeliver(queue: string): Promise<void> {
    for (;;) {
      const r = await this.opts.store.redeliverExpired(queue, this.now(), this.opts.maxDeliveries);
      if (r.requeued > 0) {
        this.opts.metrics.redeliveries(r.requeued);
        this.wake(queue);
      }
      if (r.deadLettered > 0) this.opts.metrics.messages('dead', r.deadLettered);
      if (!r.more) return;
    }
  }

  /**
   * The monitor retries every pass, so an outage is reported once when it begins (after the startup
   * grace if Redis was never reached) and once when it ends, not on every pass.
   */
  private monitorFailed(err: unknown, queues?: { failed: number; of: number }): void {
    const now = this.now();
    this.monitorFailingSince ??= now;
    if (this.monitorWarned) return;
    if (!this.monitorEverSucceeded && now - this.startedAt < MONITOR_STARTUP_GRACE_MS) return;
    this.monitorWarned = true;
    this.opts.logger.warn(
      {
        err: String(err),
        retry_every_ms: this.opts.monitorIntervalMs,
        ...(queues ? { queues_failed: queues.failed, queues_owned: queues.of } : {}),
      },
      'queue redelivery monitor: Redis unavailable; retrying (reported again when it recovers)',
    );
  }

  private monitorSucceeded(): void {
    if (this.monitorWarned && this.monitorFailingSince !== null) {
      this.opts.logger.warn(
        { down_ms: Math.round(this.now() - this.monitorFailingSince) },
        'queue redelivery monitor: Redis reachable again',
      );
    }
    this.monitorFailingSince = null;
    this.monitorWarned = false;
    this.monitorEverSucceeded = true;
  }

  private async runMonitor(): Promise<void> {
    if (this.monitorRunning || this.stopped) return;
    this.monitorRunning = true;
    try {
      const owned = (await this.knownQueues(Number.MAX_SAFE_INTEGER)).filter(
        (q) => this.ownerOf(q) === this.opts.nodeId,
      );
      // Many queues at once: their scripts share round trips (auto-pipelining) instead of one
      // round trip per queue per pass. One queue failing (its Redis Cluster master down) must not
      // hold up the others, so every queue gets its turn whatever happened to the rest.
      let failed = 0;
      let firstError: unknown;
      for (let i = 0; i < owned.length && !this.stopped; i += MONITOR_CONCURRENCY) {
        const results = await Promise.allSettled(
          owned.slice(i, i + MONITOR_CONCURRENCY).map((q) => this.redeliver(q)),
        );
        for (const r of results) {
          if (r.status === 'fulfilled') continue;
          if (failed++ === 0) firstError = r.reason;
        }
      }
      if (failed === 0) this.monitorSucceeded();
      else this.monitorFailed(firstError, { failed, of: owned.length });
    } catch (err) {
      this.monitorFailed(err);
    } finally {
      this.monitorRunning = false;
    }
  }
}
