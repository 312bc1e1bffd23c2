// The lock service on the Raft leader: turns API calls into replicated commands stamped with the
// leader's clock, answers blocked acquires the moment an applied command grants them, and runs the
// expiry monitor (seed 000's deadlock_monitor) that commits EXPIRE and wait-timeout commands.
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { DssError } from '../errors.js';
import type { Json, RaftStatus, StateMachine } from '../raft/types.js';
import type { Grant, Hold, LockCommand, LockMode, LockResult, LockState } from './types.js';
import { anchoredWallClock } from '../clock.js';

/** What the service needs from the replicated lock table (src/lock/table.ts). */
export interface LockTableApi extends StateMachine {
  get(resource: string): LockState | undefined;
  all(): LockState[];
  holdsExpiringBy(now: number): { resource: string; client_ids: string[] }[];
  waitersDueBy(now: number): { resource: string; client_id: string }[];
  heldCount(): number;
  waiterCount(): number;
  holdsOf(client_id: string): number;
  waitersOn(resource: string): number;
  involves(resource: string, client_id: string): boolean;
}

/** What the service needs from Raft (RaftNode satisfies it). */
export interface LockRaft {
  status(): RaftStatus;
  propose(command: Json): Promise<{ index: number; result: Json }>;
  readIndex(): Promise<void>;
}

export interface LockMetricsSink {
  acquire(result: 'granted' | 'conflict' | 'deadlock' | 'wait_timeout' | 'error'): void;
  deadlock(): void;
}

export interface LockServiceOptions {
  table: LockTableApi;
  defaultTtlMs: number;
  /** New leaders extend live holds by this much before expiring anything. */
  electionTimeoutMaxMs: number;
  /** Expiry monitor period; at most a heartbeat, so a dead client's lock goes within TTL + heartbeat. */
  monitorIntervalMs: number;
  metrics: LockMetricsSink;
  logger: Logger;
  now?: () => number;
  /** LOCK_MAX_WAITERS: most acquires queued on one resource (default 1000). */
  maxWaiters?: number;
  /** LOCK_MAX_HOLDS_PER_CLIENT: most holds one client may have (default 10000). */
  maxHoldsPerClient?: number;
}

export interface AcquireRequest {
  resource: string;
  client_id: string;
  mode: LockMode;
  ttl_ms: number;
  wait_ms: number;
}

export interface AcquireGranted {
  granted: true;
  resource: string;
  mode: LockMode;
  client_id: string;
  fencing_token: number;
  expires_at: number;
}

interface PendingAcquire {
  /** Carried by its acquire command, so that the apply of that very entry can be recognised. */
  req: string;
  /**
   * Set when its own acquire entry applied and queued a waiter. Only then do grants, timeouts and
   * aborts of the client's waiter on the resource concern it: before, they are about an earlier
   * request of the same client (a retry racing the fate of the attempt it retries).
   */
  attached: boolean;
  resolve: (g: Grant) => void;
  reject: (e: Error) => void;
}

const key = (resource: string, clientId: string): string => `${resource}\u0000${clientId}`;

export interface HoldWire {
  client_id: string;
  mode: LockMode;
  fencing_token: number;
  expires_at: number;
}

export interface LockStatusEntry {
  resource: string;
  mode: LockMode | null;
  holders: HoldWire[];
  waiters: { client_id: string; mode: LockMode }[];
}

export function holdsView(holders: readonly Hold[]): HoldWire[] {
  return holders.map((h) => ({
    client_id: h.client_id,
    mode: h.mode,
    fencing_token: h.fencing_token,
    expires_at: h.expires_at,
  }));
}

export class LockService {
  private raft: LockRaft | null = null;
  private readonly table: LockTableApi;
  private readonly opts: LockServiceOptions;
  private readonly now: () => number;
  /** Acquires waiting on this leader, registered before proposing so no grant can slip past. */
  private readonly pending = new Map<string, Set<PendingAcquire>>();
  private readonly inflight = new Set<string>();
  private monitor: NodeJS.Timeout | null = null;
  /**
   * Term whose extend_all has been applied: only then may this leader propose anything else, since
   * every command may expire holds (apply drops holds expired at the command's `now`).
   */
  private extendedTerm = -1;
  /** The extend_all in flight, for the term it was proposed in. */
  private extension: { term: number; done: Promise<void> } | null = null;
  /** Request ids are `<boot id>.<n>`: unique across this node's restarts and across nodes. */
  private readonly bootId = randomBytes(6).toString('hex');
  private reqSeq = 0;

  /** The state machine Raft replicates: the lock table, with grants and aborts reported here. */
  readonly stateMachine: StateMachine;

