// What the HTTP layer needs from the rest of the node. Interfaces, not classes, so tests can hand in
// fakes and the services added later (locks, queues, cache) plug in without touching the server.
import type {
  FastifyBaseLogger,
  FastifyInstance,
  RawReplyDefaultExpression,
  RawRequestDefaultExpression,
} from 'fastify';
import type { RawServerDefault } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { ClusterMember, NodeRole } from '../config/index.js';
import type { Metrics } from '../metrics/index.js';
import type { NodeId, RaftStatus, RequestMessage, ResponseMessage } from '../raft/types.js';

/** The fastify instance type used throughout the API (TypeBox type provider). */
export type DssApp = FastifyInstance<
  RawServerDefault,
  RawRequestDefaultExpression,
  RawReplyDefaultExpression,
  FastifyBaseLogger,
  TypeBoxTypeProvider
>;

/** The part of RaftNode the HTTP layer uses (RaftNode satisfies it structurally). */
export interface RaftApi {
  status(): RaftStatus;
  reachablePeers(): Set<NodeId>;
  /** One batch of requests from one peer, in order; resolves with the responses once durable. */
  handleRequests(msgs: RequestMessage[]): Promise<ResponseMessage[]>;
}

export interface CheckResult {
  ok: boolean;
  /** Why not ready; shown to operators. */
  reason?: string;
}

/** One named readiness condition ("raft has a leader", "redis answers PING"). */
export interface ReadinessCheck {
  name: string;
  check(): Promise<CheckResult>;
}

/** Cached reachability of other nodes (from periodic health probes). Never blocks. */
export interface PeerReachability {
  isReachable(id: NodeId): boolean;
}

/**
 * Extra sections of GET /status contributed by services, e.g. `queue` or `cache`:
 * `{ cache: () => ({ size, capacity }) }`.
 */
export type StatusSections = Record<string, () => unknown>;

export interface ApiContext {
  nodeId: NodeId;
  roles: NodeRole[];
  /** Every node incl. this one. */
  cluster: ClusterMember[];
  /** Null on nodes without the lock role. */
  raft: RaftApi | null;
  metrics: Metrics;
  readinessChecks: ReadinessCheck[];
  peers: PeerReachability;
  statusSections: StatusSections;
}
