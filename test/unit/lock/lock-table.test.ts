// The lock table's rules one by one (SPEC 4.2 and the header of src/lock/table.ts): grants and
// conflicts, reentrancy, upgrades, FIFO without starvation, expiry, renew/release by non-holders,
// extend_all, wait timeouts and their races, fencing tokens, lookups, snapshot/restore, and scale.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LockTable } from '../../../src/lock/table.js';
import type { Grant, LockCommand, LockMode, LockResult } from '../../../src/lock/types.js';
import type { Json } from '../../../src/raft/types.js';

type Of<Op extends LockResult['op']> = Extract<LockResult, { op: Op }>;

interface AcquireOpts {
  mode?: LockMode;
  ttl?: number;
  wait?: number;
  now?: number;
}

/** A lock table fed with consecutive log indexes; `now` is the leader clock, moved by the test. */
class Harness {
  readonly table = new LockTable();
  index = 0;
  now = 1000;

  apply(cmd: LockCommand | Json): LockResult {
    const r = this.table.apply(cmd, ++this.index, 1);
    assert.ok('op' in r, `unexpected error result ${JSON.stringify(r)}`);
    return r;
  }

  acquire(resource: string, client_id: string, o: AcquireOpts = {}): Of<'acquire'> {
    return this.apply({
      op: 'acquire',
      resource,
      client_id,
      mode: o.mode ?? 'exclusive',
      ttl_ms: o.ttl ?? 100,
      wait_ms: o.wait ?? 0,
      now: o.now ?? this.now,
    }) as Of<'acquire'>;
  }

  release(resource: string, client_id: string, now = this.now): Of<'release'> {
    return this.apply({ op: 'release', resource, client_id, now }) as Of<'release'>;
  }

  renew(resource: string, client_id: string, ttl_ms = 100, now = this.now): Of<'renew'> {
    return this.apply({ op: 'renew', resource, client_id, ttl_ms, now }) as Of<'renew'>;
  }

  expire(resource: string, client_ids: string[], now = this.now): Of<'expire'> {
    return this.apply({ op: 'expire', resource, client_ids, now }) as Of<'expire'>;
  }

  waitTimeout(resource: string, client_id: string, now = this.now): Of<'wait_timeout'> {
    return this.apply({ op: 'wait_timeout', resource, client_id, now }) as Of<'wait_timeout'>;
  }

  extendAll(extend_ms: number, now = this.now): Of<'extend_all'> {
    return this.apply({ op: 'extend_all', extend_ms, now }) as Of<'extend_all'>;
  }

  /** `client:mode` of the holders of a resource, in order. */
  holders(resource: string): string[] {
    return (this.table.get(resource)?.holders ?? []).map((h) => `${h.client_id}:${h.mode[0]}`);
  }

  waiters(resource: string): string[] {
    return (this.table.get(resource)?.waiters ?? []).map((w) => `${w.client_id}:${w.mode[0]}`);
  }
}

const granted = (r: Of<'acquire'>) => {
  assert.ok(r.result.status === 'granted', JSON.stringify(r));
  return r.result.hold;
};
const who = (gs: Grant[]) => gs.map((g) => `${g.client_id}:${g.mode[0]}`);

describe('LockTable: malformed commands', () => {
  const bad: Json[] = [
    null,
    42,
    'acquire',
    [],
    {},
    { op: 'frobnicate', now: 1 },
    { op: 'acquire', resource: 'r', client_id: 'a', mode: 'exclusive', ttl_ms: 10, wait_ms: 0 },
    { op: 'acquire', resource: 'r', client_id: 'a', mode: 'exclusive', ttl_ms: 10, wait_ms: 0, now: -1 },
    { op: 'acquire', resource: 'r', client_id: 'a', mode: 'exclusive', ttl_ms: 10, wait_ms: 0, now: 1.5 },
    { op: 'acquire', resource: '', client_id: 'a', mode: 'exclusive', ttl_ms: 10, wait_ms: 0, now: 1 },
    { op: 'acquire', resource: 7, client_id: 'a', mode: 'exclusive', ttl_ms: 10, wait_ms: 0, now: 1 },
    { op: 'acquire', resource: 'r', client_id: null, mode: 'exclusive', ttl_ms: 10, wait_ms: 0, now: 1 },
    { op: 'acquire', resource: 'r', client_id: 'a', mode: 'EXCLUSIVE', ttl_ms: 10, wait_ms: 0, now: 1 },
    { op: 'acquire', resource: 'r', client_id: 'a', mode: 'shared', ttl_ms: 0, wait_ms: 0, now: 1 },
    { op: 'acquire', resource: 'r', client_id: 'a', mode: 'shared', ttl_ms: '10', wait_ms: 0, now: 1 },
    { op: 'acquire', resource: 'r', client_id: 'a', mode: 'shared', ttl_ms: 10, wait_ms: -1, now: 1 },
    { op: 'acquire', resource: 'r', client_id: 'a', mode: 'shared', ttl_ms: 10, now: 1 },
    { op: 'acquire', resource: 'r', client_id: 'a', mode: 'shared', ttl_ms: 2 ** 53, wait_ms: 0, now: 1 },
    { op: 'release', resource: 'r', now: 1 },
    { op: 'renew', resource: 'r', client_id: 'a', now: 1 },
    { op: 'expire', resource: 'r', client_ids: 'a', now: 1 },
    { op: 'expire', resource: 'r', client_ids: ['a', 3], now: 1 },
    { op: 'wait_timeout', resource: 'r', now: 1 },
    { op: 'extend_all', extend_ms: -5, now: 1 },
    { op: 'extend_all', now: 1 },
  ];

  it('answers {error} without throwing and changes nothing', () => {
    const h = new Harness();
    h.acquire('r', 'holder');
    h.acquire('r', 'waiter', { wait: 50 });
    const before = h.table.snapshot();
    for (const cmd of bad) {
      const r = h.table.apply(cmd, ++h.index, 1);
      assert.ok('error' in r && typeof r.error === 'string' && r.error.length > 0, JSON.stringify(cmd));
      assert.ok(!('op' in r));
    }
    assert.deepEqual(h.table.snapshot(), before);
  });

  it('ignores unknown fields', () => {
    const h = new Harness();
    const r = h.apply({
      op: 'acquire',
      resource: 'r',
      client_id: 'a',
      mode: 'shared',
      ttl_ms: 10,
      wait_ms: 0,
      now: 5,
      extra: { x: 1 },
    });
    assert.equal((r as Of<'acquire'>).result.status, 'granted');
  });
});

