// A node's side of the cache (SPEC 6): its L1 of MESI lines, its own reads and writes, and the
// snoops and invalidations its keys' homes send it. Redis is main memory (memory.ts); a key's home
// (home.ts, maybe this very node) serializes the key's bus transactions.
//
// Rules this class keeps, each needed by the home's reasoning:
// - A line is served locally only while its home's lease runs (a home that is this node needs none):
//   the lease is renewed by any answered request, counting from when the request was SENT.
// - Every line remembers the grant it came from (home epoch, our membership generation there, grant
//   sequence). A snoop names the grant it means; a line that does not match is not the one the home
//   means. A snoop for a grant whose reply is still on its way waits for that reply.
// - An M line goes to memory (fenced by its grant's token) before it changes state or leaves.
// - After evicting a line, no new request for that key goes to the home before the home has
//   processed the eviction notice.
// - When this node cannot know what a home granted it (a reply lost to a timeout or a reset), or the
//   home says it gave up on us, it drops every line from that home and rejoins with a new generation.
// - One of this node's operations on a key runs at a time; snoops do not queue behind them (that
//   could deadlock against the home), they wait only for what they must.
import { performance } from 'node:perf_hooks';
import type { HomeGrantWire, HomeRequestWire, SnoopReplyWire } from '../api/schemas/cache.js';
import type { CacheWritePolicy } from '../config/index.js';
import { DssError, isDssError } from '../errors.js';
import { neverReachedPeer } from '../transport/transport.js';
import type { CacheHome } from './home.js';
import type { CacheLink, SnoopKind } from './link.js';
import { Lru } from './lru.js';
import type { MainMemory } from './memory.js';
import { homeDeadlineMs, type Data, type HeldState, type NodeId, type Token } from './types.js';

export interface LineRec {
  readonly state: HeldState;
  readonly data: Data;
  readonly home: NodeId;
  readonly epoch: number;
  readonly gen: number;
  readonly seq: number;
  readonly token: Token;
  /** Newer than memory (write-back policy only). */
  readonly dirty: boolean;
}

interface HomeLink {
  readonly id: NodeId;
  gen: number;
  /** The home's epoch when we joined it. */
  epoch: number;
  joined: boolean;
  leaseUntil: number;
  joining: Promise<void> | null;
  renewing: Promise<boolean> | null;
}

interface KeyOp {
  /** 'request': waiting on the home (a grant may be on its way); 'local': changing a line we hold. */
  kind: 'request' | 'local' | 'idle';
  readonly startedAt: number;
  done: Promise<void>;
}

interface KeySlot {
  tail: Promise<void>;
  current: KeyOp | null;
  queued: number;
}

interface Installed {
  readonly home: NodeId;
  readonly epoch: number;
  readonly gen: number;
  readonly seq: number;
}

/** How many keys `installed` remembers beyond the L1's capacity. */
const INSTALLED_SLACK = 1_024;

interface Evicting {
  readonly home: NodeId;
  readonly epoch: number;
  readonly gen: number;
  readonly seq: number;
  readonly done: Promise<void>;
}

export interface L1MetricsSink {
  hit(): void;
  miss(): void;
  invalidation(): void;
  writeback(): void;
}

export interface GetResult {
  key: string;
  data: Data;
  state: HeldState;
  source: 'l1' | 'peer' | 'memory';
}

export interface CacheL1Options {
  nodeId: NodeId;
  capacity: number;
  writePolicy: CacheWritePolicy;
  homeOf: (key: string) => NodeId;
  /** Other cache nodes (homes this node joins). */
  peers: readonly NodeId[];
  home: CacheHome;
  link: CacheLink;
  memory: MainMemory;
  leaseMs: number;
  /** Timeout of a snoop or a lease renewal message. */
  messageTimeoutMs: number;
  metrics?: L1MetricsSink;
  now?: () => number;
  onEvent?: (msg: string, fields: Record<string, unknown>) => void;
}

const randomGen = (): number => Math.floor(Math.random() * 2 ** 40);
/**
 * Generations at other homes only grow (a home refuses a join that does not raise it), also across
 * restarts of this process: they start at this run's incarnation number (the node's home epoch, a
 * Redis INCR) times this much room for the rejoins of one run.
 */
const GEN_ROOM = 2 ** 24;

/**
 * How soon evictions whose write-back failed are tried again (while the L1 is over capacity): from
 * twice this, doubling up to EVICTION_RETRY_MAX_MS while memory keeps failing.
 */
const EVICTION_RETRY_MS = 50;
const EVICTION_RETRY_MAX_MS = 2_000;

/** How long a dropped dirty line's write-back is retried when memory keeps failing it. */
const LATE_WRITE_BACK_MS = 30_000;

function bounded<T>(p: Promise<T>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), Math.max(0, ms));
    p.then(
      () => {
        clearTimeout(t);
        resolve(true);
      },
      () => {
        clearTimeout(t);
        resolve(true);
      },
    );
  });
}

