// The Raft driver: the edge where the pure core meets time, disk and network. One processing loop
// at a time turns the core's Ready into I/O in the order Raft requires (persist, then send, then
// apply), so one fsync covers every entry and vote that accumulated meanwhile (group commit).
import type { Logger } from 'pino';
import { DssError } from '../errors.js';
import { endpointOf, type RaftEndpoint, type Transport } from '../transport/transport.js';
import { RaftCore } from './core.js';
import { StorageFullError } from './storage/file-storage.js';
import {
  isResponse,
  type Entry,
  type Json,
  type Message,
  type NodeId,
  type RaftStatus,
  type RaftStorage,
  type Ready,
  type RequestMessage,
  type ResponseMessage,
  type Snapshot,
  type StateMachine,
} from './types.js';

export interface RaftNodeOptions {
  id: NodeId;
  voters: NodeId[];
  electionTimeoutMinMs: number;
  electionTimeoutMaxMs: number;
  heartbeatIntervalMs: number;
  storage: RaftStorage;
  transport: Transport;
  stateMachine: StateMachine;
  logger: Logger;
  /**
   * Take a snapshot and compact the log after at least this many applied entries (default 10000);
   * more when the state machine is large (see maybeSnapshot).
   */
  snapshotEvery?: number;
  /** Entries kept behind a snapshot so briefly lagging followers need no InstallSnapshot (default 10000). */
  snapshotRetain?: number;
  /** A proposal not applied by then fails with 503 (default: 4 x max election timeout). */
  proposalTimeoutMs?: number;
  /** Seeded randomness for tests; Math.random otherwise. */
  random?: () => number;
}

export interface RaftNodeEvents {
  /** Called on every role/term/leader change. */
  onStateChange?: (s: RaftStatus) => void;
  /** Called once per election this node starts (for raft_elections_total). */
  onElection?: () => void;
  /** A local snapshot was taken; `seconds` is how long the Raft loop was held by it. */
  onSnapshot?: (s: { index: number; seconds: number }) => void;
  /** Storage failed: the node cannot go on safely and has stopped its Raft activity. */
  onFatal?: (err: Error) => void;
}

interface PendingProposal {
  term: number;
  resolve: (v: { index: number; result: Json }) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

interface Deferred {
  resolve: () => void;
  reject: (e: Error) => void;
}

interface ReplyWaiter {
  /** Number of the Ready whose persistence makes our responses sendable. */
  ready: number;
  peer: NodeId;
  resolve: (msgs: ResponseMessage[]) => void;
}

/** Requests to one peer's append_entries endpoint go one HTTP call at a time, so they arrive in order. */
interface PeerChannel {
  queue: RequestMessage[];
  busy: boolean;
}

const MAX_BATCH_PER_REQUEST = 256;
/** Applied entries between snapshots per record of state (see chooseSnapshotGap). */
const SNAPSHOT_GAP_PER_RECORD = 0.5;

export class RaftNode {
  private readonly opts: RaftNodeOptions;
  private readonly events: RaftNodeEvents;
  private readonly tickMs: number;
  private readonly log: Logger;
  private core: RaftCore | null = null;
  private ticker: NodeJS.Timeout | null = null;
  private running = false;
  private fatal: Error | null = null;

  /** The processing loop while it runs; at most one at a time. */
  private loop: Promise<void> | null = null;
  private readyCount = 0;
  private replyWaiters: ReplyWaiter[] = [];

  private proposalBuffer: { command: Json; p: Omit<PendingProposal, 'term' | 'timer'> }[] = [];
  private pending = new Map<number, PendingProposal>();
  private readBatch: Deferred[] = [];
  private nextReadId = 1;
  private readsInFlight = new Map<number, Deferred[]>();
  /** Confirmed reads waiting for apply to reach their index. */
  private readsToServe: { index: number; waiters: Deferred[] }[] = [];

