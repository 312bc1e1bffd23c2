// PLACEHOLDER: the Raft driver is being written; this file fixes its public surface so that the
// HTTP layer and the composition root can be built against it.
import type { Logger } from 'pino';
import type { Transport } from '../transport/transport.js';
import type {
  Json,
  NodeId,
  RaftStatus,
  RaftStorage,
  RequestMessage,
  ResponseMessage,
  StateMachine,
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
  /** Take a snapshot and compact the log after this many applied entries (default 10000). */
  snapshotEvery?: number;
}

export interface RaftNodeEvents {
  /** Called on every role/term/leader change. */
  onStateChange?: (s: RaftStatus) => void;
  /** Called once per election this node starts (for raft_elections_total). */
  onElection?: () => void;
}

export class RaftNode {
  constructor(_opts: RaftNodeOptions, _events: RaftNodeEvents = {}) {}
  /** Load persisted state and start ticking. */
  start(): Promise<void> {
    throw new Error('not implemented');
  }
  /** Stop timers, reject pending proposals, close storage. */
  stop(): Promise<void> {
    throw new Error('not implemented');
  }
  status(): RaftStatus {
    throw new Error('not implemented');
  }
  /** Peers heard from within an election timeout (leader's view); self always included. */
  reachablePeers(): Set<NodeId> {
    throw new Error('not implemented');
  }
  /** Handle one internal Raft RPC; resolves with the responses to send back once durable. */
  handleRequest(_msg: RequestMessage): Promise<ResponseMessage[]> {
    throw new Error('not implemented');
  }
  /** Replicate a command; resolves after it is committed and applied here, with the apply result. */
  propose(_command: Json): Promise<{ index: number; result: Json }> {
    throw new Error('not implemented');
  }
  /** Resolves when this leader may serve a linearizable read from its state machine. */
  readIndex(): Promise<void> {
    throw new Error('not implemented');
  }
}
