// A deterministic simulation of a Raft cluster: N RaftCores, a fake clock, a network that drops,
// delays, duplicates, reorders and partitions, disks that persist each Ready after a random delay,
// and crashes that lose everything not yet on disk. One seed fixes every choice (a Prng stream
// drives the environment, forked streams drive each core's election timeouts), so any failure
// replays exactly from its seed.
//
// The environment, per seed (see makeProfile):
// - clock: every node ticks every ~TICK time units with its own skew (±5%) and jitter;
// - network: random latency (sometimes very long: reordering across terms), drops, duplicates,
//   partitions (isolate a node, minority/majority split, one-way cut, single link; often the
//   leader) that heal after a while; failed sends are reported to the sender's core
//   (reportSnapshot / reportUnreachable) the way a transport would;
// - disk: the driver's loop per Ready (send appends, persist -> send the rest -> apply -> advance) with the persist step
//   completing after a random delay while the core keeps stepping and ticking meanwhile; local
//   snapshots + compact every few applied entries (optionally retaining some entries);
// - crashes: lose the in-flight Ready, possibly the undelivered outgoing messages and the last
//   unsynced (mustSync=false) write; a restart builds a new core from the DurableStore and a state
//   machine from the stored snapshot, then re-applies what the core hands out;
// - clients: proposals (mostly to whoever thinks it leads), ReadIndex requests, leadership
//   transfers and forced campaigns.
//
// Checked after every event (invariants.ts, storage.ts): election safety, log matching (over every
// log ever observed), leader completeness, state machine safety, ReadIndex linearizability,
// persist-before-send, vote-once-per-term on disk, commit monotonicity. At the end of each seed the
// faults stop and every node restarts: a leader must commit a fresh entry and every node must apply
// everything ever applied anywhere (durability + liveness).
import type {
  Entry,
  Message,
  NodeId,
  RaftConfig,
  Ready,
  ReadState,
  Snapshot,
} from '../../../src/raft/types.js';
import type { CoreFactory, CoreLike } from './core-like.js';
import { EventQueue } from './heap.js';
import { freshMemo, type LogCheckMemo, SafetyChecker } from './invariants.js';
import { Prng } from './prng.js';
import { ChainMachine, entryKey, parseChainState } from './state-machine.js';
import { cloneEntry, cloneSnapshot, DurableStore } from './storage.js';
import { InvariantViolation, violation } from './violation.js';

/** Simulated time units per nominal tick. */
export const TICK = 100;
/** Once faults stop, messages and disk writes take at most this long (half a tick). */
const CALM_LATENCY = 50;
/** Clients stop proposing to a leader with this many uncommitted entries. */
const MAX_BACKLOG = 64;

export interface SimOptions {
  seed: number;
  nodeCount: number;
  /** Events in the faulty phase; the healing phase that follows has its own bound. */
  events: number;
  createCore: CoreFactory;
  /** Shell command that replays this run, printed with any failure. */
  replay: string;
  /** Events kept for the failure report (default 30). */
  traceLength?: number;
}

export interface SimStats {
  seed: number;
  events: number;
  ticks: number;
  messages: number;
  delivered: number;
  leadersElected: number;
  maxTerm: number;
  committed: number;
  proposals: number;
  crashes: number;
  partitions: number;
  snapshotsSent: number;
  snapshotsInstalled: number;
  localSnapshots: number;
  readsConfirmed: number;
  readsDropped: number;
  transfers: number;
  /** Ticks (of n1's clock) during which two nodes believed they were leader (of different terms). */
  overlappingLeaderTicks: number;
  /** Simulated ticks the healed cluster needed to commit a fresh entry everywhere. */
  ticksToRecover: number;
  profile: string;
}

/** The per-seed random shape of a run: protocol options and how hostile the environment is. */
interface Profile {
  preVote: boolean;
  checkQuorum: boolean;
  electionMin: number;
  electionMax: number;
  heartbeat: number;
  maxEntries: number;
  maxInflight: number;
  dropRate: number;
  dupRate: number;
  latencyMax: number;
  longDelayRate: number;
  persistImmediate: number;
  persistDelayMax: number;
  faultGapMax: number;
  wCrash: number;
  wPartition: number;
  wTransfer: number;
  wCampaign: number;
  downMax: number;
  maxDown: number;
  partitionMax: number;
  proposeGapMax: number;
  proposeBatch: number;
  readGapMax: number;
  snapshotEvery: number;
  snapshotRetain: number;
  purgeOnCrash: number;
  /** Probability that a crash or partition picks the current leader. */
  hitLeader: number;
  maxPartitions: number;
  /** Probability that a crash also loses the last writes made without fsync (mustSync=false). */
  loseUnsynced: number;
}

