// Wire schemas of the internal Raft RPCs; they mirror the message types of src/raft/types.ts
// (the `satisfies` checks at the bottom fail to compile when the two drift apart).
import { Type, type Static } from 'typebox';
import type { AppendRequest, SnapshotRequest, TimeoutNow, VoteRequest } from '../../raft/types.js';
import { Count, JsonValue, NodeIdString } from './common.js';

const Base = {
  from: NodeIdString,
  to: NodeIdString,
  term: Count,
};

const VoteRequestMessage = Type.Object({
  ...Base,
  type: Type.Literal('vote'),
  preVote: Type.Boolean(),
  lastLogIndex: Count,
  lastLogTerm: Count,
  transfer: Type.Optional(Type.Boolean()),
});

export const EntrySchema = Type.Object({
  index: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER }),
  term: Count,
  kind: Type.Union([Type.Literal('noop'), Type.Literal('command')]),
  command: JsonValue,
});

const AppendRequestBody = Type.Object({
  ...Base,
  type: Type.Literal('append'),
  prevLogIndex: Count,
  prevLogTerm: Count,
  entries: Type.Array(EntrySchema),
  commit: Count,
  ctx: Count,
});

const TimeoutNowBody = Type.Object({ ...Base, type: Type.Literal('timeout_now') });

/** /raft/append_entries carries AppendEntries and the leader-transfer TimeoutNow. */
const AppendOrTimeoutNow = Type.Union([AppendRequestBody, TimeoutNowBody]);

const SnapshotRequestMessage = Type.Object({
  ...Base,
  type: Type.Literal('snapshot'),
  snapshot: Type.Object({
    meta: Type.Object({ index: Count, term: Count, voters: Type.Array(NodeIdString) }),
    data: JsonValue,
  }),
});

/** The driver batches requests per endpoint; it sends at most a few hundred per call. */
export const MAX_BATCH = 1024;

const batch = <T extends Parameters<typeof Type.Array>[0]>(item: T, description: string) =>
  Type.Object({ messages: Type.Array(item, { minItems: 1, maxItems: MAX_BATCH }) }, { description });

export const VoteRequestBody = batch(VoteRequestMessage, 'RequestVote / PreVote requests from one peer');
export const AppendEntriesBody = batch(
  AppendOrTimeoutNow,
  'AppendEntries / TimeoutNow requests from one peer, in order',
);
export const SnapshotRequestBody = batch(SnapshotRequestMessage, 'InstallSnapshot requests from one peer');

export const RaftReply = Type.Object(
  {
    messages: Type.Array(Type.Unknown(), {
      description: 'ResponseMessage[] (vote_resp, append_resp, snapshot_resp)',
    }),
  },
  { description: 'Responses the receiving node produced, sent back once durable' },
);

// Compile-time guarantees that a validated body is a well-typed Raft message.
export type VoteRequestWire = Static<typeof VoteRequestMessage>;
export type AppendEntriesWire = Static<typeof AppendOrTimeoutNow>;
export type SnapshotRequestWire = Static<typeof SnapshotRequestMessage>;
type Assignable<From, To> = [From] extends [To] ? true : false;
type AssertTrue<T extends true> = T;
export type _WireMatchesTypes = [
  AssertTrue<Assignable<VoteRequestWire, VoteRequest>>,
  AssertTrue<Assignable<AppendEntriesWire, AppendRequest | TimeoutNow>>,
  AssertTrue<Assignable<SnapshotRequestWire, SnapshotRequest>>,
];
