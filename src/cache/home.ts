// The home side of the coherence protocol (SPEC 6). Every key has one home, its owner on the hash
// ring of cache nodes; the home runs that key's bus transactions one at a time, keeps its directory
// entry (who holds the line, under which grant), and hands out fencing tokens. The plan of each
// transaction comes from the pure `plan` of directory.ts; this class executes it over the link.
//
// Failure handling, the reason most of this file exists:
// - Leases. A holder serves local hits only while its lease from the home runs: the lease starts
//   when the holder SENDS a request the home then answers, and lasts `leaseMs`. The home records
//   when it last answered each member. So when a holder cannot be reached, the home stops answering
//   it ("revoked": its next request or renewal is told to rejoin), waits until its lease must have
//   run out (last answer + leaseMs, plus a drift allowance), raises the key's fence in memory so a
//   late write-back from it cannot land, and goes on without it. A write therefore completes within
//   about one lease and one message timeout of a peer dying, and nobody serves a stale hit.
// - Generations. A member joins with a generation number after dropping every line it had from
//   this home; listings under an older generation are ignored from then on. A requester that lost
//   track of what the home granted it (a reply lost in a timeout) rejoins instead of guessing.
// - Epochs. A restarted home knows nothing of the lines it granted before. It takes a new epoch
//   (a Redis INCR, so strictly increasing), which invalidates every line of the old one at its
//   holders, and grants nothing until every lease of its previous life has run out (grace).
import { performance } from 'node:perf_hooks';
import type {
  HomeGrantWire,
  HomeRequestWire,
  LeaseReplyWire,
  LeaseWire,
  SnoopReplyWire,
} from '../api/schemas/cache.js';
import { DssError, isDssError } from '../errors.js';
import { plan } from './directory.js';
import type { SnoopKind } from './link.js';
import type { MainMemory } from './memory.js';
import type { Data, DirEntry, NodeId, PlanStep, Token } from './types.js';

/** A clock-rate allowance between nodes' monotonic clocks, on top of a fixed margin. */
const DRIFT = 0.02;
const MARGIN_MS = 50;
/** Pause between two tries of a snoop that failed (see `message`). */
const RETRY_GAP_MS = 20;

interface Holding {
  readonly seq: number;
  readonly gen: number;
  /** The grant's token, for holders that may write memory (E/M). */
  readonly token: Token;
}

interface HomeEntry {
  exclusive: ({ node: NodeId } & Holding) | null;
  sharers: Map<NodeId, Holding>;
}

interface Member {
  /** Null: not joined (never, or left). */
  gen: number | null;
  /**
   * Highest generation ever accepted from it. A join must bring a higher one, so a join message
   * that arrives late (retried, delayed in the network) cannot undo a revocation or a newer join.
   */
  maxGen: number;
  /** The home gave up on it; it must rejoin before anything else is answered. */
  revoked: boolean;
  /** performance.now() of the home's last positive answer to it. */
  lastAnswered: number;
}

/** Sends one snoop or invalidation to a holder, which may be this node itself. */
export type Snooper = (
  node: NodeId,
  kind: SnoopKind,
  msg: { key: string; seq: number; gen: number },
) => Promise<SnoopReplyWire>;

export interface HomeMetricsSink {
  /** A snoop or invalidation this home sent (coherence messages per transaction). */
  message(kind: SnoopKind): void;
  /** A member the home gave up on. */
  revocation(): void;
}

export interface CacheHomeOptions {
  nodeId: NodeId;
  memory: MainMemory;
  snoop: Snooper;
  leaseMs: number;
  /** How long the home waits for one snoop or invalidation (the snooper's timeout). */
  messageTimeoutMs: number;
  metrics?: HomeMetricsSink;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
  onRevoke?: (node: NodeId, reason: string) => void;
}