type SimEvent =
  | { k: 'tick'; node: number; inc: number }
  | { k: 'deliver'; m: Message; from: number; to: number; fromInc: number; report: boolean }
  | { k: 'persist'; node: number; inc: number; rd: Ready }
  | { k: 'reportSnapshot'; node: number; inc: number; peer: NodeId; ok: boolean }
  | { k: 'reportUnreachable'; node: number; inc: number; peer: NodeId }
  | { k: 'propose' }
  | { k: 'read' }
  | { k: 'fault' }
  | { k: 'restart'; node: number }
  | { k: 'heal'; partition: number }
  | { k: 'final' };

interface SimNode {
  id: NodeId;
  idx: number;
  core: CoreLike | null;
  /** Incarnation: bumped by crash and restart so events of a dead incarnation are ignored. */
  inc: number;
  /** Incarnations whose undelivered outgoing messages died with them. */
  purged: Set<number>;
  store: DurableStore;
  sm: ChainMachine;
  applied: number;
  lastSnapIndex: number;
  inflight: Ready | null;
  /** ReadIndex requests of this incarnation: id -> highest index applied anywhere when asked. */
  pendingReads: Map<number, number>;
  servable: ReadState[];
  lastCommit: number;
  lastRole: string;
  lastTerm: number;
  period: number;
  rng: Prng;
  memo: LogCheckMemo;
}

interface TraceSlot {
  no: number;
  time: number;
  ev: SimEvent | null;
  note: string | null;
}

export class SimFailure extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SimFailure';
  }
}

export function runSimulation(opts: SimOptions): SimStats {
  return new Simulation(opts).run();
}

class Simulation {
  private readonly rng: Prng;
  private readonly p: Profile;
  private readonly nodes: SimNode[] = [];
  private readonly byId = new Map<NodeId, number>();
  private readonly voters: NodeId[];
  private readonly queue = new EventQueue<SimEvent>();
  private readonly checker = new SafetyChecker();
  /** Ring buffer of the last `traceLength` events and notes. */
  private readonly trace: TraceSlot[] = [];
  private tracePos = 0;
  private readonly traceLength: number;
  private now = 0;
  private eventNo = 0;
  private faulty = true;
  /** blocked[from][to] > 0: the directed link is cut by that many active partitions. */
  private readonly blocked: number[][];
  private readonly partitions = new Map<number, [number, number][]>();
  private partitionSeq = 0;
  private commandSeq = 0;
  private readSeq = 0;
  private finalAttemptAt = -Infinity;
  private finalKeys: string[] = [];
  private readonly stats: SimStats;

  constructor(private readonly opts: SimOptions) {
    this.rng = new Prng(opts.seed);
    this.traceLength = opts.traceLength ?? 30;
    this.p = this.makeProfile();
    this.voters = Array.from({ length: opts.nodeCount }, (_, i) => `n${i + 1}`);
    this.blocked = this.voters.map(() => this.voters.map(() => 0));
    this.stats = {
      seed: opts.seed,
      events: 0,
      ticks: 0,
      messages: 0,
      delivered: 0,
      leadersElected: 0,
      maxTerm: 0,
      committed: 0,
      proposals: 0,
      crashes: 0,
      partitions: 0,
      snapshotsSent: 0,
      snapshotsInstalled: 0,
      localSnapshots: 0,
      readsConfirmed: 0,
      readsDropped: 0,
      transfers: 0,
      overlappingLeaderTicks: 0,
      ticksToRecover: 0,
      profile: describeProfile(this.p),
    };
  }

  private makeProfile(): Profile {
    const r = this.rng;
    const electionMin = r.int(8, 14);
    return {
      preVote: r.chance(0.7),
      checkQuorum: r.chance(0.7),
      electionMin,
      electionMax: electionMin + r.pick([0, 3, electionMin, 2 * electionMin]),
      heartbeat: r.int(1, Math.min(3, electionMin - 1)),
      maxEntries: r.pick([1, 2, 4, 64]),
      maxInflight: r.pick([1, 2, 4, 16]),
      dropRate: r.pick([0, 0.01, 0.05, 0.15, 0.3]),
      dupRate: r.pick([0, 0.01, 0.05, 0.2]),
      latencyMax: r.pick([20, 60, 150, 250]),
      longDelayRate: r.pick([0, 0.002, 0.01, 0.03]),
      persistImmediate: r.pick([1, 0.7, 0.3, 0]),
      persistDelayMax: r.pick([10, 60, 150, 300]),
      faultGapMax: r.pick([8, 15, 40]),
      wCrash: r.pick([0, 1, 1, 3]),
      wPartition: r.pick([0, 1, 1, 3]),
      wTransfer: r.pick([0, 0.3, 1]),
      wCampaign: r.pick([0, 0.2, 1]),
      downMax: r.pick([5, 20, 60, 150]),
      // Sometimes the whole cluster goes down at once (a power cut): durability across it.
      maxDown: r.chance(0.15) ? this.opts.nodeCount : r.int(1, Math.ceil(this.opts.nodeCount / 2)),
      partitionMax: r.pick([5, 20, 60, 150]),
      proposeGapMax: r.pick([40, 120, 400]),
      proposeBatch: r.pick([1, 1, 3]),
      readGapMax: r.pick([50, 200, 1000]),
      snapshotEvery: r.pick([3, 8, 20, 60]),
      snapshotRetain: r.pick([0, 0, 2, 10]),
      purgeOnCrash: r.pick([0, 0.5, 1]),
      hitLeader: r.pick([0.3, 0.6, 0.9]),
      maxPartitions: r.pick([1, 1, 2]),
      loseUnsynced: r.pick([0, 0.5, 1]),
    };
  }

