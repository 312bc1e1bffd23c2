import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  checkLockHistory,
  LockHistory,
  outcomeOfStatus,
  type LockCheckOptions,
  type LockCheckResult,
  type LockEvent,
  type LockInvokeEvent,
  type LockOutcome,
} from '../helpers/lock-history.js';

// Hand-written histories: times are milliseconds after T0 (an epoch-like origin, to exercise the
// arithmetic on large fractional numbers the recorder produces).
const T0 = 1_700_000_000_000;

class Builder {
  readonly events: LockEvent[] = [];
  private id = 0;

  op(
    client: string,
    op: 'acquire' | 'release',
    resource: string,
    sent: number,
    answered: number | undefined,
    outcome: LockOutcome,
    token?: number,
    ttlMs?: number,
  ): this {
    const id = ++this.id;
    this.events.push({
      type: 'invoke',
      id,
      time: T0 + sent,
      client,
      op,
      resource,
      ...(ttlMs ? { ttlMs } : {}),
    });
    if (answered !== undefined) {
      this.events.push({
        type: 'complete',
        id,
        time: T0 + answered,
        outcome,
        ...(token !== undefined ? { fencing_token: token } : {}),
      });
    }
    return this;
  }

  grant(
    client: string,
    resource: string,
    sent: number,
    received: number,
    token: number,
    ttlMs?: number,
  ): this {
    return this.op(client, 'acquire', resource, sent, received, 'granted', token, ttlMs);
  }

  release(
    client: string,
    resource: string,
    sent: number,
    answered: number | undefined,
    outcome: 'ok' | 'not_holder' | 'unknown' = 'ok',
  ): this {
    return this.op(client, 'release', resource, sent, answered, outcome);
  }

  /** A whole hold: acquire sent at t, granted at t+1, release sent at `until`, answered at until+1. */
  hold(client: string, resource: string, token: number, t: number, until: number, ttlMs?: number): this {
    return this.grant(client, resource, t, t + 1, token, ttlMs).release(client, resource, until, until + 1);
  }

  check(opts?: LockCheckOptions): LockCheckResult {
    return checkLockHistory(this.events, opts);
  }
}

function assertClean(r: LockCheckResult): void {
  assert.deepEqual(r.violations, [], r.violations.join('\n'));
  assert.equal(r.ok, true);
}

function assertViolation(r: LockCheckResult, kind: string, ...fragments: string[]): string {
  assert.equal(r.ok, false, 'expected a violation');
  const v = r.violations.find((s) => s.startsWith(kind));
  assert.ok(v, `no "${kind}" violation in:\n${r.violations.join('\n')}`);
  for (const f of fragments) assert.ok(v.includes(f), `"${f}" not in: ${v}`);
  return v;
}

describe('LockHistory recorder', () => {
  it('records invocations and completions with wall-clock times and validates outcomes', () => {
    const h = new LockHistory();
    const before = performance.timeOrigin + performance.now();
    const a = h.invoke('c1', 'acquire', 'r', { ttlMs: 5000, waitMs: 0 });
    const b = h.invoke('c2', 'acquire', 'r');
    h.complete(a, 'granted', { fencing_token: 7, expires_at: 123 });
    h.complete(b, 'refused', { code: 'lock_conflict' });
    const rel = h.invoke('c1', 'release', 'r');
    assert.deepEqual(h.pending(), [rel]);
    h.complete(rel, 'ok');
    const after = performance.timeOrigin + performance.now();
    assert.equal(h.events.length, 6);
    for (let i = 0; i < h.events.length; i++) {
      const t = h.events[i]!.time;
      assert.ok(t >= before && t <= after, 'timestamps are epoch ms from the performance clock');
      if (i > 0) assert.ok(t >= h.events[i - 1]!.time, 'in recording order');
    }
    assert.deepEqual(h.events[0], { ...h.events[0]!, client: 'c1', op: 'acquire', ttlMs: 5000, waitMs: 0 });
    assert.deepEqual(h.events[2], { ...h.events[2]!, outcome: 'granted', fencing_token: 7, expires_at: 123 });
    assertClean(h.check());

    assert.throws(() => h.complete(a, 'granted', { fencing_token: 7 }), /no invocation with that id is open/);
    const c = h.invoke('c1', 'acquire', 'r');
    assert.throws(() => h.complete(c, 'ok'), /not one of granted, refused, unknown/);
    assert.throws(() => h.complete(c, 'granted'), /needs its fencing_token/);
    const d = h.invoke('c1', 'release', 'r');
    assert.throws(() => h.complete(d, 'granted', { fencing_token: 1 }), /not one of ok, not_holder, unknown/);
  });

  it('uses an injected clock', () => {
    let now = 10;
    const h = new LockHistory({ now: () => now });
    const a = h.invoke('c', 'acquire', 'r');
    now = 12.5;
    h.complete(a, 'unknown', { code: 'ECONNRESET' });
    assert.deepEqual(
      h.events.map((e) => e.time),
      [10, 12.5],
    );
  });

  it('maps HTTP statuses to outcomes, unknown when in doubt', () => {
    assert.equal(outcomeOfStatus('acquire', 200), 'granted');
    assert.equal(outcomeOfStatus('acquire', 409), 'refused');
    assert.equal(outcomeOfStatus('acquire', 503), 'unknown');
    assert.equal(outcomeOfStatus('acquire', undefined), 'unknown');
    assert.equal(outcomeOfStatus('release', 200), 'ok');
    assert.equal(outcomeOfStatus('release', 409), 'not_holder');
    assert.equal(outcomeOfStatus('release', 504), 'unknown');
  });
});