  private channels = new Map<NodeId, PeerChannel>();
  private lastHeard = new Map<NodeId, number>();
  private lastState = '';
  private lastSnapshotIndex = 0;
  private appliedIndex = 0;
  /** Last log index known to be on disk here (what the stored log ends with). */
  private persistedIndex = 0;
  private appliedTerm = 0;
  private snapshotting = false;
  /** Applied entries past lastSnapshotIndex before the next local snapshot; 0 until chosen. */
  private snapshotGap = 0;
  /** The last write found the disk full: the loop retries it, new proposals and reads get 503. */
  private diskFull = false;
  /** No local snapshot is attempted before this time (performance.now()) after one found no space. */
  private snapshotBlockedUntil = 0;

  constructor(opts: RaftNodeOptions, events: RaftNodeEvents = {}) {
    this.opts = opts;
    this.events = events;
    this.log = opts.logger;
    // Ticks fine enough that the heartbeat is at least 5 ticks, capped so idle CPU stays low.
    this.tickMs = Math.max(1, Math.min(50, Math.floor(opts.heartbeatIntervalMs / 5)));
  }

  /** Load persisted state and start ticking. */
  async start(): Promise<void> {
    const persisted = await this.opts.storage.load();
    if (persisted.snapshot) {
      this.opts.stateMachine.restore(persisted.snapshot.data);
      this.lastSnapshotIndex = persisted.snapshot.meta.index;
      this.appliedIndex = persisted.snapshot.meta.index;
      this.appliedTerm = persisted.snapshot.meta.term;
    }
    this.persistedIndex =
      persisted.entries[persisted.entries.length - 1]?.index ?? persisted.snapshot?.meta.index ?? 0;
    const ticks = (ms: number): number => Math.max(1, Math.round(ms / this.tickMs));
    const heartbeatTicks = ticks(this.opts.heartbeatIntervalMs);
    this.core = new RaftCore(
      {
        id: this.opts.id,
        voters: this.opts.voters,
        electionTicksMin: Math.max(heartbeatTicks + 1, ticks(this.opts.electionTimeoutMinMs)),
        electionTicksMax: Math.max(heartbeatTicks + 1, ticks(this.opts.electionTimeoutMaxMs)),
        heartbeatTicks,
        preVote: true,
        checkQuorum: true,
        maxEntriesPerAppend: 1024,
        maxInflight: 64,
        random: this.opts.random ?? Math.random,
      },
      persisted,
    );
    this.running = true;
    this.ticker = setInterval(() => this.onTick(), this.tickMs);
    this.log.info(
      {
        term: persisted.hardState.term,
        commit: persisted.hardState.commit,
        entries: persisted.entries.length,
        snapshot: persisted.snapshot?.meta.index ?? 0,
      },
      'raft started',
    );
    this.kick();
  }

  /** Stop timers, fail pending proposals and reads, close storage. Hands leadership over first if asked. */
  async stop(opts: { transferLeadership?: boolean } = {}): Promise<void> {
    if (!this.running) return;
    if (opts.transferLeadership) await this.transferLeadership();
    this.running = false;
    if (this.ticker) clearInterval(this.ticker);
    this.failAll(new DssError('shutting_down', 'node is shutting down'));
    // Not running any more, so the loop ends without starting another.
    await this.loop;
    await this.opts.storage.close();
  }

  status(): RaftStatus {
    return this.requireCore().status();
  }

  /** Peers heard from within an election timeout; self always included. */
  reachablePeers(): Set<NodeId> {
    const out = new Set<NodeId>([this.opts.id]);
    const now = performance.now();
    for (const [id, at] of this.lastHeard) if (now - at <= this.opts.electionTimeoutMaxMs) out.add(id);
    return out;
  }

  /** Handle one batch of internal Raft RPCs; resolves with the responses once they are durable. */
  handleRequests(msgs: RequestMessage[]): Promise<ResponseMessage[]> {
    const core = this.requireRunning();
    const peer = msgs[0]?.from;
    if (peer === undefined) return Promise.resolve([]);
    this.lastHeard.set(peer, performance.now());
    for (const m of msgs) core.step(m);
    const target = this.readyCount + 1;
    return new Promise((resolve) => {
      this.replyWaiters.push({ ready: target, peer, resolve });
      this.kick();
    });
  }