  // ------------------------------------------------------------------ run

  run(): SimStats {
    try {
      this.start();
      while (this.eventNo < this.opts.events) {
        if (!this.processNext()) break;
      }
      this.heal();
      this.stats.maxTerm = this.checker.maxTerm;
      this.stats.committed = this.checker.maxApplied();
      this.stats.events = this.eventNo;
      return this.stats;
    } catch (err) {
      throw this.failure(err);
    }
  }

  private start(): void {
    for (let i = 0; i < this.opts.nodeCount; i++) {
      const id = this.voters[i]!;
      this.byId.set(id, i);
      const node: SimNode = {
        id,
        idx: i,
        core: null,
        inc: 0,
        purged: new Set(),
        store: new DurableStore(id),
        sm: new ChainMachine(),
        applied: 0,
        lastSnapIndex: 0,
        inflight: null,
        pendingReads: new Map(),
        servable: [],
        lastCommit: 0,
        lastRole: 'down',
        lastTerm: 0,
        period: TICK + this.rng.int(-5, 5),
        rng: this.rng.fork(),
        memo: freshMemo(),
      };
      this.nodes.push(node);
      this.boot(node);
    }
    this.schedule(this.rng.int(0, this.p.proposeGapMax), { k: 'propose' });
    this.schedule(this.rng.int(0, this.p.readGapMax), { k: 'read' });
    this.schedule(this.rng.int(1, this.p.faultGapMax) * TICK, { k: 'fault' });
  }

  private schedule(delay: number, ev: SimEvent): void {
    this.queue.push(this.now + delay, ev);
  }

  private processNext(): boolean {
    const next = this.queue.pop();
    if (!next) return false;
    this.now = next.time;
    this.eventNo++;
    const ev = next.value;
    this.record(ev, null);
    const touched = this.handle(ev);
    for (const i of touched) this.afterEvent(this.nodes[i]!);
    return true;
  }

  private handle(ev: SimEvent): number[] {
    switch (ev.k) {
      case 'tick': {
        const n = this.nodes[ev.node]!;
        if (n.inc !== ev.inc || !n.core) return [];
        n.core.tick();
        this.stats.ticks++;
        if (ev.node === 0 && this.liveLeaders().length > 1) this.stats.overlappingLeaderTicks++;
        this.schedule(n.period + n.rng.int(-3, 3), ev);
        return [ev.node];
      }
      case 'deliver':
        return this.deliver(ev);
      case 'persist':
        return this.completeReady(ev.node, ev.inc, ev.rd);
      case 'reportSnapshot': {
        const n = this.nodes[ev.node]!;
        if (n.inc !== ev.inc || !n.core) return [];
        n.core.reportSnapshot(ev.peer, ev.ok);
        return [ev.node];
      }
      case 'reportUnreachable': {
        const n = this.nodes[ev.node]!;
        if (n.inc !== ev.inc || !n.core) return [];
        n.core.reportUnreachable(ev.peer);
        return [ev.node];
      }
      case 'propose':
        return this.propose();
      case 'read':
        return this.read();
      case 'fault':
        return this.fault();
      case 'restart': {
        const n = this.nodes[ev.node]!;
        if (n.core) return [];
        this.boot(n);
        return [ev.node];
      }
      case 'heal': {
        const cut = this.partitions.get(ev.partition);
        if (!cut) return [];
        this.partitions.delete(ev.partition);
        for (const [a, b] of cut) this.blocked[a]![b]!--;
        return [];
      }
      case 'final':
        return this.finalProposal();
    }
  }

  /** Checks after every event that touched `n`, then hands the core's next Ready to the "disk". */
  private afterEvent(n: SimNode): void {
    const core = n.core;
    if (!core) return;
    const st = core.status();
    if (this.checker.observe(n.id, st, core)) this.stats.leadersElected++;
    if (st.role !== n.lastRole || st.term !== n.lastTerm) {
      this.record(
        null,
        `${n.id} is ${st.role} in term ${st.term}${st.leaderId ? ` (leader ${st.leaderId})` : ''}`,
      );
      n.lastRole = st.role;
      n.lastTerm = st.term;
    }
    if (st.commitIndex < n.lastCommit) {
      violation(
        'commit monotonicity',
        `${n.id}'s commit index went from ${n.lastCommit} back to ${st.commitIndex}`,
      );
    }
    n.lastCommit = st.commitIndex;
    this.checker.checkLog(n.id, st, core, n.memo);
    this.takeReady(n);
  }