describe('LockTable: grants and conflicts', () => {
  it('grants a free resource with fencing token = log index and expires_at = now + ttl', () => {
    const h = new Harness();
    h.index = 41;
    const r = h.acquire('r', 'a', { ttl: 250 });
    assert.deepEqual(r, {
      op: 'acquire',
      result: {
        status: 'granted',
        hold: { client_id: 'a', mode: 'exclusive', fencing_token: 42, expires_at: 1250 },
      },
      grants: [],
      aborted: [],
    });
  });

  it('an exclusive hold excludes everyone: conflict with the current holders', () => {
    const h = new Harness();
    const hold = granted(h.acquire('r', 'a'));
    for (const mode of ['exclusive', 'shared'] as const) {
      const r = h.acquire('r', 'b', { mode });
      assert.deepEqual(r.result, { status: 'conflict', holders: [hold] });
    }
    assert.deepEqual(h.holders('r'), ['a:e']);
    assert.deepEqual(h.waiters('r'), []);
  });

  it('shared holds coexist; an exclusive request conflicts with all of them', () => {
    const h = new Harness();
    granted(h.acquire('r', 'a', { mode: 'shared' }));
    granted(h.acquire('r', 'b', { mode: 'shared' }));
    granted(h.acquire('r', 'c', { mode: 'shared' }));
    const r = h.acquire('r', 'd');
    assert.equal(r.result.status, 'conflict');
    assert.deepEqual(
      (r.result as { holders: { client_id: string }[] }).holders.map((x) => x.client_id),
      ['a', 'b', 'c'],
    );
  });

  it('wait_ms > 0 queues instead of conflicting', () => {
    const h = new Harness();
    h.acquire('r', 'a');
    const r = h.acquire('r', 'b', { wait: 500, ttl: 70 });
    assert.deepEqual(r.result, { status: 'queued' });
    assert.deepEqual(h.table.get('r')?.waiters, [
      { client_id: 'b', mode: 'exclusive', ttl_ms: 70, since: 2, wait_until: 1500 },
    ]);
  });

  it('a grant from the queue carries the granting index and now + the waiter ttl', () => {
    const h = new Harness();
    h.acquire('r', 'a');
    h.acquire('r', 'b', { wait: 500, ttl: 70 });
    h.now = 1040;
    const rel = h.release('r', 'a');
    assert.deepEqual(rel, {
      op: 'release',
      released: true,
      grants: [{ resource: 'r', client_id: 'b', mode: 'exclusive', fencing_token: 3, expires_at: 1110 }],
    });
    assert.deepEqual(h.table.get('r')?.holders, [
      { client_id: 'b', mode: 'exclusive', fencing_token: 3, expires_at: 1110 },
    ]);
  });
});

describe('LockTable: reentrancy', () => {
  it('the same mode again: same fencing token, TTL renewed to now + ttl', () => {
    const h = new Harness();
    const first = granted(h.acquire('r', 'a', { ttl: 100 }));
    h.now = 1050;
    const again = granted(h.acquire('r', 'a', { ttl: 30 }));
    assert.equal(again.fencing_token, first.fencing_token);
    assert.equal(again.expires_at, 1080);
    assert.equal(h.table.get('r')?.holders[0]?.expires_at, 1080);
  });

  it('shared again: same token; the other shared holders are untouched', () => {
    const h = new Harness();
    const a = granted(h.acquire('r', 'a', { mode: 'shared' }));
    granted(h.acquire('r', 'b', { mode: 'shared' }));
    const again = granted(h.acquire('r', 'a', { mode: 'shared', ttl: 500 }));
    assert.equal(again.fencing_token, a.fencing_token);
    assert.deepEqual(h.holders('r'), ['a:s', 'b:s']);
  });

  it('an exclusive holder asking shared keeps its exclusive hold (same token, TTL renewed)', () => {
    const h = new Harness();
    const x = granted(h.acquire('r', 'a'));
    const again = granted(h.acquire('r', 'a', { mode: 'shared', ttl: 300 }));
    assert.deepEqual(again, { ...x, expires_at: 1300 });
    assert.deepEqual(h.holders('r'), ['a:e']);
  });

  it('reentrancy ignores waiters: a holder is answered at once even with a queue', () => {
    const h = new Harness();
    const x = granted(h.acquire('r', 'a'));
    h.acquire('r', 'b', { wait: 100 });
    assert.equal(granted(h.acquire('r', 'a')).fencing_token, x.fencing_token);
    assert.deepEqual(h.waiters('r'), ['b:e']);
  });

  it('an expired hold is not reentrant: a new grant with a new token', () => {
    const h = new Harness();
    const x = granted(h.acquire('r', 'a', { ttl: 100 }));
    h.now = 1100; // expires_at <= now: gone
    const again = granted(h.acquire('r', 'a', { ttl: 100 }));
    assert.ok(again.fencing_token > x.fencing_token);
    assert.equal(again.expires_at, 1200);
  });

  it('an expired holder re-acquiring is queued behind the waiter its expiry lets in', () => {
    const h = new Harness();
    h.acquire('r', 'a', { ttl: 100 });
    h.acquire('r', 'b', { wait: 1000 });
    h.now = 1100;
    const r = h.acquire('r', 'a', { wait: 1000 });
    assert.deepEqual(who(r.grants), ['b:e']);
    assert.deepEqual(r.result, { status: 'queued' });
    assert.deepEqual(h.holders('r'), ['b:e']);
    assert.deepEqual(h.waiters('r'), ['a:e']);
  });
});

