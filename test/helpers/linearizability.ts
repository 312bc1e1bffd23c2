// Linearizability checker for the cache's per-key registers (SPEC section 6: "reads and writes of
// one key are linearizable across all cache nodes").
//
// A test records every client call with the time it was sent (`invokedAt`) and the time its answer
// arrived (`returnedAt`), from any number of concurrent clients and cache nodes, then asks whether
// some total order of the calls (a) respects real time: a call that returned before another was
// invoked comes first, and (b) is a legal run of a register: a read returns the value of the latest
// write before it, or the initial value / null when there is none or a delete came last.
//
// Algorithm: Wing & Gong's search, with the improvements of Lowe ("Testing for linearizability",
// 2017) as implemented by Porcupine (github.com/anishathalye/porcupine):
//  - P-compositionality: linearizability is local, so each key is checked on its own. That turns
//    one search exponential in the whole history into many small ones.
//  - The history is a doubly linked list of call and return entries in time order. The search takes
//    the earliest call it can linearize next, lifts that operation out of the list and recurses; on
//    meeting a return entry (an operation that returned without being linearized) it backtracks.
//  - Memoization: two search states that linearized the same SET of operations and left the
//    register with the same value have the same future, so each (bitset, value) pair is explored
//    once. Values are interned to small integers, so the model state is one number.
// Worst case stays exponential (n fully concurrent writes give 2^n subsets), hence `timeoutMs`.
//
// Inputs and their meaning:
//  - `returnedAt: null`: the call never returned (timeout, crashed client). A pending write or
//    delete may have taken effect at any time after its invocation, or never; a pending read
//    constrains nothing and is dropped.
//  - Calls that FAILED and surely did not take effect (a 413 on PUT, a refused connection) must not
//    be passed in at all. If in doubt (504, reset connection), pass the call as pending.
//  - Equal timestamps count as concurrent (a return at t does not precede an invocation at t): the
//    checker only reports what the timestamps prove.
//  - Values are compared as canonical JSON (object keys sorted). Reads report "not found" as
//    `value: null` or no value; a write of JSON null is therefore indistinguishable from a delete.
import { performance } from 'node:perf_hooks';
import type { Json } from '../../src/raft/types.js';

export interface Operation {
  client: string;
  key: string;
  kind: 'read' | 'write' | 'delete';
  /** Writes: the value written. Reads: the value returned; null or absent for not found. */
  value?: Json;
  invokedAt: number;
  /** null: never returned; the call may or may not have taken effect. */
  returnedAt: number | null;
}

export interface CheckOptions {
  /** Value of every key before the history starts (default null: not found). */
  initial?: Json | null;
  /** Search budget PER KEY in milliseconds (default 10 000); past it the key's verdict is unknown. */
  timeoutMs?: number;
}

export type CheckResult =
  | { ok: true }
  | { ok: false; key: string; reason: string; witness: Operation[] }
  | { ok: 'unknown'; key: string; reason: 'timeout' };