export class CacheL1 {
  private readonly l1: Lru<LineRec>;
  private readonly links = new Map<NodeId, HomeLink>();
  private readonly slots = new Map<string, KeySlot>();
  private readonly evicting = new Map<string, Evicting>();
  private readonly snooping = new Map<string, Promise<unknown>>();
  /** Dirty or busy victims on their way out (still in the L1 until written back). */
  private readonly leaving = new Set<string>();
  /**
   * Per key, the newest grant this node installed (or gave back), so that a snoop about it that
   * arrives again (the home asks again when an answer is late) is known to be about the past and
   * not about a grant still on its way. Bounded; a key that fell out only makes such a repeat wait.
   */
  private readonly installed = new Map<string, Installed>();
  private opCounter = 0;
  private readonly selfGen = randomGen();
  /** Write-backs of dropped dirty lines that failed once and are being retried (see dropLine). */
  private readonly lateWriteBacks = new Set<Promise<void>>();
  /** A pending retry of failed evictions (one at a time, however many failed). */
  private evictionRetry: NodeJS.Timeout | null = null;
  private evictionRetryMs = EVICTION_RETRY_MS;
  /** When a stop gives up on write-backs still failing (set by stop()). */
  private stopDeadline = Number.POSITIVE_INFINITY;
  private stopping = false;
  private started = false;
  private timer: NodeJS.Timeout | null = null;
  private readonly now: () => number;

  constructor(private readonly opts: CacheL1Options) {
    this.l1 = new Lru(opts.capacity);
    this.now = opts.now ?? (() => performance.now());
    for (const id of opts.peers) {
      this.links.set(id, {
        id,
        gen: 0,
        epoch: 0,
        joined: false,
        leaseUntil: 0,
        joining: null,
        renewing: null,
      });
    }
  }

  get capacity(): number {
    return this.opts.capacity;
  }

  get size(): number {
    return this.l1.size;
  }

  private get deadlineMs(): number {
    return homeDeadlineMs(this.opts.leaseMs, this.opts.messageTimeoutMs);
  }

  /** Joins our own home and every other one, then keeps the leases running. */
  /**
   * Joins our own home and every other one, then keeps the leases running. `incarnation` numbers
   * this run of the node (strictly greater than any earlier run's).
   */
  start(incarnation: number): void {
    this.started = true;
    for (const link of this.links.values()) link.gen = incarnation * GEN_ROOM;
    this.opts.home.lease({ from: this.opts.nodeId, gen: this.selfGen, epoch: 0, op: 'join' });
    for (const id of this.links.keys()) void this.rejoin(id);
    const every = Math.max(10, Math.floor(this.opts.leaseMs / 4));
    this.timer = setInterval(() => this.tick(), every);
    this.timer.unref();
  }

  private tick(): void {
    if (this.stopping) return;
    for (const link of this.links.values()) {
      if (link.joined) void this.renew(link);
      else if (link.joining === null) void this.rejoin(link.id);
    }
  }

  // ------------------------------------------------------------------ leases and membership

  private servable(line: LineRec): boolean {
    if (line.home === this.opts.nodeId) {
      return line.epoch === this.opts.home.currentEpoch && line.gen === this.selfGen;
    }
    const link = this.links.get(line.home);
    return (
      link !== undefined &&
      link.joined &&
      link.gen === line.gen &&
      link.epoch === line.epoch &&
      this.now() < link.leaseUntil
    );
  }

  private renew(link: HomeLink): Promise<boolean> {
    if (link.renewing !== null) return link.renewing;
    const sentAt = this.now();
    const gen = link.gen;
    link.renewing = this.opts.link
      .lease(
        link.id,
        { from: this.opts.nodeId, gen, epoch: link.epoch, op: 'renew' },
        this.opts.messageTimeoutMs,
      )
      .then((r) => {
        if (link.gen !== gen || !link.joined) return false;
        if (r.ok) {
          link.leaseUntil = Math.max(link.leaseUntil, sentAt + this.opts.leaseMs);
          return true;
        }
        // The home restarted or gave up on us: our lines from it are void.
        this.opts.onEvent?.('cache home refused our lease; rejoining', { home: link.id, epoch: r.epoch });
        void this.rejoin(link.id);
        return false;
      })
      .catch(() => false)
      .finally(() => {
        link.renewing = null;
      });
    return link.renewing;
  }