  /** Replicate a command; resolves after it is committed and applied here, with the apply result. */
  propose(command: Json): Promise<{ index: number; result: Json }> {
    const core = this.requireRunning();
    const st = core.status();
    if (st.role !== 'leader') return Promise.reject(this.notLeader(st.leaderId));
    if (this.diskFull) return Promise.reject(diskFullError());
    return new Promise((resolve, reject) => {
      this.proposalBuffer.push({ command, p: { resolve, reject } });
      this.kick();
    });
  }

  /** Resolves when this leader may serve a linearizable read from its state machine. */
  readIndex(): Promise<void> {
    const core = this.requireRunning();
    const st = core.status();
    if (st.role !== 'leader') return Promise.reject(this.notLeader(st.leaderId));
    // Reads need the loop, which is held until the disk takes the pending write.
    if (this.diskFull) return Promise.reject(diskFullError());
    return new Promise((resolve, reject) => {
      this.readBatch.push({ resolve, reject });
      this.kick();
    });
  }

  /** Ask the most up-to-date follower to take over, and wait (bounded) until it has. */
  async transferLeadership(): Promise<boolean> {
    const core = this.core;
    if (!core || core.status().role !== 'leader') return false;
    const peers = this.opts.voters.filter((v) => v !== this.opts.id && this.reachablePeers().has(v));
    const target = peers[0];
    if (target === undefined || !core.transferLeadership(target)) return false;
    this.kick();
    const deadline = performance.now() + this.opts.electionTimeoutMinMs;
    while (performance.now() < deadline && core.status().role === 'leader') {
      await new Promise((r) => setTimeout(r, this.tickMs));
    }
    return core.status().role !== 'leader';
  }

  // ---------------------------------------------------------------- the loop

  private onTick(): void {
    if (!this.running || !this.core) return;
    this.core.tick();
    this.kick();
  }

  private kick(): void {
    if (this.loop || !this.running || this.fatal) return;
    this.loop = this.process()
      .catch((e: unknown) => this.die(e instanceof Error ? e : new Error(String(e))))
      .finally(() => {
        this.loop = null;
        // Work that arrived during the last await is picked up by a fresh run.
        if (this.running && !this.fatal && this.core && (this.core.hasReady() || this.hasBufferedWork())) {
          this.kick();
        }
      });
  }

  private hasBufferedWork(): boolean {
    return this.proposalBuffer.length > 0 || this.readBatch.length > 0;
  }

  private async process(): Promise<void> {
    const core = this.requireCore();
    for (;;) {
      this.flushBuffers(core);
      this.noteStateChange(core);
      if (!core.hasReady()) break;
      const rd = core.ready();
      const n = ++this.readyCount;
      // A leader's appends may leave before its own write completes (Raft thesis 10.2.1): it counts
      // itself toward a commit only once advance() reports the entries stable, and followers persist
      // before they acknowledge. Everything else (votes, acknowledgements) waits for the disk.
      const early = rd.messages.filter((m) => m.type === 'append');
      for (const m of early) this.sendRequest(m);
      // Committed entries that earlier Readies already put on disk need not wait for this write:
      // applying them now answers their clients one fsync sooner.
      const onDisk = rd.snapshot ? 0 : this.persistedIndex;
      const ready = rd.committed.filter((e) => e.index <= onDisk);
      this.applyEntries(ready);
      if (!(await this.persist(rd)) || !this.running) return;
      this.dispatch(early.length > 0 ? rd.messages.filter((m) => m.type !== 'append') : rd.messages, n);
      this.apply(rd, ready.length);
      core.advance(rd);
      await this.maybeSnapshot(core);
    }
    // Requests whose step produced nothing to persist or send: answer them (with nothing) now.
    this.releaseWaiters(Number.MAX_SAFE_INTEGER, []);
  }

