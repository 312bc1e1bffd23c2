// The lock service on the leader (src/lock/service.ts) over a fake Raft whose log applies only when
// the test says so, so that proposals and applies interleave as they can on a busy leader: a new
// leader's first commands, a retried blocking acquire racing the fate of the attempt it retries, a
// client that asks exclusive while it waits shared, what GET /lock/status shows, and the HTTP body
// of a refused acquire.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pino from 'pino';
import { LeaderForwarder } from '../../../src/api/forward.js';
import { lockRoutes } from '../../../src/api/routes/lock.js';
import { buildServer } from '../../../src/api/server.js';
import { parseClusterAddrs } from '../../../src/config/index.js';
import { DssError } from '../../../src/errors.js';
import { LockService, type AcquireGranted, type LockRaft } from '../../../src/lock/service.js';
import { LockTable } from '../../../src/lock/table.js';
import { createMetrics } from '../../../src/metrics/index.js';
import type { Json, RaftStatus, StateMachine } from '../../../src/raft/types.js';

interface Proposal {
  index: number;
  command: Json;
  resolve: (v: { index: number; result: Json }) => void;
}

/** A one-node log: proposals wait until commit() applies them in order (or at once with auto). */
class FakeRaft implements LockRaft {
  term = 1;
  role: RaftStatus['role'] = 'leader';
  auto = false;
  private last = 0;
  private queue: Proposal[] = [];
  readonly applied: { index: number; term: number; command: Json; result: Json }[] = [];

  constructor(private readonly sm: StateMachine) {}

  status(): RaftStatus {
    return {
      id: 'node1',
      role: this.role,
      term: this.term,
      leaderId: this.role === 'leader' ? 'node1' : null,
      commitIndex: this.last,
      lastApplied: this.last,
      lastIndex: this.last,
      firstIndex: 1,
      snapshotIndex: 0,
    };
  }

  propose(command: Json): Promise<{ index: number; result: Json }> {
    return new Promise((resolve) => {
      this.queue.push({ index: ++this.last, command, resolve });
      if (this.auto) this.commit();
    });
  }

  readIndex(): Promise<void> {
    return Promise.resolve();
  }

  /** For the HTTP server: a single node reaches only itself and gets no Raft traffic. */
  reachablePeers(): Set<string> {
    return new Set(['node1']);
  }

  handleRequests(): Promise<never[]> {
    return Promise.resolve([]);
  }

  /** Applies every proposal so far, in order; returns how many. */
  commit(): number {
    const batch = this.queue.splice(0);
    for (const p of batch) {
      const result = this.sm.apply(p.command, p.index, this.term);
      this.applied.push({ index: p.index, term: this.term, command: p.command, result });
      p.resolve({ index: p.index, result });
    }
    return batch.length;
  }

  pending(): Json[] {
    return this.queue.map((p) => p.command);
  }

  /** The ops of the proposals not applied yet, in log order. */
  pendingOps(): string[] {
    return this.queue.map((p) => (p.command as { op: string }).op);
  }

  opsOfTerm(term: number): string[] {
    return this.applied.filter((e) => e.term === term).map((e) => (e.command as { op: string }).op);
  }
}

const ELECTION_MS = 5_000;

function setup(opts: { maxHoldsPerClient?: number } = {}) {
  const clock = { now: 0 };
  const table = new LockTable();
  const svc = new LockService({
    table,
    defaultTtlMs: 60_000,
    electionTimeoutMaxMs: ELECTION_MS,
    // Ticks are driven by hand.
    monitorIntervalMs: 1_000_000,
    metrics: { acquire: () => undefined, deadlock: () => undefined },
    logger: pino({ level: 'silent' }),
    now: () => clock.now,
    ...opts,
  });
  const raft = new FakeRaft(svc.stateMachine);
  svc.attach(raft);
  const tick = (): void => (svc as unknown as { tick(): void }).tick();
  return { clock, table, svc, raft, tick };
}

/** Lets every settled promise run its callbacks. */
const flush = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Commits until `p` settles (each commit may let the service propose the next command). */
async function until<T>(raft: FakeRaft, p: Promise<T>): Promise<T> {
  let done = false;
  const out = p.finally(() => (done = true));
  out.catch(() => undefined);
  for (let i = 0; i < 100 && !done; i++) {
    raft.commit();
    await flush();
  }
  return out;
}