  /**
   * Forgets everything from `home` and joins it again under a new generation. Single-flight; keeps
   * retrying in the background until it succeeds or the node stops.
   */
  private rejoin(home: NodeId): Promise<void> {
    const link = this.links.get(home)!;
    if (link.joining !== null) return link.joining;
    link.joined = false;
    // From here no snoop under an older generation waits for our requests, and no grant to one
    // is installed.
    link.gen += 1;
    link.joining = (async () => {
      for (const [key, line] of this.l1.entries())
        if (line.home === home) await this.dropLine(key, line, 'retry');
      for (let attempt = 0; !this.stopping; attempt++) {
        // Every attempt brings a new generation: an earlier attempt that arrives late is refused.
        const gen = attempt === 0 ? link.gen : ++link.gen;
        const sentAt = this.now();
        try {
          const r = await this.opts.link.lease(
            home,
            { from: this.opts.nodeId, gen, epoch: link.epoch, op: 'join' },
            this.opts.messageTimeoutMs,
          );
          if (r.ok && link.gen === gen) {
            link.epoch = r.epoch;
            link.leaseUntil = sentAt + this.opts.leaseMs;
            link.joined = true;
            return;
          }
          // Refused: the home has seen a higher generation from us (a previous run of this node).
          if (r.gen !== undefined) link.gen = Math.max(link.gen, r.gen);
        } catch {
          // unreachable or lost: try again with a new generation
        }
        await new Promise((r) => setTimeout(r, Math.min(50 * 2 ** attempt, 1_000)));
      }
    })().finally(() => {
      link.joining = null;
    });
    return link.joining;
  }

  /**
   * Drops a line we may no longer serve, writing it back first if it is dirty (fenced). If memory
   * fails that write, `onFailure` says what becomes of the value: 'keep' leaves the line where it
   * is (unservable: its lease has run out) and throws, so the operation that wanted it gone fails
   * and a later one writes it back; 'retry' drops it and keeps writing it back in the background
   * (a rejoin, which cannot wait for memory).
   */
  private async dropLine(key: string, line: LineRec, onFailure: 'keep' | 'retry'): Promise<void> {
    if (line.dirty) {
      try {
        if (await this.opts.memory.write(key, line.token, line.data)) this.opts.metrics?.writeback();
        else this.opts.onEvent?.('dirty line fenced out by its home; its value is lost', { key });
      } catch (e) {
        if (onFailure === 'keep') throw e;
        this.retryWriteBack(key, line, e);
      }
    }
    if (this.l1.peek(key) === line) this.l1.delete(key);
  }

  /**
   * Memory failed a dropped dirty line's write-back (a Redis blip): the value exists nowhere else,
   * so it is not given up but written again and again in the background. Fencing keeps a late write
   * from ever overwriting anything newer: it lands only if nobody has read or written the key in
   * memory since, and the home waits out our lease before it fences and reads. It ends when the
   * write lands or is fenced out, or after LATE_WRITE_BACK_MS, or at a stop's deadline (a stop
   * waits for it until then).
   */
  private retryWriteBack(key: string, line: LineRec, first: unknown): void {
    const giveUpAt = this.now() + LATE_WRITE_BACK_MS;
    const run = (async () => {
      let last = first;
      for (let attempt = 0; ; attempt++) {
        // Unref'd: a stopped node whose Redis stays away must not be kept alive by this.
        await new Promise((r) => setTimeout(r, Math.min(25 * 2 ** attempt, 250)).unref());
        if (this.now() >= Math.min(giveUpAt, this.stopDeadline)) break;
        try {
          if (await this.opts.memory.write(key, line.token, line.data)) {
            this.opts.metrics?.writeback();
            this.opts.onEvent?.('write-back of a dropped line landed after a retry', {
              key,
              tries: attempt + 2,
            });
          } else {
            this.opts.onEvent?.('dirty line fenced out by its home; its value is lost', { key });
          }
          return;
        } catch (e) {
          last = e;
        }
      }
      this.opts.onEvent?.('write-back of a dropped line kept failing; its value is lost', {
        key,
        err: String(last),
      });
    })();
    this.lateWriteBacks.add(run);
    void run.finally(() => this.lateWriteBacks.delete(run));
  }

  private async joinedLink(home: NodeId): Promise<HomeLink> {
    const link = this.links.get(home)!;
    if (!this.started) {
      throw new DssError('unavailable', 'this cache node is starting', { retryAfter: 1 });
    }
    if (!link.joined) {
      await bounded(this.rejoin(home), this.opts.messageTimeoutMs);
      if (!link.joined) {
        throw new DssError('unavailable', `cache home ${home} of this key is unreachable`, { retryAfter: 1 });
      }
    }
    return link;
  }

  // ------------------------------------------------------------------ per-key operations

  private async runOp<T>(key: string, fn: (op: KeyOp) => Promise<T>): Promise<T> {
    let slot = this.slots.get(key);
    if (slot === undefined) {
      slot = { tail: Promise.resolve(), current: null, queued: 0 };
      this.slots.set(key, slot);
    }
    const s = slot;
    s.queued++;
    let finish!: () => void;
    const done = new Promise<void>((r) => (finish = r));
    const prev = s.tail;
    s.tail = done;
    await prev;
    const op: KeyOp = { kind: 'idle', startedAt: ++this.opCounter, done };
    s.current = op;
    try {
      return await fn(op);
    } finally {
      s.current = null;
      finish();
      if (--s.queued === 0) this.slots.delete(key);
    }
  }