  private flushBuffers(core: RaftCore): void {
    if (this.proposalBuffer.length > 0) {
      const batch = this.proposalBuffer;
      this.proposalBuffer = [];
      const placed = core.propose(batch.map((b) => b.command));
      if (placed === null) {
        const err = this.notLeader(core.status().leaderId);
        for (const b of batch) b.p.reject(err);
      } else {
        placed.forEach((pos, i) => {
          const { resolve, reject } = batch[i]!.p;
          const timer = setTimeout(
            () => {
              if (this.pending.delete(pos.index)) {
                reject(outcomeUnknown('the command was not applied in time (no quorum?)'));
              }
            },
            this.opts.proposalTimeoutMs ?? 4 * this.opts.electionTimeoutMaxMs,
          );
          this.pending.set(pos.index, { term: pos.term, resolve, reject, timer });
        });
      }
    }
    if (this.readBatch.length > 0) {
      const waiters = this.readBatch;
      this.readBatch = [];
      const id = this.nextReadId++;
      if (core.readIndex(id)) this.readsInFlight.set(id, waiters);
      else {
        const err = this.notLeader(core.status().leaderId);
        for (const w of waiters) w.reject(err);
      }
    }
  }

  /** False when the node stopped before `rd` could be stored (a full disk held it). */
  private async persist(rd: Ready): Promise<boolean> {
    const storage = this.opts.storage;
    const snapshot = rd.snapshot;
    if (snapshot) {
      if (!(await this.untilStored(() => storage.saveSnapshot(snapshot, true)))) return false;
      this.persistedIndex = snapshot.meta.index;
    }
    // A hard state whose only change is the commit index is not worth a write of its own: commit is
    // volatile in Raft (a restarted node relearns it from the leader), and the next entries carry it.
    if (rd.entries.length > 0 || (rd.hardState && rd.mustSync)) {
      if (!(await this.untilStored(() => storage.save(rd.hardState, rd.entries, rd.mustSync)))) return false;
    }
    // The stored log now ends with these entries (a follower's may have replaced a suffix).
    const last = rd.entries[rd.entries.length - 1];
    if (last) this.persistedIndex = last.index;
    return true;
  }

  /**
   * A full disk is not a storage failure: the storage undid the write (StorageFullError), so the same
   * write is retried, with backoff, until space comes back. Meanwhile this Ready is held: nothing that
   * depends on it is sent, applied or acknowledged; proposals and reads get 503 at once (waiting ones
   * time out with an unknown outcome); a leader sends no heartbeats, so in a cluster another node
   * takes over. False when the node stopped while waiting.
   */
  private async untilStored(write: () => Promise<void>): Promise<boolean> {
    for (let backoffMs = 10; ; backoffMs = Math.min(2 * backoffMs, 500)) {
      try {
        await write();
        if (this.diskFull) {
          this.diskFull = false;
          this.log.warn('raft storage has space again; writes resume');
        }
        return true;
      } catch (err) {
        if (!(err instanceof StorageFullError)) throw err;
        if (!this.diskFull) {
          this.diskFull = true;
          this.log.error({ err }, 'raft storage is full; writes are refused until space is freed');
          // Not in the log yet, so refusing them is safe; those in the held Ready stay pending.
          const refused = diskFullError();
          for (const b of this.proposalBuffer) b.p.reject(refused);
          this.proposalBuffer = [];
          for (const r of this.readBatch) r.reject(refused);
          this.readBatch = [];
        }
        if (!this.running) return false;
        await new Promise((r) => setTimeout(r, backoffMs));
        if (!this.running) return false;
      }
    }
  }