describe('LockTable: upgrades', () => {
  it('a sole shared holder is upgraded at once, with a new fencing token', () => {
    const h = new Harness();
    const s = granted(h.acquire('r', 'a', { mode: 'shared' }));
    const x = granted(h.acquire('r', 'a', { mode: 'exclusive', ttl: 40 }));
    assert.equal(x.mode, 'exclusive');
    assert.ok(x.fencing_token > s.fencing_token);
    assert.equal(x.fencing_token, h.index);
    assert.equal(x.expires_at, 1040);
    assert.deepEqual(h.holders('r'), ['a:e']);
  });

  it('a sole shared holder is upgraded even with exclusive waiters queued behind it', () => {
    const h = new Harness();
    h.acquire('r', 'a', { mode: 'shared' });
    h.acquire('r', 'b', { wait: 100 });
    granted(h.acquire('r', 'a'));
    assert.deepEqual(h.holders('r'), ['a:e']);
    assert.deepEqual(h.waiters('r'), ['b:e']);
  });

  it('with other shared holders: conflict when wait_ms = 0, nothing changes', () => {
    const h = new Harness();
    h.acquire('r', 'a', { mode: 'shared' });
    h.acquire('r', 'b', { mode: 'shared' });
    const before = h.table.snapshot();
    const r = h.acquire('r', 'a');
    assert.equal(r.result.status, 'conflict');
    assert.deepEqual(h.table.snapshot(), before);
  });

  it('with other shared holders it waits, ahead of non-holding waiters, and is granted when they leave', () => {
    const h = new Harness();
    h.acquire('r', 'a', { mode: 'shared' });
    h.acquire('r', 'b', { mode: 'shared' });
    h.acquire('r', 'c', { wait: 1000 }); // exclusive, waits for a and b
    h.acquire('r', 'd', { mode: 'shared', wait: 1000 }); // behind c: no overtaking
    assert.deepEqual(h.acquire('r', 'a', { wait: 1000, ttl: 60 }).result, { status: 'queued' });
    assert.deepEqual(h.waiters('r'), ['a:e', 'c:e', 'd:s']);
    assert.deepEqual(h.holders('r'), ['a:s', 'b:s']);
    const rel = h.release('r', 'b');
    assert.deepEqual(rel.grants, [
      { resource: 'r', client_id: 'a', mode: 'exclusive', fencing_token: h.index, expires_at: 1060 },
    ]);
    assert.deepEqual(h.holders('r'), ['a:e']);
    assert.deepEqual(h.waiters('r'), ['c:e', 'd:s']);
  });

  it('a second upgrade queues behind the first (and deadlocks with it: both wait for the other)', () => {
    const h = new Harness();
    h.acquire('r', 'a', { mode: 'shared' });
    h.acquire('r', 'b', { mode: 'shared' });
    h.acquire('r', 'c', { mode: 'shared' });
    h.acquire('r', 'x', { wait: 1000 });
    h.acquire('r', 'a', { wait: 1000 });
    assert.deepEqual(h.waiters('r'), ['a:e', 'x:e']);
    const r = h.acquire('r', 'b', { wait: 1000 });
    assert.equal(r.result.status, 'deadlock');
    assert.deepEqual(h.waiters('r'), ['a:e', 'x:e']);
    assert.deepEqual(h.holders('r'), ['a:s', 'b:s', 'c:s']);
  });
});