describe('checkLockHistory: clean histories pass', () => {
  it('sequential holds of several clients', () => {
    const r = new Builder()
      .hold('a', 'r', 1, 0, 10)
      .hold('b', 'r', 2, 12, 20)
      .hold('a', 'r', 5, 22, 30)
      .hold('c', 'r', 9, 31, 40)
      .check();
    assertClean(r);
    assert.equal(r.stats.holds, 4);
    assert.equal(r.stats.checkedHolds, 4);
    assert.deepEqual(r.stats.acquires, { granted: 4, refused: 0, unknown: 0 });
    assert.deepEqual(r.stats.releases, { ok: 4, not_holder: 0, unknown: 0 });
  });

  it('holds on different resources interleave freely; event order in the array does not matter', () => {
    const b = new Builder()
      .hold('a', 'r1', 1, 0, 50)
      .hold('b', 'r2', 1, 5, 60)
      .hold('c', 'r3', 100, 10, 20)
      .hold('b', 'r1', 3, 52, 70)
      .hold('a', 'r2', 2, 61, 80);
    assertClean(b.check());
    const shuffled = [...b.events].reverse();
    assertClean(checkLockHistory(shuffled));
    assert.equal(checkLockHistory(shuffled).stats.resources, 3);
  });

  it('a grant sent while another client held the lock (waiting) counts from its arrival', () => {
    // b sends at 2 while a holds; the server grants b after a's release is applied.
    assertClean(
      new Builder().grant('a', 'r', 0, 1, 1).grant('b', 'r', 2, 12, 2).release('a', 'r', 10, 11).check(),
    );
  });

  it('refused and unknown acquires are not holds', () => {
    const r = new Builder()
      .grant('a', 'r', 0, 1, 1)
      .op('b', 'acquire', 'r', 2, 3, 'refused')
      .op('c', 'acquire', 'r', 2, 30, 'unknown') // timed out: may or may not have been granted
      .op('d', 'acquire', 'r', 4, undefined, 'unknown') // never answered at all
      .release('a', 'r', 10, 11)
      .grant('b', 'r', 12, 13, 2)
      .release('b', 'r', 20, 21)
      .release('c', 'r', 31, 32, 'not_holder') // c cleans up after its unknown acquire
      .check();
    assertClean(r);
    assert.equal(r.stats.holds, 2);
    assert.deepEqual(r.stats.acquires, { granted: 2, refused: 1, unknown: 2 });
    assert.equal(r.stats.pending, 1);
  });

  it('an unknown acquire that the server did grant (token used up) is not a false positive', () => {
    // c's acquire took effect as token 2 but c never learned it; c releases to be safe.
    assertClean(
      new Builder()
        .hold('a', 'r', 1, 0, 10)
        .op('c', 'acquire', 'r', 11, 40, 'unknown')
        .release('c', 'r', 41, 42)
        .grant('b', 'r', 30, 45, 3)
        .release('b', 'r', 50, 51)
        .check(),
    );
  });

  it('an unknown release still ends the hold at its send time', () => {
    const r = new Builder()
      .grant('a', 'r', 0, 1, 1)
      .release('a', 'r', 10, 500, 'unknown') // timed out; it was applied at some point
      .grant('b', 'r', 11, 20, 2)
      .release('b', 'r', 30, undefined, 'unknown') // never answered
      .grant('c', 'r', 31, 40, 3)
      .check();
    assertClean(r);
    assert.deepEqual(r.stats.releases, { ok: 0, not_holder: 0, unknown: 2 });
  });

  it('reentrant grants to the holder repeat its token and do not split its hold', () => {
    const r = new Builder()
      .grant('a', 'r', 0, 1, 4)
      .grant('a', 'r', 5, 6, 4)
      .grant('a', 'r', 7, 8, 4)
      .release('a', 'r', 10, 11)
      .hold('b', 'r', 6, 12, 20)
      .check();
    assertClean(r);
    assert.equal(r.stats.holds, 2);
  });

  it('a hold never released is fine while no one else gets the lock', () => {
    assertClean(
      new Builder()
        .hold('a', 'r', 1, 0, 5)
        .grant('b', 'r', 6, 7, 2)
        .op('c', 'acquire', 'r', 8, 9, 'refused')
        .check(),
    );
  });

  it('touching holds (release sent at the instant the next grant arrives) do not overlap', () => {
    assertClean(
      new Builder().grant('a', 'r', 0, 1, 1).release('a', 'r', 10, 11).grant('b', 'r', 2, 10, 2).check(),
    );
  });
});

