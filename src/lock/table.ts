// The lock table: the lock manager's replicated state machine (SPEC 4.2). Pure and deterministic:
// it never reads a clock or randomness. Every time-dependent decision uses the command's `now` (the
// proposing leader's clock), and a grant's fencing token is the log index of the entry that makes
// it (the next number up when one entry grants several locks, see nextToken). Every replica applying
// the same entries (or restoring the same snapshot and applying the rest) returns the same results
// and reaches the same state.
//
// Rules beyond SPEC 4.2, chosen as etcd/ZooKeeper users would expect:
// - A hold with expires_at <= now counts as gone. Every command on a resource except renew first
//   drops such holds (granting waiters), and the wait-for graph ignores them.
// - An exclusive holder asking shared keeps its exclusive hold (reentrant: same token, TTL renewed).
// - A sole shared holder asking exclusive is upgraded at once (new token). If it must wait, its
//   waiter goes ahead of every waiter that does not hold the resource (behind earlier upgrades):
//   everyone behind it would wait for its shared hold anyway, and queueing it behind an exclusive
//   waiter that waits for that hold would be a certain deadlock. A waiter never changes place later
//   (an upgrader that releases its shared hold, or lets it expire, keeps its place and its request).
// - A client is queued at most once per resource. Repeating an acquire while waiting never grants
//   and never queues again: with wait_ms > 0 it refreshes the waiter's deadline and TTL and keeps
//   its place (an exclusive request makes a shared waiter exclusive; a shared one keeps the mode);
//   with wait_ms = 0 it answers conflict and leaves the waiter alone.
// - Granting serves the queue from its head, FIFO, and stops at the first waiter it cannot grant.
//   A waiter whose deadline passed is still granted until a wait_timeout removes it.
//
// Deadlock detection. The wait-for graph has one node per client and an edge C -> D when a waiter
// of C waits for D: D holds that resource in a conflicting mode (a live hold, not C's own), or D is
// a conflicting waiter ahead of C in its queue. Only acquires add edges (a grant never does: the
// waiters behind a granted waiter already had an edge to it), so detection runs at the end of
// every acquire, from the acquiring client C. It finds C's strongly connected component by a
// forward search from C and a backward search over the edges found; if the component has a cycle,
// the youngest waiter (largest `since`) with an edge inside the component is aborted, with a cycle
// through its edge, and detection repeats. While clocks agree, every new cycle goes through C and
// C's new waiter is the youngest, so the acquire itself is answered `deadlock`. A new leader's
// extend_all brings holds back to life (and their edges with them): it looks for cycles from each
// client that holds and waits, and the youngest waiter of such a cycle is aborted there.
// The forward search walks a reduced edge set with the same reachability, given the table's
// invariants (an exclusive hold is alone; the head waiter is never grantable): an exclusive waiter
// points at the run of waiters just ahead of it (one exclusive waiter, or consecutive shared
// waiters), a shared waiter at the nearest exclusive waiter ahead, and only the first run points at
// the holders. Its cost is proportional to the part of the graph reachable from C, linear in the
// queue lengths met along the way.
//
// Expiry index. Holds and waiters sit in two indexed binary min-heaps (each item knows its slot),
// keyed by expires_at and wait_until: a renewal or removal is O(log n), and the monitor's queries
// visit only the due items.
import type { Json, StateMachine } from '../raft/types.js';
import type {
  AcquireResult,
  Aborted,
  Grant,
  Hold,
  LockApplyError,
  LockCommand,
  LockMode,
  LockResult,
  LockState,
  Waiter,
} from './types.js';

interface HoldRec {
  readonly resource: string;
  readonly client_id: string;
  mode: LockMode;
  fencing_token: number;
  expires_at: number;
  /** Slot in the expiry heap. */
  pos: number;
}

interface WaiterRec {
  readonly resource: string;
  readonly client_id: string;
  mode: LockMode;
  ttl_ms: number;
  readonly since: number;
  wait_until: number;
  /** Slot in the deadline heap. */
  pos: number;
}

/** One resource. Deleted as soon as it has neither holders nor waiters. */
interface Entry {
  holders: HoldRec[];
  /** FIFO: index 0 is the head. */
  waiters: WaiterRec[];
}

/** The waiter of a client and the clients it waits for (reduced edge set, see above). */
interface OutEdges {
  waiter: WaiterRec;
  targets: string[];
}

