// The pure Raft state machine (Ongaro & Ousterhout 2014, with etcd-io/raft's structure):
// ticks and messages in; entries to persist, messages to send and entries to apply out (Ready).
// No timers, sockets, disk or clocks here, so a simulation can drive it deterministically.
import { RaftLog } from './log.js';
import { Progress } from './progress.js';
import type {
  AppendRequest,
  AppendResponse,
  Entry,
  HardState,
  Json,
  Message,
  NodeId,
  PersistedState,
  RaftConfig,
  RaftStatus,
  ReadState,
  Ready,
  Role,
  Snapshot,
  SnapshotRequest,
  SnapshotResponse,
  VoteRequest,
  VoteResponse,
} from './types.js';

interface PendingRead {
  id: number;
  index: number;
  round: number;
}

/** Cap on committed entries handed out in one Ready, so a restart does not apply millions at once. */
const MAX_APPLY_BATCH = 4096;

export class RaftCore {
  readonly id: NodeId;
  private readonly cfg: RaftConfig;
  private readonly voters: NodeId[];
  private readonly peers: NodeId[];
  private readonly quorum: number;

  private term: number;
  private vote: NodeId | null;
  private role: Role = 'follower';
  private leaderId: NodeId | null = null;
  private readonly log: RaftLog;

  /** Logical clock (ticks since start). */
  private now = 0;
  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  private randomizedElectionTimeout = 0;

  private votes = new Map<NodeId, boolean>();
  private progress = new Map<NodeId, Progress>();

  private latestSnapshot: Snapshot | null;
  /** A snapshot received from the leader that the driver must persist and restore. */
  private pendingSnapshot: Snapshot | null = null;

  private msgs: Message[] = [];
  private prevHardState: HardState;

  /** ReadIndex: heartbeat round counter of this term, and reads waiting for a quorum round. */
  private readRound = 0;
  private pendingReads: PendingRead[] = [];
  private readsAwaitingTermCommit: number[] = [];
  private readStates: ReadState[] = [];
  private droppedReads: number[] = [];

  private transferee: NodeId | null = null;
  private transferElapsed = 0;

  constructor(config: RaftConfig, persisted: PersistedState) {
    if (!config.voters.includes(config.id)) throw new Error(`raft: ${config.id} is not among the voters`);
    if (
      config.electionTicksMin <= config.heartbeatTicks ||
      config.electionTicksMax < config.electionTicksMin
    ) {
      throw new Error('raft: election timeout must exceed the heartbeat interval and min <= max');
    }
    this.cfg = config;
    this.id = config.id;
    this.voters = [...config.voters];
    this.peers = this.voters.filter((v) => v !== this.id);
    this.quorum = Math.floor(this.voters.length / 2) + 1;
    this.term = persisted.hardState.term;
    this.vote = persisted.hardState.vote;
    this.latestSnapshot = persisted.snapshot;
    this.log = new RaftLog(persisted.snapshot?.meta ?? null, persisted.entries, persisted.hardState.commit);
    this.prevHardState = this.hardState();
    this.resetElectionTimeout();
  }

  // ---------------------------------------------------------------- inputs

  tick(): void {
    this.now++;
    if (this.role === 'leader') this.tickLeader();
    else this.tickElection();
  }

  step(m: Message): void {
    if (m.to !== this.id || m.from === this.id || !this.voters.includes(m.from)) return;
    if (!this.handleTerm(m)) return;
    switch (m.type) {
      case 'vote':
        this.handleVote(m);
        return;
      case 'vote_resp':
        this.handleVoteResponse(m);
        return;
      case 'append':
        if (this.role === 'leader') return; // same-term leader cannot exist; ignore
        this.becomeFollowerOf(m.from);
        this.handleAppend(m);
        return;
      case 'snapshot':
        if (this.role === 'leader') return;
        this.becomeFollowerOf(m.from);
        this.handleSnapshot(m);
        return;
      case 'timeout_now':
        if (this.role !== 'leader' && this.voters.includes(this.id)) this.campaign(false, true);
        return;
      case 'append_resp':
        if (this.role === 'leader') this.handleAppendResponse(m);
        return;
      case 'snapshot_resp':
        if (this.role === 'leader') this.handleSnapshotResponse(m);
        return;
    }
  }