describe('checkLockHistory: violations are found', () => {
  it('two holds overlapping by 1 ms, naming both holds', () => {
    const r = new Builder().hold('a', 'r', 1, 0, 10).hold('b', 'r', 2, 8, 20).check();
    const v = assertViolation(
      r,
      'mutual exclusion on "r"',
      'client "a" (token 1, held +1.000 ms → +10.000 ms (release sent))',
      'client "b" (token 2, held +9.000 ms → +20.000 ms (release sent))',
      'overlap for 1.000 ms',
    );
    assert.equal(r.violations.length, 1, v);
  });

  it('an overlap of a fraction of a millisecond', () => {
    assertViolation(
      new Builder()
        .grant('a', 'r', 0, 1, 1)
        .release('a', 'r', 10.25, 11)
        .grant('b', 'r', 2, 10.125, 2)
        .check(),
      'mutual exclusion',
      'overlap for 0.125 ms',
    );
  });

  it('an overlap created by a hold whose release was never sent', () => {
    const r = new Builder().grant('a', 'r', 0, 1, 1).hold('b', 'r', 2, 500, 600).check();
    assertViolation(
      r,
      'mutual exclusion',
      'client "a" (token 1, held +1.000 ms → never released)',
      'client "b"',
    );
  });

  it('an overlap with a hold after a reentrant grant', () => {
    const r = new Builder()
      .grant('a', 'r', 0, 1, 3)
      .grant('a', 'r', 5, 6, 3)
      .release('a', 'r', 30, 31)
      .hold('b', 'r', 4, 20, 40)
      .check();
    assertViolation(r, 'mutual exclusion', 'client "a" (token 3', 'client "b" (token 4');
  });

  it('tokens going backwards between sequential holds', () => {
    const r = new Builder().hold('a', 'r', 5, 0, 10).hold('b', 'r', 3, 12, 20).check();
    assertViolation(
      r,
      'fencing order on "r"',
      'client "b" got token 3',
      'client "a" had already received token 5 at +1.000 ms',
    );
    assert.equal(r.violations.length, 1, r.violations.join('\n'));
  });

  it('tokens going backwards while the later grant was in flight (granted while the other held)', () => {
    // b's acquire was sent before a's grant arrived, so real-time order alone says nothing; but b's
    // grant (token 4) was made before a's (token 5) and b held the lock from then on.
    const r = new Builder()
      .grant('a', 'r', 0, 10, 5)
      .release('a', 'r', 11, 12)
      .grant('b', 'r', 5, 13, 4)
      .check();
    assertViolation(r, 'fencing order', 'client "b" got token 4', 'while "b"\'s grant was in flight');
  });

  it('tokens going backwards for the same client', () => {
    assertViolation(
      new Builder().hold('a', 'r', 5, 0, 10).hold('a', 'r', 3, 12, 20).check(),
      'fencing order',
    );
  });

  it('the same token for a new grant after an acknowledged release', () => {
    assertViolation(
      new Builder().hold('a', 'r', 5, 0, 10).hold('a', 'r', 5, 12, 20).check(),
      'fencing on "r"',
      'granted token 5 again',
    );
  });

  it('duplicate tokens across clients, even without any overlap', () => {
    const r = new Builder().hold('a', 'r', 7, 0, 10).hold('b', 'r', 7, 12, 20).check();
    assertViolation(
      r,
      'duplicate fencing token on "r"',
      'token 7 granted to client "a" (received +1.000 ms) and to client "b" (received +13.000 ms)',
    );
  });

  it('a lost hold: release answered not_holder, or a new token to the holder, without TTL expiry', () => {
    assertViolation(
      new Builder().grant('a', 'r', 0, 1, 1).release('a', 'r', 10, 11, 'not_holder').check(),
      'lost hold on "r"',
      'answered not_holder',
    );
    assertViolation(
      new Builder().grant('a', 'r', 0, 1, 1).grant('a', 'r', 5, 6, 9).check(),
      'lost hold on "r"',
      'granted a new token 9',
    );
    // Both are normal when leases may run out.
    assertClean(
      new Builder()
        .grant('a', 'r', 0, 1, 1, 100)
        .release('a', 'r', 150, 151, 'not_holder')
        .grant('a', 'r', 160, 161, 9, 100)
        .check({ ttlsMayExpire: true }),
    );
  });

  it('reports are capped, the count is not', () => {
    const b = new Builder();
    for (let i = 0; i < 10; i++) b.grant(`c${i}`, 'r', i, i + 1, 100 + i);
    const r = b.check({ maxReported: 3 });
    assert.equal(r.stats.violations, 45); // every pair of the 10 open holds overlaps
    assert.equal(r.violations.length, 4);
    assert.equal(r.violations[3], '… and 42 more violations');
  });

  it('rejects malformed histories', () => {
    const inv = (id: number, time = T0): LockInvokeEvent => ({
      type: 'invoke',
      id,
      time,
      client: 'a',
      op: 'acquire',
      resource: 'r',
    });
    assert.throws(() => checkLockHistory([inv(1), inv(1)]), /two invoke events/);
    assert.throws(
      () => checkLockHistory([{ type: 'complete', id: 3, time: T0, outcome: 'refused' }]),
      /never invoked/,
    );
    assert.throws(
      () => checkLockHistory([inv(1), { type: 'complete', id: 1, time: T0, outcome: 'granted' }]),
      /needs its fencing_token/,
    );
    assert.throws(
      () => checkLockHistory([inv(1), { type: 'complete', id: 1, time: T0 - 1, outcome: 'refused' }]),
      /completed before it was invoked/,
    );
    assert.throws(
      () => checkLockHistory([{ ...inv(1), mode: 'shared' }]),
      /shared acquires are not supported/,
    );
    assert.throws(
      () => new Builder().grant('a', 'r', 0, 1, 1).check({ ttlsMayExpire: true }),
      /no ttlMs and no defaultTtlMs/,
    );
  });
});

