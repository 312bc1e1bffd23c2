// Jepsen-style history of lock operations and a checker for EXCLUSIVE locks (SPEC section 4.2).
//
// A test records each call when it is sent (`invoke`) and each answer when it arrives (`complete`),
// with wall-clock timestamps, from as many concurrent clients as it likes. `checkLockHistory` then
// decides from the history alone whether the lock service kept its promises:
//
//  - mutual exclusion: two clients never held the same resource at the same time;
//  - fencing: tokens follow the real-time order of grants, and no token is granted to two clients;
//  - no lost holds: with TTLs not allowed to expire, a hold lasts until its holder releases it.
//
// The checker only reports what the history proves. A client's hold is counted from the moment it
// RECEIVED the grant to the moment it SENT its release: the server's hold covers that span whatever
// the network delays were. Outcomes the client does not know (`unknown`: timeouts, connection
// errors, 503) never create a hold, and anything they might have changed in the server's state
// makes the checker assume the least. Details at each check below.
//
// Like Jepsen retiring a process after an indeterminate operation, a test client should take a new
// client_id after an `unknown` release: the old release may still be applied later, so the
// checker treats that client's later holds on the resource as uncertain and checks them less.
import { performance } from 'node:perf_hooks';

export type LockOp = 'acquire' | 'release';
/** `refused`: 409 lock_conflict / wait_timeout / deadlock. `unknown`: the acquire may have taken effect. */
export type AcquireOutcome = 'granted' | 'refused' | 'unknown';
/** `not_holder`: 409, nothing changed. `unknown`: the release may (later) take effect, or not. */
export type ReleaseOutcome = 'ok' | 'not_holder' | 'unknown';
export type LockOutcome = AcquireOutcome | ReleaseOutcome;

export interface InvokeExtra {
  /** The acquire's `ttl_ms` as sent; needed when TTLs may expire (unless `defaultTtlMs` is given). */
  ttlMs?: number;
  waitMs?: number;
  /** The checker handles exclusive locks only and rejects histories with shared acquires. */
  mode?: 'exclusive' | 'shared';
}

export interface CompleteFields {
  /** Required with `granted`. */
  fencing_token?: number;
  /** Error code of a refusal or failure (`lock_conflict`, `deadlock`, `no_leader`, `ECONNRESET`...). */
  code?: string;
  /** The grant's `expires_at` (leader clock); recorded for reading, not used by the checker. */
  expires_at?: number;
}

export interface LockInvokeEvent extends InvokeExtra {
  type: 'invoke';
  id: number;
  /** Epoch milliseconds, fractional. */
  time: number;
  client: string;
  op: LockOp;
  resource: string;
}

export interface LockCompleteEvent extends CompleteFields {
  type: 'complete';
  id: number;
  time: number;
  outcome: LockOutcome;
}

export type LockEvent = LockInvokeEvent | LockCompleteEvent;

const OUTCOMES: Record<LockOp, readonly LockOutcome[]> = {
  acquire: ['granted', 'refused', 'unknown'],
  release: ['ok', 'not_holder', 'unknown'],
};

/** Wall clock with sub-millisecond resolution (epoch ms). */
export function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * Outcome of an HTTP answer (`status` undefined: no answer at all). 409 is a definite refusal;
 * 503, 504, other statuses and no answer are `unknown`, which is always safe for the checker.
 */
export function outcomeOfStatus(op: 'acquire', status: number | undefined): AcquireOutcome;
export function outcomeOfStatus(op: 'release', status: number | undefined): ReleaseOutcome;
export function outcomeOfStatus(op: LockOp, status: number | undefined): LockOutcome {
  if (status === 200) return op === 'acquire' ? 'granted' : 'ok';
  if (status === 409) return op === 'acquire' ? 'refused' : 'not_holder';
  return 'unknown';
}

function validateOutcome(id: number, op: LockOp, outcome: LockOutcome, token: number | undefined): void {
  if (!OUTCOMES[op].includes(outcome)) {
    throw new Error(`op #${id}: outcome ${outcome} is not one of ${OUTCOMES[op].join(', ')} (${op})`);
  }
  if (outcome === 'granted' && (typeof token !== 'number' || !Number.isFinite(token))) {
    throw new Error(`op #${id}: a granted acquire needs its fencing_token, got ${String(token)}`);
  }
}