export interface GrantResult {
  epoch: number;
  seq: number;
  state: 'M' | 'E' | 'S';
  token: Token;
  data: Data;
  source: 'peer' | 'memory';
}

export class CacheHome {
  private epoch = 0;
  private readyAt = Number.POSITIVE_INFINITY;
  private counter = 0;
  private readonly entries = new Map<string, HomeEntry>();
  private readonly members = new Map<NodeId, Member>();
  /** Per-key FIFO of transactions waiting for the key (absent: the key is free). */
  private readonly waiting = new Map<string, Array<() => void>>();
  private readonly now: () => number;
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(private readonly opts: CacheHomeOptions) {
    this.now = opts.now ?? (() => performance.now());
    this.sleep = opts.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
  }

  /** How long after its last answer a member's lease has surely run out (its clock may run slow). */
  private get leaseBoundMs(): number {
    return this.opts.leaseMs * (1 + DRIFT) + MARGIN_MS;
  }

  /**
   * Starts this life of the home: a new epoch from memory, then no grants until every lease an
   * earlier life handed out has run out.
   */
  async start(): Promise<void> {
    this.epoch = await this.opts.memory.nextEpoch(this.opts.nodeId);
    this.readyAt = this.now() + this.leaseBoundMs;
  }

  get currentEpoch(): number {
    return this.epoch;
  }

  /** True once the home grants (epoch known, grace over). */
  ready(): boolean {
    return this.epoch > 0 && this.now() >= this.readyAt;
  }

  /** Keys with a directory entry (for status). */
  get size(): number {
    return this.entries.size;
  }

  // ------------------------------------------------------------------ membership and leases

  lease(body: LeaseWire): LeaseReplyWire {
    if (this.epoch === 0) throw new DssError('unavailable', 'cache home is starting', { retryAfter: 1 });
    const m = this.members.get(body.from);
    switch (body.op) {
      case 'join':
        if (m !== undefined && body.gen <= m.maxGen) return { ok: false, epoch: this.epoch, gen: m.maxGen };
        // The member has dropped every line it had from us: its older listings are void.
        this.members.set(body.from, {
          gen: body.gen,
          maxGen: body.gen,
          revoked: false,
          lastAnswered: this.now(),
        });
        return { ok: true, epoch: this.epoch };
      case 'leave':
        if (m !== undefined && m.gen === body.gen) m.gen = null;
        return { ok: true, epoch: this.epoch };
      case 'renew':
        if (m === undefined || m.gen !== body.gen || m.revoked || body.epoch !== this.epoch) {
          return { ok: false, epoch: this.epoch };
        }
        m.lastAnswered = this.now();
        return { ok: true, epoch: this.epoch };
    }
  }

  private checkMember(from: NodeId, gen: number, epoch: number): Member {
    const m = this.members.get(from);
    if (epoch !== this.epoch || m === undefined || m.gen !== gen || m.revoked) {
      throw new DssError('stale_member', `${from} must rejoin cache home ${this.opts.nodeId}`, {
        details: { epoch: this.epoch },
      });
    }
    return m;
  }

  /** Gives up on `node`: no more answers until it rejoins. Returns when its lease has run out. */
  private async revoke(node: NodeId, reason: string): Promise<void> {
    const m = this.members.get(node);
    if (m === undefined || m.gen === null) return;
    if (!m.revoked) {
      m.revoked = true;
      this.opts.metrics?.revocation();
      this.opts.onRevoke?.(node, reason);
    }
    await this.waitLeaseOut(m);
  }

  private async waitLeaseOut(m: Member): Promise<void> {
    const left = m.lastAnswered + this.leaseBoundMs - this.now();
    if (left > 0) await this.sleep(left);
  }

  /** A listing still counts if its member is joined under that generation (revoked or not). */
  private live(node: NodeId, h: Holding): boolean {
    return this.members.get(node)?.gen === h.gen;
  }

  // ------------------------------------------------------------------ transactions