  private currentOp(key: string): KeyOp | null {
    return this.slots.get(key)?.current ?? null;
  }

  private async requestHome(
    key: string,
    kind: 'read_miss' | 'write',
  ): Promise<{ grant: HomeGrantWire; gen: number }> {
    const home = this.opts.homeOf(key);
    const ev = this.evicting.get(key);
    if (ev !== undefined) await ev.done;
    if (home === this.opts.nodeId) {
      const body: HomeRequestWire = {
        from: home,
        gen: this.selfGen,
        epoch: this.opts.home.currentEpoch,
        kind,
        key,
        deadline_ms: this.deadlineMs,
      };
      return { grant: await this.opts.home.request(body, this.now()), gen: this.selfGen };
    }
    // A home that restarted or gave up on us says so; rejoining is quick, so try once more.
    for (let attempt = 0; ; attempt++) {
      const link = await this.joinedLink(home);
      const gen = link.gen;
      const sentAt = this.now();
      let grant: HomeGrantWire;
      try {
        grant = await this.opts.link.request(
          home,
          { from: this.opts.nodeId, gen, epoch: link.epoch, kind, key, deadline_ms: this.deadlineMs },
          this.deadlineMs + 1_000,
        );
      } catch (e) {
        if (isDssError(e) && e.code === 'stale_member') {
          // The home refused the generation this request went under. Rejoin, unless that already
          // happened meanwhile: rejoining again would drop every line from this home for nothing.
          if (link.gen === gen) void this.rejoin(home);
          if (attempt === 0) continue;
          throw new DssError('unavailable', `rejoining cache home ${home}; retry`, { retryAfter: 1 });
        }
        throw this.requestFailed(home, e);
      }
      if (link.gen !== gen || !link.joined) {
        // We rejoined while the request was out: the home no longer counts this grant as ours.
        throw new DssError('unavailable', `cache membership at ${home} changed mid-request; retry`, {
          retryAfter: 1,
        });
      }
      link.leaseUntil = Math.max(link.leaseUntil, sentAt + this.opts.leaseMs);
      return { grant, gen };
    }
  }

  private requestFailed(home: NodeId, e: unknown): DssError {
    // The home answered, so it granted nothing.
    if (isDssError(e)) return e;
    if (neverReachedPeer(e)) {
      return new DssError('unavailable', `cache home ${home} is unreachable`, { retryAfter: 1 });
    }
    // The home may have granted us the line and we will never know which: start over with it.
    void this.rejoin(home);
    // The value itself is only ever written after a grant arrives, so the caller's write had no
    // effect: no `outcome: unknown` here.
    return new DssError('unavailable', `cache home ${home} failed mid-request: ${String(e)}`, {
      retryAfter: 1,
    });
  }

  /**
   * Installs a granted line, unless we rejoined its home since the grant (the home no longer counts
   * it as ours; the caller's value is then in memory already, or the grant carried no new value).
   */
  private install(
    key: string,
    grant: HomeGrantWire,
    gen: number,
    data: Data,
    dirty: boolean,
  ): LineRec | null {
    const home = this.opts.homeOf(key);
    if (home !== this.opts.nodeId) {
      const link = this.links.get(home)!;
      if (!link.joined || link.gen !== gen) return null;
    }
    const line: LineRec = {
      state: grant.state!,
      data,
      home,
      epoch: grant.epoch,
      gen,
      seq: grant.seq!,
      token: grant.token!,
      dirty,
    };
    this.makeRoom(key);
    this.l1.insert(key, line);
    this.noteInstalled(key, line);
    return line;
  }

  // ------------------------------------------------------------------ public operations

  private checkRunning(): void {
    if (this.stopping)
      throw new DssError('shutting_down', 'this cache node is shutting down', { retryAfter: 1 });
  }

  /** A hit that needs nothing but the L1 (no lease renewal), answered synchronously; else null. */
  hitNow(key: string): GetResult | null {
    if (this.stopping) return null;
    const line = this.l1.get(key);
    if (line === undefined || !this.servable(line)) return null;
    this.opts.metrics?.hit();
    return { key, data: line.data, state: line.state, source: 'l1' };
  }