  /** Apply `rd` after it was persisted; its first `alreadyApplied` committed entries were applied before. */
  private apply(rd: Ready, alreadyApplied: number): void {
    const sm = this.opts.stateMachine;
    if (rd.snapshot) {
      sm.restore(rd.snapshot.data);
      this.appliedIndex = rd.snapshot.meta.index;
      this.appliedTerm = rd.snapshot.meta.term;
      this.lastSnapshotIndex = rd.snapshot.meta.index;
      this.snapshotGap = 0;
      // Proposals at or below the snapshot were decided elsewhere; we cannot tell their result.
      for (const [index, p] of this.pending) {
        if (index <= rd.snapshot.meta.index) {
          clearTimeout(p.timer);
          this.pending.delete(index);
          p.reject(
            outcomeUnknown('a snapshot from the leader replaced the log before the command applied here'),
          );
        }
      }
      this.dropProposalsBefore(rd.snapshot.meta.term);
    }
    this.applyEntries(alreadyApplied > 0 ? rd.committed.slice(alreadyApplied) : rd.committed);
    for (const rs of rd.readStates) {
      const waiters = this.readsInFlight.get(rs.id);
      this.readsInFlight.delete(rs.id);
      if (waiters) this.readsToServe.push({ index: rs.index, waiters });
    }
    for (const id of rd.droppedReads) {
      const waiters = this.readsInFlight.get(id) ?? [];
      this.readsInFlight.delete(id);
      const err = new DssError('not_leader', 'leadership lost before the read was confirmed');
      for (const w of waiters) w.reject(err);
    }
    this.readsToServe = this.readsToServe.filter((r) => {
      if (r.index > this.appliedIndex) return true;
      for (const w of r.waiters) w.resolve();
      return false;
    });
  }

  private applyEntries(entries: Entry[]): void {
    const sm = this.opts.stateMachine;
    for (const e of entries) {
      // A committed entry of a later term means every log that will ever lead again holds it, and
      // (log matching) none of them holds an entry of an older term at this index or after it: our
      // remaining proposals of older terms can never commit.
      if (e.term > this.appliedTerm && this.pending.size > 0) this.dropProposalsBefore(e.term);
      const result = e.kind === 'command' ? sm.apply(e.command, e.index, e.term) : null;
      this.appliedIndex = e.index;
      this.appliedTerm = e.term;
      const p = this.pending.get(e.index);
      if (p) this.settle(e.index, p, p.term === e.term ? { index: e.index, result } : null);
    }
  }

  private dropProposalsBefore(term: number): void {
    for (const [index, p] of this.pending) if (p.term < term) this.settle(index, p, null);
  }

  private settle(index: number, p: PendingProposal, ok: { index: number; result: Json } | null): void {
    clearTimeout(p.timer);
    this.pending.delete(index);
    if (ok) p.resolve(ok);
    else {
      // Another leader's entry took this index: ours was never committed, so a retry is safe.
      const err = this.notLeader(this.core?.status().leaderId ?? null);
      p.reject(
        new DssError(err.code, `leadership changed and the command was not committed; ${err.message}`, {
          ...(err.details !== undefined ? { details: err.details } : {}),
          ...(err.retryAfter !== undefined ? { retryAfter: err.retryAfter } : {}),
        }),
      );
    }
  }

  /**
   * A snapshot holds the loop (the state machine is copied and written while nothing else runs here)
   * for a time that grows with the state: 0.15-0.3 s for 100,000 locks. So the gap between snapshots
   * grows with the state too, to half its size: the pause then stays a small share of the time
   * however large the state is, and the log kept between snapshots stays in proportion to the state.
   * Each node picks its gap with a random extra of up to half again: the nodes apply the same entries,
   * and with equal gaps they would all pause at once, the leader and its quorum together.
   */
  private chooseSnapshotGap(): number {
    const every = this.opts.snapshotEvery ?? 10_000;
    const size = this.opts.stateMachine.size();
    const bySize = Math.ceil(
      size * SNAPSHOT_GAP_PER_RECORD * (1 + 0.5 * (this.opts.random ?? Math.random)()),
    );
    return Math.max(every, bySize);
  }