describe('checkLockHistory: unknown outcomes never make false positives', () => {
  it('a release in flight when the next acquire was sent makes the next hold uncertain', () => {
    // a's first release timed out; it may be applied after a's second grant and free the lock for b.
    const r = new Builder()
      .grant('a', 'r', 0, 1, 1)
      .release('a', 'r', 10, 20, 'unknown')
      .grant('a', 'r', 21, 22, 2)
      .grant('b', 'r', 23, 30, 3)
      .check();
    assertClean(r);
    assert.equal(r.stats.uncertainHolds, 1);
    // Without the doubt, the same timeline is a violation.
    assertViolation(
      new Builder()
        .grant('a', 'r', 0, 1, 1)
        .release('a', 'r', 10, 20, 'ok')
        .grant('a', 'r', 21, 22, 2)
        .grant('b', 'r', 23, 30, 3)
        .check(),
      'mutual exclusion',
    );
  });

  it('a release answered ok after the next acquire was sent also makes it uncertain', () => {
    assertClean(
      new Builder()
        .grant('a', 'r', 0, 1, 1)
        .release('a', 'r', 10, 25)
        .grant('a', 'r', 21, 22, 1) // possibly reentrant, applied before the release
        .grant('b', 'r', 23, 30, 3)
        .check(),
    );
  });

  it('an uncertain hold that the server dropped is no lost hold', () => {
    // a's late release freed the reentrant hold a believes in; a's next acquire gets a new token.
    assertClean(
      new Builder()
        .grant('a', 'r', 0, 1, 1)
        .release('a', 'r', 10, 15, 'unknown')
        .grant('a', 'r', 20, 21, 1)
        .grant('a', 'r', 30, 31, 5)
        .release('a', 'r', 40, 41)
        .release('a', 'r', 42, 43, 'not_holder')
        .check(),
    );
  });

  it('a refused or not_holder release in flight changes nothing, so it casts no doubt', () => {
    assertViolation(
      new Builder()
        .grant('a', 'r', 0, 1, 1)
        .release('a', 'r', 0.5, 20, 'not_holder')
        .grant('b', 'r', 5, 10, 3)
        .check(),
      'mutual exclusion',
    );
  });
});