  async get(key: string): Promise<GetResult> {
    this.checkRunning();
    const hit = this.hitNow(key) ?? (await this.tryHit(key));
    if (hit !== null) return hit;
    this.opts.metrics?.miss();
    return this.runOp(key, async (op) => {
      const line = this.l1.get(key);
      if (line !== undefined && this.servable(line))
        return { key, data: line.data, state: line.state, source: 'l1' };
      const dropped = line?.dirty === true ? await this.dropDirty(key, line) : null;
      try {
        op.kind = 'request';
        const { grant, gen } = await this.requestHome(key, 'read_miss').catch((e: unknown) => {
          this.dropStale(key, dropped);
          throw e;
        });
        const data = grant.data ?? { present: false };
        const installed = this.install(key, grant, gen, data, false);
        return { key, data, state: installed?.state ?? grant.state!, source: grant.source ?? 'memory' };
      } finally {
        if (dropped !== null && this.evicting.get(key) === dropped) this.evicting.delete(key);
      }
    });
  }

  /** A local hit, renewing an expired lease once if that is all that stands in the way. */
  private async tryHit(key: string): Promise<GetResult | null> {
    let line = this.l1.get(key);
    if (line === undefined) return null;
    if (!this.servable(line)) {
      const link = this.links.get(line.home);
      if (link === undefined || !link.joined || link.gen !== line.gen || link.epoch !== line.epoch)
        return null;
      await this.renew(link);
      line = this.l1.get(key);
      if (line === undefined || !this.servable(line)) return null;
    }
    this.opts.metrics?.hit();
    return { key, data: line.data, state: line.state, source: 'l1' };
  }

  /** Writes (or, with present: false, deletes) the key's value. */
  async put(key: string, data: Data): Promise<void> {
    this.checkRunning();
    // Once stopping, even write-back PUTs go to memory: the final flush may already have run.
    const writeThrough = (): boolean => this.opts.writePolicy === 'write-through' || this.stopping;
    await this.runOp(key, async (op) => {
      for (let attempt = 0; ; attempt++) {
        for (let s = this.snooping.get(key); s !== undefined; s = this.snooping.get(key))
          await s.catch(() => undefined);
        const line = this.l1.peek(key);
        if (line === undefined || line.state === 'S') break;
        if (this.servable(line)) {
          // E or M: ours alone, no message needed (what E is for).
          op.kind = 'local';
          const through = writeThrough();
          if (through) {
            let landed: boolean;
            try {
              landed = await this.writeThrough(key, line.token, data);
            } catch (e) {
              // The write may land later: our copy (older) must go, and the home must hear of it so
              // its next grant reads memory and raises the fence.
              this.dropUnwritten(key, line);
              throw e;
            }
            if (!landed) {
              this.dropUnwritten(key, line);
              throw new DssError('unavailable', 'this node lost the line to another writer; retry', {
                retryAfter: 1,
              });
            }
          }
          const cur = this.l1.peek(key);
          if (cur !== undefined && cur.seq === line.seq && cur.epoch === line.epoch) {
            this.l1.insert(key, { ...cur, state: 'M', data, dirty: !through });
          }
          return;
        }
        if (attempt > 0 || line.home === this.opts.nodeId) break;
        const link = this.links.get(line.home);
        if (link === undefined || !link.joined) break;
        await this.renew(link);
      }
      const current = this.l1.peek(key);
      const dropped = current?.dirty === true ? await this.dropDirty(key, current) : null;
      op.kind = 'request';
      let granted: { grant: HomeGrantWire; gen: number };
      try {
        granted = await this.requestHome(key, 'write');
      } catch (e) {
        this.dropStale(key, dropped);
        throw e;
      } finally {
        if (dropped !== null && this.evicting.get(key) === dropped) this.evicting.delete(key);
      }
      const { grant, gen } = granted;
      const through = writeThrough();
      if (through) {
        let landed: boolean;
        try {
          landed = await this.writeThrough(key, grant.token!, data);
        } catch (e) {
          this.forgetGrant(key, grant, gen);
          throw e;
        }
        if (!landed) {
          this.forgetGrant(key, grant, gen);
          throw new DssError('unavailable', 'this node lost the line to another writer; retry', {
            retryAfter: 1,
          });
        }
      }
      this.install(key, grant, gen, data, !through);
    });
  }

  /** Drops a clean line whose value may be stale now and tells its home, as for an eviction. */
  private dropUnwritten(key: string, line: LineRec): void {
    if (this.l1.peek(key) !== line) return;
    this.l1.delete(key);
    this.notifyEvicted(key, line);
  }

  /**
   * The memory write of a write-through PUT. Until it, a failed PUT surely had no effect (the value
   * exists nowhere else); a failure of the write itself may have landed, and says so.
   */
  private async writeThrough(key: string, token: Token, data: Data): Promise<boolean> {
    try {
      return await this.opts.memory.write(key, token, data);
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      throw new DssError('unavailable', `write-through to memory failed: ${message}`, {
        retryAfter: 1,
        details: { outcome: 'unknown' },
      });
    }
  }

