// Deadlock detection in the lock table (SPEC 4.2, seed 002): the wait-for graph has an edge C -> D
// when C waits on a resource that D holds in a conflicting mode, or D is a conflicting waiter ahead
// of C in that queue. A cycle is broken when it forms by aborting its youngest waiter; chains,
// shared holders and compatible waiters never count as a deadlock.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LockTable } from '../../../src/lock/table.js';
import type { Aborted, Grant, LockMode, LockResult } from '../../../src/lock/types.js';

type AcquireOut = Extract<LockResult, { op: 'acquire' }>;

interface Opts {
  mode?: LockMode;
  ttl?: number;
  wait?: number;
  now?: number;
}

class Harness {
  readonly table = new LockTable();
  index = 0;
  now = 1000;

  acquire(resource: string, client_id: string, o: Opts = {}): AcquireOut {
    const r = this.table.apply(
      {
        op: 'acquire',
        resource,
        client_id,
        mode: o.mode ?? 'exclusive',
        ttl_ms: o.ttl ?? 10_000,
        wait_ms: o.wait ?? 10_000,
        now: o.now ?? this.now,
      },
      ++this.index,
      1,
    );
    assert.ok('op' in r && r.op === 'acquire', JSON.stringify(r));
    return r;
  }

  /** Holds at once (no waiting allowed): fails the test otherwise. */
  hold(resource: string, client_id: string, o: Opts = {}): void {
    assert.equal(this.acquire(resource, client_id, { ...o, wait: 0 }).result.status, 'granted');
  }

  /** Must queue, with no deadlock. */
  wait(resource: string, client_id: string, o: Opts = {}): void {
    const r = this.acquire(resource, client_id, o);
    assert.deepEqual(r.result, { status: 'queued' }, JSON.stringify(r));
    assert.deepEqual(r.aborted, []);
  }

  release(resource: string, client_id: string, now = this.now): Grant[] {
    const r = this.table.apply({ op: 'release', resource, client_id, now }, ++this.index, 1);
    assert.ok('op' in r && r.op === 'release' && r.released, JSON.stringify(r));
    return r.grants;
  }

  renew(resource: string, client_id: string, ttl_ms: number, now = this.now): void {
    const r = this.table.apply({ op: 'renew', resource, client_id, ttl_ms, now }, ++this.index, 1);
    assert.ok('op' in r && r.op === 'renew' && r.renewed, JSON.stringify(r));
  }

  waiters(resource: string): string[] {
    return (this.table.get(resource)?.waiters ?? []).map((w) => w.client_id);
  }

  holders(resource: string): string[] {
    return (this.table.get(resource)?.holders ?? []).map((h) => `${h.client_id}:${h.mode[0]}`);
  }
}

/** The acquire was the one aborted: its answer is `deadlock` with this cycle, also in `aborted`. */
function assertDeadlock(r: AcquireOut, resource: string, client: string, cycle: string[]): void {
  assert.deepEqual(r.result, { status: 'deadlock', cycle }, JSON.stringify(r));
  assert.deepEqual(r.aborted, [{ resource, client_id: client, cycle }]);
}

const who = (gs: Grant[]) => gs.map((g) => `${g.client_id}@${g.resource}`);