  /** Append commands to the leader's log; returns their positions, or null when not leader. */
  propose(commands: Json[]): { index: number; term: number }[] | null {
    if (this.role !== 'leader' || this.transferee !== null) return null;
    const out: { index: number; term: number }[] = [];
    const entries: Entry[] = [];
    let index = this.log.lastIndex();
    for (const command of commands) {
      index++;
      entries.push({ index, term: this.term, kind: 'command', command });
      out.push({ index, term: this.term });
    }
    this.log.append(entries);
    this.bcastAppend();
    return out;
  }

  /** Ask for a linearizable read point; answered through Ready.readStates (or droppedReads). */
  readIndex(id: number): boolean {
    if (this.role !== 'leader') return false;
    if (this.log.term(this.log.committed) !== this.term) {
      // Until an entry of this term commits, our commit index may be behind the real one (paper 8).
      this.readsAwaitingTermCommit.push(id);
      return true;
    }
    this.issueRead(id);
    return true;
  }

  /** The driver snapshotted the state machine at `snapshot.meta.index` (<= applied). */
  compact(snapshot: Snapshot, keepFrom?: number): void {
    const idx = snapshot.meta.index;
    if (idx > this.log.applied)
      throw new Error(`raft: snapshot at ${idx} beyond applied ${this.log.applied}`);
    if (this.latestSnapshot === null || idx > this.latestSnapshot.meta.index) this.latestSnapshot = snapshot;
    const upTo = Math.min(idx, (keepFrom ?? idx + 1) - 1);
    if (upTo > this.log.offset().index) this.log.compact(upTo);
  }

  reportUnreachable(peer: NodeId): void {
    const pr = this.progress.get(peer);
    if (this.role !== 'leader' || !pr) return;
    if (pr.state === 'replicate') pr.becomeProbe();
  }

  reportSnapshot(peer: NodeId, ok: boolean): void {
    const pr = this.progress.get(peer);
    if (this.role !== 'leader' || !pr || pr.state !== 'snapshot') return;
    if (!ok) pr.pendingSnapshot = 0;
    pr.becomeProbe();
    // Wait for the next heartbeat before probing again, rather than hammering a failing peer.
    pr.probeSent = true;
  }

  transferLeadership(to: NodeId): boolean {
    if (this.role !== 'leader' || to === this.id || !this.peers.includes(to)) return false;
    this.transferee = to;
    this.transferElapsed = 0;
    const pr = this.progress.get(to)!;
    if (pr.match === this.log.lastIndex())
      this.send({ type: 'timeout_now', from: this.id, to, term: this.term });
    else this.sendAppend(to, false);
    return true;
  }

  /** Start an election now (tests and operator tooling). */
  campaign(preVote = this.cfg.preVote, transfer = false): void {
    if (this.role === 'leader') return;
    if (preVote && !transfer) this.becomePreCandidate();
    else this.becomeCandidate();
    const term = preVote && !transfer ? this.term + 1 : this.term;
    if (this.votes.size >= this.quorum) {
      this.winElection(preVote && !transfer);
      return;
    }
    for (const to of this.peers) {
      const msg: VoteRequest = {
        type: 'vote',
        from: this.id,
        to,
        term,
        preVote: preVote && !transfer,
        lastLogIndex: this.log.lastIndex(),
        lastLogTerm: this.log.lastTerm(),
      };
      if (transfer) msg.transfer = true;
      this.send(msg);
    }
  }

  // ---------------------------------------------------------------- outputs