describe('LockTable: FIFO without starvation', () => {
  it('grants the head, then a run of shared waiters together, and never overtakes', () => {
    const h = new Harness();
    h.acquire('r', 'x');
    h.acquire('r', 'e1', { wait: 1000 });
    h.acquire('r', 's2', { mode: 'shared', wait: 1000 });
    h.acquire('r', 's3', { mode: 'shared', wait: 1000 });
    h.acquire('r', 'e4', { wait: 1000 });
    h.acquire('r', 's5', { mode: 'shared', wait: 1000 });
    assert.deepEqual(who(h.release('r', 'x').grants), ['e1:e']);
    assert.deepEqual(who(h.release('r', 'e1').grants), ['s2:s', 's3:s']);
    assert.deepEqual(h.waiters('r'), ['e4:e', 's5:s']);
    assert.deepEqual(who(h.release('r', 's2').grants), []);
    assert.deepEqual(who(h.release('r', 's3').grants), ['e4:e']);
    assert.deepEqual(who(h.release('r', 'e4').grants), ['s5:s']);
    assert.equal(h.table.get('r')?.waiters.length, 0);
  });

  it('a new shared request does not jump a queued exclusive waiter (shared behind exclusive)', () => {
    const h = new Harness();
    h.acquire('r', 's1', { mode: 'shared' });
    h.acquire('r', 'e', { wait: 1000 });
    assert.equal(h.acquire('r', 's2', { mode: 'shared' }).result.status, 'conflict');
    assert.deepEqual(h.acquire('r', 's2', { mode: 'shared', wait: 1000 }).result, { status: 'queued' });
    // A stream of readers cannot starve the writer.
    for (let i = 0; i < 5; i++) h.acquire('r', `s-${i}`, { mode: 'shared', wait: 1000 });
    assert.deepEqual(who(h.release('r', 's1').grants), ['e:e']);
    assert.equal(who(h.release('r', 'e').grants).length, 6);
  });

  it('repeating an acquire while waiting keeps the place and refreshes deadline and ttl', () => {
    const h = new Harness();
    h.acquire('r', 'x');
    h.acquire('r', 'a', { wait: 100, ttl: 10 });
    h.acquire('r', 'b', { wait: 100 });
    h.now = 1050;
    assert.deepEqual(h.acquire('r', 'a', { wait: 300, ttl: 20 }).result, { status: 'queued' });
    assert.deepEqual(h.table.get('r')?.waiters[0], {
      client_id: 'a',
      mode: 'exclusive',
      ttl_ms: 20,
      since: 2,
      wait_until: 1350,
    });
    assert.deepEqual(h.waiters('r'), ['a:e', 'b:e']);
    // wait_ms = 0 while waiting: conflict, and the waiter stays as it was.
    assert.equal(h.acquire('r', 'a', { mode: 'shared' }).result.status, 'conflict');
    assert.deepEqual(h.waiters('r'), ['a:e', 'b:e']);
    assert.equal(h.table.waiterCount(), 2);
  });

  it('asking exclusive while waiting shared makes the waiter exclusive in its place', () => {
    const h = new Harness();
    h.acquire('r', 'x');
    h.acquire('r', 'c', { mode: 'shared', wait: 1000 });
    h.acquire('r', 'd', { mode: 'shared', wait: 1000 });
    assert.deepEqual(h.acquire('r', 'c', { wait: 1000 }).result, { status: 'queued' });
    assert.deepEqual(h.waiters('r'), ['c:e', 'd:s']);
    // The release grants c alone, exclusive: d, shared, waits behind it.
    assert.deepEqual(who(h.release('r', 'x').grants), ['c:e']);
    assert.deepEqual(h.waiters('r'), ['d:s']);
    // Asking shared while waiting exclusive keeps the exclusive request (it covers shared).
    h.acquire('r', 'e', { wait: 1000 });
    h.acquire('r', 'e', { mode: 'shared', wait: 1000 });
    assert.deepEqual(h.waiters('r'), ['d:s', 'e:e']);
  });
});

describe('LockTable: expiry', () => {
  it('a hold with expires_at <= now never counts: the next acquire is granted', () => {
    const h = new Harness();
    h.acquire('r', 'a', { ttl: 100 });
    assert.equal(h.acquire('r', 'b', { now: 1099 }).result.status, 'conflict');
    const r = h.acquire('r', 'b', { now: 1100 });
    assert.equal(granted(r).client_id, 'b');
    assert.deepEqual(h.holders('r'), ['b:e']);
  });

  it('an acquire on a resource first drops its expired holds and grants the queue in order', () => {
    const h = new Harness();
    h.acquire('r', 'a', { ttl: 100 });
    h.acquire('r', 'w1', { wait: 10_000, mode: 'shared' });
    h.acquire('r', 'w2', { wait: 10_000, mode: 'shared' });
    h.now = 2000;
    const r = h.acquire('r', 'late', { mode: 'shared' });
    assert.deepEqual(who(r.grants), ['w1:s', 'w2:s']);
    assert.equal(granted(r).client_id, 'late');
    assert.deepEqual(h.holders('r'), ['w1:s', 'w2:s', 'late:s']);
  });

  it('conflict answers list only live holders', () => {
    const h = new Harness();
    h.acquire('r', 'a', { mode: 'shared', ttl: 50 });
    h.acquire('r', 'b', { mode: 'shared', ttl: 500 });
    const r = h.acquire('r', 'c', { now: 1200 });
    assert.equal(r.result.status, 'conflict');
    assert.deepEqual(
      (r.result as { holders: { client_id: string }[] }).holders.map((x) => x.client_id),
      ['b'],
    );
  });

  it('an expired sole shared holder is not "upgraded": it gets a fresh grant only if free', () => {
    const h = new Harness();
    h.acquire('r', 'a', { mode: 'shared', ttl: 50 });
    h.acquire('r', 'b', { mode: 'shared', ttl: 500 });
    // At 1100 a's hold is gone: a asking exclusive is a plain request that conflicts with b.
    assert.equal(h.acquire('r', 'a', { now: 1100 }).result.status, 'conflict');
    assert.deepEqual(h.holders('r'), ['b:s']);
  });

  it('expire drops holds still expired at its now; a renewal that raced keeps the hold', () => {
    const h = new Harness();
    h.acquire('r', 'a', { ttl: 100 });
    h.acquire('r', 'b', { wait: 10_000 });
    // The monitor saw a expire at 1100, but a renewal committed first.
    assert.equal(h.renew('r', 'a', 100, 1090).renewed, true);
    assert.deepEqual(h.expire('r', ['a'], 1100), { op: 'expire', expired: [], grants: [] });
    assert.deepEqual(h.holders('r'), ['a:e']);
    const r = h.expire('r', ['a'], 1190);
    assert.deepEqual(r.expired, ['a']);
    assert.deepEqual(who(r.grants), ['b:e']);
    assert.equal(r.grants[0]?.fencing_token, h.index);
  });

  it('expire of an unknown resource or client is a no-op', () => {
    const h = new Harness();
    assert.deepEqual(h.expire('nope', ['a']), { op: 'expire', expired: [], grants: [] });
    h.acquire('r', 'a');
    assert.deepEqual(h.expire('r', ['zzz']), { op: 'expire', expired: [], grants: [] });
    assert.deepEqual(h.holders('r'), ['a:e']);
  });
});