const acquire = (
  svc: LockService,
  resource: string,
  client_id: string,
  o: { mode?: 'exclusive' | 'shared'; ttl?: number; wait?: number } = {},
): Promise<AcquireGranted> =>
  svc.acquire({
    resource,
    client_id,
    mode: o.mode ?? 'exclusive',
    ttl_ms: o.ttl ?? 10_000,
    wait_ms: o.wait ?? 0,
  });

const code = (e: unknown): string => (e instanceof DssError ? e.code : String(e));

describe('LockService: a new leader', () => {
  it('proposes nothing before its extend_all has applied, so no hold ends early on its clock', async () => {
    const { clock, svc, raft } = setup();
    const a = await until(raft, acquire(svc, 'r', 'A'));
    assert.equal(a.expires_at, 10_000);
    // Another leader takes over in term 2, its clock 1 s ahead of the old one; at the old clock's
    // 9050 (A was told 10000) B tries the lock before the new leader's monitor has ticked.
    raft.term = 2;
    clock.now = 9_050 + 1_000;
    const b = acquire(svc, 'r', 'B');
    b.catch(() => undefined);
    await flush();
    assert.deepEqual(raft.pendingOps(), ['extend_all'], 'the acquire waits for the extension');
    await assert.rejects(until(raft, b), (e: unknown) => code(e) === 'lock_conflict');
    assert.deepEqual(raft.opsOfTerm(2), ['extend_all', 'acquire']);
    // A's hold, run out on the new clock, got an election timeout from now.
    const [st] = (await until(raft, svc.status('r'))).locks;
    assert.equal(st?.holders[0]?.expires_at, clock.now + ELECTION_MS);
  });

  it('release, renew and status wait for the extension too; one extend_all per term', async () => {
    const { clock, svc, raft } = setup();
    await until(raft, acquire(svc, 'r', 'A'));
    raft.term = 2;
    clock.now = 500;
    const calls = [svc.renew('r', 'A', 20_000), svc.status('r'), svc.release('r', 'A')];
    for (const c of calls) c.catch(() => undefined);
    await flush();
    assert.deepEqual(raft.pending(), [{ op: 'extend_all', extend_ms: ELECTION_MS, now: 500 }]);
    await until(raft, Promise.all(calls));
    assert.deepEqual(raft.opsOfTerm(2), ['extend_all', 'renew', 'release']);
  });

  it('an extension of an older term that commits late does not stand in for this term', async () => {
    const { clock, svc, raft } = setup();
    await until(raft, acquire(svc, 'r', 'A', { ttl: 100_000 }));
    raft.term = 2;
    clock.now = 50_000;
    const b = acquire(svc, 'r', 'B');
    b.catch(() => undefined);
    await flush();
    assert.deepEqual(raft.pendingOps(), ['extend_all']);
    // Leadership moved on and came back in term 4 before term 2's extend_all committed; it commits
    // now, in term 4, as the first entries of a new term do.
    raft.term = 4;
    raft.commit();
    await flush();
    assert.deepEqual(raft.pendingOps(), ['extend_all'], "term 4's own extension goes before the acquire");
    await assert.rejects(until(raft, b), (e: unknown) => code(e) === 'lock_conflict');
    assert.deepEqual(raft.opsOfTerm(4), ['extend_all', 'extend_all', 'acquire']);
  });

  it('the monitor extends first, then expires', async () => {
    const { clock, svc, raft, tick } = setup();
    await until(raft, acquire(svc, 'r', 'A', { ttl: 100 }));
    raft.term = 2;
    clock.now = 200; // A's hold ran out on this clock
    tick();
    await until(raft, flush());
    tick();
    await flush();
    assert.deepEqual(raft.pending(), [], 'nothing to expire: the hold was extended');
    clock.now = 200 + ELECTION_MS;
    tick();
    await flush();
    assert.deepEqual(raft.pendingOps(), ['expire']);
  });
});