  /**
   * A dirty line we may not serve (its lease ran out) and are about to replace through the home:
   * memory gets it first. A refusal means the home already gave the line up: that value is lost,
   * as write-back allows for a node cut off from its home. Meanwhile a snoop for the line waits for
   * the write-back (as for any snoop in progress), then finds it dropped (as for an eviction): it
   * must not wait for our request, which may queue behind it. The caller removes the returned
   * record once its request is answered: the home then lists us under the new grant, or, when the
   * request failed, still under the dropped one, and the caller sends an eviction notice for it.
   */
  private async dropDirty(key: string, line: LineRec): Promise<Evicting> {
    const dropped: Evicting = {
      home: line.home,
      epoch: line.epoch,
      gen: line.gen,
      seq: line.seq,
      done: Promise.resolve(),
    };
    this.evicting.set(key, dropped);
    const p = this.dropLine(key, line, 'keep');
    this.snooping.set(key, p);
    try {
      await p;
    } catch (e) {
      // The line stays (dirty, not servable) and the home still lists us: nothing was dropped.
      if (this.evicting.get(key) === dropped) this.evicting.delete(key);
      throw e;
    } finally {
      if (this.snooping.get(key) === p) this.snooping.delete(key);
    }
    return dropped;
  }

  /**
   * After a request for `key` failed, the (clean) copy we still hold goes: its value may be
   * outdated by now (the request may have been granted, its answer lost). A home keeps listing a
   * requester's old copy when its transaction fails, so it hears of this as of an eviction, and
   * likewise of the dirty line `dropped` (written back) for the request, if any.
   */
  private dropStale(key: string, dropped: Evicting | null): void {
    const old = this.l1.peek(key);
    if (old !== undefined && !old.dirty) {
      this.l1.delete(key);
      this.notifyEvicted(key, old);
    }
    if (dropped !== null) this.notifyEvicted(key, dropped);
  }

  /** A grant we will not install: tell the home, as for an eviction, so it stops listing us. */
  private forgetGrant(key: string, grant: HomeGrantWire, gen: number): void {
    // Any older copy of ours was replaced by this grant at the home: it must not stay servable.
    this.l1.delete(key);
    const line: LineRec = {
      state: grant.state!,
      data: { present: false },
      home: this.opts.homeOf(key),
      epoch: grant.epoch,
      gen,
      seq: grant.seq!,
      token: grant.token!,
      dirty: false,
    };
    this.noteInstalled(key, line);
    this.notifyEvicted(key, line);
  }

  private noteInstalled(key: string, line: Installed): void {
    const prev = this.installed.get(key);
    if (prev !== undefined && prev.home === line.home && prev.epoch === line.epoch && prev.gen === line.gen) {
      if (prev.seq >= line.seq) return;
    }
    this.installed.delete(key);
    this.installed.set(key, { home: line.home, epoch: line.epoch, gen: line.gen, seq: line.seq });
    if (this.installed.size > this.opts.capacity + INSTALLED_SLACK) {
      const oldest = this.installed.keys().next();
      if (oldest.done !== true) this.installed.delete(oldest.value);
    }
  }

  /** True when this node has installed (or given back) the grant `msg` names, or a later one. */
  private pastGrant(key: string, from: NodeId, msg: { epoch: number; gen: number; seq: number }): boolean {
    const i = this.installed.get(key);
    return (
      i !== undefined && i.home === from && i.epoch === msg.epoch && i.gen === msg.gen && i.seq >= msg.seq
    );
  }

  /** Every line this node holds, least recently used first. */
  lines(): Array<{ key: string; state: HeldState }> {
    return this.l1.entries().map(([key, line]) => ({ key, state: line.state }));
  }

  linesByState(): Record<HeldState, number> {
    const out: Record<HeldState, number> = { M: 0, E: 0, S: 0 };
    for (const [, line] of this.l1.entries()) out[line.state]++;
    return out;
  }

  /**
   * Writes every dirty line back (they stay in M). Returns how many went to memory. A key whose
   * write-back fails does not stop the others; if any failed, the error comes after all were tried.
   */
  async flush(): Promise<number> {
    const { written, failed, error } = await this.writeBack(
      [...this.l1.entries()].map(([key]) => key),
      this.now() + this.deadlineMs,
    );
    if (failed.length > 0) {
      throw new DssError(
        'unavailable',
        `${failed.length} dirty lines could not be written back (${written} were): ${String(error)}`,
        { retryAfter: 1, details: { written, failed: failed.length } },
      );
    }
    return written;
  }

