// Wire schemas of the operational endpoints; the SDK imports the Static types.
import { Type, type Static } from 'typebox';

const RoleName = Type.Union([Type.Literal('lock'), Type.Literal('queue'), Type.Literal('cache')]);

export const HealthResponse = Type.Object({
  status: Type.Literal('ok'),
  node_id: Type.String(),
});
export type HealthReply = Static<typeof HealthResponse>;

export const CheckOutcome = Type.Object({
  name: Type.String(),
  ok: Type.Boolean(),
  reason: Type.Optional(Type.String()),
});
export type CheckOutcomeWire = Static<typeof CheckOutcome>;

export const ReadyResponse = Type.Object({
  status: Type.Literal('ready'),
  node_id: Type.String(),
  checks: Type.Array(CheckOutcome),
});
export type ReadyReply = Static<typeof ReadyResponse>;

export const RaftSection = Type.Object({
  state: Type.Union([Type.Literal('leader'), Type.Literal('follower'), Type.Literal('candidate')]),
  term: Type.Integer(),
  leader_id: Type.Union([Type.String(), Type.Null()]),
  commit_index: Type.Integer(),
  last_applied: Type.Integer(),
});
export type RaftSectionWire = Static<typeof RaftSection>;

export const PeerStatus = Type.Object({
  id: Type.String(),
  url: Type.String(),
  roles: Type.Array(RoleName),
  reachable: Type.Boolean(),
});
export type PeerStatusWire = Static<typeof PeerStatus>;

/** SPEC 8. Services add their own sections (`queue`, `cache`), hence additionalProperties. */
export const StatusResponse = Type.Object(
  {
    node_id: Type.String(),
    roles: Type.Array(RoleName),
    raft: Type.Union([RaftSection, Type.Null()], { description: 'null on nodes without the lock role' }),
    peers: Type.Array(PeerStatus),
  },
  { additionalProperties: true },
);
export type NodeStatus = Static<typeof StatusResponse> & Record<string, unknown>;
