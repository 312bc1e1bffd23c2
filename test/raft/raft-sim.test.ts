// Deterministic simulation of RaftCore clusters under crashes, partitions and a hostile network,
// checking Raft's safety properties after every event (see test/raft/sim/).
//   RAFT_SIM_SEEDS=5000 npm test -- raft-sim     more seeds (default 500 five-node seeds)
//   RAFT_SIM_SEED=123 npm test -- raft-sim       replay one seed (add RAFT_SIM_NODES=3 for 3 nodes)
//   RAFT_SIM_EVENTS=20000                        events per seed in the faulty phase
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RaftCore } from '../../src/raft/core.js';
import type { Ready } from '../../src/raft/types.js';
import { runSimulation, SimFailure, type SimStats } from './sim/cluster.js';
import type { CoreFactory, CoreLike } from './sim/core-like.js';

const createCore = (...args: ConstructorParameters<typeof RaftCore>): RaftCore => new RaftCore(...args);

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got ${raw}`);
  return n;
}

const EVENTS = envInt('RAFT_SIM_EVENTS', 8000);
const ONE_SEED = process.env.RAFT_SIM_SEED ? envInt('RAFT_SIM_SEED', 0) : null;
const ONLY_NODES = process.env.RAFT_SIM_NODES ? envInt('RAFT_SIM_NODES', 5) : null;
const SEEDS_5 = envInt('RAFT_SIM_SEEDS', 500);
const SEEDS_3 = Math.max(20, Math.round(SEEDS_5 / 10));
const CHUNK = 50;

function replayCommand(seed: number, nodes: number): string {
  const env = [`RAFT_SIM_SEED=${seed}`];
  if (nodes !== 5) env.push(`RAFT_SIM_NODES=${nodes}`);
  if (process.env.RAFT_SIM_EVENTS) env.push(`RAFT_SIM_EVENTS=${EVENTS}`);
  return `${env.join(' ')} npm test -- raft-sim`;
}

function simulate(seed: number, nodeCount: number): SimStats {
  return runSimulation({
    seed,
    nodeCount,
    events: EVENTS,
    createCore,
    replay: replayCommand(seed, nodeCount),
  });
}

interface Totals {
  seeds: number;
  events: number;
  leaders: number;
  committed: number;
  crashes: number;
  partitions: number;
  snapshotsInstalled: number;
  readsConfirmed: number;
  transfers: number;
  overlappingLeaderTicks: number;
  maxRecover: number;
}

function add(t: Totals, s: SimStats): void {
  t.seeds++;
  t.events += s.events;
  t.leaders += s.leadersElected;
  t.committed += s.committed;
  t.crashes += s.crashes;
  t.partitions += s.partitions;
  t.snapshotsInstalled += s.snapshotsInstalled;
  t.readsConfirmed += s.readsConfirmed;
  t.transfers += s.transfers;
  t.overlappingLeaderTicks += s.overlappingLeaderTicks;
  t.maxRecover = Math.max(t.maxRecover, s.ticksToRecover);
}

function summary(t: Totals): string {
  return (
    `${t.seeds} seeds, ${t.events} events: ${t.leaders} leaders, ${t.committed} entries committed, ` +
    `${t.crashes} crashes, ${t.partitions} partitions, ${t.snapshotsInstalled} snapshots installed, ` +
    `${t.readsConfirmed} reads confirmed, ${t.transfers} transfers, ${t.overlappingLeaderTicks} ticks with ` +
    `two would-be leaders; worst recovery ${t.maxRecover} ticks`
  );
}

function runSeeds(nodeCount: number, first: number, count: number, totals: Totals): void {
  for (let seed = first; seed < first + count; seed++) add(totals, simulate(seed, nodeCount));
}

const fresh = (): Totals => ({
  seeds: 0,
  events: 0,
  leaders: 0,
  committed: 0,
  crashes: 0,
  partitions: 0,
  snapshotsInstalled: 0,
  readsConfirmed: 0,
  transfers: 0,
  overlappingLeaderTicks: 0,
  maxRecover: 0,
});

if (ONE_SEED !== null) {
  for (const nodes of ONLY_NODES !== null ? [ONLY_NODES] : [5, 3]) {
    test(`raft simulation: seed ${ONE_SEED}, ${nodes} nodes`, (t) => {
      const stats = simulate(ONE_SEED, nodes);
      t.diagnostic(JSON.stringify(stats));
    });
  }
} else {
  describe('raft simulation, 5 nodes', () => {
    const totals = fresh();
    for (let first = 1; first <= SEEDS_5; first += CHUNK) {
      const count = Math.min(CHUNK, SEEDS_5 - first + 1);
      test(`seeds ${first}..${first + count - 1}`, () => runSeeds(5, first, count, totals));
    }
    test('the faults actually happened', (t) => {
      t.diagnostic(summary(totals));
      assert.equal(totals.seeds, SEEDS_5);
      if (SEEDS_5 < 100) return; // too few seeds to expect every kind of fault
      assert.ok(totals.crashes > 0 && totals.partitions > 0, 'crashes and partitions were injected');
      assert.ok(totals.snapshotsInstalled > 0, 'some follower caught up through InstallSnapshot');
      assert.ok(totals.readsConfirmed > 0, 'some ReadIndex was confirmed');
      assert.ok(totals.transfers > 0, 'some leadership transfer was attempted');
    });
  });

  describe('raft simulation, 3 nodes', () => {
    const totals = fresh();
    test(`seeds 1..${SEEDS_3}`, (t) => {
      runSeeds(3, 1, SEEDS_3, totals);
      t.diagnostic(summary(totals));
    });
  });
}

// The harness must not rot into a no-op: cores broken on purpose have to be caught, with a replay line.
describe('raft simulation catches broken cores', { skip: ONE_SEED !== null }, () => {
  /** RaftCore with its Readies rewritten by `tamper` on node n2. */
  const tampered =
    (tamper: (rd: Ready, core: CoreLike) => Ready): CoreFactory =>
    (config, persisted) => {
      const core = new RaftCore(config, persisted);
      if (config.id !== 'n2') return core;
      const ready = core.ready.bind(core);
      core.ready = () => tamper(ready(), core);
      return core;
    };

  const expectCaught = (name: string, factory: CoreFactory, pattern: RegExp): void => {
    test(name, () => {
      for (let seed = 1; seed <= 40; seed++) {
        try {
          runSimulation({ seed, nodeCount: 5, events: 4000, createCore: factory, replay: `replay ${seed}` });
        } catch (err) {
          assert.ok(err instanceof SimFailure, String(err));
          assert.match(err.message, pattern);
          assert.match(err.message, new RegExp(`replay ${seed}`));
          assert.match(err.message, /Last \d+ events:/);
          return;
        }
      }
      assert.fail('no seed caught it');
    });
  };

  expectCaught(
    'a node that forgets to persist its vote',
    tampered((rd) => (rd.hardState ? { ...rd, hardState: { ...rd.hardState, vote: null } } : rd)),
    /persist before send|vote once per term/,
  );
  expectCaught(
    'a node that applies a different command',
    tampered((rd) => ({
      ...rd,
      committed: rd.committed.map((e) => (e.kind === 'command' ? { ...e, command: 'evil' } : e)),
    })),
    /state machine safety/,
  );
  expectCaught(
    'a leader that serves reads at a stale index',
    tampered((rd) => ({ ...rd, readStates: rd.readStates.map((r) => ({ ...r, index: 0 })) })),
    /readIndex violated: n2 confirms read \d+ at index 0, but index [1-9]/,
  );
  expectCaught(
    'a node that acknowledges entries before persisting them',
    tampered((rd) => ({ ...rd, entries: rd.entries.slice(0, -1) })),
    /persist before send violated: n2 acknowledges/,
  );
});
