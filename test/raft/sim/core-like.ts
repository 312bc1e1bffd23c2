// The surface of src/raft/core.ts the simulation drives; keeping it an interface lets the harness
// be reused against any core with this API (the tests pass the real RaftCore).
import type {
  Entry,
  Json,
  Message,
  NodeId,
  PersistedState,
  RaftConfig,
  RaftStatus,
  Ready,
  Snapshot,
} from '../../../src/raft/types.js';

export interface CoreLike {
  readonly id: NodeId;
  tick(): void;
  step(m: Message): void;
  propose(commands: Json[]): { index: number; term: number }[] | null;
  readIndex(id: number): boolean;
  compact(snapshot: Snapshot, keepFrom?: number): void;
  hasReady(): boolean;
  ready(): Ready;
  advance(rd: Ready): void;
  status(): RaftStatus;
  reportUnreachable(peer: NodeId): void;
  reportSnapshot(peer: NodeId, ok: boolean): void;
  transferLeadership(to: NodeId): boolean;
  campaign(): void;
  logEntries(): Entry[];
  logOffset(): { index: number; term: number };
}

export type CoreFactory = (config: RaftConfig, persisted: PersistedState) => CoreLike;