  private takeReady(n: SimNode): void {
    const core = n.core;
    if (!core || n.inflight || !core.hasReady()) return;
    const rd = core.ready();
    n.inflight = rd;
    // Like the driver, a leader's appends leave before its own write completes (thesis 10.2.1).
    for (const m of rd.messages) {
      if (m.type !== 'append') continue;
      this.checker.checkSent(n.id, n.store, m, true);
      this.send(n, m);
    }
    const durable = rd.hardState !== null || rd.entries.length > 0 || rd.snapshot !== null;
    const maxDelay = this.faulty ? this.p.persistDelayMax : Math.min(this.p.persistDelayMax, CALM_LATENCY);
    const delay = !durable || n.rng.chance(this.p.persistImmediate) ? 0 : n.rng.int(1, maxDelay);
    this.schedule(delay, { k: 'persist', node: n.idx, inc: n.inc, rd });
  }

  /** Persist, send, apply, advance: the driver's loop body for one Ready. */
  private completeReady(idx: number, inc: number, rd: Ready): number[] {
    const n = this.nodes[idx]!;
    const core = n.core;
    if (n.inc !== inc || !core) return []; // the crash came first: this Ready never reached the disk
    n.store.persist(rd);
    for (const m of rd.messages) {
      if (m.type === 'append') continue; // already sent by takeReady
      this.checker.checkSent(n.id, n.store, m);
      this.send(n, m);
    }
    if (rd.snapshot) {
      n.applied = this.checker.onRestore(n.id, rd.snapshot, n.applied);
      n.sm.restore(rd.snapshot.data);
      n.lastSnapIndex = rd.snapshot.meta.index;
      this.stats.snapshotsInstalled++;
    }
    for (const e of rd.committed) n.applied = this.checker.onApply(n.id, n.sm, n.applied, e);
    for (const rs of rd.readStates) {
      const required = n.pendingReads.get(rs.id);
      if (required === undefined)
        violation('readIndex', `${n.id} confirms read ${rs.id}, not pending on this node`);
      if (rs.index < required) {
        violation(
          'readIndex',
          `${n.id} confirms read ${rs.id} at index ${rs.index}, but index ${required} was already applied when it was asked`,
        );
      }
      n.pendingReads.delete(rs.id);
      n.servable.push(rs);
      this.stats.readsConfirmed++;
    }
    for (const id of rd.droppedReads) {
      if (!n.pendingReads.delete(id))
        violation('readIndex', `${n.id} drops read ${id}, not pending on this node`);
      this.stats.readsDropped++;
    }
    n.servable = n.servable.filter((rs) => rs.index > n.applied);
    core.advance(rd);
    n.inflight = null;
    this.maybeSnapshot(n, core);
    return [idx];
  }

  /** The driver's compaction policy: snapshot the state machine every few applied entries. */
  private maybeSnapshot(n: SimNode, core: CoreLike): void {
    if (n.applied - n.lastSnapIndex < this.p.snapshotEvery) return;
    const snapshot: Snapshot = {
      meta: { index: n.applied, term: n.sm.state.term, voters: this.voters.slice() },
      data: n.sm.snapshot(),
    };
    n.store.saveSnapshot(snapshot, false, 'local snapshot');
    const keepFrom = Math.max(1, snapshot.meta.index - this.p.snapshotRetain + 1);
    core.compact(snapshot, keepFrom);
    n.store.compact(keepFrom - 1);
    n.lastSnapIndex = snapshot.meta.index;
    this.stats.localSnapshots++;
  }

  // ------------------------------------------------------------------ network

  private isBlocked(from: number, to: number): boolean {
    return this.blocked[from]![to]! > 0;
  }

  private latency(): number {
    const p = this.p;
    if (!this.faulty) return this.rng.int(1, Math.min(p.latencyMax, CALM_LATENCY));
    if (this.rng.chance(p.longDelayRate)) return this.rng.int(p.latencyMax, 20 * TICK);
    return this.rng.int(1, p.latencyMax);
  }

  private send(n: SimNode, m: Message): void {
    const to = this.byId.get(m.to);
    if (to === undefined) violation('messages', `${n.id} sends to unknown node ${m.to}`);
    this.stats.messages++;
    if (m.type === 'snapshot') this.stats.snapshotsSent++;
    const copies = this.faulty && this.rng.chance(this.p.dupRate) ? this.rng.int(2, 3) : 1;
    for (let c = 0; c < copies; c++) {
      const report = c === 0 && m.type === 'snapshot';
      if (this.isBlocked(n.idx, to) || (this.faulty && this.rng.chance(this.p.dropRate))) {
        if (c === 0) this.onLost(n.idx, n.inc, m);
        continue;
      }
      this.schedule(this.latency(), {
        k: 'deliver',
        m: cloneMessage(m),
        from: n.idx,
        to,
        fromInc: n.inc,
        report,
      });
    }
  }

