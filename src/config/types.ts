import type { NodeId } from '../raft/types.js';

/** The services a node can run (SPEC 1.1). */
export type NodeRole = 'lock' | 'queue' | 'cache';

/** Canonical order; role lists in a Config are always sorted this way. */
export const ALL_ROLES: readonly NodeRole[] = ['lock', 'queue', 'cache'];

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export type CacheWritePolicy = 'write-back' | 'write-through';

/** One node of the cluster as listed in CLUSTER_ADDRS. */
export interface ClusterMember {
  id: NodeId;
  /** Host as written (IPv6 keeps its brackets), used to build `url`. */
  host: string;
  port: number;
  /** Base URL peers use to reach this node, e.g. `http://10.0.0.2:8001` (no trailing slash). */
  url: string;
  roles: NodeRole[];
}

export interface HostPort {
  host: string;
  port: number;
}

export type RedisConfig =
  | { mode: 'standalone'; url: string }
  | { mode: 'cluster'; nodes: HostPort[] }
  | { mode: 'sentinel'; sentinels: HostPort[]; name: string };

export interface Limits {
  /** HTTP_REQUEST_TIMEOUT_MS: most time a client may take to send one request (headers: a third). */
  requestTimeoutMs: number;
  /** RATE_LIMIT_PER_CONNECTION: public requests per second one connection may send (0 = no limit). */
  ratePerConnection: number;
  /** CACHE_MAX_VALUE_BYTES: largest cache value, as JSON text. */
  cacheMaxValueBytes: number;
  /** QUEUE_MAX_MESSAGE_BYTES: largest queue message, as JSON text. */
  queueMaxMessageBytes: number;
  /** QUEUE_MAX_LENGTH: most messages one queue holds, ready and pending together (0 = no limit). */
  queueMaxLength: number;
  /** LOCK_MAX_WAITERS: most acquires waiting on one resource. */
  lockMaxWaiters: number;
  /** LOCK_MAX_HOLDS_PER_CLIENT: most holds one client_id may have at once. */
  lockMaxHoldsPerClient: number;
}

export interface Config {
  nodeId: NodeId;
  /** Bind address. */
  host: string;
  /** Bind port (0 = ephemeral, for tests). */
  port: number;
  /** Roles this node runs. */
  roles: NodeRole[];
  /** Every node of the cluster, this one included, in CLUSTER_ADDRS order. */
  cluster: ClusterMember[];
  /** This node's entry of `cluster`. */
  self: ClusterMember;
  redis: RedisConfig;
  /** True when REDIS_URL / REDIS_HOST / REDIS_CLUSTER_NODES / REDIS_SENTINELS was given. */
  redisExplicit: boolean;
  raft: {
    electionTimeoutMinMs: number;
    electionTimeoutMaxMs: number;
    heartbeatIntervalMs: number;
    /** Snapshot and compact after at least this many applied entries (RAFT_SNAPSHOT_EVERY; more for a large state). */
    snapshotEvery: number;
    /** Entries kept behind a snapshot for briefly lagging followers (RAFT_SNAPSHOT_RETAIN). */
    snapshotRetain: number;
  };
  lock: { defaultTtlMs: number };
  queue: { ackTimeoutMs: number; maxDeliveries: number; vnodes: number };
  cache: {
    maxSize: number;
    writePolicy: CacheWritePolicy;
    /** CACHE_LEASE_MS: coherence lease; bounds how long a write waits for an unreachable sharer. */
    leaseMs: number;
  };
  /** Guards against one client exhausting a node (issue 7); each breach is a clear 4xx. */
  limits: Limits;
  /** METRICS_MAX_QUEUES: queues with their own queue_depth series per node; the rest are summed. */
  metrics: { maxQueues: number };
  dataDir: string;
  /** Bearer secret for internal routes; null = internal routes are open. */
  clusterSecret: string | null;
  /** Bearer tokens for public routes; empty = public routes are open. */
  apiTokens: string[];
  /** OPS_ROUTES_OPEN: /health, /ready and /metrics need no token even with API_TOKENS (default true). */
  opsRoutesOpen: boolean;
  /** File paths; read at start by the composition root. */
  tls: { certFile: string; keyFile: string; caFile: string | null } | null;
  logLevel: LogLevel;
  /** DSS_TEST_HOOKS=1: expose /debug/* routes for integration tests. Never in production. */
  testHooks: boolean;
}

/** A bad configuration value; `message` is one line naming the variable and the problem. */
export class ConfigError extends Error {
  readonly variable: string;
  constructor(variable: string, problem: string) {
    super(`${variable}: ${problem}`);
    this.name = 'ConfigError';
    this.variable = variable;
  }
}