  hasReady(): boolean {
    return (
      this.msgs.length > 0 ||
      this.log.unstableFrom <= this.log.lastIndex() ||
      this.pendingSnapshot !== null ||
      this.log.committed > this.log.applied ||
      this.readStates.length > 0 ||
      this.droppedReads.length > 0 ||
      !sameHardState(this.hardState(), this.prevHardState)
    );
  }

  ready(): Ready {
    const hs = this.hardState();
    const hsChanged = !sameHardState(hs, this.prevHardState);
    const entries = this.log.unstableEntries();
    this.log.markHandedOut();
    const snapshot = this.pendingSnapshot;
    this.pendingSnapshot = null;
    const applyTo = Math.min(this.log.committed, this.log.applied + MAX_APPLY_BATCH);
    const committed = applyTo > this.log.applied ? this.log.slice(this.log.applied + 1, applyTo + 1) : [];
    if (committed.length > 0) this.log.applied = applyTo;
    const rd: Ready = {
      hardState: hsChanged ? hs : null,
      entries,
      snapshot,
      mustSync:
        entries.length > 0 ||
        snapshot !== null ||
        hs.term !== this.prevHardState.term ||
        hs.vote !== this.prevHardState.vote,
      messages: this.msgs,
      committed,
      readStates: this.readStates,
      droppedReads: this.droppedReads,
    };
    this.prevHardState = hs;
    this.msgs = [];
    this.readStates = [];
    this.droppedReads = [];
    return rd;
  }

  /** The driver persisted, sent and applied `rd`. */
  advance(rd: Ready): void {
    const last = rd.entries[rd.entries.length - 1];
    if (last) this.log.stableTo(last.index, last.term);
    if (this.role === 'leader') this.maybeCommit();
  }

  status(): RaftStatus {
    return {
      id: this.id,
      role: this.role,
      term: this.term,
      leaderId: this.leaderId,
      commitIndex: this.log.committed,
      lastApplied: this.log.applied,
      lastIndex: this.log.lastIndex(),
      firstIndex: this.log.firstIndex(),
      snapshotIndex: this.latestSnapshot?.meta.index ?? 0,
    };
  }

  /** Followers heard from within the minimum election timeout (leader only; self always included). */
  activePeers(): NodeId[] {
    const out = [this.id];
    if (this.role !== 'leader') return out;
    for (const [id, pr] of this.progress) {
      if (this.now - pr.lastActive < this.cfg.electionTicksMin) out.push(id);
    }
    return out;
  }

  logEntries(): Entry[] {
    return this.log.all();
  }

  logOffset(): { index: number; term: number } {
    return this.log.offset();
  }

  snapshot(): Snapshot | null {
    return this.latestSnapshot;
  }

  // ---------------------------------------------------------------- terms and roles

  /** Paper 5.1 plus PreVote/CheckQuorum rules; returns false when the message must be dropped. */
  private handleTerm(m: Message): boolean {
    if (m.term > this.term) {
      if (m.type === 'vote' && !m.transfer && this.inLease()) {
        // CheckQuorum lease: we heard from a live leader recently, so a vote request with a higher
        // term comes from a disruptive node; ignoring it keeps the cluster stable (paper 9.6).
        return false;
      }
      if (m.type === 'vote' && m.preVote) return true; // a PreVote never changes our term
      if (m.type === 'vote_resp' && m.preVote && m.granted) return true; // granted at our future term
      const leader = m.type === 'append' || m.type === 'snapshot' || m.type === 'timeout_now' ? m.from : null;
      this.becomeFollower(m.term, leader);
      return true;
    }
    if (m.term < this.term) {
      if (m.type === 'append' || m.type === 'snapshot') {
        // Tell a stale leader about the newer term, or it would never step down (with PreVote the
        // rest of the cluster may otherwise never send it a higher term).
        this.send({
          type: 'append_resp',
          from: this.id,
          to: m.from,
          term: this.term,
          success: false,
          index: 0,
          hintIndex: 0,
          hintTerm: 0,
          ctx: 0,
        });
      } else if (m.type === 'vote' && m.preVote) {
        this.send({
          type: 'vote_resp',
          from: this.id,
          to: m.from,
          term: this.term,
          preVote: true,
          granted: false,
        });
      }
      return false;
    }
    return true;
  }