describe('LockService: blocking acquires', () => {
  it('a retry is not answered by what happens to the attempt it retries', async () => {
    const { clock, svc, raft, tick } = setup();
    await until(raft, acquire(svc, 'r', 'H', { ttl: 60_000 }));
    // C's first attempt queues with a 1 s wait; its caller is gone by the time it times out.
    const first = acquire(svc, 'r', 'C', { wait: 1_000 });
    first.catch(() => undefined);
    await flush();
    assert.equal(raft.commit(), 1);
    await flush();
    clock.now = 1_000;
    tick(); // proposes wait_timeout(C), not yet applied
    await flush();
    const retry = acquire(svc, 'r', 'C', { wait: 30_000 });
    retry.catch(() => undefined);
    await flush();
    assert.deepEqual(raft.pendingOps(), ['wait_timeout', 'acquire']);
    raft.commit();
    await flush();
    await assert.rejects(first, (e: unknown) => code(e) === 'wait_timeout');
    // The retry queued a new waiter after the timeout removed the old one: it waits for H.
    let settled = false;
    void retry.then(
      () => (settled = true),
      () => (settled = true),
    );
    await flush();
    assert.equal(settled, false, 'the retry still waits');
    await until(raft, svc.release('r', 'H'));
    const g = await retry;
    assert.equal(g.client_id, 'C');
    assert.equal(g.mode, 'exclusive');
  });

  it('asking exclusive while waiting shared is answered with an exclusive grant, alone', async () => {
    const { svc, raft } = setup();
    await until(raft, acquire(svc, 'r', 'X'));
    const shared = acquire(svc, 'r', 'C', { mode: 'shared', wait: 10_000 });
    const exclusive = acquire(svc, 'r', 'C', { wait: 10_000 });
    const other = acquire(svc, 'r', 'D', { mode: 'shared', wait: 10_000 });
    other.catch(() => undefined);
    await flush();
    assert.equal(raft.commit(), 3);
    await flush();
    await until(raft, svc.release('r', 'X'));
    const [s, x] = await Promise.all([shared, exclusive]);
    assert.equal(x.mode, 'exclusive');
    assert.equal(s.mode, 'exclusive', 'an exclusive grant covers the shared request too');
    assert.equal(s.fencing_token, x.fencing_token);
    const [st] = (await until(raft, svc.status('r'))).locks;
    assert.deepEqual(
      st?.holders.map((h) => [h.client_id, h.mode]),
      [['C', 'exclusive']],
    );
    assert.deepEqual(st?.waiters, [{ client_id: 'D', mode: 'shared' }]);
  });
});

describe('LockService: status', () => {
  it('leaves out holds already expired at the leader clock', async () => {
    const { clock, svc, raft } = setup();
    await until(raft, acquire(svc, 'a', 'A', { ttl: 100 }));
    await until(raft, acquire(svc, 'b', 'B', { ttl: 10_000 }));
    clock.now = 500;
    const { locks } = await until(raft, svc.status());
    assert.deepEqual(
      locks.map((l) => [l.resource, l.holders.map((h) => h.client_id)]),
      [['b', ['B']]],
    );
  });
});

describe('lock routes: refusals', () => {
  it('an acquire refused by a limit is a 409 with the refusal body, not a 500', async () => {
    const { svc, raft } = setup({ maxHoldsPerClient: 1 });
    raft.auto = true;
    const cluster = parseClusterAddrs('node1=127.0.0.1:8001', 'http').members;
    const forwarder = new LeaderForwarder({
      nodeId: 'node1',
      cluster,
      raft,
      clusterSecret: null,
    });
    const app = await buildServer({
      nodeId: 'node1',
      roles: ['lock'],
      cluster,
      raft,
      metrics: createMetrics({ nodeId: 'node1', defaultMetrics: false }),
      plugins: [lockRoutes({ service: svc, forwarder, defaultTtlMs: 60_000, relayMarginMs: 2_000 })],
    });
    try {
      const post = (resource: string) =>
        app.inject({ method: 'POST', url: '/lock/acquire', payload: { resource, client_id: 'c' } });
      assert.equal((await post('r1')).statusCode, 200);
      const r = await post('r2');
      assert.equal(r.statusCode, 409, r.body);
      const body = r.json<{ granted: boolean; error: { code: string }; holders: unknown[] }>();
      assert.equal(body.granted, false);
      assert.equal(body.error.code, 'limit_exceeded');
      assert.deepEqual(body.holders, []);
    } finally {
      await app.close();
      await forwarder.close();
    }
  });
});