/**
 * Records a history. Call `invoke` just before sending a request and `complete` as soon as its
 * answer (or failure) is known: the timestamps are then conservative for every check.
 */
export class LockHistory {
  readonly events: LockEvent[] = [];
  private nextId = 1;
  private readonly open = new Map<number, LockOp>();
  private readonly now: () => number;

  constructor(opts: { now?: () => number } = {}) {
    this.now = opts.now ?? wallClockMs;
  }

  invoke(client: string, op: LockOp, resource: string, extra: InvokeExtra = {}): number {
    const id = this.nextId++;
    const ev: LockInvokeEvent = { type: 'invoke', id, time: this.now(), client, op, resource };
    if (extra.ttlMs !== undefined) ev.ttlMs = extra.ttlMs;
    if (extra.waitMs !== undefined) ev.waitMs = extra.waitMs;
    if (extra.mode !== undefined) ev.mode = extra.mode;
    this.open.set(id, op);
    this.events.push(ev);
    return id;
  }

  complete(id: number, outcome: LockOutcome, fields: CompleteFields = {}): void {
    const time = this.now();
    const op = this.open.get(id);
    if (op === undefined) throw new Error(`complete(#${id}): no invocation with that id is open`);
    validateOutcome(id, op, outcome, fields.fencing_token);
    this.open.delete(id);
    const ev: LockCompleteEvent = { type: 'complete', id, time, outcome };
    if (fields.fencing_token !== undefined) ev.fencing_token = fields.fencing_token;
    if (fields.code !== undefined) ev.code = fields.code;
    if (fields.expires_at !== undefined) ev.expires_at = fields.expires_at;
    this.events.push(ev);
  }

  /** Ids invoked and not completed yet; the checker treats them as `unknown`. */
  pending(): number[] {
    return [...this.open.keys()];
  }

  check(opts: LockCheckOptions = {}): LockCheckResult {
    return checkLockHistory(this.events, opts);
  }
}

export interface LockCheckOptions {
  /**
   * The test let leases run out (crashed or paused clients, holds never released). Then a hold ends
   * at the latest when its TTL lease surely ran: the acquire's SEND time + ttl_ms (see `applyLeases`).
   * Default false: a hold lasts until its release is sent, and a lease that ran out is a lost hold.
   */
  ttlsMayExpire?: boolean;
  /** TTL of acquires recorded without `ttlMs` (the server's LOCK_DEFAULT_TTL). */
  defaultTtlMs?: number;
  /** Taken off every lease end: bound on how far the leader's clock may run ahead of the test's. */
  leaseMarginMs?: number;
  /** At most this many violation strings (default 100); `stats.violations` counts them all. */
  maxReported?: number;
}

export interface LockCheckStats {
  events: number;
  resources: number;
  clients: number;
  acquires: Record<AcquireOutcome, number>;
  releases: Record<ReleaseOutcome, number>;
  /** Invoked, never completed (counted as unknown above). */
  pending: number;
  /** Holds built from grants the clients received. */
  holds: number;
  /** Holds that a release in flight (unknown, or answered after the acquire was sent) may have ended
   *  early: not used for mutual exclusion, nor as the later hold of a fencing-order pair. */
  uncertainHolds: number;
  /** Certain holds whose lease surely ran until no later than the grant arrived (TTL mode). */
  emptyHolds: number;
  /** Certain, non-empty holds: the ones mutual exclusion is checked on. */
  checkedHolds: number;
  violations: number;
}

export interface LockCheckResult {
  ok: boolean;
  violations: string[];
  stats: LockCheckStats;
}

interface Op {
  id: number;
  client: string;
  resource: string;
  op: LockOp;
  invoke: number;
  /** Time the answer arrived; undefined when it never did. */
  complete: number | undefined;
  /** `unknown` for pending ops too. */
  outcome: LockOutcome;
  token: number;
  ttlMs: number | undefined;
}