  /**
   * Write-back of the dirty lines among `keys`, each on its own: the keys that failed or that the
   * deadline left untried (those first, so that the next pass starts with them), and why. A hung
   * Redis makes each write wait out its command timeout: the deadline bounds the pass.
   */
  private async writeBack(
    keys: string[],
    deadline: number,
  ): Promise<{ written: number; failed: string[]; error: unknown }> {
    let written = 0;
    const failed: string[] = [];
    const untried: string[] = [];
    let error: unknown;
    for (const key of keys) {
      if (this.l1.peek(key)?.dirty !== true) continue;
      if (this.now() >= deadline) {
        untried.push(key);
        continue;
      }
      try {
        // One key at a time with the key's other operations, so a newer value written meanwhile is
        // never overwritten by this older snapshot.
        written += await this.runOp(key, async (op) => {
          op.kind = 'local';
          for (let s = this.snooping.get(key); s !== undefined; s = this.snooping.get(key))
            await s.catch(() => undefined);
          const line = this.l1.peek(key);
          if (line === undefined || !line.dirty) return 0;
          if (!(await this.opts.memory.write(key, line.token, line.data))) return 0;
          this.opts.metrics?.writeback();
          if (this.l1.peek(key) === line) this.l1.update(key, { ...line, dirty: false });
          return 1;
        });
      } catch (e) {
        failed.push(key);
        error ??= e;
      }
    }
    if (untried.length > 0) error ??= new Error(`${untried.length} write-backs left untried by the deadline`);
    return { written, failed: [...untried, ...failed], error };
  }

  /** Graceful stop: no new operations, every M line to memory, then leave every home. */
  async stop(): Promise<number> {
    if (this.stopping) return 0;
    this.stopping = true;
    if (this.timer !== null) clearInterval(this.timer);
    // Operations already running finish first (a PUT whose grant is on its way installs its line),
    // so the flush below sees every line they leave.
    const deadline = this.now() + this.deadlineMs + 1_000;
    this.stopDeadline = deadline;
    if (this.evictionRetry !== null) clearTimeout(this.evictionRetry);
    while (this.slots.size > 0 && this.now() < deadline) {
      const pending = [...this.slots.values()].map((slot) => slot.tail);
      await bounded(Promise.all(pending), deadline - this.now());
    }
    // Every dirty line is tried; those that fail (Redis away for a moment) are tried again until
    // the deadline, and only then given up, with how many were lost.
    let { written, failed, error } = await this.writeBack(
      [...this.l1.entries()].map(([key]) => key),
      deadline,
    );
    while (failed.length > 0 && this.now() < deadline) {
      await new Promise((r) => setTimeout(r, Math.min(100, Math.max(0, deadline - this.now()))));
      const again = await this.writeBack(failed, deadline);
      written += again.written;
      failed = again.failed;
      error = again.error ?? error;
    }
    if (failed.length > 0) {
      this.opts.onEvent?.('write-back at shutdown failed; these values are lost', {
        lost: failed.length,
        written,
        err: String(error),
      });
    }
    while (this.lateWriteBacks.size > 0 && this.now() < deadline) {
      await bounded(Promise.all([...this.lateWriteBacks]), deadline - this.now());
    }
    await Promise.all(
      [...this.links.values()]
        .filter((l) => l.joined)
        .map((l) =>
          this.opts.link
            .lease(
              l.id,
              { from: this.opts.nodeId, gen: l.gen, epoch: l.epoch, op: 'leave' },
              this.opts.messageTimeoutMs,
            )
            .catch(() => undefined),
        ),
    );
    for (const [key] of this.l1.entries()) this.l1.delete(key);
    return written;
  }

  // ------------------------------------------------------------------ eviction

  private makeRoom(key: string): void {
    if (this.l1.has(key)) return;
    this.shrinkTo(this.opts.capacity - 1);
  }

  /** Evicts the oldest lines not already on their way out until at most `size` remain. */
  private shrinkTo(size: number): void {
    while (this.l1.size - this.leaving.size > size) {
      let victim: string | undefined;
      for (const k of this.l1.oldestKeys()) {
        if (!this.leaving.has(k)) {
          victim = k;
          break;
        }
      }
      if (victim === undefined) return;
      this.evict(victim);
    }
  }

  private evict(key: string): void {
    const line = this.l1.peek(key)!;
    if (!line.dirty && !this.slots.has(key) && !this.snooping.has(key)) {
      this.l1.delete(key);
      this.notifyEvicted(key, line);
      return;
    }
    // Written back (or waited for) before it leaves: until then a snoop still finds it here.
    this.leaving.add(key);
    void this.runOp(key, async (op) => {
      op.kind = 'local';
      for (let s = this.snooping.get(key); s !== undefined; s = this.snooping.get(key))
        await s.catch(() => undefined);
      const cur = this.l1.peek(key);
      if (cur === undefined) return;
      if (cur.dirty) {
        if (!(await this.opts.memory.write(key, cur.token, cur.data))) {
          this.opts.onEvent?.('evicted dirty line fenced out by its home; its value is lost', { key });
        } else {
          this.opts.metrics?.writeback();
          this.evictionRetryMs = EVICTION_RETRY_MS;
        }
      }
      if (this.l1.peek(key) === cur) {
        this.l1.delete(key);
        this.notifyEvicted(key, cur);
      }
    })
      .catch((e: unknown) => {
        // Memory unreachable: the line stays (still M), over the capacity, and is tried again soon
        // (or at the next eviction), so the L1 shrinks back once memory answers again.
        // One retry timer for all of them, backing off while memory keeps failing, and one log
        // line per retry round rather than one per line.
        if (this.evictionRetry === null) {
          this.opts.onEvent?.('write-back on eviction failed', { key, err: String(e) });
          this.evictionRetryMs = Math.min(this.evictionRetryMs * 2, EVICTION_RETRY_MAX_MS);
          this.evictionRetry = setTimeout(() => {
            this.evictionRetry = null;
            if (!this.stopping) this.shrinkTo(this.opts.capacity);
          }, this.evictionRetryMs);
          this.evictionRetry.unref();
        }
      })
      .finally(() => this.leaving.delete(key));
  }