describe('LockTable: release and renew', () => {
  it('release by a non-holder: released false, nothing changes', () => {
    const h = new Harness();
    h.acquire('r', 'a');
    h.acquire('r', 'b', { wait: 100 });
    const before = h.table.snapshot();
    assert.deepEqual(h.release('r', 'b'), { op: 'release', released: false, grants: [] });
    assert.deepEqual(h.release('r', 'c'), { op: 'release', released: false, grants: [] });
    assert.deepEqual(h.release('other', 'a'), { op: 'release', released: false, grants: [] });
    assert.deepEqual(h.table.snapshot(), before);
  });

  it('release of an expired hold: released false (the lease is lost), and the queue moves on', () => {
    const h = new Harness();
    h.acquire('r', 'a', { ttl: 100 });
    h.acquire('r', 'b', { wait: 10_000 });
    const r = h.release('r', 'a', 1100);
    assert.equal(r.released, false);
    assert.deepEqual(who(r.grants), ['b:e']);
  });

  it('release deletes the resource when nothing is left', () => {
    const h = new Harness();
    h.acquire('r', 'a');
    assert.equal(h.release('r', 'a').released, true);
    assert.equal(h.table.get('r'), undefined);
    assert.deepEqual(h.table.all(), []);
    assert.equal(h.table.heldCount(), 0);
  });

  it('renew by the holder: expires_at = now + ttl, same token and mode', () => {
    const h = new Harness();
    const x = granted(h.acquire('r', 'a', { mode: 'shared', ttl: 100 }));
    assert.deepEqual(h.renew('r', 'a', 500, 1090), { op: 'renew', renewed: true, expires_at: 1590 });
    assert.deepEqual(h.table.get('r')?.holders, [{ ...x, expires_at: 1590 }]);
  });

  it('renew by a non-holder, a waiter, or after expiry: renewed false, nothing changes', () => {
    const h = new Harness();
    h.acquire('r', 'a', { ttl: 100 });
    h.acquire('r', 'b', { wait: 10_000 });
    const before = h.table.all();
    assert.deepEqual(h.renew('r', 'b'), { op: 'renew', renewed: false });
    assert.deepEqual(h.renew('r', 'zzz'), { op: 'renew', renewed: false });
    assert.deepEqual(h.renew('nope', 'a'), { op: 'renew', renewed: false });
    assert.deepEqual(h.renew('r', 'a', 100, 1100), { op: 'renew', renewed: false });
    assert.deepEqual(h.table.all(), before);
  });
});

describe('LockTable: fencing tokens', () => {
  it('shared holders let in together get distinct tokens, above every earlier one', () => {
    const h = new Harness();
    h.acquire('r', 'x'); // token 1
    h.acquire('r', 'a', { mode: 'shared', wait: 1000 });
    h.acquire('r', 'b', { mode: 'shared', wait: 1000 });
    h.acquire('r', 'c', { mode: 'shared', wait: 1000 });
    const r = h.release('r', 'x'); // entry 5 lets a, b and c in
    assert.deepEqual(
      r.grants.map((g) => [g.client_id, g.fencing_token]),
      [
        ['a', 5],
        ['b', 6],
        ['c', 7],
      ],
    );
    // The next entry's grant comes after them, not at its own index (6); so does the one after.
    assert.equal(granted(h.acquire('s', 'y')).fencing_token, 8);
    assert.equal(granted(h.acquire('t', 'z')).fencing_token, 9);
    // Entries that grant nothing let the log index catch up: then tokens are indexes again.
    h.release('nothing', 'held');
    h.release('nothing', 'held');
    assert.equal(granted(h.acquire('u', 'w')).fencing_token, 10);
    assert.equal(granted(h.acquire('u2', 'w')).fencing_token, 11);
    // A restored replica goes on from the same place.
    const copy = new LockTable();
    copy.restore(h.table.snapshot());
    const next = {
      op: 'acquire',
      resource: 'v',
      client_id: 'q',
      mode: 'exclusive',
      ttl_ms: 10,
      wait_ms: 0,
      now: h.now,
    };
    assert.deepEqual(copy.apply(next, 12, 1), h.table.apply(next, 12, 1));
  });
});