interface Hold {
  client: string;
  resource: string;
  token: number;
  /** The grant that started it (its answer is the hold's start). */
  first: Op;
  grants: Op[];
  start: number;
  /** End before leases are considered: release sent, superseded by a new token, or never (Infinity). */
  endPre: number;
  end: number;
  endedBy: 'release' | 'superseded' | 'open';
  release: Op | undefined;
  leaseCut: boolean;
  certain: boolean;
}

/** Number of elements of sorted `xs` that are <= x. */
function countLE(xs: readonly number[], x: number): number {
  let lo = 0;
  let hi = xs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (xs[mid]! <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Number of elements of sorted `xs` that are < x. */
function countLT(xs: readonly number[], x: number): number {
  let lo = 0;
  let hi = xs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (xs[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

class Checker {
  readonly violations: string[] = [];
  count = 0;
  t0 = 0;
  readonly stats: LockCheckStats;

  constructor(
    readonly opts: Required<Omit<LockCheckOptions, 'defaultTtlMs'>> & { defaultTtlMs: number | undefined },
    events: number,
  ) {
    this.stats = {
      events,
      resources: 0,
      clients: 0,
      acquires: { granted: 0, refused: 0, unknown: 0 },
      releases: { ok: 0, not_holder: 0, unknown: 0 },
      pending: 0,
      holds: 0,
      uncertainHolds: 0,
      emptyHolds: 0,
      checkedHolds: 0,
      violations: 0,
    };
  }

  report(msg: string): void {
    this.count++;
    if (this.violations.length < this.opts.maxReported) this.violations.push(msg);
  }

  at(t: number): string {
    return t === Infinity ? 'never' : `+${(t - this.t0).toFixed(3)} ms`;
  }

  hold(h: Hold): string {
    let until: string;
    if (h.leaseCut) until = `${this.at(h.end)} (TTL lease end)`;
    else if (h.endedBy === 'release') until = `${this.at(h.end)} (release sent)`;
    else if (h.endedBy === 'superseded') until = `${this.at(h.end)} (superseded by a new token)`;
    else until = 'never released';
    return `client "${h.client}" (token ${h.token}, held ${this.at(h.start)} → ${until})`;
  }

  ttl(a: Op): number {
    const ttl = a.ttlMs ?? this.opts.defaultTtlMs;
    if (ttl === undefined) {
      throw new Error(`acquire #${a.id} has no ttlMs and no defaultTtlMs was given (ttlsMayExpire)`);
    }
    return ttl;
  }

  /**
   * The holds of one client on one resource, in time order. The client's view: a hold starts when
   * a grant arrives while the client holds nothing, and ends when the client sends a release (any
   * outcome). Grants arriving meanwhile with the same token are reentrant; a grant with a greater
   * token means the server started a new hold (the old one was dropped), one with a smaller token
   * is a stale answer (fencing order judges it).
   */
  clientHolds(acquires: Op[], releases: Op[]): Hold[] {
    // A release is applied somewhere between its send and its answer, or at any time after its
    // send if no answer came (an unknown release may still be in flight). If a release sent before
    // a hold's grant arrived may have been applied after that hold's acquire was sent, it may have
    // freed the lock under the client: the hold is uncertain. not_holder releases changed nothing.
    const rels = [...releases].sort((a, b) => a.invoke - b.invoke);
    const relInvoke = rels.map((r) => r.invoke);
    const relReach: number[] = [];
    let reach = -Infinity;
    for (const r of rels) {
      const until = r.outcome === 'ok' ? r.complete! : r.outcome === 'unknown' ? Infinity : -Infinity;
      reach = Math.max(reach, until);
      relReach.push(reach);
    }
    const certainGrant = (a: Op): boolean => {
      const k = countLE(relInvoke, a.complete!);
      return k === 0 || relReach[k - 1]! < a.invoke;
    };

    type Moment = { t: number; grant: Op } | { t: number; release: Op };
    const moments: Moment[] = [];
    for (const a of acquires) if (a.outcome === 'granted') moments.push({ t: a.complete!, grant: a });
    for (const r of releases) moments.push({ t: r.invoke, release: r });
    // On a tie the grant comes first: the hold is then empty, never an overlap.
    moments.sort((x, y) => x.t - y.t || ('grant' in x ? 0 : 1) - ('grant' in y ? 0 : 1));

    const holds: Hold[] = [];
    let cur: Hold | undefined;
    const close = (h: Hold, end: number, by: Hold['endedBy'], release?: Op): void => {
      h.endPre = end;
      h.end = end;
      h.endedBy = by;
      h.release = release;
    };
    for (const m of moments) {
      if ('release' in m) {
        if (cur) {
          close(cur, m.t, 'release', m.release);
          if (!this.opts.ttlsMayExpire && cur.certain && m.release.outcome === 'not_holder') {
            this.report(
              `lost hold on "${cur.resource}": ${this.hold(cur)} had not been released, yet its ` +
                `release sent at ${this.at(m.t)} was answered not_holder (TTLs were not allowed to expire)`,
            );
          }
          cur = undefined;
        }
        continue;
      }
      const g = m.grant;
      if (cur && g.token === cur.token) {
        cur.grants.push(g);
        continue;
      }
      if (cur && g.token < cur.token) continue; // stale answer: fencing order decides
      if (cur) {
        close(cur, m.t, 'superseded');
        if (!this.opts.ttlsMayExpire && cur.certain) {
          this.report(
            `lost hold on "${cur.resource}": ${this.hold(cur)} had not been released, yet its ` +
              `acquire sent at ${this.at(g.invoke)} was granted a new token ${g.token} ` +
              `(received ${this.at(m.t)}; TTLs were not allowed to expire)`,
          );
        }
      }
      cur = {
        client: g.client,
        resource: g.resource,
        token: g.token,
        first: g,
        grants: [g],
        start: m.t,
        endPre: Infinity,
        end: Infinity,
        endedBy: 'open',
        release: undefined,
        leaseCut: false,
        certain: certainGrant(g),
      };
      holds.push(cur);
    }

    if (this.opts.ttlsMayExpire) this.applyLeases(holds, acquires);

    // The same client again: a release answered ok before the next acquire was sent surely ended
    // the hold, so the next grant is a new one and needs a greater token.
    for (let i = 1; i < holds.length; i++) {
      const prev = holds[i - 1]!;
      const h = holds[i]!;
      const rel = prev.release;
      if (rel?.outcome === 'ok' && rel.complete! < h.first.invoke && h.token === prev.token) {
        this.report(
          `fencing on "${h.resource}": client "${h.client}" was granted token ${h.token} again ` +
            `(acquire sent ${this.at(h.first.invoke)}) after its release of that token was ` +
            `acknowledged at ${this.at(rel.complete!)}`,
        );
      }
    }
    return holds;
  }

  /**
   * TTL mode: a hold surely lasted until its lease's end, no further. The server sets expiry to
   * (leader's time when it proposed the acquire) + ttl_ms, at grant and again at each reentrant
   * acquire; the proposal came after the client sent the acquire, so that acquire's send time +
   * ttl_ms is a lower bound (the grant's arrival + ttl_ms is not: the answer may take long, while
   * the lease runs). The last acquire applied sets the expiry; it is either the latest-sent known
   * grant of the hold, or an acquire whose answer came after that was sent, or any acquire with an
   * unknown outcome (it may apply any time later). The lease end is the least of their bounds.
   */
  applyLeases(holds: Hold[], acquires: Op[]): void {
    const cands = acquires.filter((a) => a.outcome !== 'refused').sort((a, b) => a.invoke - b.invoke);
    const inv = cands.map((a) => a.invoke);
    const bound = cands.map((a) => a.invoke + this.ttl(a));
    const minUnknownBound: number[] = [];
    const maxGrantedAnswer: number[] = [];
    let mu = Infinity;
    let mg = -Infinity;
    for (let j = 0; j < cands.length; j++) {
      const a = cands[j]!;
      if (a.outcome === 'granted') mg = Math.max(mg, a.complete!);
      else mu = Math.min(mu, bound[j]!);
      minUnknownBound.push(mu);
      maxGrantedAnswer.push(mg);
    }
    for (const h of holds) {
      let G = -Infinity;
      for (const g of h.grants) G = Math.max(G, g.invoke);
      const hi = countLE(inv, h.endPre);
      const lo = countLT(inv, G);
      let lease = Infinity;
      for (let j = lo; j < hi; j++) lease = Math.min(lease, bound[j]!);
      if (lo > 0) lease = Math.min(lease, minUnknownBound[lo - 1]!);
      for (let j = lo - 1; j >= 0 && maxGrantedAnswer[j]! >= G; j--) {
        const a = cands[j]!;
        if (a.outcome === 'granted' && a.complete! >= G) lease = Math.min(lease, bound[j]!);
      }
      lease -= this.opts.leaseMarginMs;
      if (lease < h.end) {
        h.end = lease;
        h.leaseCut = true;
      }
    }
  }

  /** All checks for one resource; `byClient` holds each client's acquires and releases on it. */
  resource(resource: string, byClient: Map<string, { acquires: Op[]; releases: Op[] }>): void {
    const holds: Hold[] = [];
    const grants: Op[] = [];
    for (const [, ops] of [...byClient].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      holds.push(...this.clientHolds(ops.acquires, ops.releases));
      for (const a of ops.acquires) if (a.outcome === 'granted') grants.push(a);
    }
    this.stats.holds += holds.length;
    const checked: Hold[] = [];
    const solidByFirst = new Map<Op, Hold>();
    for (const h of holds) {
      if (!h.certain) this.stats.uncertainHolds++;
      else if (h.end < h.start) this.stats.emptyHolds++;
      else {
        solidByFirst.set(h.first, h);
        if (h.end > h.start) checked.push(h);
      }
    }
    this.stats.checkedHolds += checked.length;

    // 1. Mutual exclusion. Sweep the certain holds by start, keeping those not yet ended.
    checked.sort((a, b) => a.start - b.start);
    let active: Hold[] = [];
    for (const h of checked) {
      active = active.filter((a) => a.end > h.start);
      for (const a of active) {
        if (a.client === h.client) continue;
        const overlap = Math.min(a.end, h.end) - h.start;
        this.report(
          `mutual exclusion on "${resource}": ${this.hold(a)} and ${this.hold(h)} overlap for ` +
            `${overlap === Infinity ? 'ever' : `${overlap.toFixed(3)} ms`}`,
        );
      }
      active.push(h);
    }

    // 2. Fencing order. A grant is made by the server before its answer arrives and after its
    // request was sent, and tokens increase with the server's order of grants. So a grant whose
    // answer arrived before another acquire was SENT must have a token no greater than that
    // acquire's (equal only for a reentrant grant). Stronger, for the first grant B of a certain
    // hold: the server held B's lock from granting it until at least B's answer arrived, so any
    // grant A answered before that was made either before B (token lower) or while B held the lock
    // (a violation in itself). Equal tokens of different clients are reported by check 3.
    const byAnswer = [...grants].sort((a, b) => a.complete! - b.complete!);
    const cutoff = (y: Op): number => (solidByFirst.has(y) ? y.complete! : y.invoke);
    const byCutoff = grants.map((y) => ({ y, t: cutoff(y) })).sort((a, b) => a.t - b.t);
    let p = 0;
    let max: Op | undefined;
    for (const { y, t } of byCutoff) {
      while (p < byAnswer.length && byAnswer[p]!.complete! < t) {
        const x = byAnswer[p++]!;
        if (!max || x.token > max.token) max = x;
      }
      if (max && max.token > y.token) {
        const inFlight = solidByFirst.has(y) && max.complete! > y.invoke;
        this.report(
          `fencing order on "${resource}": client "${y.client}" got token ${y.token} (acquire sent ` +
            `${this.at(y.invoke)}, grant received ${this.at(y.complete!)}) but client "${max.client}" ` +
            `had already received token ${max.token} at ${this.at(max.complete!)}` +
            (inFlight
              ? ` — while "${y.client}"'s grant was in flight, so one was granted while the other held the lock`
              : ''),
        );
      }
    }

    // 3. A token belongs to one client: never granted to two.
    const owners = new Map<number, Op>();
    const seen = new Set<string>();
    for (const g of byAnswer) {
      const first = owners.get(g.token);
      if (!first) owners.set(g.token, g);
      else if (first.client !== g.client && !seen.has(`${g.token}\u0000${g.client}`)) {
        seen.add(`${g.token}\u0000${g.client}`);
        this.report(
          `duplicate fencing token on "${resource}": token ${g.token} granted to client ` +
            `"${first.client}" (received ${this.at(first.complete!)}) and to client "${g.client}" ` +
            `(received ${this.at(g.complete!)})`,
        );
      }
    }
  }
}

/**
 * Checks a history of EXCLUSIVE lock operations (events in any order; times and ids link them).
 * Throws on a malformed history (a test bug), returns violations of the lock's guarantees.
 */
export function checkLockHistory(events: readonly LockEvent[], opts: LockCheckOptions = {}): LockCheckResult {
  const c = new Checker(
    {
      ttlsMayExpire: opts.ttlsMayExpire ?? false,
      defaultTtlMs: opts.defaultTtlMs,
      leaseMarginMs: opts.leaseMarginMs ?? 0,
      maxReported: opts.maxReported ?? 100,
    },
    events.length,
  );

  const invokes = new Map<number, LockInvokeEvent>();
  const completes = new Map<number, LockCompleteEvent>();
  let t0 = Infinity;
  for (const e of events) {
    if (!Number.isFinite(e.time)) throw new Error(`event of op #${e.id}: time ${e.time} is not finite`);
    t0 = Math.min(t0, e.time);
    const map: Map<number, LockEvent> = e.type === 'invoke' ? invokes : completes;
    if (map.has(e.id)) throw new Error(`op #${e.id}: two ${e.type} events`);
    map.set(e.id, e);
  }
  c.t0 = t0 === Infinity ? 0 : t0;

  type ClientOps = { acquires: Op[]; releases: Op[] };
  const resources = new Map<string, Map<string, ClientOps>>();
  const clients = new Set<string>();
  for (const [id, inv] of invokes) {
    if (inv.mode === 'shared')
      throw new Error(`op #${id}: shared acquires are not supported by this checker`);
    const done = completes.get(id);
    if (done) {
      validateOutcome(id, inv.op, done.outcome, done.fencing_token);
      if (done.time < inv.time) throw new Error(`op #${id}: completed before it was invoked`);
    }
    const op: Op = {
      id,
      client: inv.client,
      resource: inv.resource,
      op: inv.op,
      invoke: inv.time,
      complete: done?.time,
      outcome: done?.outcome ?? 'unknown',
      token: done?.fencing_token ?? NaN,
      ttlMs: inv.ttlMs,
    };
    if (!done) c.stats.pending++;
    if (op.op === 'acquire') c.stats.acquires[op.outcome as AcquireOutcome]++;
    else c.stats.releases[op.outcome as ReleaseOutcome]++;
    clients.add(op.client);
    let byClient = resources.get(op.resource);
    if (!byClient) resources.set(op.resource, (byClient = new Map<string, ClientOps>()));
    let mine = byClient.get(op.client);
    if (!mine) byClient.set(op.client, (mine = { acquires: [], releases: [] }));
    (op.op === 'acquire' ? mine.acquires : mine.releases).push(op);
  }
  for (const id of completes.keys()) {
    if (!invokes.has(id)) throw new Error(`op #${id}: completed but never invoked`);
  }
  c.stats.resources = resources.size;
  c.stats.clients = clients.size;

  for (const r of [...resources.keys()].sort()) c.resource(r, resources.get(r)!);

  c.stats.violations = c.count;
  const violations = [...c.violations];
  if (c.count > violations.length) violations.push(`… and ${c.count - violations.length} more violations`);
  return { ok: c.count === 0, violations, stats: c.stats };
}