describe('checkLockHistory: TTL expiry allowed', () => {
  const ttl = { ttlsMayExpire: true };

  it('an unreleased hold ends at its acquire send time + ttl', () => {
    const b = new Builder().grant('a', 'r', 0, 1, 1, 100).hold('b', 'r', 2, 101, 200, 100);
    assertClean(b.check(ttl));
    assertViolation(b.check(), 'mutual exclusion'); // TTLs not allowed to expire: a still holds
    assertViolation(
      new Builder().grant('a', 'r', 0, 1, 1, 100).hold('b', 'r', 2, 97, 200, 100).check(ttl),
      'mutual exclusion',
      '→ +100.000 ms (TTL lease end)',
      'overlap for 2.000 ms',
    );
  });

  it('the lease runs from the acquire send time, not from the grant arrival', () => {
    // a's grant took 50 ms to arrive; the server expired it at ~101 and b got it.
    assertClean(new Builder().grant('a', 'r', 0, 50, 1, 100).grant('b', 'r', 101, 103, 2, 100).check(ttl));
  });

  it('a client using its lock past the lease is cut at the lease end', () => {
    assertClean(
      new Builder()
        .grant('a', 'r', 0, 1, 1, 100)
        .release('a', 'r', 300, 301, 'not_holder')
        .hold('b', 'r', 2, 150, 250, 100)
        .check(ttl),
    );
  });

  it('reentrant acquires renew the lease; an unknown one may renew with less, so it counts', () => {
    const renewed = (): Builder =>
      new Builder().grant('a', 'r', 0, 1, 1, 100).grant('a', 'r', 80, 81, 1, 100);
    // The lease now ends at 80 + 100.
    assertViolation(
      renewed().hold('b', 'r', 2, 150, 200, 100).check(ttl),
      'mutual exclusion',
      'TTL lease end',
    );
    assertClean(renewed().hold('b', 'r', 2, 181, 200, 100).check(ttl));
    // An unknown renewal with a short ttl may have been applied last and cut the lease to 95.
    assertClean(
      new Builder()
        .grant('a', 'r', 0, 1, 1, 100)
        .op('a', 'acquire', 'r', 85, 90, 'unknown', undefined, 10)
        .grant('a', 'r', 80, 81, 1, 100)
        .hold('b', 'r', 2, 96, 200, 100)
        .check(ttl),
    );
  });

  it('an unknown renewal sent before the last known one may still be applied after it', () => {
    // a's renewal sent at 50 with ttl_ms 10 never got an answer: it may reach the server after the
    // renewal sent at 80, leaving the lease at 60 or later, not 180.
    const b = new Builder()
      .grant('a', 'r', 0, 1, 1, 100)
      .op('a', 'acquire', 'r', 50, undefined, 'unknown', undefined, 10)
      .grant('a', 'r', 80, 81, 1, 100)
      .hold('b', 'r', 2, 95, 200, 100);
    assertClean(b.check(ttl));
    // A known renewal answered before the later one was sent is surely overridden by it.
    assertViolation(
      new Builder()
        .grant('a', 'r', 0, 1, 1, 100)
        .grant('a', 'r', 50, 55, 1, 10)
        .grant('a', 'r', 80, 81, 1, 100)
        .hold('b', 'r', 2, 95, 200, 100)
        .check(ttl),
      'mutual exclusion',
    );
    // Sent before one that was still unanswered when the last was sent: still overridden.
    assertViolation(
      new Builder()
        .grant('a', 'r', 0, 1, 1, 100)
        .grant('a', 'r', 40, 90, 1, 100)
        .grant('a', 'r', 50, 55, 1, 10)
        .grant('a', 'r', 80, 81, 1, 100)
        .hold('b', 'r', 2, 99, 200, 100)
        .check(ttl),
      'mutual exclusion',
      '→ +140.000 ms (TTL lease end)',
    );
    // One answered after the later one was sent may have been applied after it.
    assertClean(
      new Builder()
        .grant('a', 'r', 0, 1, 1, 100)
        .grant('a', 'r', 50, 85, 1, 10)
        .grant('a', 'r', 80, 81, 1, 100)
        .hold('b', 'r', 2, 95, 200, 100)
        .check(ttl),
    );
  });

  it('a grant arriving after its lease surely ran out is no hold, and orders nothing', () => {
    // a's answer took 150 ms; meanwhile its lease ran out and b was granted a greater token.
    const r = new Builder()
      .grant('a', 'r', 0, 150, 1, 100)
      .grant('b', 'r', 105, 120, 2, 100)
      .release('b', 'r', 130, 131)
      .check(ttl);
    assertClean(r);
    assert.equal(r.stats.emptyHolds, 1);
  });

  it('defaultTtlMs and leaseMarginMs', () => {
    const b = new Builder().grant('a', 'r', 0, 1, 1).hold('b', 'r', 2, 95, 200);
    assertViolation(b.check({ ttlsMayExpire: true, defaultTtlMs: 100 }), 'mutual exclusion');
    assertClean(b.check({ ttlsMayExpire: true, defaultTtlMs: 100, leaseMarginMs: 10 }));
  });

  it('an expired hold superseded by a new grant to the same client', () => {
    const r = new Builder()
      .grant('a', 'r', 0, 1, 1, 100)
      .grant('a', 'r', 200, 201, 5, 100)
      .release('a', 'r', 250, 251)
      .grant('b', 'r', 120, 130, 3, 100)
      .release('b', 'r', 140, 141)
      .check(ttl);
    assertClean(r);
    assert.equal(r.stats.holds, 3);
  });
});