  constructor(opts: LockServiceOptions) {
    this.opts = opts;
    this.table = opts.table;
    this.now = opts.now ?? anchoredWallClock();
    this.stateMachine = {
      apply: (command, index, term) => {
        const result = this.table.apply(command, index, term);
        this.onApplied(command, result);
        return result;
      },
      snapshot: () => this.table.snapshot(),
      size: () => this.table.size(),
      restore: (data) => this.table.restore(data),
    };
  }

  attach(raft: LockRaft): void {
    this.raft = raft;
  }

  start(): void {
    this.monitor = setInterval(() => this.tick(), this.opts.monitorIntervalMs);
  }

  /**
   * Resource limits, checked here on the leader against its applied table before proposing (not in
   * apply: replicas may be configured differently, and apply must be deterministic). Acquires in
   * flight can pass the limit by their number at most. A client's repeated acquire of a resource it
   * already holds or waits for adds nothing and is never refused.
   */
  private checkLimits(req: AcquireRequest): void {
    const t = this.opts.table;
    const maxHolds = this.opts.maxHoldsPerClient ?? 10_000;
    const maxWaiters = this.opts.maxWaiters ?? 1_000;
    if (t.holdsOf(req.client_id) < maxHolds && (req.wait_ms === 0 || t.waitersOn(req.resource) < maxWaiters))
      return;
    if (t.involves(req.resource, req.client_id)) return;
    if (t.holdsOf(req.client_id) >= maxHolds) {
      this.opts.metrics.acquire('error');
      throw new DssError(
        'limit_exceeded',
        `client ${req.client_id} already holds ${t.holdsOf(req.client_id)} locks (LOCK_MAX_HOLDS_PER_CLIENT is ${maxHolds})`,
        { details: { granted: false, holders: [], limit: 'LOCK_MAX_HOLDS_PER_CLIENT', max: maxHolds } },
      );
    }
    this.opts.metrics.acquire('error');
    throw new DssError(
      'limit_exceeded',
      `${req.resource} already has ${t.waitersOn(req.resource)} waiters (LOCK_MAX_WAITERS is ${maxWaiters})`,
      { details: { granted: false, holders: [], limit: 'LOCK_MAX_WAITERS', max: maxWaiters } },
    );
  }

  stop(): void {
    if (this.monitor) clearInterval(this.monitor);
    this.monitor = null;
    this.failPending(new DssError('shutting_down', 'node is shutting down'));
  }

  // ---------------------------------------------------------------- API

  async acquire(req: AcquireRequest): Promise<AcquireGranted> {
    await this.leaderReady();
    this.checkLimits(req);
    const k = key(req.resource, req.client_id);
    let waiter: PendingAcquire | null = null;
    const reqId = req.wait_ms > 0 ? `${this.bootId}.${++this.reqSeq}` : undefined;
    const granted =
      reqId !== undefined
        ? new Promise<Grant>((resolve, reject) => {
            waiter = { req: reqId, attached: false, resolve, reject };
            let set = this.pending.get(k);
            if (!set) this.pending.set(k, (set = new Set()));
            set.add(waiter);
          })
        : null;
    // A grant that never comes must not leave an unhandled rejection behind.
    granted?.catch(() => undefined);
    const drop = (): void => {
      if (!waiter) return;
      const set = this.pending.get(k);
      set?.delete(waiter);
      if (set?.size === 0) this.pending.delete(k);
    };
    try {
      const res = await this.propose({
        op: 'acquire',
        resource: req.resource,
        client_id: req.client_id,
        mode: req.mode,
        ttl_ms: req.ttl_ms,
        wait_ms: req.wait_ms,
        now: this.now(),
        ...(reqId !== undefined ? { req: reqId } : {}),
      });
      if (res.op !== 'acquire') throw new DssError('internal', 'unexpected lock result');
      const r = res.result;
      switch (r.status) {
        case 'granted':
          drop();
          this.opts.metrics.acquire('granted');
          return view(req.resource, r.hold);
        case 'conflict':
          drop();
          this.opts.metrics.acquire('conflict');
          throw new DssError('lock_conflict', `${req.resource} is held in a conflicting mode`, {
            details: { granted: false, holders: holdsView(r.holders) },
          });
        case 'deadlock':
          drop();
          this.opts.metrics.acquire('deadlock');
          throw this.deadlockError(req.resource, r.cycle);
        case 'queued': {
          if (granted === null) throw new DssError('internal', 'queued an acquire that may not wait');
          const g = await this.withBackstop(granted, req.wait_ms);
          this.opts.metrics.acquire('granted');
          return view(req.resource, {
            client_id: g.client_id,
            mode: g.mode,
            fencing_token: g.fencing_token,
            expires_at: g.expires_at,
          });
        }
      }
    } catch (e) {
      drop();
      if (e instanceof DssError && (e.code === 'wait_timeout' || e.code === 'deadlock')) {
        this.opts.metrics.acquire(e.code);
      } else if (!(e instanceof DssError && e.code === 'lock_conflict')) {
        this.opts.metrics.acquire('error');
      }
      throw e;
    }
  }