describe('LockTable: extend_all', () => {
  it('gives every hold extend_ms more, from now for one already run out here', () => {
    const h = new Harness();
    h.acquire('a', 'c1', { ttl: 100 }); // 1100
    h.acquire('b', 'c2', { ttl: 5000 }); // 6000: a long hold gets the extension too
    h.acquire('c', 'c3', { ttl: 10 }); // 1010: expired at this clock, maybe not at the old leader's
    h.acquire('d', 'c4', { ttl: 100, mode: 'shared' });
    h.acquire('d', 'c5', { ttl: 300, mode: 'shared' });
    const r = h.extendAll(1000, 1050);
    assert.deepEqual(r, { op: 'extend_all', extended: 5, grants: [], aborted: [] });
    const exp = (res: string) => h.table.get(res)?.holders.map((x) => x.expires_at);
    assert.deepEqual(exp('a'), [2100]);
    assert.deepEqual(exp('b'), [7000]);
    assert.deepEqual(exp('c'), [2050]);
    assert.deepEqual(exp('d'), [2100, 2300]);
    assert.deepEqual(h.table.holdsExpiringBy(2099), [{ resource: 'c', client_ids: ['c3'] }]);
  });

  it('a leader whose clock is ahead by less than extend_ms never ends a hold early', () => {
    // The old leader granted at its 1000 for 500 ms (its client was told 1500); the new leader's
    // clock reads 300 ms more than the old one's did at the same moment.
    const h = new Harness();
    h.acquire('r', 'a', { ttl: 500 });
    // At the old clock's 1400 the new leader's extend_all: its hold now ends at 1700 + 1000.
    h.extendAll(1000, 1400 + 300);
    // At the old clock's 1499 (new clock 1799) the hold is still there, and for 900 ms more.
    assert.equal(h.acquire('r', 'b', { now: 1799 }).result.status, 'conflict');
    assert.equal(h.acquire('r', 'b', { now: 2699 }).result.status, 'conflict');
    assert.equal(h.acquire('r', 'b', { now: 2700 }).result.status, 'granted');
  });

  it('breaks a deadlock closed by a hold it brings back', () => {
    const h = new Harness();
    h.acquire('r1', 'A', { ttl: 100 }); // until 1100
    h.acquire('r2', 'B', { ttl: 60_000 });
    h.acquire('r1', 'B', { wait: 600_000, now: 1050 }); // B waits for A
    // A's r1 hold counts as expired at 1150: A's wait for B closes no cycle.
    assert.equal(h.acquire('r2', 'A', { wait: 600_000, now: 1150 }).result.status, 'queued');
    // A new leader whose clock is 70 ms behind revives A's hold: A -> B -> A.
    const r = h.extendAll(5000, 1080);
    assert.equal(r.aborted.length, 1);
    assert.deepEqual(
      r.aborted.map((a) => [a.resource, a.client_id]),
      [['r2', 'A']],
      'the youngest waiter of the cycle',
    );
    assert.deepEqual([...r.aborted[0]!.cycle].sort(), ['A', 'B']);
    assert.deepEqual(h.waiters('r2'), []);
  });
});

describe('LockTable: wait timeouts', () => {
  it('removes a due waiter and grants the ones it was blocking', () => {
    const h = new Harness();
    h.acquire('r', 's0', { mode: 'shared' });
    h.acquire('r', 'e', { wait: 50 });
    h.acquire('r', 's1', { mode: 'shared', wait: 5000 });
    h.acquire('r', 's2', { mode: 'shared', wait: 5000 });
    assert.deepEqual(h.table.waitersDueBy(1050), [{ resource: 'r', client_id: 'e' }]);
    const r = h.waitTimeout('r', 'e', 1050);
    assert.equal(r.removed, true);
    assert.deepEqual(who(r.grants), ['s1:s', 's2:s']);
    assert.deepEqual(h.holders('r'), ['s0:s', 's1:s', 's2:s']);
  });

  it('a grant that raced the timeout wins: removed false', () => {
    const h = new Harness();
    h.acquire('r', 'a');
    h.acquire('r', 'b', { wait: 50 });
    h.release('r', 'a', 1049);
    const r = h.waitTimeout('r', 'b', 1050);
    assert.deepEqual(r, { op: 'wait_timeout', removed: false, grants: [] });
    assert.deepEqual(h.holders('r'), ['b:e']);
  });

  it('a waiter refreshed by a repeated acquire is not removed by the stale timeout', () => {
    const h = new Harness();
    h.acquire('r', 'a');
    h.acquire('r', 'b', { wait: 50 });
    h.acquire('r', 'b', { wait: 500, now: 1040 });
    assert.equal(h.waitTimeout('r', 'b', 1050).removed, false);
    assert.deepEqual(h.waiters('r'), ['b:e']);
    assert.deepEqual(h.table.waitersDueBy(1539), []);
    assert.equal(h.waitTimeout('r', 'b', 1540).removed, true);
    assert.deepEqual(h.waiters('r'), []);
  });

  it('unknown waiter or resource: removed false', () => {
    const h = new Harness();
    assert.equal(h.waitTimeout('r', 'b').removed, false);
    h.acquire('r', 'a');
    assert.equal(h.waitTimeout('r', 'b').removed, false);
  });
});