const SNAPSHOT_VERSION = 1;
const HOLD_FIELDS = 4;
const WAITER_FIELDS = 5;

export class LockTable implements StateMachine {
  private resources = new Map<string, Entry>();
  /** Every waiter of a client, oldest first (by `since`). */
  private waitsByClient = new Map<string, WaiterRec[]>();
  /** Holds per client, for LOCK_MAX_HOLDS_PER_CLIENT (checked by the leader before proposing). */
  private holdsByClient = new Map<string, number>();
  private readonly holdHeap = new IndexedHeap<HoldRec>((h) => h.expires_at);
  private readonly waiterHeap = new IndexedHeap<WaiterRec>((w) => w.wait_until);
  /** The last fencing token given (see nextToken). */
  private lastToken = 0;

  // ---------------------------------------------------------------- StateMachine

  apply(command: Json, index: number, _term: number): LockResult | LockApplyError {
    const cmd = parseCommand(command);
    if (typeof cmd === 'string') return { error: cmd };
    switch (cmd.op) {
      case 'acquire':
        return this.acquire(cmd, index);
      case 'release':
        return this.release(cmd.resource, cmd.client_id, cmd.now, index);
      case 'renew':
        return this.renew(cmd.resource, cmd.client_id, cmd.ttl_ms, cmd.now);
      case 'expire':
        return this.expire(cmd.resource, cmd.now, index);
      case 'wait_timeout':
        return this.waitTimeout(cmd.resource, cmd.client_id, cmd.now, index);
      case 'extend_all':
        return this.extendAll(cmd.extend_ms, cmd.now, index);
    }
  }

  /**
   * `{v, locks: [[resource, holds, waiters], ...], token}` sorted by resource, with each hold flattened to
   * `client_id, 'x'|'s', fencing_token, expires_at` and each waiter to
   * `client_id, 'x'|'s', ttl_ms, since, wait_until`, in holder and queue order.
   */
  snapshot(): Json {
    const names = [...this.resources.keys()].sort();
    const locks: Json[] = new Array<Json>(names.length);
    for (let i = 0; i < names.length; i++) {
      const name = names[i]!;
      const e = this.resources.get(name)!;
      const holds: Json[] = [];
      for (const h of e.holders) holds.push(h.client_id, modeCode(h.mode), h.fencing_token, h.expires_at);
      const waits: Json[] = [];
      for (const w of e.waiters) waits.push(w.client_id, modeCode(w.mode), w.ttl_ms, w.since, w.wait_until);
      locks[i] = [name, holds, waits];
    }
    return { v: SNAPSHOT_VERSION, locks, token: this.lastToken };
  }

  /** Resources, holds and waiters: what snapshot() walks. */
  size(): number {
    return this.resources.size + this.holdHeap.size + this.waiterHeap.size;
  }

