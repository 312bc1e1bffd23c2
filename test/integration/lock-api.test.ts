// The lock API on 3 real node processes: semantics over HTTP through any node, blocking acquires
// answered the moment they are granted, TTL expiry of a crashed client's lock.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DssClient, DssHttpError } from '../../src/client/index.js';
import { TestCluster } from '../helpers/cluster.js';
import { waitFor } from '../helpers/wait.js';

async function refusal(p: Promise<unknown>): Promise<DssHttpError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof DssHttpError) return e;
    throw e;
  }
  throw new Error('expected a refusal');
}

describe('lock API (real processes)', () => {
  let c: TestCluster;
  let clients: DssClient[];

  before(async () => {
    c = await TestCluster.start({ nodes: 3 });
    await c.leader();
    // One client per node, pinned to it: followers must relay to the leader transparently.
    clients = c.nodes.map((n) => new DssClient({ urls: [n.url], retries: 5 }));
  });

  after(async () => {
    await Promise.all(clients.map((x) => x.close()));
    await c.stop();
  });

  it('grants, refuses a conflicting acquire with the holders, and releases — through any node', async () => {
    const [a, b] = clients as [DssClient, DssClient];
    const g = await a.lock.acquire('api-r1', 'alice', { ttlMs: 60_000 });
    assert.equal(g.granted, true);
    assert.equal(g.mode, 'exclusive');
    assert.ok(g.fencing_token > 0);
    assert.ok(g.expires_at > Date.now());
    const again = await b.lock.acquire('api-r1', 'alice', { ttlMs: 60_000 });
    assert.equal(again.fencing_token, g.fencing_token, 'reentrant acquire keeps the token');
    const err = await refusal(b.lock.acquire('api-r1', 'bob'));
    assert.equal(err.status, 409);
    assert.equal(err.code, 'lock_conflict');
    const body = err.body as { granted: boolean; holders: { client_id: string }[] };
    assert.equal(body.granted, false);
    assert.deepEqual(
      body.holders.map((h) => h.client_id),
      ['alice'],
    );
    const notHolder = await refusal(b.lock.release('api-r1', 'bob'));
    assert.equal(notHolder.code, 'not_holder');
    const st = await clients[2]!.lock.status('api-r1');
    assert.equal(st.locks[0]?.holders[0]?.client_id, 'alice', 'a refused release changes nothing');
    assert.deepEqual(await a.lock.release('api-r1', 'alice'), { released: true });
    const g2 = await b.lock.acquire('api-r1', 'bob');
    assert.ok(g2.fencing_token > g.fencing_token, 'fencing tokens grow');
    await b.lock.release('api-r1', 'bob');
  });

  it('answers a blocked acquire the moment the holder releases (no polling)', async () => {
    const [a, b] = clients as [DssClient, DssClient];
    await a.lock.acquire('api-r2', 'alice', { ttlMs: 60_000 });
    const waiting = b.lock.acquire('api-r2', 'bob', { waitMs: 20_000 });
    await waitFor('bob queued', async () => {
      const st = await a.lock.status('api-r2');
      return st.locks[0]?.waiters.some((w) => w.client_id === 'bob');
    });
    const releasedAt = Date.now();
    await a.lock.release('api-r2', 'alice');
    const g = await waiting;
    assert.equal(g.client_id, 'bob');
    assert.ok(Date.now() - releasedAt < 1000, `granted ${Date.now() - releasedAt} ms after the release`);
    await b.lock.release('api-r2', 'bob');
  });

  it('a blocked acquire is still answered with its grant after its leader lost leadership', async () => {
    const old = await c.leader();
    const oldUrl = c.node(old.id).url;
    const viaOld = new DssClient({ urls: [oldUrl], retries: 0 });
    const others = c.nodes.filter((n) => n.id !== old.id);
    const viaOthers = new DssClient({ urls: others.map((n) => n.url), retries: 10, backoffBaseMs: 50 });
    try {
      await viaOthers.lock.acquire('api-lost-leader', 'alice', { ttlMs: 60_000 });
      const waiting = viaOld.lock.acquire('api-lost-leader', 'bob', { waitMs: 20_000, ttlMs: 60_000 });
      waiting.catch(() => undefined);
      await waitFor('bob queued', async () => {
        const st = await viaOthers.lock.status('api-lost-leader');
        return st.locks[0]?.waiters.some((w) => w.client_id === 'bob');
      });
      c.partition([[old.id], others.map((n) => n.id)]);
      await waitFor('a new leader among the others', async () => {
        const l = await c.leader(others.map((n) => n.id));
        return l.term > old.term;
      });
      // Released under the new leader while the old one is cut off: bob's grant is decided there.
      await viaOthers.lock.release('api-lost-leader', 'alice');
      c.heal();
      const g = await waiting;
      assert.equal(g.client_id, 'bob');
      const st = await viaOthers.lock.status('api-lost-leader');
      assert.equal(st.locks[0]?.holders[0]?.fencing_token, g.fencing_token);
      await viaOthers.lock.release('api-lost-leader', 'bob');
    } finally {
      c.heal();
      await viaOld.close();
      await viaOthers.close();
    }
  });

  it('a blocked acquire that is not granted in time gets 409 wait_timeout', async () => {
    const [a, b] = clients as [DssClient, DssClient];
    await a.lock.acquire('api-r3', 'alice', { ttlMs: 60_000 });
    const t0 = Date.now();
    const err = await refusal(b.lock.acquire('api-r3', 'bob', { waitMs: 300 }));
    assert.equal(err.code, 'wait_timeout');
    assert.ok(Date.now() - t0 >= 300);
    const st = await a.lock.status('api-r3');
    assert.deepEqual(st.locks[0]?.waiters, [], 'the timed-out waiter is gone');
    await a.lock.release('api-r3', 'alice');
  });

  it('shared holders coexist; an exclusive request waits for all of them', async () => {
    const [a, b, d] = clients as [DssClient, DssClient, DssClient];
    await a.lock.acquire('api-r4', 's1', { mode: 'shared' });
    await b.lock.acquire('api-r4', 's2', { mode: 'shared' });
    const x = d.lock.acquire('api-r4', 'x', { waitMs: 10_000 });
    await a.lock.release('api-r4', 's1');
    await b.lock.release('api-r4', 's2');
    assert.equal((await x).mode, 'exclusive');
    await d.lock.release('api-r4', 'x');
  });

  it('a deadlock is broken with 409 deadlock naming the cycle', async () => {
    const [a, b] = clients as [DssClient, DssClient];
    await a.lock.acquire('dl-1', 'p', { ttlMs: 60_000 });
    await b.lock.acquire('dl-2', 'q', { ttlMs: 60_000 });
    const pWaits = a.lock.acquire('dl-2', 'p', { waitMs: 10_000 });
    await waitFor('p queued', async () =>
      (await a.lock.status('dl-2')).locks[0]?.waiters.some((w) => w.client_id === 'p'),
    );
    const err = await refusal(b.lock.acquire('dl-1', 'q', { waitMs: 10_000 }));
    assert.equal(err.code, 'deadlock', 'q closed the cycle and is the youngest waiter');
    const cycle = (err.body as { cycle: string[] }).cycle;
    assert.deepEqual([...cycle].sort(), ['p', 'q']);
    await b.lock.release('dl-2', 'q');
    assert.equal((await pWaits).client_id, 'p');
    await a.lock.release('dl-1', 'p');
    await a.lock.release('dl-2', 'p');
  });

  it("a crashed client's lock expires within TTL plus a heartbeat", async () => {
    const [a, b] = clients as [DssClient, DssClient];
    const ttl = 400;
    const g = await a.lock.acquire('api-ttl', 'crashed', { ttlMs: ttl });
    // The client never renews or releases. Another waits for the lock.
    const t = b.lock.acquire('api-ttl', 'next', { waitMs: 10_000 });
    const g2 = await t;
    const late = Date.now() - g.expires_at;
    assert.ok(late < 50 + 250, `granted ${late} ms after the expiry (heartbeat 50 ms + slack)`);
    assert.ok(g2.fencing_token > g.fencing_token);
    await b.lock.release('api-ttl', 'next');
  });

  it('rejects bad input with 400 naming the field, never 5xx', async () => {
    for (const body of [
      { resource: 'x' },
      { resource: 'x', client_id: 'c', ttl_ms: '100' },
      { resource: 123, client_id: 'c' },
      { resource: 'x', client_id: 'c', wait_ms: -1 },
      { resource: 'bad id!', client_id: 'c' },
      { resource: 'x', client_id: 'c', mode: 'weird' },
    ]) {
      const res = await fetch(`${c.nodes[1]!.url}/lock/acquire`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      assert.equal(res.status, 400, JSON.stringify(body));
      const e = (await res.json()) as { error: { code: string; message: string } };
      assert.equal(e.error.code, 'bad_request');
    }
  });

  it('answers 503 no_leader with Retry-After when a majority is gone (last: it stops nodes)', async () => {
    const leader = await c.leader();
    const survivor = c.nodes.find((n) => n.id !== leader.id)!;
    for (const n of c.nodes) if (n.id !== survivor.id) await c.kill(n.id);
    await waitFor(
      'the survivor knows it has no leader',
      async () => (await c.status(survivor.id)).raft.leader_id === null,
    );
    const res = await fetch(`${survivor.url}/lock/acquire`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ resource: 'nl', client_id: 'c' }),
    });
    assert.equal(res.status, 503);
    assert.ok(Number(res.headers.get('retry-after')) >= 1);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'no_leader');
  });
});