  private notifyEvicted(key: string, line: Installed): void {
    const self = line.home === this.opts.nodeId;
    const link = self ? null : this.links.get(line.home)!;
    if (!self && (!link!.joined || link!.gen !== line.gen)) return; // a rejoin voids the listing anyway
    const body: HomeRequestWire = {
      from: this.opts.nodeId,
      gen: line.gen,
      epoch: line.epoch,
      kind: 'evict',
      key,
      seq: line.seq,
      deadline_ms: this.deadlineMs,
    };
    const sent = self
      ? this.opts.home.request(body, this.now())
      : this.opts.link.request(line.home, body, this.deadlineMs + 1_000);
    const done = sent.then(
      () => undefined,
      () => {
        // The home may still list us for this line: start over with it rather than guess.
        if (!self) void this.rejoin(line.home);
      },
    );
    const rec: Evicting = { home: line.home, epoch: line.epoch, gen: line.gen, seq: line.seq, done };
    this.evicting.set(key, rec);
    void done.finally(() => {
      if (this.evicting.get(key) === rec) this.evicting.delete(key);
    });
  }

  // ------------------------------------------------------------------ the home's messages

  /** A snoop read or an invalidation from `from` (the key's home) for the line of grant `seq`. */
  async handleSnoop(
    from: NodeId,
    kind: SnoopKind,
    msg: { key: string; epoch: number; seq: number; gen: number },
  ): Promise<SnoopReplyWire> {
    const arrival = this.opCounter;
    const deadline = this.now() + this.opts.messageTimeoutMs;
    const currentGen = from === this.opts.nodeId ? this.selfGen : this.links.get(from)?.gen;
    const key = msg.key;
    for (;;) {
      const line = this.l1.peek(key);
      const op = this.currentOp(key);
      if (
        line !== undefined &&
        line.home === from &&
        line.epoch === msg.epoch &&
        line.gen === msg.gen &&
        line.seq === msg.seq
      ) {
        if (op !== null && op.kind === 'local') {
          if (!(await bounded(op.done, deadline - this.now()))) throw this.snoopTimeout(key);
          continue;
        }
        const running = this.snooping.get(key);
        if (running !== undefined) {
          await running.catch(() => undefined);
          continue;
        }
        const p = this.applySnoop(key, kind, line);
        this.snooping.set(key, p);
        try {
          return await p;
        } finally {
          if (this.snooping.get(key) === p) this.snooping.delete(key);
        }
      }
      const ev = this.evicting.get(key);
      if (
        ev !== undefined &&
        ev.home === from &&
        ev.epoch === msg.epoch &&
        ev.gen === msg.gen &&
        ev.seq === msg.seq
      ) {
        return { held: false };
      }
      if (
        msg.gen === currentGen &&
        op !== null &&
        op.kind === 'request' &&
        op.startedAt <= arrival &&
        !this.pastGrant(key, from, msg)
      ) {
        // The grant this message is about is on its way to us: let it land first. (Not a repeat of
        // a snoop we already applied to a grant we had: our request may be queued at the home
        // behind the very transaction that asks, so waiting for it would only time out.)
        if (!(await bounded(op.done, deadline - this.now()))) throw this.snoopTimeout(key);
        continue;
      }
      return { held: false };
    }
  }

  private snoopTimeout(key: string): DssError {
    return new DssError('timeout', `cache line ${key} stayed busy past the snoop deadline`);
  }

  private async applySnoop(key: string, kind: SnoopKind, line: LineRec): Promise<SnoopReplyWire> {
    if (line.dirty) {
      if (!(await this.opts.memory.write(key, line.token, line.data))) {
        throw new DssError('conflict', `cache line ${key} was fenced out by its home`);
      }
      this.opts.metrics?.writeback();
    }
    const cur = this.l1.peek(key);
    if (kind === 'snoop_read') {
      if (cur === line) this.l1.update(key, { ...line, state: 'S', dirty: false });
    } else {
      if (cur === line) this.l1.delete(key);
      this.opts.metrics?.invalidation();
    }
    return { held: true, data: line.data };
  }
}
