// A hand-driven network of RaftCores for scenario tests: the test decides which messages are
// delivered, dropped or held, and when nodes tick. Each Ready is handled the way the driver does it
// (persist to a DurableStore, collect the messages, apply, advance) but synchronously.
import type {
  Entry,
  HardState,
  Json,
  Message,
  NodeId,
  PersistedState,
  RaftConfig,
  ReadState,
  Ready,
  Snapshot,
} from '../../../src/raft/types.js';
import type { CoreFactory, CoreLike } from './core-like.js';
import { Prng } from './prng.js';
import { ChainMachine, entryKey } from './state-machine.js';
import { DurableStore } from './storage.js';

export type ConfigOverrides = Partial<Omit<RaftConfig, 'id' | 'voters'>>;

export interface TinyNetOptions {
  /** Number of nodes, named n1..nN (default 3). */
  size?: number;
  /** Applied to every node's config. */
  config?: ConfigOverrides;
  /** Per-node config overrides. */
  nodeConfig?: Record<NodeId, ConfigOverrides>;
  /** Initial disk contents per node (default: empty). */
  persisted?: Record<NodeId, PersistedState>;
}

export const DEFAULT_CONFIG: Omit<RaftConfig, 'id' | 'voters' | 'random'> = {
  electionTicksMin: 10,
  electionTicksMax: 20,
  heartbeatTicks: 1,
  preVote: false,
  checkQuorum: false,
  maxEntriesPerAppend: 100,
  maxInflight: 256,
};

/** Build a persisted log: `terms[i]` is the term of entry i+1; commands are `t<term>i<index>`. */
export function logOf(terms: number[]): Entry[] {
  return terms.map((term, i) => ({ index: i + 1, term, kind: 'command', command: `t${term}i${i + 1}` }));
}

export function persistedLog(terms: number[], hs: Partial<HardState> = {}): PersistedState {
  const maxTerm = terms.length > 0 ? Math.max(...terms) : 0;
  return {
    hardState: { term: hs.term ?? maxTerm, vote: hs.vote ?? null, commit: hs.commit ?? 0 },
    snapshot: null,
    entries: logOf(terms),
  };
}

export class TinyNet {
  readonly ids: NodeId[];
  readonly cores = new Map<NodeId, CoreLike>();
  readonly stores = new Map<NodeId, DurableStore>();
  readonly machines = new Map<NodeId, ChainMachine>();
  /** Every entry each node applied, in order (reset by restart). */
  readonly applied = new Map<NodeId, Entry[]>();
  readonly readStates = new Map<NodeId, ReadState[]>();
  readonly droppedReads = new Map<NodeId, number[]>();
  /** Snapshots each node was told to restore through a Ready. */
  readonly restored = new Map<NodeId, Snapshot[]>();
  /** Every message delivered by deliver()/settle(), in order. */
  readonly delivered: Message[] = [];
  /** Directed links that drop everything: "from>to". */
  private readonly cut = new Set<string>();
  private readonly configs = new Map<NodeId, RaftConfig>();

  constructor(
    private readonly createCore: CoreFactory,
    opts: TinyNetOptions = {},
  ) {
    const size = opts.size ?? 3;
    this.ids = Array.from({ length: size }, (_, i) => `n${i + 1}`);
    this.ids.forEach((id, i) => {
      const rng = new Prng(1000 + i);
      this.configs.set(id, {
        ...DEFAULT_CONFIG,
        random: rng.asFunction(),
        ...opts.config,
        ...opts.nodeConfig?.[id],
        id,
        voters: this.ids.slice(),
      });
      const p = opts.persisted?.[id];
      this.stores.set(id, p ? DurableStore.holding(id, p) : new DurableStore(id));
      this.boot(id);
    });
  }

  core(id: NodeId): CoreLike {
    const c = this.cores.get(id);
    if (!c) throw new Error(`no node ${id}`);
    return c;
  }

  store(id: NodeId): DurableStore {
    return this.stores.get(id)!;
  }

  /** Rebuild a node from its disk, as after a crash (its unpersisted state is lost). */
  restart(id: NodeId): CoreLike {
    return this.boot(id);
  }

  private boot(id: NodeId): CoreLike {
    const store = this.store(id);
    const core = this.createCore(this.configs.get(id)!, store.load());
    this.cores.set(id, core);
    const sm = new ChainMachine();
    if (store.snapshot) sm.restore(store.snapshot.data);
    this.machines.set(id, sm);
    this.applied.set(id, []);
    this.readStates.set(id, []);
    this.droppedReads.set(id, []);
    this.restored.set(id, []);
    return core;
  }