  private async lockKey(key: string): Promise<() => void> {
    const release = (): void => {
      const q = this.waiting.get(key);
      const next = q?.shift();
      if (next !== undefined) next();
      else this.waiting.delete(key);
    };
    const q = this.waiting.get(key);
    if (q === undefined) {
      this.waiting.set(key, []);
      return release;
    }
    return new Promise((resolve) => q.push(() => resolve(release)));
  }

  /** One bus transaction from a requester (this node included). `receivedAt` starts its deadline. */
  async request(req: HomeRequestWire, receivedAt: number): Promise<HomeGrantWire> {
    if (!this.ready()) {
      throw new DssError(
        'unavailable',
        'cache home is starting (waiting out the leases of its previous run)',
        {
          retryAfter: 1,
        },
      );
    }
    this.checkMember(req.from, req.gen, req.epoch);
    const release = await this.lockKey(req.key);
    try {
      this.checkMember(req.from, req.gen, req.epoch);
      if (req.kind === 'evict') {
        this.evict(req.key, req.from, req.seq ?? -1);
        this.members.get(req.from)!.lastAnswered = this.now();
        return { epoch: this.epoch };
      }
      const g = await this.transact(req, receivedAt + req.deadline_ms);
      return {
        epoch: g.epoch,
        seq: g.seq,
        state: g.state,
        token: [...g.token],
        data: g.data,
        source: g.source,
      };
    } finally {
      release();
    }
  }

  private evict(key: string, node: NodeId, seq: number): void {
    const e = this.entries.get(key);
    if (e === undefined) return;
    if (e.exclusive?.node === node && e.exclusive.seq === seq) e.exclusive = null;
    if (e.sharers.get(node)?.seq === seq) e.sharers.delete(node);
    if (e.exclusive === null && e.sharers.size === 0) this.entries.delete(key);
  }

  /**
   * The entry as it stands: listings of members that rejoined (or left) since are dropped; members
   * the home gave up on are waited out and dropped, an exclusive one after raising the fence.
   */
  private async settle(key: string): Promise<HomeEntry> {
    const e = this.entries.get(key) ?? { exclusive: null, sharers: new Map<NodeId, Holding>() };
    const revoked: NodeId[] = [];
    const check = (node: NodeId, h: Holding): boolean => {
      if (!this.live(node, h)) return false;
      if (this.members.get(node)!.revoked) revoked.push(node);
      return true;
    };
    if (e.exclusive !== null && !check(e.exclusive.node, e.exclusive)) {
      // It rejoined or left: it dropped the line, but a write of it may still be on its way.
      await this.opts.memory.fence(key, [this.epoch, ++this.counter]);
      e.exclusive = null;
    }
    for (const [node, h] of [...e.sharers]) if (!check(node, h)) e.sharers.delete(node);
    if (revoked.length > 0) {
      for (const node of revoked) await this.waitLeaseOut(this.members.get(node)!);
      if (e.exclusive !== null && revoked.includes(e.exclusive.node)) {
        await this.opts.memory.fence(key, [this.epoch, ++this.counter]);
        e.exclusive = null;
      }
      for (const node of revoked) e.sharers.delete(node);
    }
    return e;
  }

