// Cache API schemas (SPEC 6): public routes and the internal coherence messages between nodes
// (/cache/handle_*). One TypeBox definition gives validation, serialization and OpenAPI; the SDK
// imports the Static types.
import { Type, type Static } from 'typebox';
import { MAX_HOME_DEADLINE_MS } from '../../cache/types.js';
import { Count, Identifier, JsonValue, NodeIdString } from './common.js';

// String enums rather than unions of literals: fast-json-stringify serializes a union by validating
// the value against each branch, on every response, and a hit is answered in a few microseconds.
export const CacheState = Type.Unsafe<'M' | 'E' | 'S' | 'I'>({ type: 'string', enum: ['M', 'E', 'S', 'I'] });

export const CacheSource = Type.Unsafe<'l1' | 'peer' | 'memory'>({
  type: 'string',
  enum: ['l1', 'peer', 'memory'],
});

export const CacheGetResponse = Type.Object({
  key: Type.String(),
  value: JsonValue,
  state: CacheState,
  source: CacheSource,
});
export type CacheGetReply = Static<typeof CacheGetResponse>;

export const CachePutBody = Type.Object({ value: JsonValue }, { description: 'value: any JSON' });
export type CachePutBodyWire = Static<typeof CachePutBody>;

export const CachePutResponse = Type.Object({ key: Type.String(), state: CacheState });
export type CachePutReply = Static<typeof CachePutResponse>;

export const CacheDeleteResponse = Type.Object({ deleted: Type.Boolean() });
export type CacheDeleteReply = Static<typeof CacheDeleteResponse>;

export const CacheLine = Type.Object({ key: Type.String(), state: CacheState });

export const CacheLinesResponse = Type.Object({
  node_id: Type.String(),
  capacity: Count,
  size: Count,
  write_policy: Type.String(),
  lines: Type.Array(CacheLine),
});
export type CacheLinesReply = Static<typeof CacheLinesResponse>;

export const CacheFlushResponse = Type.Object({ written_back: Count });
export type CacheFlushReply = Static<typeof CacheFlushResponse>;

// ---- internal coherence messages ----

/** A fencing token: the home's epoch and its grant counter, compared lexicographically. */
export const Token = Type.Tuple([Count, Count]);

/** A value as it moves between nodes: absent keys are cached too (a GET of them is a 404). */
export const Data = Type.Object({ present: Type.Boolean(), value: Type.Optional(JsonValue) });

/** Requester -> home: one bus transaction. */
export const HomeRequestBody = Type.Object({
  from: NodeIdString,
  /** The requester's membership generation at this home (see handle_lease join). */
  gen: Count,
  epoch: Count,
  kind: Type.Union([Type.Literal('read_miss'), Type.Literal('write'), Type.Literal('evict')]),
  key: Identifier,
  /** evict: the grant sequence of the dropped line. */
  seq: Type.Optional(Count),
  /** The home gives up (and grants nothing) once this much time has passed since it received the request. */
  deadline_ms: Type.Integer({ minimum: 1, maximum: MAX_HOME_DEADLINE_MS }),
});
export type HomeRequestWire = Static<typeof HomeRequestBody>;

export const HomeGrantResponse = Type.Object({
  epoch: Count,
  seq: Type.Optional(Count),
  state: Type.Optional(Type.Unsafe<'M' | 'E' | 'S'>({ type: 'string', enum: ['M', 'E', 'S'] })),
  token: Type.Optional(Token),
  data: Type.Optional(Data),
  source: Type.Optional(Type.Unsafe<'peer' | 'memory'>({ type: 'string', enum: ['peer', 'memory'] })),
});
export type HomeGrantWire = Static<typeof HomeGrantResponse>;

/** Home -> holder: snoop read or invalidate of the line granted with `seq`. */
export const SnoopBody = Type.Object({
  from: NodeIdString,
  epoch: Count,
  key: Identifier,
  /** The grant the message is about: its sequence and the holder's generation at the home. */
  seq: Count,
  gen: Count,
});
export type SnoopWire = Static<typeof SnoopBody>;

export const SnoopResponse = Type.Object({
  held: Type.Boolean(),
  data: Type.Optional(Data),
});
export type SnoopReplyWire = Static<typeof SnoopResponse>;

/** Holder -> home: lease renewal, (re)join with a new generation, or leave. */
export const LeaseBody = Type.Object({
  from: NodeIdString,
  gen: Count,
  epoch: Count,
  op: Type.Union([Type.Literal('renew'), Type.Literal('join'), Type.Literal('leave')]),
});
export type LeaseWire = Static<typeof LeaseBody>;

export const LeaseResponse = Type.Object({
  ok: Type.Boolean(),
  epoch: Count,
  /** A refused join: the highest generation the home has accepted from this node. */
  gen: Type.Optional(Count),
});
export type LeaseReplyWire = Static<typeof LeaseResponse>;