  /** A send that failed: a transport notices some failures and tells the sender's core. */
  private onLost(from: number, fromInc: number, m: Message): void {
    if (m.type === 'snapshot') {
      this.schedule(this.rng.int(1, 3 * TICK), {
        k: 'reportSnapshot',
        node: from,
        inc: fromInc,
        peer: m.to,
        ok: false,
      });
    } else if (this.rng.chance(0.3)) {
      this.schedule(this.rng.int(1, 2 * TICK), {
        k: 'reportUnreachable',
        node: from,
        inc: fromInc,
        peer: m.to,
      });
    }
  }

  private deliver(ev: Extract<SimEvent, { k: 'deliver' }>): number[] {
    const sender = this.nodes[ev.from]!;
    if (sender.purged.has(ev.fromInc)) return [];
    const target = this.nodes[ev.to]!;
    if (!target.core || this.isBlocked(ev.from, ev.to)) {
      if (ev.report) this.onLost(ev.from, ev.fromInc, ev.m);
      return [];
    }
    target.core.step(ev.m);
    this.stats.delivered++;
    if (ev.report) {
      this.schedule(this.latency(), {
        k: 'reportSnapshot',
        node: ev.from,
        inc: ev.fromInc,
        peer: ev.m.to,
        ok: true,
      });
    }
    return [ev.to];
  }

  // ------------------------------------------------------------------ clients

  private liveLeaders(): SimNode[] {
    return this.nodes.filter((n) => n.core?.status().role === 'leader');
  }

  private target(): SimNode | null {
    const leaders = this.liveLeaders();
    if (leaders.length > 0 && this.rng.chance(0.9)) return this.rng.pick(leaders);
    const live = this.nodes.filter((n) => n.core);
    return live.length > 0 ? this.rng.pick(live) : null;
  }

  private propose(): number[] {
    if (!this.faulty) return [];
    this.schedule(this.rng.int(1, this.p.proposeGapMax), { k: 'propose' });
    const n = this.target();
    if (!n) return [];
    // Client backpressure (like etcd's uncommitted-size limit): no unbounded backlog.
    const st = n.core!.status();
    if (st.role === 'leader' && st.lastIndex - st.commitIndex > MAX_BACKLOG) return [];
    const commands = Array.from(
      { length: this.rng.int(1, this.p.proposeBatch) },
      () => `c${++this.commandSeq}`,
    );
    this.proposeOn(n, commands);
    return [n.idx];
  }

  private proposeOn(n: SimNode, commands: string[]): boolean {
    const core = n.core!;
    const before = core.status();
    const placed = core.propose(commands);
    if (placed === null) {
      for (const c of commands) this.checker.refused.add(c);
      this.record(null, `${n.id} refuses ${commands.join(',')}`);
      return false;
    }
    for (const c of commands) this.checker.accepted.add(c);
    this.stats.proposals += commands.length;
    this.record(
      null,
      `${n.id} accepts ${commands.join(',')} at ${placed.map((x) => `${x.index}/${x.term}`).join(',')}`,
    );
    if (placed.length !== commands.length)
      violation('propose', `${n.id} placed ${placed.length} of ${commands.length} commands`);
    placed.forEach((pos, i) => {
      if (pos.index !== before.lastIndex + 1 + i || pos.term !== before.term) {
        violation(
          'propose',
          `${n.id} placed command ${i} at ${pos.index}/${pos.term}; expected ${before.lastIndex + 1 + i}/${before.term}`,
        );
      }
    });
    return true;
  }

  private read(): number[] {
    if (!this.faulty) return [];
    this.schedule(this.rng.int(1, this.p.readGapMax), { k: 'read' });
    const n = this.target();
    if (!n) return [];
    const id = ++this.readSeq;
    const required = this.checker.maxApplied();
    if (n.core!.readIndex(id)) {
      n.pendingReads.set(id, required);
      this.record(null, `${n.id} takes read ${id} (must see >= ${required})`);
    }
    return [n.idx];
  }

  // ------------------------------------------------------------------ faults

  private fault(): number[] {
    if (!this.faulty) return [];
    const p = this.p;
    this.schedule(this.rng.int(1, p.faultGapMax) * TICK, { k: 'fault' });
    const total = p.wCrash + p.wPartition + p.wTransfer + p.wCampaign;
    if (total === 0) return [];
    let x = this.rng.next() * total;
    if ((x -= p.wCrash) < 0) return this.crashRandom();
    if ((x -= p.wPartition) < 0) return this.partitionRandom();
    if ((x -= p.wTransfer) < 0) {
      const leaders = this.liveLeaders();
      if (leaders.length === 0) return [];
      const l = this.rng.pick(leaders);
      const to = this.rng.pick(this.voters.filter((v) => v !== l.id));
      if (l.core!.transferLeadership(to)) {
        this.stats.transfers++;
        this.record(null, `${l.id} transfers leadership to ${to}`);
      }
      return [l.idx];
    }
    const live = this.nodes.filter((n) => n.core);
    if (live.length === 0) return [];
    const n = this.rng.pick(live);
    this.record(null, `${n.id} is told to campaign`);
    n.core!.campaign();
    return [n.idx];
  }

