// SIGTERM (issue 7): a leader hands leadership over before it goes, so the group has a new leader in
// far less than an election timeout; a request waiting on it gets an answer (not a reset); the
// process exits 0. (Write-back of M cache lines on SIGTERM is covered in cache-api.test.ts.)
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { TestCluster } from '../helpers/cluster.js';
import { waitFor } from '../helpers/wait.js';

async function post(url: string, path: string, body: unknown): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  return { status: res.status, body: text === '' ? null : (JSON.parse(text) as unknown) };
}

describe('graceful shutdown on SIGTERM', { timeout: 120_000 }, () => {
  let cluster: TestCluster;

  before(async () => {
    // Long election timeouts: a new leader within much less than 3 s can only come from a handover.
    cluster = await TestCluster.start({
      nodes: 3,
      electionMinMs: 3_000,
      electionMaxMs: 5_000,
      heartbeatMs: 300,
      direct: true,
      env: { LOG_LEVEL: 'warn' },
    });
  });

  after(async () => {
    await cluster?.stop();
  });

  it('the leader hands over, answers its waiting request, and exits 0', async () => {
    const { id: leader, term } = await cluster.leader(undefined, 30_000);
    const url = cluster.node(leader).url;
    const held = await post(url, '/lock/acquire', { resource: 'gs', client_id: 'holder', ttl_ms: 60_000 });
    assert.equal(held.status, 200, JSON.stringify(held.body));
    // A waiter parked on the leader when it is told to stop.
    const waiting = post(url, '/lock/acquire', {
      resource: 'gs',
      client_id: 'waiter',
      ttl_ms: 60_000,
      wait_ms: 20_000,
    }).then(
      (r) => r,
      (e: unknown) => ({ status: -1, body: String(e) }),
    );
    await waitFor('the waiter to be queued', async () => {
      const r = await fetch(`${url}/lock/status?resource=gs`);
      const s = (await r.json()) as { locks: { waiters: unknown[] }[] };
      return s.locks[0]?.waiters.length === 1;
    });

    const proc = cluster.node(leader).proc!;
    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
    const t0 = performance.now();
    proc.kill('SIGTERM');
    const survivors = cluster.nodes.filter((n) => n.id !== leader).map((n) => n.id);
    const next = await cluster.leader(survivors, 10_000);
    const took = performance.now() - t0;
    assert.ok(next.term > term, `new term ${next.term} after ${term}`);
    assert.ok(took < 2_500, `a new leader after ${Math.round(took)} ms: a handover, not an election timeout`);

    const answer = await waiting;
    assert.notEqual(answer.status, -1, `the waiting request got an HTTP answer, not ${String(answer.body)}`);
    assert.ok(
      answer.status === 503 || answer.status === 200,
      `waiter: ${answer.status} ${JSON.stringify(answer.body)}`,
    );
    if (answer.status === 503) {
      const code = (answer.body as { error: { code: string } }).error.code;
      assert.ok(['shutting_down', 'not_leader', 'no_leader', 'unavailable'].includes(code), code);
    }
    assert.equal(await exited, 0, 'a clean exit');
    // The lock table survived the handover: the hold is still there, on the new leader.
    const st = await fetch(`${cluster.node(next.id).url}/lock/status?resource=gs`);
    const body = (await st.json()) as { locks: { holders: { client_id: string }[] }[] };
    assert.deepEqual(
      body.locks[0]?.holders.map((h) => h.client_id),
      ['holder'],
    );
  });
});