/** JSON text with object keys sorted at every level, so equal values have equal text. */
export function canonicalJson(value: Json | undefined): string {
  if (value === undefined || value === null) return 'null';
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v)).join(',')}]`;
  if (typeof value === 'object') {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** State id of "no value" (initial null, after a delete, a write of null). */
const ABSENT = 0;

interface KeyOp {
  /** Index in the key's bitset. */
  id: number;
  op: Operation;
  /** Written value's id (ABSENT for a delete), or the read's returned value's id. */
  value: number;
  inv: number;
  /** Infinity when pending: the return entry then sorts after everything else. */
  ret: number;
}

class Entry {
  prev: Entry | null = null;
  next: Entry | null = null;
  /** A call entry's return entry; null on return entries. */
  match: Entry | null = null;
  constructor(
    readonly op: KeyOp,
    readonly isCall: boolean,
  ) {}
}

type KeyVerdict = { ok: true } | { ok: false; blocked: KeyOp; states: Set<number> } | { ok: 'timeout' };

const DEFAULT_TIMEOUT_MS = 10_000;

export function checkLinearizable(ops: readonly Operation[], opts: CheckOptions = {}): CheckResult {
  const byKey = new Map<string, Operation[]>();
  for (const op of ops) {
    validate(op);
    let list = byKey.get(op.key);
    if (!list) byKey.set(op.key, (list = []));
    list.push(op);
  }
  const initial = canonicalJson(opts.initial ?? null);
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;

  // A definite violation on any key beats an unknown verdict on another, so keep going after one.
  let timedOut: string | undefined;
  for (const key of [...byKey.keys()].sort()) {
    const r = checkKey(key, byKey.get(key)!, initial, timeoutMs);
    if (r.ok === false) return r;
    if (r.ok === 'unknown' && timedOut === undefined) timedOut = key;
  }
  return timedOut === undefined ? { ok: true } : { ok: 'unknown', key: timedOut, reason: 'timeout' };
}

function validate(op: Operation): void {
  const what = `${op.kind} by "${op.client}" on "${op.key}"`;
  if (!Number.isFinite(op.invokedAt)) throw new TypeError(`${what}: invokedAt is not a finite number`);
  if (op.returnedAt !== null && !(Number.isFinite(op.returnedAt) && op.returnedAt >= op.invokedAt)) {
    throw new TypeError(`${what}: returnedAt must be null or a finite number >= invokedAt`);
  }
  if (op.kind === 'write' && op.value === undefined) throw new TypeError(`${what}: a write needs its value`);
}

function checkKey(
  key: string,
  all: Operation[],
  initial: string,
  timeoutMs: number,
): { ok: true } | { ok: false; key: string; reason: string; witness: Operation[] } | { ok: 'unknown' } {
  const ids = new Map<string, number>([['null', ABSENT]]);
  const names: string[] = ['null'];
  const intern = (text: string): number => {
    let id = ids.get(text);
    if (id === undefined) {
      id = names.length;
      ids.set(text, id);
      names.push(text);
    }
    return id;
  };
  const init = intern(initial);

  const kops: KeyOp[] = [];
  for (const op of all) {
    if (op.kind === 'read' && op.returnedAt === null) continue; // constrains nothing
    kops.push({
      id: kops.length,
      op,
      value: op.kind === 'delete' ? ABSENT : intern(canonicalJson(op.value)),
      inv: op.invokedAt,
      ret: op.returnedAt ?? Infinity,
    });
  }
  if (kops.length === 0) return { ok: true };
  const t0 = Math.min(...kops.map((k) => k.inv));

  // Fast path, and a far better message than the search's: a read of a value that no write (not
  // even a pending one) could have produced.
  const producible = new Set<number>([init]);
  for (const k of kops) if (k.op.kind !== 'read') producible.add(k.value);
  const impossible = kops
    .filter((k) => k.op.kind === 'read' && !producible.has(k.value))
    .sort((a, b) => a.inv - b.inv)[0];
  if (impossible) {
    return {
      ok: false,
      key,
      reason:
        `${describe(impossible, names, t0)}: no write on "${key}" ever wrote that value ` +
        `(initial value ${short(initial)})`,
      witness: witness(impossible, kops),
    };
  }

  const v = search(kops, init, performance.now() + timeoutMs);
  if (v.ok === true) return v;
  if (v.ok === 'timeout') return { ok: 'unknown' };
  const held = [...v.states].map((s) => short(names[s]!));
  return {
    ok: false,
    key,
    reason:
      `${describe(v.blocked, names, t0)}: cannot take effect within its interval in any order ` +
      `consistent with the operations before it; when it returned, "${key}" could only hold ` +
      `${held.slice(0, 5).join(' or ')}${held.length > 5 ? ` (or ${held.length - 5} more)` : ''}`,
    witness: witness(v.blocked, kops),
  };
}

/** Wing & Gong / Lowe search over one key's operations; see the header. */
function search(kops: KeyOp[], init: number, deadline: number): KeyVerdict {
  const entries: Entry[] = [];
  for (const k of kops) {
    const call = new Entry(k, true);
    const ret = new Entry(k, false);
    call.match = ret;
    entries.push(call, ret);
  }
  // Calls before returns at equal times: equal timestamps are concurrent (see the header).
  entries.sort(
    (a, b) =>
      (a.isCall ? a.op.inv : a.op.ret) - (b.isCall ? b.op.inv : b.op.ret) ||
      (a.isCall ? 0 : 1) - (b.isCall ? 0 : 1) ||
      a.op.id - b.op.id,
  );
  const head = new Entry({ id: -1, op: kops[0]!.op, value: 0, inv: 0, ret: 0 }, false);
  let prev = head;
  for (const e of entries) {
    prev.next = e;
    e.prev = prev;
    prev = e;
  }

  const bits = new Uint32Array(Math.ceil(kops.length / 32) || 1);
  const seen = new Set<string>();
  const stack: { entry: Entry; state: number }[] = [];
  let state = init;
  let entry = head.next;
  let blocked: KeyOp | undefined;
  let blockedStates = new Set<number>();
  let steps = 0;

  while (entry !== null) {
    if ((++steps & 1023) === 0 && performance.now() > deadline) return { ok: 'timeout' };
    const k = entry.op;
    if (entry.isCall) {
      const legal = k.op.kind !== 'read' || k.value === state;
      if (legal) {
        const next = k.op.kind === 'read' ? state : k.value;
        const word = k.id >>> 5;
        const mask = 1 << (k.id & 31);
        bits[word]! |= mask;
        const memo = `${next}|${bits.join(',')}`;
        if (!seen.has(memo)) {
          seen.add(memo);
          stack.push({ entry, state });
          state = next;
          lift(entry);
          entry = head.next;
          continue;
        }
        bits[word]! &= ~mask;
      }
      entry = entry.next;
      continue;
    }
    // A pending op's return sorts after every completed op's, so reaching one means every
    // completed op is linearized; the remaining pending writes can all go last, or never happen.
    if (k.ret === Infinity) return { ok: true };
    // The furthest point the search got stuck at is the earliest place no linearization extends
    // past: the op to blame in the report.
    if (blocked === undefined || k.ret > blocked.ret) {
      blocked = k;
      blockedStates = new Set([state]);
    } else if (blocked === k) {
      blockedStates.add(state);
    }
    const top = stack.pop();
    if (top === undefined) return { ok: false, blocked, states: blockedStates };
    state = top.state;
    bits[top.entry.op.id >>> 5]! &= ~(1 << (top.entry.op.id & 31));
    unlift(top.entry);
    entry = top.entry.next;
  }
  return { ok: true };
}

/** Removes a call entry and its return entry from the list (the op is linearized). */
function lift(call: Entry): void {
  call.prev!.next = call.next;
  call.next!.prev = call.prev; // a call is always followed by at least its own return
  const ret = call.match!;
  ret.prev!.next = ret.next;
  if (ret.next) ret.next.prev = ret.prev;
}

/** Exact inverse of `lift`, in reverse order, so neighbours are restored as they were. */
function unlift(call: Entry): void {
  const ret = call.match!;
  ret.prev!.next = ret;
  if (ret.next) ret.next.prev = ret;
  call.prev!.next = call;
  call.next!.prev = call;
}

/**
 * The operations needed to see why `b` is a problem: `b`; everything concurrent with it; each
 * client's last operation that returned before `b` was invoked (what real time forces before it);
 * and, for a read, the write of the value it returned (the latest one invoked before the read
 * returned, else the first one).
 */
function witness(b: KeyOp, kops: KeyOp[]): Operation[] {
  const out = new Set<KeyOp>([b]);
  const lastBefore = new Map<string, KeyOp>();
  for (const k of kops) {
    if (k.inv <= b.ret && k.ret >= b.inv) out.add(k);
    if (k.ret < b.inv) {
      const cur = lastBefore.get(k.op.client);
      if (!cur || k.ret > cur.ret) lastBefore.set(k.op.client, k);
    }
  }
  for (const k of lastBefore.values()) out.add(k);
  if (b.op.kind === 'read') {
    const writers = kops.filter((k) => k.op.kind !== 'read' && k.value === b.value);
    const before = writers.filter((k) => k.inv <= b.ret).sort((x, y) => y.inv - x.inv)[0];
    const source = before ?? writers.sort((x, y) => x.inv - y.inv)[0];
    if (source) out.add(source);
  }
  return [...out].sort((x, y) => x.inv - y.inv || x.id - y.id).map((k) => k.op);
}

function describe(k: KeyOp, names: string[], t0: number): string {
  const at = (t: number): string => (t === Infinity ? 'pending' : `+${(t - t0).toFixed(3)}`);
  const span = `[${at(k.inv)}, ${at(k.ret)}] ms`;
  const v = short(names[k.value]!);
  if (k.op.kind === 'read') return `read by "${k.op.client}" ${span} returned ${v}`;
  if (k.op.kind === 'write') return `write of ${v} by "${k.op.client}" ${span}`;
  return `delete by "${k.op.client}" ${span}`;
}

function short(text: string): string {
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}