describe('deadlock: cycles', () => {
  it('2-cycle: the acquire that closes it is aborted; the survivor is granted later', () => {
    const h = new Harness();
    h.hold('r1', 'A');
    h.hold('r2', 'B');
    h.wait('r2', 'A'); // A -> B
    const r = h.acquire('r1', 'B'); // B -> A closes the cycle
    assertDeadlock(r, 'r1', 'B', ['B', 'A']);
    assert.deepEqual(r.grants, []);
    assert.deepEqual(h.waiters('r1'), []);
    assert.deepEqual(h.waiters('r2'), ['A']);
    assert.deepEqual(h.holders('r2'), ['B:e']); // B keeps what it holds
    assert.deepEqual(who(h.release('r2', 'B')), ['A@r2']);
  });

  it('3-cycle, reported in wait-for order starting at the aborted client', () => {
    const h = new Harness();
    h.hold('r1', 'A');
    h.hold('r2', 'B');
    h.hold('r3', 'C');
    h.wait('r2', 'A');
    h.wait('r3', 'B');
    assertDeadlock(h.acquire('r1', 'C'), 'r1', 'C', ['C', 'A', 'B']);
    // The rest goes on: B's release lets A in; A's release frees r1 for nobody (C gave up).
    assert.deepEqual(who(h.release('r3', 'C')), ['B@r3']);
    assert.deepEqual(who(h.release('r2', 'B')), ['A@r2']);
  });

  it('a long cycle is found and reported whole', () => {
    const h = new Harness();
    const n = 300;
    for (let i = 0; i < n; i++) h.hold(`r${i}`, `c${i}`);
    for (let i = 0; i < n - 1; i++) h.wait(`r${i + 1}`, `c${i}`); // c_i -> c_{i+1}
    const r = h.acquire('r0', `c${n - 1}`);
    assert.equal(r.result.status, 'deadlock');
    assert.deepEqual((r.result as { cycle: string[] }).cycle, [
      `c${n - 1}`,
      ...Array.from({ length: n - 1 }, (_, i) => `c${i}`),
    ]);
  });

  it('the same client waiting on two resources: both edges count', () => {
    const h = new Harness();
    h.hold('r1', 'A');
    h.hold('r2', 'B');
    h.hold('r3', 'C');
    h.wait('r1', 'C'); // C -> A
    h.wait('r2', 'C'); // C -> B
    assertDeadlock(h.acquire('r3', 'B'), 'r3', 'B', ['B', 'C']);
    assertDeadlock(h.acquire('r3', 'A'), 'r3', 'A', ['A', 'C']);
    assert.deepEqual(h.waiters('r1'), ['C']);
    assert.deepEqual(h.waiters('r2'), ['C']);
  });
});

describe('deadlock: no false positives', () => {
  it('a chain of waits is not a deadlock, however long', () => {
    const h = new Harness();
    for (let i = 0; i < 200; i++) h.hold(`r${i}`, `c${i}`);
    for (let i = 0; i < 199; i++) h.wait(`r${i + 1}`, `c${i}`);
    // The head of the chain waits on something else entirely.
    h.hold('other', 'x');
    h.wait('other', 'c199');
    assert.equal(h.table.waiterCount(), 200);
  });

  it('shared holders do not wait for each other', () => {
    const h = new Harness();
    h.hold('r1', 'A', { mode: 'shared' });
    h.hold('r2', 'B', { mode: 'shared' });
    assert.equal(h.acquire('r2', 'A', { mode: 'shared' }).result.status, 'granted');
    assert.equal(h.acquire('r1', 'B', { mode: 'shared' }).result.status, 'granted');
  });

  it('compatible waiters in one queue do not wait for each other', () => {
    const h = new Harness();
    h.hold('r', 'X');
    h.wait('r', 'S1', { mode: 'shared' });
    h.wait('r', 'S2', { mode: 'shared' }); // S2 waits for X, not for S1
    h.hold('r2', 'S2');
    h.wait('r2', 'S1'); // S1 -> S2; S2 -> S1 would be needed for a cycle
    assert.deepEqual(who(h.release('r', 'X')), ['S1@r', 'S2@r']);
  });

  it('a reentrant acquire never waits for itself', () => {
    const h = new Harness();
    h.hold('r', 'A');
    h.wait('r', 'B');
    assert.equal(h.acquire('r', 'A').result.status, 'granted');
    assert.equal(h.acquire('r', 'A', { mode: 'shared' }).result.status, 'granted');
    assert.deepEqual(h.acquire('r', 'B').aborted, []);
  });

  it('an expired hold is gone: a cycle through it is not a deadlock', () => {
    const h = new Harness();
    h.hold('r1', 'A', { ttl: 100 }); // until 1100
    h.hold('r2', 'B');
    h.wait('r1', 'B'); // B -> A while A's hold lives
    h.wait('r2', 'A', { now: 1150 }); // A -> B; A's hold has expired, so B waits for no one
    // The monitor's expire lets B in; A keeps waiting for B: a chain.
    const r = h.table.apply({ op: 'expire', resource: 'r1', client_ids: ['A'], now: 1150 }, ++h.index, 1);
    assert.ok('op' in r && r.op === 'expire');
    assert.deepEqual(who(r.grants), ['B@r1']);
    assert.deepEqual(h.waiters('r2'), ['A']);
  });
});