  restore(data: Json): void {
    const resources = new Map<string, Entry>();
    const waitsByClient = new Map<string, WaiterRec[]>();
    const holds: HoldRec[] = [];
    const waiters: WaiterRec[] = [];
    if (!isObject(data) || data.v !== SNAPSHOT_VERSION || !Array.isArray(data.locks)) {
      throw new Error('lock table: snapshot is not a version 1 lock table');
    }
    for (const item of data.locks) {
      if (!Array.isArray(item) || item.length !== 3)
        throw badSnapshot('a lock is not [resource, holds, waiters]');
      const [resource, hs, ws] = item;
      if (typeof resource !== 'string' || resource === '' || resources.has(resource)) {
        throw badSnapshot('a resource name is missing or repeated');
      }
      if (!Array.isArray(hs) || hs.length % HOLD_FIELDS !== 0) throw badSnapshot(`holds of ${resource}`);
      if (!Array.isArray(ws) || ws.length % WAITER_FIELDS !== 0) throw badSnapshot(`waiters of ${resource}`);
      // Arrays sized up front: pushing into [] would reserve room for 17 elements per resource.
      const e: Entry = {
        holders: new Array<HoldRec>(hs.length / HOLD_FIELDS),
        waiters: new Array<WaiterRec>(ws.length / WAITER_FIELDS),
      };
      for (let i = 0; i < hs.length; i += HOLD_FIELDS) {
        const client_id = hs[i];
        const mode = hs[i + 1];
        const fencing_token = hs[i + 2];
        const expires_at = hs[i + 3];
        if (!isId(client_id) || !isInt(fencing_token) || !isInt(expires_at)) {
          throw badSnapshot(`a hold of ${resource}`);
        }
        const h: HoldRec = {
          resource,
          client_id,
          mode: decodeMode(mode),
          fencing_token,
          expires_at,
          pos: -1,
        };
        e.holders[i / HOLD_FIELDS] = h;
        holds.push(h);
      }
      for (let i = 0; i < ws.length; i += WAITER_FIELDS) {
        const client_id = ws[i];
        const mode = ws[i + 1];
        const ttl_ms = ws[i + 2];
        const since = ws[i + 3];
        const wait_until = ws[i + 4];
        if (!isId(client_id) || !isInt(ttl_ms) || !isInt(since) || !isInt(wait_until)) {
          throw badSnapshot(`a waiter of ${resource}`);
        }
        const w: WaiterRec = {
          resource,
          client_id,
          mode: decodeMode(mode),
          ttl_ms,
          since,
          wait_until,
          pos: -1,
        };
        e.waiters[i / WAITER_FIELDS] = w;
        waiters.push(w);
        const list = waitsByClient.get(client_id);
        if (list) list.push(w);
        else waitsByClient.set(client_id, [w]);
      }
      if (e.holders.length > 0 || e.waiters.length > 0) resources.set(resource, e);
    }
    for (const list of waitsByClient.values()) list.sort((a, b) => a.since - b.since);
    // Absent from snapshots written before tokens could run ahead of log indexes: there, no token
    // was above its entry's index, so 0 gives the same tokens from here on.
    this.lastToken = isInt(data.token) ? data.token : 0;
    this.resources = resources;
    this.waitsByClient = waitsByClient;
    this.holdsByClient = new Map();
    for (const h of holds) this.countHold(h.client_id, 1);
    this.holdHeap.build(holds);
    this.waiterHeap.build(waiters);
  }

  // ---------------------------------------------------------------- lookups for the service

  /** The raw state of one resource (holds expired at the caller's clock included), as a copy. */
  get(resource: string): LockState | undefined {
    const e = this.resources.get(resource);
    return e && stateView(resource, e);
  }

  /** Holds `client_id` has now (expired ones not yet dropped included). */
  holdsOf(client_id: string): number {
    return this.holdsByClient.get(client_id) ?? 0;
  }

  /** Waiters queued on `resource`. */
  waitersOn(resource: string): number {
    return this.resources.get(resource)?.waiters.length ?? 0;
  }

  /** Whether `client_id` holds or waits for `resource` (a repeated acquire adds nothing). */
  involves(resource: string, client_id: string): boolean {
    const e = this.resources.get(resource);
    return (
      e !== undefined &&
      (e.holders.some((h) => h.client_id === client_id) || e.waiters.some((w) => w.client_id === client_id))
    );
  }

  /** Every resource with holders or waiters, sorted by name. */
  all(): LockState[] {
    return [...this.resources.keys()].sort().map((r) => stateView(r, this.resources.get(r)!));
  }

  /**
   * A bounded view for the dashboard: up to `limit` resources with holders or waiters (the oldest
   * entries, sorted by name) and how many there are in all. Costs O(limit), not O(table).
   */
  sample(limit: number): { total: number; states: LockState[] } {
    const states: LockState[] = [];
    for (const [r, e] of this.resources) {
      if (states.length >= limit) break;
      states.push(stateView(r, e));
    }
    states.sort((a, b) => (a.resource < b.resource ? -1 : a.resource > b.resource ? 1 : 0));
    return { total: this.resources.size, states };
  }

  /** Holds with expires_at <= now, grouped by resource (sorted), in holder order: what `expire` drops. */
  holdsExpiringBy(now: number): { resource: string; client_ids: string[] }[] {
    const due = new Set<string>();
    this.holdHeap.visitUpTo(now, (h) => due.add(h.resource));
    return [...due].sort().map((resource) => ({
      resource,
      client_ids: this.resources
        .get(resource)!
        .holders.filter((h) => h.expires_at <= now)
        .map((h) => h.client_id),
    }));
  }

  /** Waiters with wait_until <= now, earliest deadline first (then oldest first). */
  waitersDueBy(now: number): { resource: string; client_id: string }[] {
    const due: WaiterRec[] = [];
    this.waiterHeap.visitUpTo(now, (w) => due.push(w));
    due.sort((a, b) => a.wait_until - b.wait_until || a.since - b.since);
    return due.map((w) => ({ resource: w.resource, client_id: w.client_id }));
  }