  async release(resource: string, clientId: string): Promise<{ released: true }> {
    await this.leaderReady();
    const res = await this.propose({ op: 'release', resource, client_id: clientId, now: this.now() });
    if (res.op !== 'release' || !res.released) throw notHolder(resource, clientId);
    return { released: true };
  }

  async renew(resource: string, clientId: string, ttlMs: number): Promise<{ expires_at: number }> {
    await this.leaderReady();
    const res = await this.propose({
      op: 'renew',
      resource,
      client_id: clientId,
      ttl_ms: ttlMs,
      now: this.now(),
    });
    if (res.op !== 'renew' || !res.renewed || res.expires_at === undefined)
      throw notHolder(resource, clientId);
    return { expires_at: res.expires_at };
  }

  /**
   * Linearizable: served by the leader after a ReadIndex round. Holds expired at the leader's clock
   * are left out: the next command on their resource drops them, whether or not the monitor's
   * expire has committed yet, so they hold nothing any more.
   */
  async status(resource?: string): Promise<{ locks: LockStatusEntry[] }> {
    await this.leaderReady();
    await this.requireRaft().readIndex();
    const now = this.now();
    const states = resource === undefined ? this.table.all() : [this.table.get(resource)].filter(isState);
    const locks: LockStatusEntry[] = [];
    for (const s of states) {
      const holders = s.holders.filter((h) => h.expires_at > now);
      if (holders.length === 0 && s.waiters.length === 0) continue;
      locks.push({
        resource: s.resource,
        mode: holders[0]?.mode ?? null,
        holders: holdsView(holders),
        waiters: s.waiters.map((w) => ({ client_id: w.client_id, mode: w.mode })),
      });
    }
    return { locks };
  }

  heldCount(): number {
    return this.table.heldCount();
  }

  waiterCount(): number {
    return this.table.waiterCount();
  }

  // ---------------------------------------------------------------- replication

  private async propose(cmd: LockCommand): Promise<LockResult> {
    const { result } = await this.requireRaft().propose(cmd);
    return result as unknown as LockResult;
  }

  /**
   * Runs inside apply on every replica. Waiters are answered from the log wherever they wait, so a
   * leader that steps down keeps answering the acquires queued through it, as its log learns their fate.
   */
  private onApplied(command: Json, result: Json): void {
    const r = result as unknown as LockResult | { error: string };
    if (!('op' in r)) return;
    if (r.op === 'wait_timeout' && r.removed) {
      const cmd = command as unknown as Extract<LockCommand, { op: 'wait_timeout' }>;
      this.timeOut(cmd.resource, cmd.client_id);
    }
    if ('grants' in r)
      for (const g of r.grants) this.settle(key(g.resource, g.client_id), (p) => p.resolve(g));
    if (r.op === 'acquire' || r.op === 'extend_all') {
      for (const a of r.aborted) {
        this.opts.metrics.deadlock();
        const err = this.deadlockError(a.resource, a.cycle);
        this.settle(key(a.resource, a.client_id), (p) => p.reject(err));
      }
    }
    // Last: the events above concern the waiter as it was before this entry, which a request
    // queued by this entry is not waiting on.
    if (r.op === 'acquire' && r.result.status === 'queued') {
      const cmd = command as unknown as { resource: string; client_id: string; req?: unknown };
      if (typeof cmd.req !== 'string') return;
      for (const p of this.pending.get(key(cmd.resource, cmd.client_id)) ?? []) {
        if (p.req === cmd.req) p.attached = true;
      }
    }
  }

  /** Settles the requests attached to the client's waiter on the resource (see PendingAcquire). */
  private settle(k: string, fn: (p: PendingAcquire) => void): void {
    const set = this.pending.get(k);
    if (!set) return;
    for (const p of set) {
      if (!p.attached) continue;
      set.delete(p);
      fn(p);
    }
    if (set.size === 0) this.pending.delete(k);
  }

  private deadlockError(resource: string, cycle: string[]): DssError {
    const holders = this.table.get(resource)?.holders ?? [];
    return new DssError('deadlock', `deadlock: ${cycle.join(' -> ')}; this request was aborted`, {
      details: { granted: false, cycle, holders: holdsView(holders) },
    });
  }

  // ---------------------------------------------------------------- the monitor (leader only)