  private inLease(): boolean {
    if (!this.cfg.checkQuorum) return false;
    if (this.role === 'leader') return true;
    return this.leaderId !== null && this.electionElapsed < this.cfg.electionTicksMin;
  }

  private becomeFollower(term: number, leader: NodeId | null): void {
    const wasLeader = this.role === 'leader';
    if (term !== this.term) {
      this.term = term;
      this.vote = null;
    }
    this.role = 'follower';
    this.leaderId = leader;
    this.electionElapsed = 0;
    this.votes.clear();
    this.resetElectionTimeout();
    if (wasLeader) this.stepDownCleanup();
  }

  private becomeFollowerOf(leader: NodeId): void {
    if (this.role !== 'follower' || this.leaderId !== leader) this.becomeFollower(this.term, leader);
    this.electionElapsed = 0;
  }

  private stepDownCleanup(): void {
    this.progress.clear();
    this.transferee = null;
    for (const r of this.pendingReads) this.droppedReads.push(r.id);
    this.droppedReads.push(...this.readsAwaitingTermCommit);
    this.pendingReads = [];
    this.readsAwaitingTermCommit = [];
  }

  private becomePreCandidate(): void {
    // A PreVote does not touch term or vote: a node that cannot win leaves no trace (thesis 9.6).
    this.role = 'precandidate';
    this.leaderId = null;
    this.electionElapsed = 0;
    this.resetElectionTimeout();
    this.votes = new Map([[this.id, true]]);
  }

  private becomeCandidate(): void {
    this.term++;
    this.vote = this.id;
    this.role = 'candidate';
    this.leaderId = null;
    this.electionElapsed = 0;
    this.resetElectionTimeout();
    this.votes = new Map([[this.id, true]]);
  }

  private winElection(wasPreVote: boolean): void {
    if (wasPreVote) this.campaign(false, false);
    else this.becomeLeader();
  }

  private becomeLeader(): void {
    this.role = 'leader';
    this.leaderId = this.id;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.transferee = null;
    this.readRound = 0;
    this.progress.clear();
    for (const p of this.peers) this.progress.set(p, new Progress(this.log.lastIndex() + 1, this.now));
    // Committing a no-op of the new term commits every earlier entry (paper 5.4.2) and lets
    // ReadIndex know the commit index is current (paper 8).
    this.log.append([{ index: this.log.lastIndex() + 1, term: this.term, kind: 'noop', command: null }]);
    this.bcastAppend();
  }

  private resetElectionTimeout(): void {
    const span = this.cfg.electionTicksMax - this.cfg.electionTicksMin + 1;
    this.randomizedElectionTimeout = this.cfg.electionTicksMin + Math.floor(this.cfg.random() * span);
  }

  // ---------------------------------------------------------------- ticks

  private tickElection(): void {
    this.electionElapsed++;
    if (this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.campaign();
    }
  }