  /** Holds in the table (expired ones not yet dropped included). */
  heldCount(): number {
    return this.holdHeap.size;
  }

  waiterCount(): number {
    return this.waiterHeap.size;
  }

  // ---------------------------------------------------------------- commands

  private acquire(cmd: Extract<LockCommand, { op: 'acquire' }>, index: number): LockResult {
    const { resource, client_id, mode, ttl_ms, wait_ms, now } = cmd;
    const grants: Grant[] = [];
    const aborted: Aborted[] = [];
    let e = this.resources.get(resource);
    if (e) {
      this.dropExpired(e, now);
      this.grantWaiters(resource, e, index, now, grants);
    }
    let result: AcquireResult;
    const queue = (into: Entry, at: number): AcquireResult => {
      this.addWaiter(into, at, {
        resource,
        client_id,
        mode,
        ttl_ms,
        since: index,
        wait_until: now + wait_ms,
        pos: -1,
      });
      return { status: 'queued' };
    };
    const held = e?.holders.find((h) => h.client_id === client_id);
    const waiting = this.waiterOf(client_id, resource);
    if (held && (held.mode === mode || held.mode === 'exclusive')) {
      // Reentrant (an exclusive hold also covers a shared request): same token, TTL renewed.
      held.expires_at = now + ttl_ms;
      this.holdHeap.update(held);
      result = { status: 'granted', hold: holdView(held) };
    } else if (waiting) {
      if (wait_ms > 0) {
        waiting.wait_until = now + wait_ms;
        waiting.ttl_ms = ttl_ms;
        // Asking exclusive while waiting shared makes the waiter exclusive (same place): whoever is
        // granted must get at least what each of its requests asked for (exclusive covers shared).
        if (mode === 'exclusive') waiting.mode = 'exclusive';
        this.waiterHeap.update(waiting);
        result = { status: 'queued' };
      } else {
        result = { status: 'conflict', holders: e!.holders.map(holdView) };
      }
    } else if (held) {
      // A shared holder asking exclusive: an upgrade.
      e = e!;
      if (e.holders.length === 1) {
        held.mode = 'exclusive';
        held.fencing_token = this.nextToken(index);
        held.expires_at = now + ttl_ms;
        this.holdHeap.update(held);
        result = { status: 'granted', hold: holdView(held) };
      } else if (wait_ms === 0) {
        result = { status: 'conflict', holders: e.holders.map(holdView) };
      } else {
        let at = 0;
        const q = e.waiters;
        while (at < q.length && e.holders.some((h) => h.client_id === q[at]!.client_id)) at++;
        result = queue(e, at);
      }
    } else {
      const grantable =
        (e === undefined || e.waiters.length === 0) &&
        (mode === 'shared' ? !e?.holders.some((h) => h.mode === 'exclusive') : !e?.holders.length);
      if (grantable) {
        if (!e) this.resources.set(resource, (e = { holders: [], waiters: [] }));
        const h = this.addHold(e, resource, client_id, mode, this.nextToken(index), now + ttl_ms);
        result = { status: 'granted', hold: holdView(h) };
      } else if (wait_ms === 0) {
        result = { status: 'conflict', holders: e!.holders.map(holdView) };
      } else {
        result = queue(e!, e!.waiters.length);
      }
    }

    this.breakDeadlocks(client_id, index, now, grants, aborted);
    if (result.status === 'queued') {
      const mine = aborted.find((a) => a.resource === resource && a.client_id === client_id);
      if (mine) {
        result = { status: 'deadlock', cycle: [...mine.cycle] };
      } else if (!this.waiterOf(client_id, resource)) {
        // Granted while breaking a deadlock elsewhere in the queue.
        const h = this.resources.get(resource)!.holders.find((x) => x.client_id === client_id)!;
        result = { status: 'granted', hold: holdView(h) };
      }
    }
    const after = this.resources.get(resource);
    if (after) this.dropIfEmpty(resource, after);
    return { op: 'acquire', result, grants, aborted };
  }

  private release(resource: string, client_id: string, now: number, index: number): LockResult {
    const e = this.resources.get(resource);
    const grants: Grant[] = [];
    if (!e) return { op: 'release', released: false, grants };
    this.dropExpired(e, now);
    const i = e.holders.findIndex((h) => h.client_id === client_id);
    if (i >= 0) this.removeHoldAt(e, i);
    this.grantWaiters(resource, e, index, now, grants);
    this.dropIfEmpty(resource, e);
    return { op: 'release', released: i >= 0, grants };
  }