describe('LockTable: fencing tokens', () => {
  it('are strictly increasing per resource over any sequence of grants', () => {
    // A deterministic pseudo-random workload on two resources.
    let seed = 7;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const h = new Harness();
    const last = new Map<string, number>();
    const see = (resource: string, token: number, index: number) => {
      assert.equal(token, index);
      assert.ok(token >= (last.get(resource) ?? 0), `${resource}: ${token} after ${last.get(resource)}`);
      last.set(resource, token);
    };
    for (let i = 0; i < 3000; i++) {
      h.now += rnd(20);
      const resource = `r${rnd(2)}`;
      const client = `c${rnd(5)}`;
      const op = rnd(10);
      let grants: Grant[] = [];
      const before = last.get(resource) ?? 0;
      if (op < 5) {
        const r = h.acquire(resource, client, {
          mode: rnd(2) ? 'shared' : 'exclusive',
          ttl: 1 + rnd(100),
          wait: rnd(3) * 50,
        });
        grants = r.grants;
        if (r.result.status === 'granted' && r.result.hold.fencing_token === h.index) {
          see(resource, r.result.hold.fencing_token, h.index);
        }
      } else if (op < 8) grants = h.release(resource, client).grants;
      else if (op < 9) grants = h.expire(resource, [client]).grants;
      else grants = h.waitTimeout(resource, client).grants;
      for (const g of grants) see(g.resource, g.fencing_token, h.index);
      // Several grants in one entry share its index (shared holds granted together): strictly
      // greater than every token of earlier entries.
      if ((last.get(resource) ?? 0) !== before) assert.ok(last.get(resource)! > before);
    }
    assert.ok(last.size === 2);
  });
});

describe('LockTable: lookups', () => {
  it('all() is sorted by resource; empty resources are deleted', () => {
    const h = new Harness();
    for (const r of ['m', 'b', 'z', 'a']) h.acquire(r, 'c');
    h.release('z', 'c');
    assert.deepEqual(
      h.table.all().map((s) => s.resource),
      ['a', 'b', 'm'],
    );
    assert.equal(h.table.heldCount(), 3);
  });

  it('holdsExpiringBy groups due holds per resource; waitersDueBy lists due waiters by deadline', () => {
    const h = new Harness();
    h.acquire('b', 'x', { ttl: 10, mode: 'shared' });
    h.acquire('b', 'y', { ttl: 30, mode: 'shared' });
    h.acquire('b', 'z', { ttl: 5, mode: 'shared' });
    h.acquire('a', 'x', { ttl: 20 });
    h.acquire('c', 'x', { ttl: 1000 });
    assert.deepEqual(h.table.holdsExpiringBy(1004), []);
    assert.deepEqual(h.table.holdsExpiringBy(1020), [
      { resource: 'a', client_ids: ['x'] },
      { resource: 'b', client_ids: ['x', 'z'] },
    ]);
    h.acquire('c', 'w1', { wait: 300 });
    h.acquire('c', 'w2', { wait: 100 });
    h.acquire('a', 'w3', { wait: 200 });
    assert.deepEqual(h.table.waitersDueBy(1250), [
      { resource: 'c', client_id: 'w2' },
      { resource: 'a', client_id: 'w3' },
    ]);
    assert.equal(h.table.waiterCount(), 3);
    assert.equal(h.table.heldCount(), 5);
  });

  it('the expiry index follows renewals, upgrades, releases and grants', () => {
    const h = new Harness();
    h.acquire('r', 'a', { ttl: 10, mode: 'shared' });
    h.acquire('q', 'b', { ttl: 10 });
    h.acquire('q', 'c', { ttl: 70, wait: 1000 });
    h.renew('r', 'a', 100);
    assert.deepEqual(h.table.holdsExpiringBy(1050), [{ resource: 'q', client_ids: ['b'] }]);
    h.acquire('r', 'a', { ttl: 20 }); // upgrade: expires 1020
    assert.deepEqual(
      h.table.holdsExpiringBy(1050).map((x) => x.resource),
      ['q', 'r'],
    );
    h.release('q', 'b'); // grants c until 1070
    assert.deepEqual(h.table.holdsExpiringBy(1050), [{ resource: 'r', client_ids: ['a'] }]);
    assert.deepEqual(h.table.holdsExpiringBy(1070), [
      { resource: 'q', client_ids: ['c'] },
      { resource: 'r', client_ids: ['a'] },
    ]);
  });

  it('returns copies: changing them does not change the table', () => {
    const h = new Harness();
    const r = h.acquire('r', 'a');
    h.acquire('r', 'b', { wait: 100 });
    granted(r).expires_at = 0;
    const s = h.table.get('r')!;
    s.holders[0]!.client_id = 'evil';
    s.waiters.pop();
    h.table.all()[0]!.holders.pop();
    assert.deepEqual(h.holders('r'), ['a:e']);
    assert.deepEqual(h.waiters('r'), ['b:e']);
    assert.equal(h.table.get('r')?.holders[0]?.expires_at, 1100);
  });
});