  private async transact(req: HomeRequestWire, deadline: number): Promise<GrantResult> {
    const key = req.key;
    const e = await this.settle(key);
    this.store(key, e);
    const dir: DirEntry = {
      exclusive: e.exclusive?.node ?? null,
      sharers: new Set(e.sharers.keys()),
    };
    const p = plan(
      dir,
      req.kind === 'read_miss' ? { kind: 'read_miss', node: req.from } : { kind: 'write', node: req.from },
    );
    const holding = (node: NodeId): Holding | undefined =>
      e.exclusive?.node === node ? e.exclusive : e.sharers.get(node);

    let supplied: Data | null = null;
    const invalidations: Promise<void>[] = [];
    for (const step of p.steps) {
      if (step.kind === 'grant') break;
      const h = holding(step.node)!;
      const run = this.message(key, step, h, deadline).then((reply) => {
        if (step.kind === 'snoop' && reply.held && reply.data !== undefined) supplied = reply.data;
      });
      if (step.kind === 'invalidate') invalidations.push(run);
      else await run;
    }
    // Every invalidation settles before the key is released, even when one fails: a late revocation
    // and fence must not run into the key's next transaction.
    const settled = await Promise.allSettled(invalidations);
    for (const r of settled) if (r.status === 'rejected') throw r.reason;

    // The holders' side of the plan is done; from here the entry is the plan's, with the requester
    // under its old listing until its grant replaces it.
    //
    // A listing goes only when its copy is surely gone or unservable: an invalidation answered, an
    // eviction notice, a newer grant to the same node, a rejoin, or a lease waited out. So a holder
    // that another transaction gave up on meanwhile stays listed (the next settle() waits its lease
    // out): dropping it here would let the key's next write finish while that holder, whose lease
    // may still run, serves its copy. And so does the requester's own copy if this transaction
    // fails from here on: that copy may be servable until the failure reaches the requester, and the
    // next writer must invalidate it.
    const grant = p.steps[p.steps.length - 1] as Extract<PlanStep, { kind: 'grant' }>;
    const next: HomeEntry = { exclusive: null, sharers: new Map() };
    if (p.entry.exclusive !== null && p.entry.exclusive !== req.from) {
      const h = holding(p.entry.exclusive);
      if (h !== undefined) next.exclusive = { node: p.entry.exclusive, ...h };
    }
    for (const node of p.entry.sharers) {
      if (node === req.from) continue;
      const h = holding(node);
      if (h !== undefined) next.sharers.set(node, h);
    }
    // The plan's exclusive holder is the requester or nobody, and an old exclusive listing of the
    // requester had nobody beside it: the requester's old listing fits back as it was.
    const mine = holding(req.from);
    if (mine !== undefined) {
      if (e.exclusive?.node === req.from) next.exclusive = { node: req.from, ...mine };
      else next.sharers.set(req.from, mine);
    }
    this.store(key, next);

    if (this.now() > deadline) {
      throw new DssError(
        'timeout',
        `cache home ${this.opts.nodeId}: transaction on ${key} ran past its deadline`,
      );
    }
    const seq = ++this.counter;
    let data: Data;
    let source: 'peer' | 'memory' = 'memory';
    if (grant.data === 'none') data = { present: false };
    else if (supplied !== null) {
      data = supplied;
      source = 'peer';
    } else {
      // Fenced with the read: no older write can land on what this grant hands out.
      data = await this.opts.memory.readAndFence(key, [this.epoch, seq]);
    }
    const member = this.checkMember(req.from, req.gen, req.epoch);

    const holdingOfRequester: Holding = { seq, gen: req.gen, token: [this.epoch, seq] };
    if (next.exclusive?.node === req.from) next.exclusive = null;
    next.sharers.delete(req.from);
    if (grant.state === 'S') next.sharers.set(req.from, holdingOfRequester);
    else next.exclusive = { node: req.from, ...holdingOfRequester };
    this.store(key, next);
    member.lastAnswered = this.now();
    return { epoch: this.epoch, seq, state: grant.state, token: holdingOfRequester.token, data, source };
  }