  private renew(resource: string, client_id: string, ttl_ms: number, now: number): LockResult {
    const h = this.resources.get(resource)?.holders.find((x) => x.client_id === client_id);
    if (!h || h.expires_at <= now) return { op: 'renew', renewed: false };
    h.expires_at = now + ttl_ms;
    this.holdHeap.update(h);
    return { op: 'renew', renewed: true, expires_at: h.expires_at };
  }

  private expire(resource: string, now: number, index: number): LockResult {
    const e = this.resources.get(resource);
    const grants: Grant[] = [];
    if (!e) return { op: 'expire', expired: [], grants };
    const expired = this.dropExpired(e, now);
    this.grantWaiters(resource, e, index, now, grants);
    this.dropIfEmpty(resource, e);
    return { op: 'expire', expired, grants };
  }

  private waitTimeout(resource: string, client_id: string, now: number, index: number): LockResult {
    const e = this.resources.get(resource);
    const grants: Grant[] = [];
    if (!e) return { op: 'wait_timeout', removed: false, grants };
    this.dropExpired(e, now);
    const w = this.waiterOf(client_id, resource);
    // A refreshed waiter (a repeated acquire raced the monitor) keeps waiting.
    const removed = w !== undefined && w.wait_until <= now;
    if (removed) this.removeWaiter(w);
    this.grantWaiters(resource, e, index, now, grants);
    this.dropIfEmpty(resource, e);
    return { op: 'wait_timeout', removed, grants };
  }

  /**
   * A new leader's first command. Its clock may run ahead of its predecessor's, which granted the
   * holds and told their clients when they end, so every hold in the table gets `extend_ms` more
   * than it had (counted from `now` if it had already run out here): a hold the old clock still
   * counted as live survives a skew of up to `extend_ms`. Holds expired at the new clock are
   * included because only the old clock could tell them from live ones. Bringing them back brings
   * back their edges in the wait-for graph, which an earlier search may have left out (the hold
   * counted as expired then). Such a cycle goes through the revived holder, which then also waits:
   * so deadlocks are looked for from every client that holds and waits. That set is the table's
   * own, the same on every replica whatever entries or snapshot it was rebuilt from.
   */
  private extendAll(extend_ms: number, now: number, index: number): LockResult {
    const holds: HoldRec[] = [];
    this.holdHeap.visitUpTo(Number.MAX_SAFE_INTEGER, (h) => holds.push(h));
    for (const h of holds) {
      h.expires_at = Math.max(h.expires_at, now) + extend_ms;
      this.holdHeap.update(h);
    }
    const holdingWaiters = [...this.waitsByClient.keys()].filter((c) => this.holdsOf(c) > 0).sort();
    const grants: Grant[] = [];
    const aborted: Aborted[] = [];
    for (const client of holdingWaiters) this.breakDeadlocks(client, index, now, grants, aborted);
    return { op: 'extend_all', extended: holds.length, grants, aborted };
  }

  // ---------------------------------------------------------------- holds, waiters, granting

  /** Drops the holds expired at `now`; returns their clients in holder order. */
  private dropExpired(e: Entry, now: number): string[] {
    const dropped: string[] = [];
    if (!e.holders.some((h) => h.expires_at <= now)) return dropped;
    e.holders = e.holders.filter((h) => {
      if (h.expires_at > now) return true;
      this.holdHeap.remove(h);
      this.countHold(h.client_id, -1);
      dropped.push(h.client_id);
      return false;
    });
    return dropped;
  }

  /** Grants from the head of the queue while the head is compatible with the holders (no overtaking). */
  private grantWaiters(resource: string, e: Entry, index: number, now: number, grants: Grant[]): void {
    while (e.waiters.length > 0) {
      const w = e.waiters[0]!;
      const ok =
        w.mode === 'exclusive'
          ? e.holders.every((h) => h.client_id === w.client_id)
          : !e.holders.some((h) => h.mode === 'exclusive');
      if (!ok) return;
      this.removeWaiter(w);
      const own = e.holders.find((h) => h.client_id === w.client_id);
      let h: HoldRec;
      const token = this.nextToken(index);
      if (own) {
        // An upgrade: the shared hold becomes exclusive under a new token.
        own.mode = w.mode;
        own.fencing_token = token;
        own.expires_at = now + w.ttl_ms;
        this.holdHeap.update(own);
        h = own;
      } else {
        h = this.addHold(e, resource, w.client_id, w.mode, token, now + w.ttl_ms);
      }
      grants.push({
        resource,
        client_id: h.client_id,
        mode: h.mode,
        fencing_token: token,
        expires_at: h.expires_at,
      });
    }
  }