  /** A victim for a fault: often the current leader, where faults hurt most. */
  private victim(candidates: SimNode[]): SimNode {
    const leaders = candidates.filter((n) => n.core?.status().role === 'leader');
    return leaders.length > 0 && this.rng.chance(this.p.hitLeader)
      ? this.rng.pick(leaders)
      : this.rng.pick(candidates);
  }

  private crashRandom(): number[] {
    const live = this.nodes.filter((n) => n.core);
    const down = this.nodes.length - live.length;
    if (down >= this.p.maxDown) {
      // Enough nodes are down: bring one back early instead.
      const dead = this.rng.pick(this.nodes.filter((n) => !n.core));
      this.boot(dead);
      return [dead.idx];
    }
    const n = this.victim(live);
    this.crash(n);
    this.schedule(this.rng.int(1, this.p.downMax) * TICK, { k: 'restart', node: n.idx });
    return [];
  }

  private crash(n: SimNode): void {
    if (this.rng.chance(this.p.purgeOnCrash)) n.purged.add(n.inc);
    if (this.rng.chance(this.p.loseUnsynced)) n.store.loseUnsynced();
    n.core = null;
    n.inflight = null;
    n.inc++;
    n.pendingReads.clear();
    n.servable = [];
    n.lastRole = 'down';
    this.stats.crashes++;
    this.record(
      null,
      `${n.id} crashes (disk: term ${n.store.hardState.term}, last index ${n.store.lastIndex()})`,
    );
  }

  /** Build a fresh core from the node's disk, as a restarted process would. */
  private boot(n: SimNode): void {
    n.inc++;
    const persisted = n.store.load();
    const config: RaftConfig = {
      id: n.id,
      voters: this.voters.slice(),
      electionTicksMin: this.p.electionMin,
      electionTicksMax: this.p.electionMax,
      heartbeatTicks: this.p.heartbeat,
      preVote: this.p.preVote,
      checkQuorum: this.p.checkQuorum,
      maxEntriesPerAppend: this.p.maxEntries,
      maxInflight: this.p.maxInflight,
      random: n.rng.fork().asFunction(),
    };
    const core = this.opts.createCore(config, persisted);
    n.core = core;
    n.sm = new ChainMachine();
    n.applied = 0;
    if (n.store.snapshot) {
      this.checker.checkSnapshot(n.id, n.store.snapshot, 'stored snapshot');
      n.sm.restore(n.store.snapshot.data);
      n.applied = parseChainState(n.store.snapshot.data).index;
    }
    n.lastSnapIndex = n.applied;
    n.lastCommit = 0;
    n.memo = freshMemo();
    const st = core.status();
    if (st.term !== n.store.hardState.term) {
      violation(
        'durability',
        `${n.id} restarts in term ${st.term} but its disk says ${n.store.hardState.term}`,
      );
    }
    if (n.inc > 1)
      this.record(null, `${n.id} restarts (term ${st.term}, commit ${st.commitIndex}, applied ${n.applied})`);
    this.schedule(this.rng.int(1, n.period), { k: 'tick', node: n.idx, inc: n.inc });
    this.afterEvent(n);
  }

  private partitionRandom(): number[] {
    const N = this.nodes.length;
    const cut: [number, number][] = [];
    const a = this.victim(this.nodes).idx;
    const kind = this.rng.int(0, 3);
    if (kind === 0) {
      // Isolate one node completely.
      for (let b = 0; b < N; b++) if (b !== a) cut.push([a, b], [b, a]);
    } else if (kind === 1) {
      // Split into a minority (holding the victim) and a majority.
      const others = this.rng.shuffle(this.nodes.map((n) => n.idx).filter((i) => i !== a));
      const side = [a, ...others.slice(0, this.rng.int(0, Math.floor(N / 2) - 1))];
      for (const x of side) for (let b = 0; b < N; b++) if (!side.includes(b)) cut.push([x, b], [b, x]);
    } else if (kind === 2) {
      // One-way: a node that can send but not receive, or the reverse.
      const inbound = this.rng.chance(0.5);
      for (let b = 0; b < N; b++) if (b !== a) cut.push(inbound ? [b, a] : [a, b]);
    } else {
      // A single broken link.
      const b = (a + this.rng.int(1, N - 1)) % N;
      cut.push([a, b], [b, a]);
    }
    // Keep at most `maxPartitions` cuts at once (healing the oldest), or the network just dies.
    while (this.partitions.size >= this.p.maxPartitions) {
      const [oldest, oldCut] = this.partitions.entries().next().value!;
      this.partitions.delete(oldest);
      for (const [x, y] of oldCut) this.blocked[x]![y]!--;
    }
    const id = ++this.partitionSeq;
    this.partitions.set(id, cut);
    for (const [a, b] of cut) this.blocked[a]![b]!++;
    this.stats.partitions++;
    this.record(
      null,
      `partition #${id}: cut ${cut.map(([a, b]) => `${this.voters[a]}>${this.voters[b]}`).join(' ')}`,
    );
    this.schedule(this.rng.int(2, this.p.partitionMax) * TICK, { k: 'heal', partition: id });
    return [];
  }