  /**
   * One snoop or invalidation. A holder that does not answer is given up on (after its lease has
   * run out, which is what makes skipping it safe) and counts as not holding the line.
   *
   * Giving up costs a holder its dirty lines (their write-backs are fenced out), so a holder that is
   * only slow (a GC pause, a busy CPU) must not be given up on: since the home has to wait its lease
   * out before going on without it anyway, it asks again until then, and only a holder that stays
   * silent for a whole lease is revoked (two leases if it renews meanwhile: it is reachable again).
   * Asking twice is harmless: a holder applies a snoop to the grant it names once, and answers a
   * repeat from the line as it left it.
   */
  private async message(
    key: string,
    step: Extract<PlanStep, { kind: 'snoop' | 'invalidate' }>,
    h: Holding,
    deadline: number,
  ): Promise<SnoopReplyWire> {
    const kind: SnoopKind = step.kind === 'snoop' ? 'snoop_read' : 'invalidate';
    let retryUntil: number | null = null;
    let firstFailure = 0;
    let extended = false;
    const firstTry = this.now();
    for (let tries = 1; ; tries++) {
      this.opts.metrics?.message(kind);
      try {
        return await this.opts.snoop(step.node, kind, { key, seq: h.seq, gen: h.gen });
      } catch (e) {
        if (step.node === this.opts.nodeId) throw e;
        const m = this.members.get(step.node);
        if (m === undefined || m.gen !== h.gen) {
          // It rejoined (or left) since this listing: it dropped the line first, so there is nothing
          // to wait for, and its new membership is not what failed. A write-back of the old line may
          // still be on its way: fence it out, as settle() does.
          await this.opts.memory.fence(key, [this.epoch, ++this.counter]);
          return { held: false };
        }
        // Silence, a busy line or a holder that cannot reach memory right now (its write-back of a
        // dirty line failed: a Redis blip) is worth asking again until the lease bound; giving up at
        // once would cost the holder its dirty lines. Any other answer is the holder's word.
        const silent = !isDssError(e) || e.code === 'timeout' || e.code === 'unavailable';
        if (silent && !m.revoked) {
          // Fixed at the first failure: renewals that still arrive from a holder that never answers
          // the snoop (it could be stuck behind this very transaction) do not extend the retries...
          if (retryUntil === null) {
            retryUntil = m.lastAnswered + this.leaseBoundMs;
            firstFailure = this.now();
          } else if (!extended && this.now() >= retryUntil && m.lastAnswered > firstFailure) {
            // ...except once: a holder that renewed after the snoop first failed is reachable again
            // (a partition healed while a try was on its way into it), so it gets one more lease to
            // answer rather than being given up on, which would cost it its dirty lines. Only as far
            // as the transaction can still finish in time: after the last try (up to one message
            // timeout) giving up on it waits out the lease it keeps renewing.
            extended = true;
            const latest = deadline - this.leaseBoundMs - this.opts.messageTimeoutMs - RETRY_GAP_MS;
            retryUntil = Math.max(retryUntil, Math.min(m.lastAnswered + this.leaseBoundMs, latest));
          }
          if (this.now() < retryUntil) {
            // A refused connection fails at once: do not spin on it.
            await this.sleep(Math.min(RETRY_GAP_MS, Math.max(0, retryUntil - this.now())));
            continue;
          }
        }
        const why = e instanceof Error ? e.message : String(e);
        const silence = `, last answered ${Math.round(this.now() - m.lastAnswered)} ms ago`;
        await this.revoke(
          step.node,
          `${kind} of ${key} failed ${tries}× over ${Math.round(this.now() - firstTry)} ms${silence}: ${why}`,
        );
        // It may have held the line exclusively and still write it back: fence it out.
        await this.opts.memory.fence(key, [this.epoch, ++this.counter]);
        return { held: false };
      }
    }
  }

  private store(key: string, e: HomeEntry): void {
    if (e.exclusive === null && e.sharers.size === 0) this.entries.delete(key);
    else this.entries.set(key, e);
  }

  /** Directory entries, for the dashboard and tests: key -> holders and their states. */
  directory(): Array<{ key: string; exclusive: NodeId | null; sharers: NodeId[] }> {
    return [...this.entries].map(([key, e]) => ({
      key,
      exclusive: e.exclusive?.node ?? null,
      sharers: [...e.sharers.keys()].sort(),
    }));
  }
}