// ---------------------------------------------------------------------------------------------
// Property: histories produced by a sequential model of the lock service, with random network
// delays, pass; the same histories with one injected overlapping hold fail.

interface Contender {
  client: number;
  /** Where in the holder's server-side hold the server processed this acquire, (0, 1). */
  at: number;
  /** Where between the holder's grant and that moment the acquire was sent, [0, 1). */
  sentAt: number;
  answerDelay: number;
  outcome: 'refused' | 'unknown' | 'pending';
}

interface HoldStep {
  resource: number;
  client: number;
  gap: number;
  reqDelay: number;
  respDelay: number;
  grantLag: number;
  useMs: number;
  /** Reentrant acquires during the hold: fractions of use (sent, answered). */
  reentrant: [number, number][];
  /** false: the grant's answer was lost (the client records unknown after `timeout`). */
  acked: boolean;
  /** late: times out, and reaches the server only after the client acquired again (reentrant). */
  release: 'ok' | 'unknown' | 'late' | 'none';
  relReqDelay: number;
  relRespDelay: number;
  timeout: number;
  expireLag: number;
  tokenSkip: number;
  contenders: Contender[];
}

interface Window {
  resource: string;
  start: number;
  end: number;
}

const RESOURCES = 3;
const CLIENTS = 4;