  // ------------------------------------------------------------------ healing and liveness

  /**
   * Stop all faults, reconnect and restart everything, then require progress: a leader commits a
   * fresh entry and every node applies everything ever applied anywhere (durability + liveness).
   */
  private heal(): void {
    this.faulty = false;
    this.record(null, 'faults stop: network healed, every node restarted');
    for (const [id, cut] of this.partitions) {
      this.partitions.delete(id);
      for (const [a, b] of cut) this.blocked[a]![b]!--;
    }
    for (const n of this.nodes) if (!n.core) this.boot(n);
    const mustApply = this.checker.maxApplied();
    const start = this.now;
    // Room for a few elections plus shipping the longest log one batch per round trip.
    const longest = Math.max(...this.nodes.map((n) => n.core!.status().lastIndex));
    const deadline =
      start + (30 * this.p.electionMax + Math.ceil((longest - mustApply) / this.p.maxEntries)) * TICK;
    this.schedule(0, { k: 'final' });
    for (;;) {
      const goal = this.finalGoal();
      if (goal !== null && this.nodes.every((n) => n.core && n.applied >= Math.max(goal, mustApply))) break;
      if (this.now > deadline || !this.processNext()) {
        const lagging = this.nodes
          .filter((n) => !n.core || n.applied < Math.max(goal ?? 0, mustApply))
          .map((n) => `${n.id} applied ${n.applied}`);
        violation(
          'liveness',
          `${Math.round((this.now - start) / TICK)} ticks after healing: ` +
            (goal === null ? 'no fresh entry committed' : `entry ${goal} committed`) +
            `; must apply ${Math.max(goal ?? 0, mustApply)}; lagging: ${lagging.join(', ') || 'none'}`,
        );
      }
    }
    this.stats.ticksToRecover = Math.round((this.now - start) / TICK);
    this.checkLogsPairwise();
  }

  private finalGoal(): number | null {
    for (const k of this.finalKeys) {
      const at = this.checker.indexOfCommand(k);
      if (at !== undefined) return at;
    }
    return null;
  }

  private finalProposal(): number[] {
    this.schedule(TICK, { k: 'final' });
    if (this.finalGoal() !== null) return [];
    if (this.now - this.finalAttemptAt < 3 * this.p.electionMax * TICK) return [];
    const leader = this.liveLeaders()[0];
    if (!leader) return [];
    const key = `final${++this.commandSeq}`;
    if (this.proposeOn(leader, [key])) {
      this.finalKeys.push(key);
      this.finalAttemptAt = this.now;
    }
    return [leader.idx];
  }

  /** The paper's statement of log matching, over every pair of in-memory logs at the end. */
  private checkLogsPairwise(): void {
    const logs = this.nodes.map((n) => ({
      id: n.id,
      off: n.core!.logOffset(),
      entries: n.core!.logEntries(),
    }));
    for (let a = 0; a < logs.length; a++) {
      for (let b = a + 1; b < logs.length; b++) {
        const A = logs[a]!;
        const B = logs[b]!;
        const lo = Math.max(A.off.index, B.off.index) + 1;
        const hi = Math.min(A.off.index + A.entries.length, B.off.index + B.entries.length);
        const at = (L: typeof A, i: number): Entry => L.entries[i - L.off.index - 1]!;
        let i = hi;
        while (i >= lo && at(A, i).term !== at(B, i).term) i--;
        for (; i >= lo; i--) {
          const x = at(A, i);
          const y = at(B, i);
          if (x.term !== y.term || entryKey(x) !== entryKey(y)) {
            violation('log matching', `${A.id} and ${B.id} share a later index/term but differ at ${i}`);
          }
        }
      }
    }
  }

  // ------------------------------------------------------------------ trace and failure report

  private record(ev: SimEvent | null, note: string | null): void {
    this.trace[this.tracePos % this.traceLength] = { no: this.eventNo, time: this.now, ev, note };
    this.tracePos++;
  }

  private lastEvents(): TraceSlot[] {
    const out: TraceSlot[] = [];
    for (let i = Math.max(0, this.tracePos - this.traceLength); i < this.tracePos; i++) {
      out.push(this.trace[i % this.traceLength]!);
    }
    return out;
  }