  private tick(): void {
    const raft = this.raft;
    if (!raft) return;
    let st: RaftStatus;
    try {
      st = raft.status();
    } catch {
      return;
    }
    if (st.role !== 'leader') return;
    if (this.extendedTerm !== st.term) {
      // Once per term: a proposal in flight already has its handler.
      if (this.extension?.term !== st.term) {
        this.extendFor(st.term).catch((err: unknown) =>
          this.opts.logger.debug({ err: String(err) }, 'extend_all failed'),
        );
      }
      return;
    }
    const now = this.now();
    for (const e of this.table.holdsExpiringBy(now)) {
      // proposeOnce never rejects: a failed expiry is simply retried on a later tick.
      void this.proposeOnce(`expire:${e.resource}`, {
        op: 'expire',
        resource: e.resource,
        client_ids: e.client_ids,
        now,
      });
    }
    // The waiters a wait_timeout removes are answered where it applies (onApplied), in log order:
    // answering again here, later, could answer a retry queued after it.
    for (const w of this.table.waitersDueBy(now)) {
      void this.proposeOnce(`wait:${w.resource}:${w.client_id}`, {
        op: 'wait_timeout',
        resource: w.resource,
        client_id: w.client_id,
        now,
      });
    }
  }

  /**
   * On a leader, waits until this term's extend_all has been applied (proposing it if nobody has),
   * so that it is the first lock command of the term in the log. Elsewhere it returns at once: the
   * proposal that follows fails as on any node that is not the leader.
   */
  private async leaderReady(): Promise<void> {
    // Again after each wait: the extension may have committed under a later term of this node (a
    // proposal of an older term resolves when it commits under any leader), whose own extend_all
    // must still come first.
    for (;;) {
      let st: RaftStatus;
      try {
        st = this.requireRaft().status();
      } catch {
        return;
      }
      if (st.role !== 'leader' || this.extendedTerm === st.term) return;
      await this.extendFor(st.term);
    }
  }

  /**
   * A new leader's clock may be behind or ahead of its predecessor's: before expiring anything it
   * gives every hold an election timeout more (etcd's lease rule). One proposal per term; if it
   * fails, the next caller proposes again.
   */
  private extendFor(term: number): Promise<void> {
    if (this.extension?.term === term) return this.extension.done;
    const done = this.propose({
      op: 'extend_all',
      extend_ms: this.opts.electionTimeoutMaxMs,
      now: this.now(),
    }).then(
      () => {
        this.extendedTerm = Math.max(this.extendedTerm, term);
      },
      (err: unknown) => {
        if (this.extension?.term === term) this.extension = null;
        throw err;
      },
    );
    this.extension = { term, done };
    return done;
  }

  private async proposeOnce(tag: string, cmd: LockCommand): Promise<LockResult | null> {
    if (this.inflight.has(tag)) return null;
    this.inflight.add(tag);
    try {
      return await this.propose(cmd);
    } catch (err) {
      this.opts.logger.debug({ err: String(err), tag }, 'lock monitor proposal failed');
      return null;
    } finally {
      this.inflight.delete(tag);
    }
  }

  private timeOut(resource: string, clientId: string): void {
    const holders = this.table.get(resource)?.holders ?? [];
    const err = new DssError('wait_timeout', `${resource} was not granted within wait_ms`, {
      details: { granted: false, holders: holdsView(holders) },
    });
    this.settle(key(resource, clientId), (p) => p.reject(err));
  }

  /**
   * The log normally settles a waiter by wait_ms (grant, deadlock abort or wait_timeout). A node cut
   * off from the leader learns nothing, so the wait is bounded here too; the acquire may have been
   * granted meanwhile, which a retry (idempotent) reveals.
   */
  private withBackstop(granted: Promise<Grant>, waitMs: number): Promise<Grant> {
    let timer: NodeJS.Timeout | undefined;
    const backstop = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new DssError(
              'unavailable',
              'outcome unknown: no word from the Raft log on this wait; retry the acquire',
              {
                details: { outcome: 'unknown' },
                retryAfter: 1,
              },
            ),
          ),
        waitMs + 2 * this.opts.electionTimeoutMaxMs,
      );
    });
    return Promise.race([granted, backstop]).finally(() => clearTimeout(timer));
  }

  private failPending(err: Error): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const set of all) for (const p of set) p.reject(err);
  }

  private requireRaft(): LockRaft {
    if (!this.raft) throw new DssError('unavailable', 'lock service is not started');
    return this.raft;
  }
}

function view(resource: string, h: Hold): AcquireGranted {
  return {
    granted: true,
    resource,
    mode: h.mode,
    client_id: h.client_id,
    fencing_token: h.fencing_token,
    expires_at: h.expires_at,
  };
}

function notHolder(resource: string, clientId: string): DssError {
  return new DssError('not_holder', `${clientId} does not hold ${resource}`);
}

function isState(s: LockState | undefined): s is LockState {
  return s !== undefined;
}
