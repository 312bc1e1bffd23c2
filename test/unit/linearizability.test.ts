import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { Json } from '../../src/raft/types.js';
import {
  canonicalJson,
  checkLinearizable,
  type CheckOptions,
  type CheckResult,
  type Operation,
} from '../helpers/linearizability.js';

// Hand-written histories: times are milliseconds after T0, an epoch-like origin, as the recorder's
// wall-clock times are.
const T0 = 1_700_000_000_000;

function at(ms: number | null): number | null {
  return ms === null ? null : T0 + ms;
}

function w(client: string, value: Json, inv: number, ret: number | null, key = 'k'): Operation {
  return { client, key, kind: 'write', value, invokedAt: T0 + inv, returnedAt: at(ret) };
}

/** `value` undefined: the read reported not found without a value. */
function r(client: string, value: Json | undefined, inv: number, ret: number | null, key = 'k'): Operation {
  const op: Operation = { client, key, kind: 'read', invokedAt: T0 + inv, returnedAt: at(ret) };
  if (value !== undefined) op.value = value;
  return op;
}

function del(client: string, inv: number, ret: number | null, key = 'k'): Operation {
  return { client, key, kind: 'delete', invokedAt: T0 + inv, returnedAt: at(ret) };
}

function assertOk(ops: Operation[], opts?: CheckOptions): void {
  const res = checkLinearizable(ops, opts);
  assert.deepEqual(res, { ok: true }, JSON.stringify(res));
}

/** Asserts a violation on `key` whose witness holds `mustInclude`; returns the reason. */
function assertViolation(
  res: CheckResult,
  key: string,
  mustInclude: Operation[],
  reason?: RegExp,
): Extract<CheckResult, { ok: false }> {
  assert.equal(res.ok, false, `expected a violation, got ${JSON.stringify(res)}`);
  if (res.ok !== false) throw new Error('unreachable');
  assert.equal(res.key, key);
  assert.ok(res.witness.length > 0);
  for (const op of res.witness) assert.equal(op.key, key, 'the witness only holds the named key');
  for (const op of mustInclude) {
    assert.ok(res.witness.includes(op), `witness lacks ${JSON.stringify(op)}: ${res.reason}`);
  }
  if (reason) assert.match(res.reason, reason);
  return res;
}

// ---------------------------------------------------------------------------------------------
// Generated histories, linearizable by construction: every client runs operations one after the
// other; each operation takes effect on a real register at a point inside its interval (a pending
// write: anywhere after its invocation, or never), and reads report what the register held then.

type Kind = Operation['kind'];

interface GenOp {
  kind: Kind;
  gap: number;
  duration: number;
  /** Where in its interval the op takes effect, as a fraction of its duration. */
  lin: number;
  /** Never returns: a pending write took effect (possibly after its "duration") or was lost. The
   *  client is then retired and a new one continues from the call's would-be return. */
  pending: false | 'applied' | 'lost';
}

/** One key's clients, each a sequence of operations. */
type GenKey = GenOp[][];

const INITIAL: Json = { initial: true };

/** A structurally equal copy with object keys in reverse order: exercises canonical comparison. */
function reverseKeys(v: Json): Json {
  if (Array.isArray(v)) return v.map(reverseKeys);
  if (v !== null && typeof v === 'object') {
    const out: { [k: string]: Json } = {};
    for (const k of Object.keys(v).reverse()) out[k] = reverseKeys(v[k]!);
    return out;
  }
  return v;
}

