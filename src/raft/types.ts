// Types shared by the pure Raft core, its driver, storage and transport.
// The core never touches timers, sockets or disk: everything here is plain data.

export type NodeId = string;

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** One log entry. `kind: 'noop'` is the entry a new leader appends to commit its term. */
export interface Entry {
  index: number;
  term: number;
  kind: 'noop' | 'command';
  /** The state-machine command; null for a no-op. */
  command: Json;
}

/** What must survive a crash besides the log (Raft paper figure 2, plus commit as etcd does). */
export interface HardState {
  term: number;
  vote: NodeId | null;
  commit: number;
}

export interface SnapshotMeta {
  /** Last log index the snapshot covers. */
  index: number;
  /** Term of that entry. */
  term: number;
  /** Voters of the cluster at that point (membership change is future work; recorded for it). */
  voters: NodeId[];
}

export interface Snapshot {
  meta: SnapshotMeta;
  /** The state machine's serialized state. */
  data: Json;
}

interface MessageBase {
  from: NodeId;
  to: NodeId;
  term: number;
}

/** RequestVote; with `preVote` it is a PreVote probe carrying the term the sender would campaign in. */
export interface VoteRequest extends MessageBase {
  type: 'vote';
  preVote: boolean;
  lastLogIndex: number;
  lastLogTerm: number;
  /** Set when the leader asked the sender to campaign (leadership transfer): bypasses the lease check. */
  transfer?: boolean;
}

export interface VoteResponse extends MessageBase {
  type: 'vote_resp';
  preVote: boolean;
  granted: boolean;
}

/** AppendEntries; a heartbeat is an AppendEntries without entries. */
export interface AppendRequest extends MessageBase {
  type: 'append';
  prevLogIndex: number;
  prevLogTerm: number;
  entries: Entry[];
  /** Leader's commit index. */
  commit: number;
  /** Heartbeat round, echoed in the response; confirms leadership for ReadIndex. */
  ctx: number;
}

export interface AppendResponse extends MessageBase {
  type: 'append_resp';
  success: boolean;
  /**
   * On success: the highest index known to match the leader's log.
   * On rejection: the prevLogIndex that was rejected.
   */
  index: number;
  /** On rejection, fast back-off hints: the follower's conflicting term and its first index, or lastIndex+1. */
  hintIndex: number;
  hintTerm: number;
  ctx: number;
}

export interface SnapshotRequest extends MessageBase {
  type: 'snapshot';
  snapshot: Snapshot;
}

export interface SnapshotResponse extends MessageBase {
  type: 'snapshot_resp';
  /** Highest index the follower now has (the snapshot's index, or its commit if that was already past). */
  index: number;
}

/** Leader to its chosen successor: campaign now (leadership transfer). */
export interface TimeoutNow extends MessageBase {
  type: 'timeout_now';
}

export type Message =
  | VoteRequest
  | VoteResponse
  | AppendRequest
  | AppendResponse
  | SnapshotRequest
  | SnapshotResponse
  | TimeoutNow;

export type RequestMessage = VoteRequest | AppendRequest | SnapshotRequest | TimeoutNow;
export type ResponseMessage = VoteResponse | AppendResponse | SnapshotResponse;

export function isResponse(m: Message): m is ResponseMessage {
  return m.type === 'vote_resp' || m.type === 'append_resp' || m.type === 'snapshot_resp';
}

export type Role = 'follower' | 'candidate' | 'precandidate' | 'leader';

/** A linearizable read that the leader has confirmed: safe once `index` is applied. */
export interface ReadState {
  id: number;
  index: number;
}

/**
 * Everything the driver must do after the core changed, in this order:
 * 0. messages of type 'append' (a leader's) may be sent at once, before step 1;
 * 1. persist `snapshot` (if any), then `hardState` and `entries` (one fsync when `mustSync`);
 *    `entries[0].index` may be at or below the last stored index: the stored suffix from there is replaced;
 * 2. send the other `messages`;
 * 3. restore the state machine from `snapshot` (if any), then apply `committed` in order;
 * 4. serve `readStates` once their index is applied; fail `droppedReads`;
 * 5. call `advance(ready)`.
 */
export interface Ready {
  hardState: HardState | null;
  entries: Entry[];
  snapshot: Snapshot | null;
  mustSync: boolean;
  messages: Message[];
  committed: Entry[];
  readStates: ReadState[];
  droppedReads: number[];
}

export interface RaftConfig {
  id: NodeId;
  /** All voters, this node included. */
  voters: NodeId[];
  /** Randomized election timeout in ticks: uniform in [electionTicksMin, electionTicksMax]. */
  electionTicksMin: number;
  electionTicksMax: number;
  heartbeatTicks: number;
  preVote: boolean;
  checkQuorum: boolean;
  /** Cap on entries in one AppendEntries. */
  maxEntriesPerAppend: number;
  /** Cap on unacknowledged AppendEntries per follower when pipelining. */
  maxInflight: number;
  /** Seeded randomness in [0, 1): the core must stay deterministic. */
  random: () => number;
}

/** Durable state a node restarts from. `entries` follow `snapshot.meta.index` (or index 0) contiguously. */
export interface PersistedState {
  hardState: HardState;
  snapshot: Snapshot | null;
  entries: Entry[];
}

export interface RaftStatus {
  id: NodeId;
  role: Role;
  term: number;
  leaderId: NodeId | null;
  commitIndex: number;
  lastApplied: number;
  lastIndex: number;
  firstIndex: number;
  snapshotIndex: number;
}

/** The replicated state machine the lock manager (and tests) plug in. Must be deterministic. */
export interface StateMachine<Result = Json> {
  /** Apply one committed command; `index` works as a fencing token. Never reads a clock. */
  apply(command: Json, index: number, term: number): Result;
  /** Serialized state covering every applied entry. */
  snapshot(): Json;
  restore(data: Json): void;
  /**
   * Records a snapshot would hold (locks, say). A snapshot costs time in proportion to it, during
   * which the node answers nothing; the driver waits at least this many applied entries between
   * snapshots so that cost stays in proportion to the log it replaces.
   */
  size(): number;
}

/** Durable Raft storage. Implementations: a file WAL (production) and memory (tests). */
export interface RaftStorage {
  load(): Promise<PersistedState>;
  /** Append (replacing any stored suffix from entries[0].index) and record hardState; one fsync when sync. */
  save(hardState: HardState | null, entries: Entry[], sync: boolean): Promise<void>;
  /**
   * Durably store a snapshot. `replaceLog: false` (a local snapshot for compaction) keeps the stored
   * entries; `replaceLog: true` (a snapshot received from the leader) discards every stored entry:
   * the log restarts right after the snapshot, and entries saved later follow it.
   */
  saveSnapshot(snapshot: Snapshot, replaceLog: boolean): Promise<void>;
  /** Drop stored entries with index <= upTo (a snapshot covering them is already saved). */
  compact(upTo: number): Promise<void>;
  close(): Promise<void>;
}