  /**
   * The token of a grant made by the entry at `index`: its index, unless an earlier grant (of this
   * same entry: shared waiters let in together, or a later one) already took that, then the next
   * number. Tokens so stay strictly increasing over all grants and at least their entry's index;
   * entries that grant nothing let the index catch up again.
   */
  private nextToken(index: number): number {
    this.lastToken = Math.max(index, this.lastToken + 1);
    return this.lastToken;
  }

  private addHold(
    e: Entry,
    resource: string,
    client_id: string,
    mode: LockMode,
    token: number,
    expires_at: number,
  ): HoldRec {
    const h: HoldRec = { resource, client_id, mode, fencing_token: token, expires_at, pos: -1 };
    // A one-element literal, not a push: V8 would reserve room for 17 (most resources have one holder).
    if (e.holders.length === 0) e.holders = [h];
    else e.holders.push(h);
    this.holdHeap.push(h);
    this.countHold(client_id, 1);
    return h;
  }

  private removeHoldAt(e: Entry, i: number): void {
    const [h] = e.holders.splice(i, 1);
    this.holdHeap.remove(h!);
    this.countHold(h!.client_id, -1);
  }

  private countHold(client_id: string, delta: number): void {
    const n = (this.holdsByClient.get(client_id) ?? 0) + delta;
    if (n > 0) this.holdsByClient.set(client_id, n);
    else this.holdsByClient.delete(client_id);
  }

  private addWaiter(e: Entry, at: number, w: WaiterRec): void {
    e.waiters.splice(at, 0, w);
    this.waiterHeap.push(w);
    // `since` is the applying index, the largest yet: appending keeps the list sorted.
    const list = this.waitsByClient.get(w.client_id);
    if (list) list.push(w);
    else this.waitsByClient.set(w.client_id, [w]);
  }

  private removeWaiter(w: WaiterRec): void {
    const e = this.resources.get(w.resource)!;
    e.waiters.splice(e.waiters.indexOf(w), 1);
    this.waiterHeap.remove(w);
    const list = this.waitsByClient.get(w.client_id)!;
    if (list.length === 1) this.waitsByClient.delete(w.client_id);
    else list.splice(list.indexOf(w), 1);
  }

  private waiterOf(client_id: string, resource: string): WaiterRec | undefined {
    return this.waitsByClient.get(client_id)?.find((w) => w.resource === resource);
  }

  private dropIfEmpty(resource: string, e: Entry): void {
    if (e.holders.length === 0 && e.waiters.length === 0) this.resources.delete(resource);
  }

  // ---------------------------------------------------------------- deadlock detection

  /** Aborts the youngest waiter of every cycle through `client` (see the header), granting behind it. */
  private breakDeadlocks(
    client: string,
    index: number,
    now: number,
    grants: Grant[],
    aborted: Aborted[],
  ): void {
    for (;;) {
      const victim = this.findVictim(client, now);
      if (!victim) return;
      const { waiter, cycle } = victim;
      this.removeWaiter(waiter);
      aborted.push({ resource: waiter.resource, client_id: waiter.client_id, cycle });
      const e = this.resources.get(waiter.resource)!;
      this.grantWaiters(waiter.resource, e, index, now, grants);
      this.dropIfEmpty(waiter.resource, e);
    }
  }