  private tickLeader(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.cfg.checkQuorum && this.electionElapsed >= this.cfg.electionTicksMin) {
      // Step down as soon as a majority has been silent for a whole minimum election timeout:
      // by then followers may elect someone else, and we must stop acting as leader.
      if (this.activePeers().length < this.quorum) {
        this.becomeFollower(this.term, null);
        return;
      }
    }
    if (this.transferee !== null) {
      this.transferElapsed++;
      if (this.transferElapsed >= this.cfg.electionTicksMin) this.transferee = null;
    }
    if (this.heartbeatElapsed >= this.cfg.heartbeatTicks) {
      this.heartbeatElapsed = 0;
      this.abandonStalledSnapshots();
      this.bcastHeartbeat();
    }
  }

  // ---------------------------------------------------------------- votes

  private handleVote(m: VoteRequest): void {
    const canVote =
      this.vote === m.from ||
      (this.vote === null && this.leaderId === null) ||
      (m.preVote && m.term > this.term);
    if (canVote && this.log.isUpToDate(m.lastLogIndex, m.lastLogTerm)) {
      this.send({
        type: 'vote_resp',
        from: this.id,
        to: m.from,
        term: m.term,
        preVote: m.preVote,
        granted: true,
      });
      if (!m.preVote) {
        this.vote = m.from;
        this.electionElapsed = 0;
      }
    } else {
      this.send({
        type: 'vote_resp',
        from: this.id,
        to: m.from,
        term: this.term,
        preVote: m.preVote,
        granted: false,
      });
    }
  }

  private handleVoteResponse(m: VoteResponse): void {
    // A PreVote grant carries the term we would campaign in; a refusal carries the voter's own term,
    // which is usually ours (a higher one already made us a follower in handleTerm).
    const expecting =
      (this.role === 'precandidate' &&
        m.preVote &&
        (m.term === this.term + 1 || (!m.granted && m.term === this.term))) ||
      (this.role === 'candidate' && !m.preVote && m.term === this.term);
    if (!expecting) return;
    this.votes.set(m.from, m.granted);
    let granted = 0;
    let rejected = 0;
    for (const v of this.votes.values()) {
      if (v) granted++;
      else rejected++;
    }
    if (granted >= this.quorum) this.winElection(this.role === 'precandidate');
    else if (rejected >= this.quorum) this.becomeFollower(this.term, null);
  }

  // ---------------------------------------------------------------- replication (follower)

  private handleAppend(m: AppendRequest): void {
    const reply = (success: boolean, index: number, hintIndex = 0, hintTerm = 0): void =>
      this.send({
        type: 'append_resp',
        from: this.id,
        to: m.from,
        term: this.term,
        success,
        index,
        hintIndex,
        hintTerm,
        ctx: m.ctx,
      });
    if (m.prevLogIndex < this.log.committed) {
      // Everything up to our commit already matches; tell the leader where to continue.
      reply(true, this.log.committed);
      return;
    }
    const lastNew = this.log.maybeAppend(m.prevLogIndex, m.prevLogTerm, m.commit, m.entries);
    if (lastNew !== null) {
      reply(true, lastNew);
      return;
    }
    if (m.prevLogIndex > this.log.lastIndex()) {
      reply(false, m.prevLogIndex, this.log.lastIndex() + 1, 0);
      return;
    }
    const conflictTerm = this.log.term(m.prevLogIndex)!;
    reply(false, m.prevLogIndex, this.log.firstIndexOfTerm(m.prevLogIndex, conflictTerm), conflictTerm);
  }

  private handleSnapshot(m: SnapshotRequest): void {
    const { meta } = m.snapshot;
    let index: number;
    if (meta.index <= this.log.committed) {
      index = this.log.committed;
    } else if (this.log.matchTerm(meta.index, meta.term)) {
      // We already hold that prefix: commit it instead of throwing the log away.
      this.log.commitTo(meta.index);
      index = meta.index;
    } else {
      this.log.restore(meta);
      this.latestSnapshot = m.snapshot;
      this.pendingSnapshot = m.snapshot;
      index = meta.index;
    }
    const resp: SnapshotResponse = {
      type: 'snapshot_resp',
      from: this.id,
      to: m.from,
      term: this.term,
      index,
    };
    this.send(resp);
  }

  // ---------------------------------------------------------------- replication (leader)

  private handleAppendResponse(m: AppendResponse): void {
    const pr = this.progress.get(m.from);
    if (!pr) return;
    pr.lastActive = this.now;
    if (m.ctx > pr.readAck) {
      pr.readAck = m.ctx;
      this.releaseReads();
    }
    if (m.success) {
      if (pr.maybeUpdate(m.index)) {
        if (pr.state === 'probe') pr.becomeReplicate();
        else if (pr.state === 'snapshot' && pr.match >= pr.pendingSnapshot) pr.becomeProbe();
        this.maybeCommit();
        if (this.transferee === m.from && pr.match === this.log.lastIndex()) {
          this.send({ type: 'timeout_now', from: this.id, to: m.from, term: this.term });
        }
      } else if (pr.state === 'probe' && m.index >= pr.next - 1) {
        // The follower matches at our probe point even though we already knew that match.
        pr.becomeReplicate();
      }
      while (this.sendAppend(m.from, false));
      return;
    }
    if (m.index === 0 && m.hintIndex === 0) return; // the stale-term notice; nothing to learn here
    let hintNext = m.hintIndex;
    if (m.hintTerm > 0) {
      // Skip the follower's whole conflicting term: continue after our last entry of that term,
      // if we have one, else at the first index the follower holds of it (thesis 5.3 optimization).
      const i = this.log.lastIndexWithTermAtMost(m.index, m.hintTerm);
      if (this.log.term(i) === m.hintTerm) hintNext = i + 1;
    }
    if (pr.maybeDecrTo(m.index, hintNext)) {
      while (this.sendAppend(m.from, false));
    }
  }

  private handleSnapshotResponse(m: SnapshotResponse): void {
    const pr = this.progress.get(m.from);
    if (!pr) return;
    pr.lastActive = this.now;
    pr.maybeUpdate(m.index);
    if (pr.state === 'snapshot') {
      pr.becomeProbe();
      // Answer to the snapshot we sent: the follower now holds it, so replicate from there.
      pr.becomeReplicate();
    }
    this.maybeCommit();
    while (this.sendAppend(m.from, false));
  }

  private maybeCommit(): void {
    const matches = [this.log.stableIndex];
    for (const pr of this.progress.values()) matches.push(pr.match);
    matches.sort((a, b) => b - a);
    const q = matches[this.quorum - 1]!;
    // Only an entry of the current term is committed by counting replicas (paper 5.4.2, Figure 8).
    if (q > this.log.committed && this.log.term(q) === this.term) {
      const firstOfTerm = this.log.term(this.log.committed) !== this.term;
      this.log.commitTo(q);
      if (firstOfTerm) {
        const waiting = this.readsAwaitingTermCommit;
        this.readsAwaitingTermCommit = [];
        for (const id of waiting) this.issueRead(id);
      }
      // Followers learn the new commit index with the next append or heartbeat.
    }
  }

  private bcastAppend(): void {
    for (const p of this.peers) while (this.sendAppend(p, false));
  }

  /**
   * The driver normally reports how a snapshot send ended; this backstop retries one whose answer
   * never came (lost message), so a follower can never be stuck in the snapshot state.
   */
  private abandonStalledSnapshots(): void {
    for (const pr of this.progress.values()) {
      if (pr.state === 'snapshot' && this.now - pr.snapshotSentAt >= 4 * this.cfg.electionTicksMax) {
        pr.pendingSnapshot = 0;
        pr.becomeProbe();
      }
    }
  }

  private bcastHeartbeat(): void {
    for (const p of this.peers) this.sendHeartbeat(p);
  }

  /** Send the next batch of entries to `to` if allowed; returns true if something was sent. */
  private sendAppend(to: NodeId, allowEmpty: boolean): boolean {
    const pr = this.progress.get(to)!;
    if (pr.isPaused(this.cfg.maxInflight)) return false;
    const prev = pr.next - 1;
    const prevTerm = this.log.term(prev);
    if (prevTerm === undefined) return this.sendSnapshot(to, pr);
    const last = this.log.lastIndex();
    if (pr.next > last && !allowEmpty) return false;
    const entries = pr.next <= last ? this.log.slice(pr.next, pr.next + this.cfg.maxEntriesPerAppend) : [];
    const msg: AppendRequest = {
      type: 'append',
      from: this.id,
      to,
      term: this.term,
      prevLogIndex: prev,
      prevLogTerm: prevTerm,
      entries,
      commit: this.log.committed,
      ctx: this.readRound,
    };
    this.send(msg);
    pr.sentAppend(prev + entries.length, entries.length);
    return entries.length > 0 && pr.state === 'replicate';
  }

  private sendHeartbeat(to: NodeId): void {
    const pr = this.progress.get(to)!;
    if (pr.state === 'probe' && pr.probeSent) pr.probeSent = false; // retry the probe once per heartbeat
    if (pr.state !== 'snapshot' && !pr.isPaused(this.cfg.maxInflight) && pr.next <= this.log.lastIndex()) {
      // There is data to send anyway: the append doubles as the heartbeat.
      while (this.sendAppend(to, false));
      return;
    }
    // Probing at next-1 (not at match) is what recovers pipelined appends that were lost: the
    // follower refuses the gap and we fall back to probe. The price is a needless resend when a
    // heartbeat overtakes appends in flight, which the driver's ordered per-peer channel rules out.
    const prev = pr.state === 'snapshot' ? pr.match : pr.next - 1;
    const prevTerm = this.log.term(prev);
    if (prevTerm === undefined) {
      if (pr.state !== 'snapshot') this.sendSnapshot(to, pr);
      return;
    }
    this.sendEmptyAppend(to, prev, prevTerm);
  }

  /** A heartbeat: no entries, and a commit index the follower can trust up to the matched `prev`. */
  private sendEmptyAppend(to: NodeId, prev: number, prevTerm: number): void {
    this.send({
      type: 'append',
      from: this.id,
      to,
      term: this.term,
      prevLogIndex: prev,
      prevLogTerm: prevTerm,
      entries: [],
      commit: Math.min(this.log.committed, prev),
      ctx: this.readRound,
    });
  }

  private sendSnapshot(to: NodeId, pr: Progress): boolean {
    const snap = this.latestSnapshot;
    if (snap === null) throw new Error('raft: log compacted without a snapshot');
    pr.becomeSnapshot(snap.meta.index, this.now);
    this.send({ type: 'snapshot', from: this.id, to, term: this.term, snapshot: snap });
    return false;
  }

  // ---------------------------------------------------------------- ReadIndex

  private issueRead(id: number): void {
    if (this.peers.length === 0) {
      this.readStates.push({ id, index: this.log.committed });
      return;
    }
    this.readRound++;
    this.pendingReads.push({ id, index: this.log.committed, round: this.readRound });
    // A fresh heartbeat round: a majority answering it proves we were still leader after the read arrived.
    for (const p of this.peers) this.sendReadHeartbeat(p);
  }

  private sendReadHeartbeat(to: NodeId): void {
    const pr = this.progress.get(to)!;
    // At the known match the follower accepts without any back-off; only the round (ctx) matters.
    const match = Math.min(pr.match, this.log.lastIndex());
    const matchTerm = this.log.term(match);
    if (matchTerm !== undefined) this.sendEmptyAppend(to, match, matchTerm);
    else this.sendEmptyAppend(to, this.log.offset().index, this.log.offset().term);
  }

  private releaseReads(): void {
    while (this.pendingReads.length > 0) {
      const r = this.pendingReads[0]!;
      let acks = 1;
      for (const pr of this.progress.values()) if (pr.readAck >= r.round) acks++;
      if (acks < this.quorum) return;
      this.pendingReads.shift();
      this.readStates.push({ id: r.id, index: r.index });
    }
  }

  // ---------------------------------------------------------------- helpers

  private send(m: Message): void {
    this.msgs.push(m);
  }

  private hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.log.committed };
  }
}

function sameHardState(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}