describe('deadlock: shared and exclusive mixes', () => {
  it('two shared holders each waiting exclusive on the other resource', () => {
    const h = new Harness();
    h.hold('r1', 'A', { mode: 'shared' });
    h.hold('r2', 'B', { mode: 'shared' });
    h.wait('r2', 'A'); // exclusive: waits for B's shared hold
    assertDeadlock(h.acquire('r1', 'B'), 'r1', 'B', ['B', 'A']);
  });

  it('two clients sharing two resources, each upgrading a different one', () => {
    const h = new Harness();
    for (const r of ['r1', 'r2']) {
      h.hold(r, 'A', { mode: 'shared' });
      h.hold(r, 'B', { mode: 'shared' });
    }
    h.wait('r1', 'A'); // upgrade: waits for B
    assertDeadlock(h.acquire('r2', 'B'), 'r2', 'B', ['B', 'A']);
    assert.deepEqual(h.holders('r2'), ['A:s', 'B:s']);
    // B gives up its share of r1: A's upgrade goes through.
    const g = h.release('r1', 'B');
    assert.deepEqual(
      g.map((x) => [x.client_id, x.mode]),
      [['A', 'exclusive']],
    );
  });

  it('an exclusive waiter behind shared holders waits for each of them', () => {
    const h = new Harness();
    h.hold('r', 'A', { mode: 'shared' });
    h.hold('r', 'B', { mode: 'shared' });
    h.hold('r2', 'C');
    h.wait('r', 'C'); // C -> A, C -> B
    assertDeadlock(h.acquire('r2', 'B', { mode: 'shared' }), 'r2', 'B', ['B', 'C']);
    assertDeadlock(h.acquire('r2', 'A'), 'r2', 'A', ['A', 'C']);
    assert.deepEqual(h.waiters('r'), ['C']);
  });

  it('a shared request behind a queued exclusive waiter waits for it (FIFO)', () => {
    const h = new Harness();
    h.hold('r', 'A', { mode: 'shared' });
    h.hold('r3', 'D');
    h.wait('r', 'C'); // exclusive: C -> A
    h.wait('r3', 'C'); // C -> D
    // D's shared request is compatible with A but must queue behind C: D -> C -> D.
    assertDeadlock(h.acquire('r', 'D', { mode: 'shared' }), 'r', 'D', ['D', 'C']);
  });
});

describe('deadlock: how cycles close', () => {
  it('through a waiter ahead: detected when the wait forms, before any grant makes it explicit', () => {
    // A holds r1; B and then C wait for it; C holds r2. When B asks for r2 the cycle B -> C -> B
    // exists already (C must let B go first), so it is broken now rather than when A releases.
    const h = new Harness();
    h.hold('r1', 'A');
    h.hold('r2', 'C');
    h.wait('r1', 'B');
    h.wait('r1', 'C'); // C -> A, C -> B
    assertDeadlock(h.acquire('r2', 'B'), 'r2', 'B', ['B', 'C']);
    // The grant that follows adds no edge and reports no deadlock.
    assert.deepEqual(who(h.release('r1', 'A')), ['B@r1']);
    assert.deepEqual(h.waiters('r1'), ['C']);
  });

  it('the same, closed from the other side: the waiter that queues behind is the one aborted', () => {
    const h = new Harness();
    h.hold('r1', 'A');
    h.hold('r2', 'C');
    h.wait('r1', 'B');
    h.wait('r2', 'B'); // B -> C
    assertDeadlock(h.acquire('r1', 'C'), 'r1', 'C', ['C', 'B']);
    assert.deepEqual(h.waiters('r1'), ['B']);
  });

  it('closed by an upgrade: the second upgrader is aborted and keeps its shared hold', () => {
    const h = new Harness();
    h.hold('r', 'A', { mode: 'shared' });
    h.hold('r', 'B', { mode: 'shared' });
    h.wait('r', 'A'); // A -> B
    assertDeadlock(h.acquire('r', 'B'), 'r', 'B', ['B', 'A']);
    assert.deepEqual(h.holders('r'), ['A:s', 'B:s']);
    const g = h.release('r', 'B');
    assert.deepEqual(
      g.map((x) => [x.client_id, x.mode, x.fencing_token]),
      [['A', 'exclusive', h.index]],
    );
  });

  it('closed by an upgrade across resources', () => {
    const h = new Harness();
    h.hold('r', 'A', { mode: 'shared' });
    h.hold('r', 'B', { mode: 'shared' });
    h.hold('r2', 'A');
    h.wait('r2', 'B'); // B -> A
    assertDeadlock(h.acquire('r', 'A'), 'r', 'A', ['A', 'B']);
    assert.deepEqual(h.holders('r'), ['A:s', 'B:s']);
  });

  it('a renewed hold keeps its edge: the cycle it is part of is detected', () => {
    const h = new Harness();
    h.hold('r1', 'A', { ttl: 100 }); // until 1100
    h.hold('r2', 'B');
    h.wait('r1', 'B'); // B -> A
    h.renew('r1', 'A', 100, 1090); // until 1190
    assertDeadlock(h.acquire('r2', 'A', { now: 1150 }), 'r2', 'A', ['A', 'B']);
  });

  it('a reentrant acquire that revives a hold (a leader with a slower clock) breaks the cycle it closes', () => {
    const h = new Harness();
    h.hold('r2', 'B');
    h.hold('r1', 'A', { ttl: 100 }); // until 1100
    h.wait('r1', 'B', { now: 1010 }); // B -> A (since 3)
    h.wait('r2', 'A', { now: 1150 }); // A -> B (since 4); at 1150 A's hold is gone: no cycle
    // A new leader whose clock reads 1095: A's hold is live again and A re-acquires it.
    const r = h.acquire('r1', 'A', { now: 1095 });
    assert.equal(r.result.status, 'granted'); // this request is answered: reentrant
    assert.deepEqual(r.aborted, [{ resource: 'r2', client_id: 'A', cycle: ['A', 'B'] }]); // youngest
    assert.deepEqual(h.waiters('r2'), []);
    assert.deepEqual(h.waiters('r1'), ['B']);
  });
});