  private findVictim(start: string, now: number): { waiter: WaiterRec; cycle: string[] } | null {
    if (!this.waitsByClient.has(start)) return null;
    // Forward: every client reachable from `start`, with its out-edges.
    const positions = new Map<string, Map<WaiterRec, number>>();
    const out = new Map<string, OutEdges[]>([[start, this.outEdges(start, now, positions)]]);
    const stack = [start];
    while (stack.length > 0) {
      for (const o of out.get(stack.pop()!)!) {
        for (const t of o.targets) {
          if (out.has(t)) continue;
          out.set(t, this.outEdges(t, now, positions));
          stack.push(t);
        }
      }
    }
    // Backward from `start` over the edges found: the clients that also reach it.
    const into = new Map<string, string[]>();
    for (const [from, edges] of out) {
      for (const o of edges) {
        for (const t of o.targets) {
          const list = into.get(t);
          if (list) list.push(from);
          else into.set(t, [from]);
        }
      }
    }
    const component = new Set([start]);
    const back = [start];
    while (back.length > 0) {
      for (const from of into.get(back.pop()!) ?? []) {
        if (component.has(from)) continue;
        component.add(from);
        back.push(from);
      }
    }
    if (component.size < 2) return null;
    let victim: OutEdges | null = null;
    for (const c of component) {
      for (const o of out.get(c)!) {
        if (
          (victim === null || o.waiter.since > victim.waiter.since) &&
          o.targets.some((t) => component.has(t))
        ) {
          victim = o;
        }
      }
    }
    // The victim's edge into the component, then a shortest way back to the victim.
    const from = victim!.waiter.client_id;
    const first = victim!.targets.find((t) => component.has(t))!;
    const parent = new Map<string, string | null>([[first, null]]);
    const queue = [first];
    for (let i = 0; i < queue.length && !parent.has(from); i++) {
      const x = queue[i]!;
      for (const o of out.get(x)!) {
        for (const t of o.targets) {
          if (!component.has(t) || parent.has(t)) continue;
          parent.set(t, x);
          queue.push(t);
        }
      }
    }
    const path: string[] = [];
    for (let x = parent.get(from); x != null; x = parent.get(x)) path.push(x);
    return { waiter: victim!.waiter, cycle: [from, ...path.reverse()] };
  }

  private outEdges(client: string, now: number, positions: Map<string, Map<WaiterRec, number>>): OutEdges[] {
    const edges: OutEdges[] = [];
    for (const w of this.waitsByClient.get(client) ?? []) {
      const targets = this.waitTargets(w, now, positions);
      if (targets.length > 0) edges.push({ waiter: w, targets });
    }
    return edges;
  }

  /** Whom `w` waits for, in the reduced edge set (see the header). */
  private waitTargets(w: WaiterRec, now: number, positions: Map<string, Map<WaiterRec, number>>): string[] {
    const e = this.resources.get(w.resource)!;
    const q = e.waiters;
    let pos = positions.get(w.resource);
    if (!pos) {
      pos = new Map(q.map((x, i) => [x, i]));
      positions.set(w.resource, pos);
    }
    const i = pos.get(w)!;
    const live = (h: HoldRec): boolean => h.expires_at > now && h.client_id !== w.client_id;
    if (w.mode === 'exclusive') {
      if (i === 0) return e.holders.filter(live).map((h) => h.client_id);
      if (q[i - 1]!.mode === 'exclusive') return [q[i - 1]!.client_id];
      const run: string[] = [];
      for (let j = i - 1; j >= 0 && q[j]!.mode === 'shared'; j--) run.push(q[j]!.client_id);
      return run;
    }
    for (let j = i - 1; j >= 0; j--) if (q[j]!.mode === 'exclusive') return [q[j]!.client_id];
    return e.holders.filter((h) => h.mode === 'exclusive' && live(h)).map((h) => h.client_id);
  }
}

// ---------------------------------------------------------------- the heap

/** A binary min-heap whose items record their slot, so any item can be updated or removed in O(log n). */
class IndexedHeap<T extends { pos: number }> {
  private items: T[] = [];

  constructor(private readonly key: (item: T) => number) {}

  get size(): number {
    return this.items.length;
  }

  push(item: T): void {
    item.pos = this.items.length;
    this.items.push(item);
    this.up(item.pos);
  }

  remove(item: T): void {
    const i = item.pos;
    const last = this.items.pop()!;
    item.pos = -1;
    if (last === item) return;
    this.items[i] = last;
    last.pos = i;
    this.up(i);
    this.down(last.pos);
  }

  /** Restores the heap order after `item`'s key changed. */
  update(item: T): void {
    this.up(item.pos);
    this.down(item.pos);
  }

  /** Calls `fn` on every item whose key is <= max (in heap order), without changing the heap. */
  visitUpTo(max: number, fn: (item: T) => void): void {
    const items = this.items;
    if (items.length === 0 || this.key(items[0]!) > max) return;
    const stack = [0];
    while (stack.length > 0) {
      const i = stack.pop()!;
      fn(items[i]!);
      for (const c of [2 * i + 1, 2 * i + 2])
        if (c < items.length && this.key(items[c]!) <= max) stack.push(c);
    }
  }

