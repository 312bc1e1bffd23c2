// RaftNode (the driver): when it takes local snapshots. A snapshot holds the Raft loop for a time
// that grows with the state, so the gap between snapshots must grow with the state too (else a large
// lock table pauses the node every RAFT_SNAPSHOT_EVERY entries), and a random share of it keeps
// nodes that apply the same entries from pausing together.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import pino from 'pino';
import { RaftNode } from '../../../src/raft/node.js';
import { NoopStateMachine } from '../../../src/raft/noop-state-machine.js';
import { MemoryStorage } from '../../../src/raft/storage/memory-storage.js';
import type { Transport } from '../../../src/transport/transport.js';
import { waitFor } from '../../helpers/wait.js';

/** A state machine that claims `records` records, whatever it holds. */
class SizedStateMachine extends NoopStateMachine {
  records = 0;
  override size(): number {
    return this.records;
  }
}

const nowhere: Transport = {
  send: () => Promise.reject(new Error('a single-node cluster sends nothing')),
  close: () => Promise.resolve(),
};

let running: RaftNode[] = [];

afterEach(async () => {
  await Promise.all(running.map((n) => n.stop()));
  running = [];
});

async function soloNode(
  sm: SizedStateMachine,
  random: () => number,
): Promise<{ node: RaftNode; snapshots: number[] }> {
  const snapshots: number[] = [];
  const node = new RaftNode(
    {
      id: 'n1',
      voters: ['n1'],
      electionTimeoutMinMs: 50,
      electionTimeoutMaxMs: 100,
      heartbeatIntervalMs: 20,
      storage: new MemoryStorage(),
      transport: nowhere,
      stateMachine: sm,
      logger: pino({ level: 'silent' }),
      snapshotEvery: 10,
      snapshotRetain: 5,
      random,
    },
    { onSnapshot: (s) => snapshots.push(s.index) },
  );
  running.push(node);
  await node.start();
  await waitFor('n1 leads', () => node.status().role === 'leader');
  return { node, snapshots };
}

/** Proposes one at a time, so the driver looks at every applied index. */
async function proposeMany(node: RaftNode, n: number): Promise<void> {
  for (let i = 0; i < n; i++) await node.propose({ i });
}

function gaps(indexes: number[]): number[] {
  return indexes.slice(1).map((x, i) => x - indexes[i]!);
}

describe('RaftNode: local snapshot spacing', () => {
  it('snapshots every RAFT_SNAPSHOT_EVERY entries while the state is small', async () => {
    const sm = new SizedStateMachine();
    sm.records = 4; // half of it is below the configured 10
    const { node, snapshots } = await soloNode(sm, () => 0.99);
    await proposeMany(node, 45);
    assert.ok(snapshots.length >= 4, `snapshots at ${snapshots.join(', ')}`);
    assert.deepEqual(new Set(gaps(snapshots)), new Set([10]));
    assert.ok(node.status().snapshotIndex >= 40);
  });

  it('waits half the state size, plus up to half again at random, when the state is large', async () => {
    const sm = new SizedStateMachine();
    sm.records = 60; // 30 entries, and 0 to 15 more
    const draws = [0, 0.5, 0.99];
    let next = 0;
    const { node, snapshots } = await soloNode(sm, () => draws[next++ % draws.length]!);
    await proposeMany(node, 120);
    // The first gap is from index 0 (the election's no-op is entry 1).
    const spacing = [snapshots[0]!, ...gaps(snapshots)];
    // Each gap was drawn after the previous snapshot, so the draws of the election timer come first;
    // what matters is that every gap lies in [30, 45] and they are not all equal.
    for (const g of spacing) assert.ok(g >= 30 && g <= 45, `gap ${g} (snapshots at ${snapshots.join(', ')})`);
    assert.ok(new Set(spacing).size > 1, `equal gaps ${spacing.join(', ')}: no jitter`);
  });

  it('follows the state as it grows', async () => {
    const sm = new SizedStateMachine();
    const { node, snapshots } = await soloNode(sm, () => 0);
    await proposeMany(node, 25);
    const small = snapshots.length;
    assert.ok(small >= 2);
    sm.records = 100; // the next gap, chosen after the next snapshot, is 50
    await proposeMany(node, 100);
    const after = gaps(snapshots.slice(small));
    assert.ok(after.length >= 1 && after.every((g) => g === 50), `gaps after growth: ${after.join(', ')}`);
  });
});