function registerHistory(keys: GenKey[], initial: Json | null): Operation[] {
  const out: Operation[] = [];
  keys.forEach((clients, ki) => {
    const key = `key-${ki}`;
    const effects: { at: number; op: Operation }[] = [];
    let serial = 0;
    clients.forEach((ops, ci) => {
      let client = `${key}/c${ci}`;
      let t = T0;
      for (const g of ops) {
        const inv = t + g.gap;
        const ret = inv + g.duration;
        const op: Operation = {
          client,
          key,
          kind: g.kind,
          invokedAt: inv,
          returnedAt: g.pending ? null : ret,
        };
        // Unique values: a value identifies its write (the mutations below rely on it).
        if (g.kind === 'write') op.value = { key, client, n: serial++, tags: ['a', { b: ci }] };
        if (g.kind === 'read' && g.pending) op.value = 'a pending read is ignored';
        out.push(op);
        if (g.pending !== 'lost' && !(g.kind === 'read' && g.pending)) {
          effects.push({ at: inv + g.lin * g.duration * (g.pending ? 5 : 1), op });
        }
        // A client whose call never returned is retired, as in Jepsen: a new one takes its place.
        if (g.pending) client = `${key}/c${ci}-after-${op.invokedAt - T0}`;
        t = ret;
      }
    });
    effects.sort((a, b) => a.at - b.at);
    let state: Json | null = initial;
    let nulls = 0;
    for (const { op } of effects) {
      if (op.kind === 'write') state = op.value!;
      else if (op.kind === 'delete') state = null;
      else if (state !== null) op.value = reverseKeys(state);
      else if (nulls++ % 2 === 0) op.value = null; // else no value at all: both mean not found
    }
  });
  return out;
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomKeys(seed: number, keys: number, clients: number, opsPerClient: number): GenKey[] {
  const rand = mulberry32(seed);
  const genOp = (): GenOp => {
    const x = rand();
    const p = rand();
    return {
      kind: x < 0.5 ? 'read' : x < 0.9 ? 'write' : 'delete',
      gap: rand() * 3,
      duration: 0.5 + rand() * 10,
      lin: rand(),
      pending: p < 0.01 ? 'applied' : p < 0.02 ? 'lost' : false,
    };
  };
  return Array.from({ length: keys }, () =>
    Array.from({ length: clients }, () => Array.from({ length: opsPerClient }, genOp)),
  );
}

const genOpArb: fc.Arbitrary<GenOp> = fc.record({
  kind: fc.oneof(
    { arbitrary: fc.constant<Kind>('read'), weight: 4 },
    { arbitrary: fc.constant<Kind>('write'), weight: 3 },
    { arbitrary: fc.constant<Kind>('delete'), weight: 1 },
  ),
  // Small integers: many equal timestamps, which the checker must treat as concurrent.
  gap: fc.integer({ min: 0, max: 4 }),
  duration: fc.integer({ min: 0, max: 8 }),
  lin: fc.double({ min: 0, max: 1, noNaN: true }),
  pending: fc.oneof(
    { arbitrary: fc.constant<GenOp['pending']>(false), weight: 12 },
    { arbitrary: fc.constant<GenOp['pending']>('applied'), weight: 1 },
    { arbitrary: fc.constant<GenOp['pending']>('lost'), weight: 1 },
  ),
});

const keysArb: fc.Arbitrary<GenKey[]> = fc.array(
  fc.array(fc.array(genOpArb, { maxLength: 8 }), { minLength: 1, maxLength: 4 }),
  { minLength: 1, maxLength: 3 },
);

type Mutation = 'never' | 'stale' | 'future';

const NEVER_WRITTEN: Json = { never: 'written' };

/**
 * Changes one completed read so that the history is surely not linearizable (values are unique per
 * write, and no write wrote the initial value):
 *  - never: the read returns a value no write wrote;
 *  - stale: it returns the value of a write W although another write or delete W2 ran entirely
 *    after W and entirely before the read: W2 must come between them in every linearization;
 *  - future: it returns the value of a write invoked after the read returned.
 * Falls back to `never` when the history has no such triple, and appends a read when it has none.
 */
function mutate(history: Operation[], kind: Mutation, pick: number): { ops: Operation[]; target: Operation } {
  const ops = history.map((o) => ({ ...o }));
  const done = (o: Operation): o is Operation & { returnedAt: number } => o.returnedAt !== null;
  const reads = ops.filter((o) => o.kind === 'read' && done(o));
  const choices: { read: Operation; value: Json }[] = [];
  for (const read of reads) {
    const same = ops.filter((o) => o.key === read.key && o.kind !== 'read');
    for (const wr of same) {
      if (wr.kind !== 'write') continue;
      if (kind === 'future' && read.returnedAt! < wr.invokedAt) choices.push({ read, value: wr.value! });
      if (kind === 'stale' && done(wr)) {
        const between = same.some(
          (w2) => done(w2) && wr.returnedAt < w2.invokedAt && w2.returnedAt < read.invokedAt,
        );
        if (between) choices.push({ read, value: reverseKeys(wr.value!) });
      }
    }
  }
  const chosen = choices[pick % Math.max(1, choices.length)];
  if (chosen) {
    chosen.read.value = chosen.value;
    return { ops, target: chosen.read };
  }
  const read = reads[pick % Math.max(1, reads.length)];
  if (read) {
    read.value = NEVER_WRITTEN;
    return { ops, target: read };
  }
  const end = Math.max(T0, ...ops.map((o) => o.returnedAt ?? o.invokedAt));
  const added: Operation = {
    client: 'mutant',
    key: ops[0]?.key ?? 'key-0',
    kind: 'read',
    value: NEVER_WRITTEN,
    invokedAt: end + 1,
    returnedAt: end + 2,
  };
  ops.push(added);
  return { ops, target: added };
}

// ---------------------------------------------------------------------------------------------

describe('checkLinearizable: linearizable histories pass', () => {
  it('a sequential history of writes, reads and deletes; not found as null or no value', () => {
    assertOk([
      r('c', null, -4, -3),
      w('a', 1, 0, 1),
      r('b', 1, 2, 3),
      w('b', 'two', 4, 5),
      r('a', 'two', 6, 7),
      del('a', 8, 9),
      r('b', null, 10, 11),
      r('c', undefined, 12, 13),
      w('c', [1, { x: null }], 14, 15),
      r('a', [1, { x: null }], 16, 17),
    ]);
    assertOk([]);
  });

  it('starts from the initial value; the array order does not matter', () => {
    const ops = [r('a', { v: 0 }, 0, 1), w('b', { v: 1 }, 2, 3), r('a', { v: 1 }, 4, 5)];
    assertOk(ops, { initial: { v: 0 } });
    assertOk([...ops].reverse(), { initial: { v: 0 } });
  });

  it('values compare as canonical JSON, whatever the key order', () => {
    assert.equal(canonicalJson({ b: [{ d: 3, c: 2 }], a: 1 }), '{"a":1,"b":[{"c":2,"d":3}]}');
    assert.equal(canonicalJson(undefined), 'null');
    assertOk([w('a', { a: 1, b: [{ c: 2, d: 3 }] }, 0, 1), r('b', { b: [{ d: 3, c: 2 }], a: 1 }, 2, 3)]);
  });

  it('concurrent overlapping writes: reads after both may see either, reads during them both', () => {
    const writes = [w('a', 1, 0, 10), w('b', 2, 0, 10)];
    assertOk([...writes, r('c', 1, 11, 12), r('d', 1, 13, 14)]);
    assertOk([...writes, r('c', 2, 11, 12), r('d', 2, 13, 14)]);
    // During the writes: 1 took effect, then 2 did.
    assertOk([...writes, r('c', 1, 1, 2), r('d', 2, 3, 4), r('e', 2, 11, 12)]);
    // Two concurrent reads may even disagree while the writes are in flight.
    assertOk([...writes, r('c', 2, 3, 6), r('d', 1, 4, 5), r('e', 2, 11, 12)]);
  });

  it('a read overlapping a write returns the old or the new value', () => {
    const base = [w('a', 1, 0, 1), w('a', 2, 2, 10)];
    assertOk([...base, r('b', 1, 3, 4)]);
    assertOk([...base, r('b', 2, 3, 4)]);
    assertOk([...base, r('b', 1, 3, 4), r('c', 2, 5, 6), r('b', 2, 7, 8), r('b', 2, 11, 12)]);
    // A read overlapping a delete likewise.
    assertOk([...base, del('c', 11, 20), r('b', 2, 12, 13), r('d', null, 14, 15)]);
  });

  it('equal timestamps count as concurrent', () => {
    assertOk([w('a', 1, 0, 5), r('b', null, 5, 6)]);
    assertOk([w('a', 1, 0, 5), r('b', 1, 0, 0)]);
  });

  it('pending writes may have taken effect, late, or never; pending reads are ignored', () => {
    const base = [w('a', 1, 0, 1), w('b', 2, 2, null)];
    assertOk([...base, r('c', 2, 100, 101), r('c', 2, 102, 103)]); // took effect
    assertOk([...base, r('c', 1, 100, 101), r('c', 1, 102, 103)]); // never did
    assertOk([...base, r('c', 1, 100, 101), r('c', 2, 102, 103)]); // took effect late
    assertOk([...base, r('c', 'garbage', 3, null)]);
    assertOk([w('a', 1, 0, 1), del('b', 2, null), r('c', null, 100, 101), w('a', 3, 102, 103)]);
    assertOk([r('c', 'garbage', 3, null)]);
  });
});

describe('checkLinearizable: non-linearizable histories fail with a witness', () => {
  it('a stale read after a write completed', () => {
    const w2 = w('a', 2, 2, 3);
    const read = r('b', 1, 4, 5);
    const res = assertViolation(
      checkLinearizable([w('a', 1, 0, 1), w2, read]),
      'k',
      [read, w2],
      /read by "b" \[\+4\.000, \+5\.000\] ms returned 1.*could only hold 2/,
    );
    assert.ok(res.witness.length <= 3);
  });

  it('a read of a deleted value after the delete completed', () => {
    const d = del('a', 2, 3);
    const read = r('b', 1, 4, 5);
    assertViolation(checkLinearizable([w('a', 1, 0, 1), d, read]), 'k', [d, read], /could only hold null/);
  });

  it('two clients see new then old, the second read starting after the first finished', () => {
    const first = r('b', 2, 3, 4);
    const second = r('c', 1, 5, 6);
    const w2 = w('a', 2, 2, 10);
    assertViolation(checkLinearizable([w('a', 1, 0, 1), w2, first, second]), 'k', [first, second, w2]);
  });

  it('two reads after concurrent writes completed disagree', () => {
    const second = r('d', 2, 13, 14);
    assertViolation(checkLinearizable([w('a', 1, 0, 10), w('b', 2, 0, 10), r('c', 1, 11, 12), second]), 'k', [
      second,
    ]);
  });

  it('a read of a value never written', () => {
    const read = r('b', 7, 2, 3);
    assertViolation(checkLinearizable([w('a', 1, 0, 1), read]), 'k', [read], /no write on "k" ever wrote/);
    // Not found although the key had an initial value and nothing deleted it.
    const missing = r('b', undefined, 0, 1);
    assertViolation(checkLinearizable([missing], { initial: 5 }), 'k', [missing], /initial value 5/);
  });

  it('a read seeing a write invoked after the read returned', () => {
    const read = r('b', 1, 0, 1);
    const late = w('a', 1, 2, 3);
    assertViolation(checkLinearizable([read, late]), 'k', [read, late]);
    // Even if that write never returned.
    const pending = w('a', 1, 2, null);
    assertViolation(checkLinearizable([read, pending]), 'k', [read, pending]);
  });

  it('partitioning: one bad key among many clean ones is found and named', () => {
    const clean = registerHistory(randomKeys(7, 50, 3, 10), null);
    const bad = [w('a', 1, 0, 1, 'bad'), w('a', 2, 2, 3, 'bad'), r('b', 1, 4, 5, 'bad')];
    assertOk(clean);
    const ops = [...clean.slice(0, 700), ...bad, ...clean.slice(700)];
    assertViolation(checkLinearizable(ops), 'bad', [bad[2]!]);
  });
});

describe('checkLinearizable: bounds and input checks', () => {
  // n concurrent writes of distinct values, then two reads that disagree: not linearizable, and the
  // search has to try every subset of the writes to find out (about n * 2^n states).
  function hard(n: number, key: string): Operation[] {
    const ops = Array.from({ length: n }, (_, i) => w(`c${i}`, i, 0, 100, key));
    return [...ops, r('x', 0, 101, 102, key), r('y', 1, 103, 104, key)];
  }

  it('an exponential search is cut off at timeoutMs with an unknown verdict', () => {
    assertViolation(checkLinearizable(hard(6, 'hard')), 'hard', []);
    const t = performance.now();
    assert.deepEqual(checkLinearizable(hard(24, 'hard'), { timeoutMs: 50 }), {
      ok: 'unknown',
      key: 'hard',
      reason: 'timeout',
    });
    assert.ok(performance.now() - t < 2000);
    // A definite violation on another key still wins.
    const bad = r('b', 'never', 0, 1, 'z');
    assertViolation(checkLinearizable([...hard(24, 'hard'), bad], { timeoutMs: 50 }), 'z', [bad]);
  });

  it('rejects malformed operations', () => {
    assert.throws(() => checkLinearizable([w('a', 1, 5, 4)]), /returnedAt must be null or a finite number/);
    assert.throws(() => checkLinearizable([r('a', 1, NaN, 4)]), /invokedAt is not a finite number/);
    const noValue: Operation = { client: 'a', key: 'k', kind: 'write', invokedAt: 0, returnedAt: 1 };
    assert.throws(() => checkLinearizable([noValue]), /a write needs its value/);
  });

  it('2,000 operations over 20 keys, 5 concurrent clients per key, check fast', () => {
    const ops = registerHistory(randomKeys(42, 20, 5, 20), INITIAL);
    assert.equal(ops.length, 2000);
    const t = performance.now();
    assertOk(ops, { initial: INITIAL });
    const ms = performance.now() - t;
    assert.ok(ms < 1000, `took ${ms.toFixed(0)} ms`);
  });

  it('2,000 operations on ONE key with 5 concurrent clients check fast too', () => {
    const ops = registerHistory(randomKeys(43, 1, 5, 400), INITIAL);
    const t = performance.now();
    assertOk(ops, { initial: INITIAL });
    const ms = performance.now() - t;
    assert.ok(ms < 2000, `took ${ms.toFixed(0)} ms`);
  });
});

describe('checkLinearizable: properties', () => {
  it('histories of a correct register with random timing always pass', () => {
    fc.assert(
      fc.property(keysArb, fc.boolean(), (keys, withInitial) => {
        const initial = withInitial ? INITIAL : null;
        const res = checkLinearizable(registerHistory(keys, initial), { initial });
        assert.deepEqual(res, { ok: true }, JSON.stringify(res));
      }),
      { numRuns: 400 },
    );
  });

  it('one read changed to a value it could not have seen is always caught, on its key', () => {
    fc.assert(
      fc.property(
        keysArb,
        fc.boolean(),
        fc.constantFrom<Mutation>('never', 'stale', 'future'),
        fc.nat(),
        (keys, withInitial, kind, pick) => {
          const initial = withInitial ? INITIAL : null;
          const { ops, target } = mutate(registerHistory(keys, initial), kind, pick);
          assertViolation(checkLinearizable(ops, { initial }), target.key, [target]);
        },
      ),
      { numRuns: 400 },
    );
  });
});
