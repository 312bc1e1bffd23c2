// Raft on real processes: 3 nodes on loopback with fast timeouts (election 150-300 ms, heartbeat
// 50 ms), faults injected with signals and TCP-proxy partitions.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { TestCluster, type NodeStatus } from '../helpers/cluster.js';
import { waitFor } from '../helpers/wait.js';

/** Records every (term, leader) any node reports; a term with two leaders fails the test. */
class LeaderHistory {
  private readonly leaders = new Map<number, string>();
  private timer: NodeJS.Timeout | null = null;
  violation: string | null = null;

  observe(statuses: NodeStatus[]): void {
    for (const s of statuses) {
      if (s.raft.state !== 'leader') continue;
      const prev = this.leaders.get(s.raft.term);
      if (prev !== undefined && prev !== s.node_id) {
        this.violation = `term ${s.raft.term} has two leaders: ${prev} and ${s.node_id}`;
      }
      this.leaders.set(s.raft.term, s.node_id);
    }
  }

  watch(c: TestCluster): void {
    const poll = (): void => {
      void c.statuses().then(
        (s) => this.observe(s),
        () => undefined,
      );
    };
    this.timer = setInterval(poll, 25);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    assert.equal(this.violation, null);
  }
}

async function proposeMany(c: TestCluster, n: number, tag: string): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i += 10) {
    const batch = Array.from({ length: Math.min(10, n - i) }, (_, k) => `${tag}-${i + k}`);
    await Promise.all(batch.map((id) => c.proposeToLeader({ id })));
    ids.push(...batch);
  }
  return ids;
}

describe('raft cluster (real processes)', () => {
  let c: TestCluster;
  let history: LeaderHistory;

  before(async () => {
    c = await TestCluster.start({
      nodes: 3,
      env: { RAFT_SNAPSHOT_EVERY: '100', RAFT_SNAPSHOT_RETAIN: '10' },
    });
    history = new LeaderHistory();
    history.watch(c);
  });

  after(async () => {
    history.stop();
    await c.stop();
  });

  afterEach(async (t) => {
    // Leave the cluster whole for the next test whatever happened.
    c.heal();
    for (const n of c.nodes) {
      if (n.paused) c.resume(n.id);
      if (!n.proc) await c.restart(n.id);
    }
    void t;
  });

  it('elects exactly one leader that every node follows', async () => {
    const { id, term } = await c.leader();
    assert.ok(id.startsWith('node'));
    assert.ok(term >= 1);
    await c.propose(id, { id: 'first' });
  });

  it('a follower relays proposals to the leader', async () => {
    const leader = await c.leader();
    const follower = c.nodes.find((n) => n.id !== leader.id)!;
    const res = await fetch(`${follower.url}/debug/raft/propose`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ command: { id: 'relayed' } }),
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-dss-node'), follower.id);
    assert.equal(res.headers.get('x-dss-leader'), leader.id);
    await waitFor('relayed entry applied on the follower', async () =>
      (await c.smState(follower.id)).ids.includes('relayed'),
    );
  });

  it('a linearizable read on any node sees every acknowledged write (ReadIndex)', async () => {
    const leader = await c.leader();
    for (let i = 0; i < 5; i++) {
      await c.propose(leader.id, { id: `read-${i}` });
      // Ask every node right after the acknowledgement: followers relay to the leader, which answers
      // only after a quorum heartbeat round and after applying up to its commit index.
      for (const n of c.nodes) {
        const res = await fetch(`${n.url}/debug/raft/read`);
        assert.equal(res.status, 200);
        const st = (await res.json()) as { ids: string[] };
        assert.ok(st.ids.includes(`read-${i}`), `${n.id} read misses read-${i}`);
      }
    }
  });

  it('SIGKILL of the leader gives a new leader that commits', async () => {
    const old = await c.leader();
    await c.kill(old.id);
    const others = c.nodes.filter((n) => n.id !== old.id).map((n) => n.id);
    const next = await c.leader(others);
    assert.notEqual(next.id, old.id);
    assert.ok(next.term > old.term);
    await c.propose(next.id, { id: 'after-kill' });
    await c.restart(old.id);
    const again = await c.leader();
    assert.equal(again.term, next.term, 'the restarted node must not disrupt the cluster');
  });

  it('a SIGSTOPped leader that resumes steps down without disrupting the new term (PreVote)', async () => {
    const old = await c.leader();
    c.pause(old.id);
    const others = c.nodes.filter((n) => n.id !== old.id).map((n) => n.id);
    const next = await c.leader(others);
    await c.propose(next.id, { id: 'during-pause' });
    c.resume(old.id);
    await waitFor('old leader follows the new one', async () => {
      const s = await c.status(old.id);
      return s.raft.state === 'follower' && s.raft.leader_id === next.id;
    });
    const after = await c.leader();
    assert.equal(after.id, next.id);
    assert.equal(after.term, next.term);
  });

  it('a restarted follower catches up, via InstallSnapshot after compaction', async () => {
    const leader = await c.leader();
    const follower = c.nodes.find((n) => n.id !== leader.id)!.id;
    await c.kill(follower);
    const ids = await proposeMany(c, 250, 'snap');
    await c.restart(follower);
    const want = await c.smState(leader.id);
    await waitFor('restarted follower has the same state machine', async () => {
      const got = await c.smState(follower);
      return got.digest === want.digest || (await c.smState(leader.id)).digest === got.digest;
    });
    const got = await c.smState(follower);
    for (const id of ids) assert.ok(got.ids.includes(id), `follower lacks ${id}`);
    const metrics = await (await fetch(`${c.node(follower).url}/metrics`)).text();
    const m = /raft_snapshots_installed_total(?:\{[^}]*\})? (\d+)/.exec(metrics);
    assert.ok(m && Number(m[1]) >= 1, 'the follower should have caught up through a snapshot');
  });

  it('a full cluster restart keeps every committed entry', async () => {
    const ids = await proposeMany(c, 60, 'restart');
    await Promise.all(c.nodes.map((n) => c.kill(n.id)));
    for (const n of c.nodes) await c.restart(n.id);
    await c.proposeToLeader({ id: 'after-restart' });
    for (const n of c.nodes) {
      await waitFor(`${n.id} applied everything`, async () => {
        const st = await c.smState(n.id);
        return ids.every((id) => st.ids.includes(id)) && st.ids.includes('after-restart');
      });
    }
  });

  it('a minority partition makes no progress and its old leader steps down (CheckQuorum)', async () => {
    const old = await c.leader();
    const majority = c.nodes.filter((n) => n.id !== old.id).map((n) => n.id);
    c.partition([[old.id], majority]);
    const cut = Date.now();
    await waitFor(
      'isolated leader steps down',
      async () => (await c.status(old.id)).raft.state !== 'leader',
      { timeoutMs: 2000 },
    );
    // Step-down within an election timeout (150 ms) plus a heartbeat, with slack for a loaded machine.
    assert.ok(Date.now() - cut < 1500, `stepped down after ${Date.now() - cut} ms`);
    await assert.rejects(c.propose(old.id, { id: 'minority' }, 1000));
    const next = await c.leader(majority);
    await c.propose(next.id, { id: 'majority' });
    const before = await c.status(old.id);
    c.heal();
    await waitFor('old leader rejoins as follower', async () => {
      const s = await c.status(old.id);
      return s.raft.state === 'follower' && s.raft.leader_id === next.id;
    });
    const after = await c.leader();
    assert.equal(after.id, next.id, 'the rejoining node must not take over');
    assert.ok(before.raft.commit_index <= (await c.status(old.id)).raft.commit_index);
  });
});