describe('deadlock: the youngest waiter is aborted, the others continue', () => {
  it('aborts another client than the acquirer when its waiter is younger, and grants behind it', () => {
    const h = new Harness();
    h.hold('r2', 'B', { mode: 'shared' }); // 1
    h.hold('r1', 'A', { ttl: 100 }); // 2: until 1100
    h.wait('r1', 'B', { now: 1010 }); // 3: B -> A
    h.wait('r2', 'A', { now: 1150 }); // 4: A -> B (A's hold expired at 1150: no cycle)
    h.wait('r2', 'S', { now: 1150, mode: 'shared' }); // 5: S -> A (A is ahead), compatible with B
    // B repeats its acquire under a leader whose clock reads 1095: A's hold lives, A <-> B.
    const r = h.acquire('r1', 'B', { now: 1095 });
    assert.deepEqual(r.result, { status: 'queued' }); // B's waiter (since 3) is older than A's (since 4)
    assert.deepEqual(r.aborted, [{ resource: 'r2', client_id: 'A', cycle: ['A', 'B'] }]);
    // With A gone from r2's queue, S joins B's shared hold at once.
    assert.deepEqual(r.grants, [
      { resource: 'r2', client_id: 'S', mode: 'shared', fencing_token: 6, expires_at: 1095 + 10_000 },
    ]);
    assert.deepEqual(h.holders('r2'), ['B:s', 'S:s']);
    assert.deepEqual(who(h.release('r1', 'A', 1096)), ['B@r1']);
  });

  it('repeats until no cycle remains, youngest first', () => {
    const h = new Harness();
    h.hold('r2', 'B');
    h.hold('r4', 'B');
    h.hold('r1', 'A', { ttl: 100 });
    h.hold('r3', 'D', { ttl: 100 });
    h.wait('r1', 'B', { now: 1010 }); // B -> A
    h.wait('r3', 'B', { now: 1010 }); // B -> D
    h.wait('r2', 'A', { now: 1150 }); // A -> B, not a cycle at 1150
    h.wait('r4', 'D', { now: 1150 }); // D -> B, the youngest
    const r = h.acquire('r1', 'B', { now: 1095 });
    assert.deepEqual(r.result, { status: 'queued' });
    assert.deepEqual(r.aborted, [
      { resource: 'r4', client_id: 'D', cycle: ['D', 'B'] },
      { resource: 'r2', client_id: 'A', cycle: ['A', 'B'] },
    ] satisfies Aborted[]);
    assert.deepEqual(h.waiters('r1'), ['B']);
    assert.deepEqual(h.waiters('r3'), ['B']);
  });

  it('the acquirer whose request closed the cycle is the youngest when clocks agree', () => {
    const h = new Harness();
    h.hold('r1', 'A');
    h.hold('r2', 'B');
    h.hold('r3', 'C');
    h.wait('r2', 'A');
    h.wait('r3', 'B');
    h.wait('r3', 'A'); // A waits on two resources
    const r = h.acquire('r1', 'C');
    assert.equal(r.result.status, 'deadlock');
    assert.equal(r.aborted.length, 1);
    assert.equal(r.aborted[0]?.client_id, 'C');
    assert.deepEqual(h.waiters('r3'), ['B', 'A']);
  });
});