  private async maybeSnapshot(core: RaftCore): Promise<void> {
    if (this.snapshotting || performance.now() < this.snapshotBlockedUntil) return;
    if (this.snapshotGap === 0) this.snapshotGap = this.chooseSnapshotGap();
    if (this.appliedIndex - this.lastSnapshotIndex < this.snapshotGap) return;
    this.snapshotting = true;
    const started = performance.now();
    try {
      const snapshot: Snapshot = {
        meta: { index: this.appliedIndex, term: this.appliedTerm, voters: [...this.opts.voters] },
        data: this.opts.stateMachine.snapshot(),
      };
      try {
        await this.opts.storage.saveSnapshot(snapshot, false);
      } catch (err) {
        if (!(err instanceof StorageFullError)) throw err;
        // A local snapshot is an optimisation: skip it (the log keeps everything) and try again later.
        this.log.warn({ err }, 'raft snapshot skipped: no space left');
        this.snapshotBlockedUntil = performance.now() + 1000;
        return;
      }
      const keepFrom = Math.max(1, snapshot.meta.index - (this.opts.snapshotRetain ?? 10_000) + 1);
      core.compact(snapshot, keepFrom);
      await this.opts.storage.compact(keepFrom - 1);
      this.lastSnapshotIndex = snapshot.meta.index;
      this.snapshotGap = 0;
      const seconds = (performance.now() - started) / 1000;
      this.events.onSnapshot?.({ index: snapshot.meta.index, seconds });
      this.log.info({ index: snapshot.meta.index, ms: Math.round(seconds * 1000) }, 'raft snapshot taken');
    } finally {
      this.snapshotting = false;
    }
  }

  // ---------------------------------------------------------------- network

  private dispatch(messages: Message[], readyNumber: number): void {
    const replies = new Map<NodeId, ResponseMessage[]>();
    for (const m of messages) {
      if (isResponse(m)) {
        let list = replies.get(m.to);
        if (!list) replies.set(m.to, (list = []));
        list.push(m);
      } else {
        this.sendRequest(m);
      }
    }
    this.releaseWaiters(readyNumber, replies);
  }

  /** Answer HTTP requests whose responses became durable with Ready `upTo`; unclaimed replies are dropped. */
  private releaseWaiters(upTo: number, replies: Map<NodeId, ResponseMessage[]> | []): void {
    const map = Array.isArray(replies) ? new Map<NodeId, ResponseMessage[]>() : replies;
    const keep: ReplyWaiter[] = [];
    for (const w of this.replyWaiters) {
      if (w.ready > upTo) {
        keep.push(w);
        continue;
      }
      w.resolve(map.get(w.peer) ?? []);
      map.delete(w.peer);
    }
    this.replyWaiters = keep;
  }

  private sendRequest(m: RequestMessage): void {
    const endpoint = endpointOf(m);
    if (endpoint === 'append_entries') {
      let ch = this.channels.get(m.to);
      if (!ch) this.channels.set(m.to, (ch = { queue: [], busy: false }));
      ch.queue.push(m);
      this.pumpChannel(m.to, ch);
      return;
    }
    const timeout =
      endpoint === 'install_snapshot'
        ? Math.max(30_000, this.opts.electionTimeoutMaxMs)
        : this.opts.electionTimeoutMinMs;
    this.opts.transport.send(m.to, endpoint, [m], timeout).then(
      (resps) => this.onResponses(m.to, resps),
      (err: unknown) => {
        if (m.type === 'snapshot') this.core?.reportSnapshot(m.to, false);
        this.log.debug({ peer: m.to, endpoint, err: String(err) }, 'raft send failed');
        this.kick();
      },
    );
  }

  private pumpChannel(peer: NodeId, ch: PeerChannel): void {
    if (ch.busy || ch.queue.length === 0 || !this.running) return;
    const batch = ch.queue.splice(0, MAX_BATCH_PER_REQUEST);
    ch.busy = true;
    const endpoint: RaftEndpoint = 'append_entries';
    const timeout = Math.max(this.opts.electionTimeoutMinMs, 4 * this.opts.heartbeatIntervalMs);
    this.opts.transport.send(peer, endpoint, batch, timeout).then(
      (resps) => {
        ch.busy = false;
        this.onResponses(peer, resps);
        this.pumpChannel(peer, ch);
      },
      (err: unknown) => {
        ch.busy = false;
        // What was queued behind a failed call is stale by now; the core resends from its progress.
        ch.queue = ch.queue.filter((q) => q.type !== 'append' || q.entries.length === 0).slice(-1);
        this.core?.reportUnreachable(peer);
        this.log.debug({ peer, err: String(err) }, 'raft append failed');
        this.kick();
        this.pumpChannel(peer, ch);
      },
    );
  }