/** Turns model steps into a timed history: per resource, holds one after the other server-side. */
function buildHistory(
  steps: HoldStep[],
  ttlMode: boolean,
  ttlMs: number,
): { events: LockEvent[]; windows: Window[] } {
  const events: LockEvent[] = [];
  const windows: Window[] = [];
  let id = 0;
  const rec = (
    client: string,
    op: 'acquire' | 'release',
    resource: string,
    sent: number,
    answered: number | undefined,
    outcome: LockOutcome,
    token?: number,
  ): void => {
    const n = ++id;
    events.push({
      type: 'invoke',
      id: n,
      time: sent,
      client,
      op,
      resource,
      ...(op === 'acquire' ? { ttlMs } : {}),
    });
    if (answered !== undefined) {
      events.push({
        type: 'complete',
        id: n,
        time: answered,
        outcome,
        ...(token !== undefined ? { fencing_token: token } : {}),
      });
    }
  };
  const res = new Map<string, { freeAt: number; token: number; dead: boolean }>();
  const cli = new Map<string, { lastDone: number; dirty: boolean }>();
  for (const st of steps) {
    const R = `r${st.resource % RESOURCES}`;
    const C = `c${st.client % CLIENTS}`;
    let rs = res.get(R);
    if (!rs) res.set(R, (rs = { freeAt: T0, token: 0, dead: false }));
    if (rs.dead) continue;
    let cs = cli.get(`${C}/${R}`);
    if (!cs) cli.set(`${C}/${R}`, (cs = { lastDone: T0, dirty: false }));
    const clean = !cs.dirty;

    const sent = cs.lastDone + st.gap;
    const s = Math.max(sent + st.reqDelay, rs.freeAt + st.grantLag);
    const token = (rs.token += st.tokenSkip);
    let expAt = s + ttlMs;
    let use: number; // when the client sends its release
    if (st.acked) {
      const r = s + st.respDelay;
      rec(C, 'acquire', R, sent, r, 'granted', token);
      use = r + st.useMs;
      // Reentrant acquires sent and answered during the hold, applied half-way (possibly
      // concurrently with each other). Each sets the expiry from its own apply time, so with one
      // ttl_ms for all, the lease ends ttl_ms after the last one applied. All are applied within
      // useMs (< ttl_ms) of the grant, before any expiry.
      const renewals = st.reentrant
        .map(([fa, fb]): [number, number] => (fa < fb ? [fa, fb] : [fb, fa]))
        .filter(([a, b]) => a < b)
        .sort((x, y) => x[0] - y[0]);
      for (const [a, b] of renewals) {
        const i2 = r + st.useMs * a;
        const r2 = r + st.useMs * b;
        rec(C, 'acquire', R, i2, r2, 'granted', token);
        if (ttlMode) expAt = Math.max(expAt, (i2 + r2) / 2 + ttlMs);
      }
      if (clean) {
        let end = st.release === 'none' ? Infinity : use;
        if (ttlMode) end = Math.min(end, sent + ttlMs);
        if (end - r > 0.01) windows.push({ resource: R, start: r, end });
      }
    } else {
      rec(C, 'acquire', R, sent, sent + st.timeout, 'unknown');
      use = sent + st.timeout + st.useMs;
      cs.dirty = true;
    }

    let heldUntil: number;
    if (st.release === 'none') {
      if (!ttlMode) {
        rs.dead = true;
        heldUntil = s + 1000;
      } else {
        heldUntil = rs.freeAt = expAt + st.expireLag;
        cs.lastDone = rs.freeAt; // the client restarts once its lease is gone
      }
    } else if (
      st.release === 'late' &&
      !(ttlMode && Math.max(use + st.timeout + st.gap + st.reqDelay, s + 0.125) >= expAt)
    ) {
      // The client gives up on its release and acquires again: still the holder on the server, it
      // gets a reentrant grant. Then the late release frees the lock under it, and another client
      // may be granted before the client releases again. Its second hold is a false one.
      rec(C, 'release', R, use, use + st.timeout, 'unknown');
      const i2 = use + st.timeout + st.gap;
      const s2 = Math.max(i2 + st.reqDelay, s + 0.125); // after the first grant, even an unacknowledged one
      const r2 = s2 + st.respDelay;
      rec(C, 'acquire', R, i2, r2, 'granted', token);
      if (ttlMode) expAt = s2 + ttlMs;
      const lateApplied = r2 + st.relReqDelay + 0.125;
      const use2 = r2 + st.useMs;
      const applied2 = use2 + st.relReqDelay;
      heldUntil = rs.freeAt = Math.min(lateApplied, applied2, ttlMode ? expAt + st.expireLag : Infinity);
      const answered = applied2 + st.relRespDelay;
      rec(C, 'release', R, use2, answered, applied2 === rs.freeAt ? 'ok' : 'not_holder');
      cs.lastDone = answered;
      cs.dirty = true;
    } else {
      // An unacknowledged grant's release must reach the server after the grant.
      const applied = Math.max(use + st.relReqDelay, s + 0.125);
      const expired = ttlMode && applied >= expAt;
      heldUntil = rs.freeAt = expired ? expAt + st.expireLag : applied;
      const answered = applied + st.relRespDelay;
      if (st.release !== 'ok') {
        rec(C, 'release', R, use, use + st.timeout, 'unknown');
        cs.lastDone = Math.max(use + st.timeout, answered);
        cs.dirty = true;
      } else {
        rec(C, 'release', R, use, answered, expired ? 'not_holder' : 'ok');
        cs.lastDone = answered;
      }
    }

    for (const k of st.contenders) {
      const D = `c${(st.client + 1 + (k.client % (CLIENTS - 1))) % CLIENTS}`;
      const at = s + (heldUntil - s) * k.at;
      const sentAt = s + (at - s) * k.sentAt;
      if (k.outcome === 'refused') {
        rec(D, 'acquire', R, sentAt, at + k.answerDelay, 'refused');
      } else {
        rec(D, 'acquire', R, sentAt, k.outcome === 'pending' ? undefined : at + k.answerDelay, 'unknown');
        let ds = cli.get(`${D}/${R}`);
        if (!ds) cli.set(`${D}/${R}`, (ds = { lastDone: T0, dirty: false }));
        ds.dirty = true;
      }
    }
  }
  return { events, windows };
}

/** Delays in multiples of 1/8 ms: fractional, exactly representable. */
const ms = (min: number, max: number): fc.Arbitrary<number> =>
  fc.integer({ min: Math.round(min * 8), max: Math.round(max * 8) }).map((n) => n / 8);
const fraction = fc.integer({ min: 1, max: 999 }).map((n) => n / 1000);

const contenderArb: fc.Arbitrary<Contender> = fc.record({
  client: fc.nat(10),
  at: fraction,
  sentAt: fc.integer({ min: 0, max: 999 }).map((n) => n / 1000),
  answerDelay: ms(0.125, 20),
  outcome: fc.constantFrom<Contender['outcome']>('refused', 'refused', 'unknown', 'pending'),
});