  /** Replaces the contents with `items` in O(n). */
  build(items: T[]): void {
    this.items = items;
    items.forEach((x, i) => (x.pos = i));
    for (let i = (items.length >> 1) - 1; i >= 0; i--) this.down(i);
  }

  private up(i: number): void {
    const items = this.items;
    const item = items[i]!;
    const k = this.key(item);
    while (i > 0) {
      const p = (i - 1) >> 1;
      const parent = items[p]!;
      if (this.key(parent) <= k) break;
      items[i] = parent;
      parent.pos = i;
      i = p;
    }
    items[i] = item;
    item.pos = i;
  }

  private down(i: number): void {
    const items = this.items;
    const n = items.length;
    const item = items[i]!;
    const k = this.key(item);
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && this.key(items[r]!) < this.key(items[l]!) ? r : l;
      const child = items[c]!;
      if (this.key(child) >= k) break;
      items[i] = child;
      child.pos = i;
      i = c;
    }
    items[i] = item;
    item.pos = i;
  }
}

// ---------------------------------------------------------------- commands from the log

type JsonObject = { [key: string]: Json };

function isObject(v: Json | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isId(v: Json | undefined): v is string {
  return typeof v === 'string' && v.length > 0;
}

function isInt(v: Json | undefined): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v);
}

const OPS: ReadonlySet<string> = new Set<LockCommand['op']>([
  'acquire',
  'release',
  'renew',
  'expire',
  'wait_timeout',
  'extend_all',
]);

function isOp(op: string): op is LockCommand['op'] {
  return OPS.has(op);
}

/** A well-formed command, or what is wrong with it. Unknown fields are ignored. */
function parseCommand(c: Json): LockCommand | string {
  if (!isObject(c)) return 'command is not an object';
  const { op, now } = c;
  if (typeof op !== 'string') return 'op is missing';
  if (!isOp(op)) return `unknown op ${JSON.stringify(op)}`;
  if (!isInt(now) || now < 0) return 'now must be a non-negative integer';
  const duration = (name: string, min: number): number | string => {
    const v = c[name];
    if (!isInt(v) || v < min || !Number.isSafeInteger(now + v)) return `${name} must be an integer >= ${min}`;
    return v;
  };
  if (op === 'extend_all') {
    const extend_ms = duration('extend_ms', 0);
    return typeof extend_ms === 'string' ? extend_ms : { op, extend_ms, now };
  }
  const { resource, client_id } = c;
  if (!isId(resource)) return 'resource must be a non-empty string';
  if (op === 'expire') {
    const ids = c.client_ids;
    if (!Array.isArray(ids) || !ids.every(isId)) return 'client_ids must be an array of non-empty strings';
    return { op, resource, client_ids: ids, now };
  }
  if (!isId(client_id)) return 'client_id must be a non-empty string';
  if (op === 'release' || op === 'wait_timeout') return { op, resource, client_id, now };
  const ttl_ms = duration('ttl_ms', 1);
  if (typeof ttl_ms === 'string') return ttl_ms;
  if (op === 'renew') return { op, resource, client_id, ttl_ms, now };
  const { mode } = c;
  if (mode !== 'exclusive' && mode !== 'shared') return 'mode must be "exclusive" or "shared"';
  const wait_ms = duration('wait_ms', 0);
  if (typeof wait_ms === 'string') return wait_ms;
  return { op, resource, client_id, mode, ttl_ms, wait_ms, now };
}

// ---------------------------------------------------------------- views and snapshot helpers

function holdView(h: HoldRec): Hold {
  return { client_id: h.client_id, mode: h.mode, fencing_token: h.fencing_token, expires_at: h.expires_at };
}

function waiterView(w: WaiterRec): Waiter {
  return { client_id: w.client_id, mode: w.mode, ttl_ms: w.ttl_ms, since: w.since, wait_until: w.wait_until };
}

function stateView(resource: string, e: Entry): LockState {
  return { resource, holders: e.holders.map(holdView), waiters: e.waiters.map(waiterView) };
}

function modeCode(mode: LockMode): string {
  return mode === 'exclusive' ? 'x' : 's';
}

function decodeMode(code: Json | undefined): LockMode {
  if (code === 'x') return 'exclusive';
  if (code === 's') return 'shared';
  throw badSnapshot(`unknown mode ${JSON.stringify(code)}`);
}

function badSnapshot(what: string): Error {
  return new Error(`lock table: malformed snapshot (${what})`);
}