  private onResponses(peer: NodeId, resps: ResponseMessage[]): void {
    if (!this.running || !this.core) return;
    this.lastHeard.set(peer, performance.now());
    for (const r of resps) this.core.step(r);
    this.kick();
  }

  // ---------------------------------------------------------------- helpers

  private noteStateChange(core: RaftCore): void {
    const st = core.status();
    const key = `${st.role}/${st.term}/${st.leaderId ?? ''}`;
    if (key === this.lastState) return;
    const prevRole = this.lastState.split('/')[0];
    this.lastState = key;
    if (st.role === 'candidate' && prevRole !== 'candidate') this.events.onElection?.();
    if (st.role !== 'leader') {
      // Entries we proposed as leader stay pending: they may still commit under the next leader.
      // Applying the index tells (same term: committed, with its result; other term: never was),
      // so callers get a definite answer instead of an ambiguous failure they would retry blindly.
      for (const r of this.readBatch) r.reject(this.notLeader(st.leaderId));
      this.readBatch = [];
    }
    this.log.info({ role: st.role, term: st.term, leader: st.leaderId }, 'raft state');
    this.events.onStateChange?.(st);
  }

  private notLeader(leaderId: NodeId | null): DssError {
    // Callers only get this for commands that never entered the log: retrying them is safe.
    return leaderId === null
      ? new DssError('no_leader', 'no Raft leader at the moment', { retryAfter: 1 })
      : new DssError('not_leader', `this node is not the leader; the leader is ${leaderId}`, {
          details: { leader_id: leaderId },
        });
  }

  private failAll(err: DssError): void {
    for (const [index, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(index);
      p.reject(
        new DssError(err.code, `${err.message}; the outcome of the command is unknown`, OUTCOME_UNKNOWN),
      );
    }
    for (const b of this.proposalBuffer) b.p.reject(err);
    this.proposalBuffer = [];
    for (const r of this.readBatch) r.reject(err);
    this.readBatch = [];
    for (const ws of this.readsInFlight.values()) for (const w of ws) w.reject(err);
    this.readsInFlight.clear();
    for (const r of this.readsToServe) for (const w of r.waiters) w.reject(err);
    this.readsToServe = [];
    this.releaseWaiters(Number.MAX_SAFE_INTEGER, []);
  }

  private die(err: Error): void {
    this.fatal = err;
    this.running = false;
    if (this.ticker) clearInterval(this.ticker);
    this.log.fatal({ err }, 'raft storage failed; this node stops taking part in Raft');
    this.failAll(new DssError('unavailable', 'raft storage failed on this node'));
    this.events.onFatal?.(err);
  }

  private requireCore(): RaftCore {
    if (!this.core) throw new DssError('unavailable', 'raft is not started');
    return this.core;
  }

  private requireRunning(): RaftCore {
    const core = this.requireCore();
    if (!this.running) throw new DssError('shutting_down', 'raft is stopped');
    return core;
  }
}

const OUTCOME_UNKNOWN = { details: { outcome: 'unknown' }, retryAfter: 1 };

function diskFullError(): DssError {
  return new DssError(
    'unavailable',
    'raft storage on this node is full; writes are refused until space is freed',
    {
      details: { reason: 'disk_full' },
      retryAfter: 1,
    },
  );
}

/**
 * The command entered the log but this node cannot tell whether it committed: a retry may apply it
 * twice, so the error says so (clients of idempotent commands retry; others check first).
 */
function outcomeUnknown(why: string): DssError {
  return new DssError('unavailable', `outcome unknown: ${why}`, OUTCOME_UNKNOWN);
}