describe('LockTable: snapshot and restore', () => {
  it('reports its size as the resources, holds and waiters a snapshot walks', () => {
    const h = new Harness();
    assert.equal(h.table.size(), 0);
    h.acquire('r', 'a', { mode: 'shared' });
    h.acquire('r', 'b', { mode: 'shared' });
    h.acquire('q', 'a');
    h.acquire('q', 'c', { wait: 500 });
    assert.equal(h.table.size(), 2 + 3 + 1);
    h.release('q', 'a'); // c is granted: one waiter fewer, same holds
    h.release('r', 'a');
    h.release('r', 'b');
    assert.equal(h.table.size(), 1 + 1);
    const copy = new LockTable();
    copy.restore(h.table.snapshot());
    assert.equal(copy.size(), h.table.size());
  });

  function busy(): Harness {
    const h = new Harness();
    h.acquire('r1', 'a', { mode: 'shared' });
    h.acquire('r1', 'b', { mode: 'shared', ttl: 300 });
    h.acquire('r1', 'c', { wait: 1000 });
    h.acquire('r1', 'a', { wait: 900 }); // upgrade, ahead of c
    h.acquire('r2', 'c', { ttl: 50 });
    h.acquire('r2', 'd', { mode: 'shared', wait: 400 });
    h.acquire('r3', 'e');
    return h;
  }

  it('restores the same state, and the copy behaves the same from there on', () => {
    const h = busy();
    const copy = new LockTable();
    copy.restore(JSON.parse(JSON.stringify(h.table.snapshot())) as Json);
    assert.deepEqual(copy.snapshot(), h.table.snapshot());
    assert.deepEqual(copy.all(), h.table.all());
    assert.deepEqual(copy.holdsExpiringBy(5000), h.table.holdsExpiringBy(5000));
    assert.deepEqual(copy.waitersDueBy(5000), h.table.waitersDueBy(5000));
    assert.equal(copy.heldCount(), h.table.heldCount());
    assert.equal(copy.waiterCount(), h.table.waiterCount());
    const next: LockCommand[] = [
      { op: 'release', resource: 'r1', client_id: 'b', now: 1010 },
      {
        op: 'acquire',
        resource: 'r2',
        client_id: 'a',
        mode: 'exclusive',
        ttl_ms: 10,
        wait_ms: 10,
        now: 1020,
      },
      { op: 'expire', resource: 'r2', client_ids: ['c'], now: 1060 },
      { op: 'acquire', resource: 'r3', client_id: 'd', mode: 'shared', ttl_ms: 10, wait_ms: 10, now: 1070 },
      { op: 'extend_all', extend_ms: 500, now: 1080 },
    ];
    for (const cmd of next) {
      const i = ++h.index;
      assert.deepEqual(copy.apply(cmd, i, 1), h.table.apply(cmd, i, 1));
      assert.deepEqual(copy.snapshot(), h.table.snapshot());
    }
  });

  it('is a compact, canonical JSON value', () => {
    const h = busy();
    assert.deepEqual(h.table.snapshot(), {
      v: 1,
      locks: [
        ['r1', ['a', 's', 1, 1100, 'b', 's', 2, 1300], ['a', 'x', 100, 4, 1900, 'c', 'x', 100, 3, 2000]],
        ['r2', ['c', 'x', 5, 1050], ['d', 's', 100, 6, 1400]],
        ['r3', ['e', 'x', 7, 1100], []],
      ],
      token: 7,
    });
  });

  it('replaces whatever state was there', () => {
    const h = busy();
    const other = new LockTable();
    other.apply(
      { op: 'acquire', resource: 'zz', client_id: 'q', mode: 'exclusive', ttl_ms: 10, wait_ms: 0, now: 1 },
      1,
      1,
    );
    other.restore(h.table.snapshot());
    assert.deepEqual(other.all(), h.table.all());
    assert.equal(other.get('zz'), undefined);
    other.restore({ v: 1, locks: [] });
    assert.deepEqual(other.all(), []);
    assert.equal(other.heldCount(), 0);
    assert.deepEqual(other.holdsExpiringBy(1e15), []);
  });

  it('rejects malformed snapshots', () => {
    const t = new LockTable();
    for (const bad of [
      null,
      [],
      { v: 2, locks: [] },
      { v: 1 },
      { v: 1, locks: [['r', ['a', 'x', 1], []]] },
      { v: 1, locks: [['r', ['a', 'q', 1, 5], []]] },
      { v: 1, locks: [['r', [], ['a', 'x', 1, 2]]] },
      {
        v: 1,
        locks: [
          ['r', ['a', 'x', 1, 5], []],
          ['r', [], []],
        ],
      },
      { v: 1, locks: [[3, [], []]] },
    ] as Json[]) {
      assert.throws(() => t.restore(bad), /lock table/, JSON.stringify(bad));
    }
  });
});

describe('LockTable: scale', () => {
  it('100,000 acquires on distinct resources, a snapshot and a restore take a few seconds at most', () => {
    const start = performance.now();
    const t = new LockTable();
    for (let i = 1; i <= 100_000; i++) {
      const r = t.apply(
        {
          op: 'acquire',
          resource: `res-${i}`,
          client_id: `client-${i % 1000}`,
          mode: i % 3 ? 'exclusive' : 'shared',
          ttl_ms: 1000 + (i % 5000),
          wait_ms: 0,
          now: 1_700_000_000_000 + i,
        },
        i,
        1,
      );
      assert.ok('op' in r && r.op === 'acquire' && r.result.status === 'granted');
    }
    const snap = t.snapshot();
    const text = JSON.stringify(snap);
    const copy = new LockTable();
    copy.restore(JSON.parse(text) as Json);
    const elapsed = performance.now() - start;
    assert.equal(copy.heldCount(), 100_000);
    assert.equal(copy.get('res-77777')?.holders[0]?.fencing_token, 77777);
    assert.equal(
      copy.holdsExpiringBy(1_700_000_000_000 + 1500).length,
      t.holdsExpiringBy(1_700_000_001_500).length,
    );
    assert.ok(elapsed < 5000, `took ${Math.round(elapsed)} ms`);
  });
});