  /** Handle one Ready of `id` if it has one; returns it (null if none). */
  handleReady(id: NodeId): Ready | null {
    const core = this.core(id);
    if (!core.hasReady()) return null;
    const rd = core.ready();
    this.store(id).persist(rd);
    const sm = this.machines.get(id)!;
    if (rd.snapshot) {
      sm.restore(rd.snapshot.data);
      this.restored.get(id)!.push(rd.snapshot);
    }
    for (const e of rd.committed) {
      sm.apply(e);
      this.applied.get(id)!.push(e);
    }
    this.readStates.get(id)!.push(...rd.readStates);
    this.droppedReads.get(id)!.push(...rd.droppedReads);
    core.advance(rd);
    return rd;
  }

  /** Handle every pending Ready of `id`; returns the messages it would send. */
  drain(id: NodeId): Message[] {
    const out: Message[] = [];
    for (let rd = this.handleReady(id); rd; rd = this.handleReady(id)) out.push(...rd.messages);
    return out;
  }

  drainAll(): Message[] {
    return this.ids.flatMap((id) => this.drain(id));
  }

  /** Step each message into its target unless its link is cut; returns the ones delivered. */
  deliver(msgs: Message[]): Message[] {
    const done: Message[] = [];
    for (const m of msgs) {
      if (this.cut.has(`${m.from}>${m.to}`)) continue;
      this.core(m.to).step(m);
      this.delivered.push(m);
      done.push(m);
    }
    return done;
  }

  /**
   * Exchange messages until none is left: drain every node, deliver what passes `keep` (and no cut
   * link), repeat. Returns everything delivered.
   */
  settle(keep: (m: Message) => boolean = () => true, maxRounds = 200): Message[] {
    const all: Message[] = [];
    for (let round = 0; round < maxRounds; round++) {
      const msgs = this.drainAll().filter(keep);
      if (msgs.length === 0) return all;
      all.push(...this.deliver(msgs));
    }
    throw new Error(`network did not settle in ${maxRounds} rounds`);
  }

  tick(id: NodeId, times = 1): void {
    for (let i = 0; i < times; i++) this.core(id).tick();
  }

  tickAll(times = 1): void {
    for (let i = 0; i < times; i++) for (const id of this.ids) this.core(id).tick();
  }

  /** Cut every link between `id` and the others (both ways). */
  isolate(id: NodeId): void {
    for (const o of this.ids) {
      if (o === id) continue;
      this.cut.add(`${id}>${o}`);
      this.cut.add(`${o}>${id}`);
    }
  }

  cutLink(from: NodeId, to: NodeId): void {
    this.cut.add(`${from}>${to}`);
  }

  heal(): void {
    this.cut.clear();
  }

  /** `id` campaigns (without PreVote) and the network settles; returns the leader's term. */
  elect(id: NodeId): number {
    this.core(id).campaign();
    this.settle();
    const st = this.core(id).status();
    if (st.role !== 'leader') throw new Error(`${id} did not win: ${JSON.stringify(st)}`);
    return st.term;
  }

  propose(id: NodeId, ...commands: Json[]): { index: number; term: number }[] | null {
    return this.core(id).propose(commands);
  }

  /** Snapshot `id`'s state machine at its applied index and compact the core's log up to it. */
  compact(id: NodeId, keepFrom?: number): Snapshot {
    const sm = this.machines.get(id)!;
    const snap: Snapshot = {
      meta: { index: sm.state.index, term: sm.state.term, voters: this.ids.slice() },
      data: sm.snapshot(),
    };
    this.store(id).saveSnapshot(snap, false, 'local snapshot');
    this.core(id).compact(snap, keepFrom);
    this.store(id).compact((keepFrom ?? snap.meta.index + 1) - 1);
    return snap;
  }

  /** Terms of the node's in-memory log from index 1 (0 for compacted positions). */
  terms(id: NodeId): number[] {
    const core = this.core(id);
    const off = core.logOffset();
    return [...Array<number>(off.index).fill(0), ...core.logEntries().map((e) => e.term)];
  }

  /** index/term=payload of the in-memory log, for comparing logs. */
  describeLog(id: NodeId): string[] {
    return this.core(id)
      .logEntries()
      .map((e) => `${e.index}/${e.term}=${entryKey(e)}`);
  }

  commandsApplied(id: NodeId): Json[] {
    return this.applied
      .get(id)!
      .filter((e) => e.kind === 'command')
      .map((e) => e.command);
  }
}

export function ofType<T extends Message['type']>(msgs: Message[], type: T): Extract<Message, { type: T }>[] {
  return msgs.filter((m): m is Extract<Message, { type: T }> => m.type === type);
}
