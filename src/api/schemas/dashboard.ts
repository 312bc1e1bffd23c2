// Wire schemas of the built-in dashboard's JSON routes (src/dashboard/): one node's snapshot, and
// the cluster snapshot a node assembles from every node's.
import { Type, type Static } from 'typebox';
import { CacheState } from './cache.js';
import { Count } from './common.js';
import { LockMode } from './lock.js';
import { RaftSection } from './ops.js';

const RoleName = Type.Union([Type.Literal('lock'), Type.Literal('queue'), Type.Literal('cache')]);

const DashboardHold = Type.Object({
  client_id: Type.String(),
  mode: LockMode,
  fencing_token: Type.Integer(),
  expires_at: Type.Integer({ description: "epoch ms on the granting leader's clock" }),
});

export const DashboardLocks = Type.Object(
  {
    view_of: Type.String({ description: 'the node whose applied lock table this is' }),
    leader: Type.Boolean({ description: 'true when that node was the Raft leader when it answered' }),
    applied_index: Type.Integer({ description: 'Raft index the table reflects' }),
    total: Count,
    omitted: Count,
    resources: Type.Array(
      Type.Object({
        resource: Type.String(),
        mode: Type.Union([LockMode, Type.Null()]),
        holders: Type.Array(DashboardHold),
        waiters: Type.Array(Type.Object({ client_id: Type.String(), mode: LockMode })),
      }),
    ),
  },
  { description: 'resources with holders or waiters, at most `limit` of them' },
);
export type DashboardLocksWire = Static<typeof DashboardLocks>;

export const DashboardQueues = Type.Object(
  {
    total: Count,
    omitted: Count,
    queues: Type.Array(Type.Object({ queue: Type.String(), ready: Count, pending: Count, dead: Count })),
    error: Type.Optional(Type.String({ description: 'why the depths could not be read (Redis down)' })),
  },
  { description: 'the queues this node owns on the hash ring' },
);
export type DashboardQueuesWire = Static<typeof DashboardQueues>;

export const DashboardCache = Type.Object({
  capacity: Count,
  size: Count,
  write_policy: Type.String(),
  counts: Type.Object({ M: Count, E: Count, S: Count }),
  omitted: Count,
  lines: Type.Array(Type.Object({ key: Type.String(), state: CacheState }), {
    description: 'the most recently used lines, sorted by key',
  }),
});
export type DashboardCacheWire = Static<typeof DashboardCache>;

export const DashboardNodeResponse = Type.Object({
  node_id: Type.String(),
  roles: Type.Array(RoleName),
  time: Type.Integer({ description: "this node's clock, epoch ms" }),
  raft: Type.Union([RaftSection, Type.Null()], { description: 'null on nodes without the lock role' }),
  locks: Type.Union([DashboardLocks, Type.Null()], { description: 'null without the lock role' }),
  queues: Type.Union([DashboardQueues, Type.Null()], { description: 'null without the queue role' }),
  cache: Type.Union([DashboardCache, Type.Null()], { description: 'null without the cache role' }),
});
export type DashboardNodeReply = Static<typeof DashboardNodeResponse>;

export const DashboardClusterNode = Type.Object({
  id: Type.String(),
  url: Type.String(),
  roles: Type.Array(RoleName),
  reachable: Type.Boolean(),
  error: Type.Union([Type.String(), Type.Null()], { description: 'why the node could not be read' }),
  elapsed_ms: Type.Integer({ description: 'how long its snapshot took' }),
  snapshot: Type.Union([DashboardNodeResponse, Type.Null()]),
});
export type DashboardClusterNodeWire = Static<typeof DashboardClusterNode>;

export const DashboardClusterResponse = Type.Object({
  served_by: Type.String(),
  time: Type.Integer({ description: "the serving node's clock, epoch ms" }),
  leader: Type.Union([Type.Object({ id: Type.String(), term: Type.Integer() }), Type.Null()], {
    description: 'the Raft leader of the highest term any reachable node reports',
  }),
  lock_view: Type.Union([Type.String(), Type.Null()], {
    description: "the node whose lock table to show: the leader's, else the most up to date",
  }),
  nodes: Type.Array(DashboardClusterNode),
});
export type DashboardClusterReply = Static<typeof DashboardClusterResponse>;