  private failure(err: unknown): SimFailure {
    const what =
      err instanceof InvariantViolation
        ? `${err.invariant} violated: ${err.detail}`
        : `the core threw: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`;
    const p = this.p;
    const lines = [
      `Raft simulation failed (seed ${this.opts.seed}, ${this.opts.nodeCount} nodes, event #${this.eventNo}, ` +
        `t=${(this.now / TICK).toFixed(2)} ticks)`,
      `  ${what}`,
      `Replay: ${this.opts.replay}`,
      `Profile: ${describeProfile(p)}`,
      `Last ${this.lastEvents().length} events:`,
      ...this.lastEvents().map((s) => `  #${s.no} t=${(s.time / TICK).toFixed(2)} ${this.describe(s)}`),
      'Nodes:',
      ...this.nodes.map((n) => `  ${this.describeNode(n)}`),
    ];
    const e = new SimFailure(lines.join('\n'));
    if (err instanceof Error) e.cause = err;
    return e;
  }

  private describe(s: TraceSlot): string {
    if (s.note !== null) return `  · ${s.note}`;
    const ev = s.ev!;
    const name = (i: number): string => this.voters[i]!;
    switch (ev.k) {
      case 'tick':
        return `tick ${name(ev.node)}`;
      case 'deliver':
        return `deliver ${describeMessage(ev.m)}`;
      case 'persist': {
        const rd = ev.rd;
        const parts = [
          rd.hardState ? `hs=${rd.hardState.term}/${rd.hardState.vote ?? '-'}/${rd.hardState.commit}` : '',
          rd.entries.length
            ? `entries=${rd.entries[0]!.index}..${rd.entries[rd.entries.length - 1]!.index}`
            : '',
          rd.snapshot ? `snapshot=${rd.snapshot.meta.index}/${rd.snapshot.meta.term}` : '',
          rd.committed.length
            ? `apply=${rd.committed[0]!.index}..${rd.committed[rd.committed.length - 1]!.index}`
            : '',
          rd.messages.length ? `msgs=${rd.messages.length}` : '',
          rd.readStates.length ? `reads=${rd.readStates.map((r) => `${r.id}@${r.index}`).join(',')}` : '',
        ].filter(Boolean);
        return `ready of ${name(ev.node)} done: ${parts.join(' ')}`;
      }
      case 'reportSnapshot':
        return `reportSnapshot(${ev.peer}, ${ev.ok}) to ${name(ev.node)}`;
      case 'reportUnreachable':
        return `reportUnreachable(${ev.peer}) to ${name(ev.node)}`;
      case 'restart':
        return `restart ${name(ev.node)}`;
      case 'heal':
        return `heal partition #${ev.partition}`;
      default:
        return ev.k;
    }
  }

  private describeNode(n: SimNode): string {
    const disk = `disk term=${n.store.hardState.term} vote=${n.store.hardState.vote ?? '-'} commit=${n.store.hardState.commit} snap=${n.store.snapshotIndex()} last=${n.store.lastIndex()}`;
    if (!n.core) return `${n.id} down; ${disk}`;
    const st = n.core.status();
    const off = n.core.logOffset();
    const tail = n.core
      .logEntries()
      .slice(-8)
      .map((e) => `${e.index}/${e.term}`)
      .join(' ');
    return (
      `${n.id} ${st.role} term=${st.term} leader=${st.leaderId ?? '-'} commit=${st.commitIndex} applied=${n.applied} ` +
      `log=(${off.index}/${off.term}] ..${tail}; ${disk}`
    );
  }
}

function describeProfile(p: Profile): string {
  return Object.entries(p)
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(' ');
}

export function describeMessage(m: Message): string {
  const head = `${m.from}→${m.to} ${m.type} t${m.term}`;
  switch (m.type) {
    case 'vote':
      return `${head}${m.preVote ? ' pre' : ''}${m.transfer ? ' transfer' : ''} last=${m.lastLogIndex}/${m.lastLogTerm}`;
    case 'vote_resp':
      return `${head}${m.preVote ? ' pre' : ''} ${m.granted ? 'granted' : 'rejected'}`;
    case 'append': {
      const ents = m.entries.length
        ? ` [${m.entries[0]!.index}..${m.entries[m.entries.length - 1]!.index}]`
        : ' []';
      return `${head} prev=${m.prevLogIndex}/${m.prevLogTerm}${ents} commit=${m.commit} ctx=${m.ctx}`;
    }
    case 'append_resp':
      return `${head} ${m.success ? 'ok' : 'reject'} index=${m.index} hint=${m.hintIndex}/${m.hintTerm} ctx=${m.ctx}`;
    case 'snapshot':
      return `${head} at ${m.snapshot.meta.index}/${m.snapshot.meta.term}`;
    case 'snapshot_resp':
      return `${head} index=${m.index}`;
    case 'timeout_now':
      return head;
  }
}

export function cloneMessage(m: Message): Message {
  switch (m.type) {
    case 'append':
      return { ...m, entries: m.entries.map(cloneEntry) };
    case 'snapshot':
      return { ...m, snapshot: cloneSnapshot(m.snapshot) };
    default:
      return { ...m };
  }
}