const stepArb: fc.Arbitrary<HoldStep> = fc.record({
  resource: fc.nat(10),
  client: fc.nat(10),
  gap: ms(0.125, 30),
  reqDelay: ms(0, 20),
  respDelay: ms(0, 20),
  grantLag: ms(0.125, 5),
  useMs: ms(0.125, 60),
  reentrant: fc.array(fc.tuple(fraction, fraction), { maxLength: 2 }),
  acked: fc.integer({ min: 0, max: 9 }).map((n) => n < 8), // mostly acknowledged grants
  release: fc.constantFrom<HoldStep['release']>('ok', 'ok', 'ok', 'ok', 'unknown', 'late', 'none'),
  relReqDelay: ms(0, 20),
  relRespDelay: ms(0, 20),
  timeout: ms(1, 40),
  expireLag: ms(0, 5),
  tokenSkip: fc.integer({ min: 1, max: 3 }),
  contenders: fc.array(contenderArb, { maxLength: 2 }),
});

const historyArb = fc.record({
  steps: fc.array(stepArb, { minLength: 1, maxLength: 40 }),
  ttlMode: fc.boolean(),
  ttlMs: ms(200, 400),
});

describe('checkLockHistory: properties', () => {
  it('histories of a correct lock with random network delays pass', () => {
    fc.assert(
      fc.property(historyArb, ({ steps, ttlMode, ttlMs }) => {
        const { events } = buildHistory(steps, ttlMode, ttlMs);
        const r = checkLockHistory(events, { ttlsMayExpire: ttlMode });
        assert.deepEqual(r.violations, [], r.violations.join('\n'));
        assert.ok(r.stats.holds > 0 || events.length > 0);
      }),
      { numRuns: 400 },
    );
  });

  it('one injected hold overlapping a certain hold of another client always fails', () => {
    fc.assert(
      fc.property(
        historyArb,
        fc.nat(),
        fc.integer({ min: 0, max: 950 }).map((n) => n / 1000),
        ms(0.125, 20),
        ({ steps, ttlMode, ttlMs }, pick, where, length) => {
          const { events, windows } = buildHistory(steps, ttlMode, ttlMs);
          fc.pre(windows.length > 0);
          const w = windows[pick % windows.length]!;
          const x = w.start + (Math.min(w.end, w.start + 50) - w.start) * where;
          const id = 1_000_000;
          const injected: LockEvent[] = [
            {
              type: 'invoke',
              id,
              time: x - 0.5,
              client: 'intruder',
              op: 'acquire',
              resource: w.resource,
              ttlMs,
            },
            { type: 'complete', id, time: x, outcome: 'granted', fencing_token: 1e9 },
            {
              type: 'invoke',
              id: id + 1,
              time: x + length,
              client: 'intruder',
              op: 'release',
              resource: w.resource,
            },
            { type: 'complete', id: id + 1, time: x + length + 0.5, outcome: 'ok' },
          ];
          const r = checkLockHistory([...events, ...injected], { ttlsMayExpire: ttlMode });
          assert.equal(r.ok, false);
          assert.ok(
            r.violations.some((v) => v.startsWith('mutual exclusion') && v.includes('"intruder"')),
            r.violations.join('\n'),
          );
        },
      ),
      { numRuns: 400 },
    );
  });

  it('checks ~100k events quickly', () => {
    // Deterministic pseudo-random steps (mulberry32), the model as above, TTL mode for the most work.
    let seed = 42;
    const rnd = (): number => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const d = (max: number): number => Math.floor(rnd() * max * 8 + 1) / 8;
    const steps: HoldStep[] = [];
    for (let i = 0; i < 18_000; i++) {
      steps.push({
        resource: Math.floor(rnd() * 10),
        client: Math.floor(rnd() * 10),
        gap: d(30),
        reqDelay: d(20),
        respDelay: d(20),
        grantLag: d(5),
        useMs: d(60),
        reentrant: rnd() < 0.2 ? [[0.2, 0.4]] : [],
        acked: rnd() < 0.9,
        release: rnd() < 0.9 ? 'ok' : rnd() < 0.5 ? 'unknown' : 'late',
        relReqDelay: d(20),
        relRespDelay: d(20),
        timeout: d(40),
        expireLag: d(5),
        tokenSkip: 1,
        contenders:
          rnd() < 0.5 ? [{ client: 1, at: 0.5, sentAt: 0.3, answerDelay: 1, outcome: 'refused' }] : [],
      });
    }
    const { events } = buildHistory(steps, true, 300);
    assert.ok(events.length >= 90_000, `${events.length} events`);
    const t = performance.now();
    const r = checkLockHistory(events, { ttlsMayExpire: true });
    const took = performance.now() - t;
    assertClean(r);
    assert.ok(took < 3000, `took ${took.toFixed(0)} ms`);
  });
});
