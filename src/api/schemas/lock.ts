// Lock API schemas (SPEC 4.3): one TypeBox definition gives validation, serialization and OpenAPI;
// the SDK imports the Static types.
import { Type, type Static } from 'typebox';
import { Identifier } from './common.js';

/** Longest hold a client may ask for in one acquire or renew: one day. */
export const MAX_TTL_MS = 86_400_000;
/** Longest a blocking acquire may wait: ten minutes. */
export const MAX_WAIT_MS = 600_000;

export const LockMode = Type.Union([Type.Literal('exclusive'), Type.Literal('shared')]);

const TtlMs = Type.Integer({ minimum: 1, maximum: MAX_TTL_MS, description: 'hold lifetime in ms' });

export const AcquireBody = Type.Object({
  resource: Identifier,
  client_id: Identifier,
  mode: Type.Optional(LockMode),
  ttl_ms: Type.Optional(TtlMs),
  wait_ms: Type.Optional(
    Type.Integer({ minimum: 0, maximum: MAX_WAIT_MS, description: 'block up to this long for a grant' }),
  ),
});

export const ReleaseBody = Type.Object({ resource: Identifier, client_id: Identifier });

export const RenewBody = Type.Object({
  resource: Identifier,
  client_id: Identifier,
  ttl_ms: Type.Optional(TtlMs),
});

export const StatusQuery = Type.Object({ resource: Type.Optional(Identifier) });

export const HoldView = Type.Object({
  client_id: Type.String(),
  mode: LockMode,
  fencing_token: Type.Integer(),
  expires_at: Type.Integer({ description: "epoch ms on the leader's clock" }),
});

export const AcquireResponse = Type.Object({
  granted: Type.Literal(true),
  resource: Type.String(),
  mode: LockMode,
  client_id: Type.String(),
  fencing_token: Type.Integer(),
  expires_at: Type.Integer(),
});

export const LockRefusal = Type.Object(
  {
    granted: Type.Literal(false),
    error: Type.Object({ code: Type.String(), message: Type.String() }),
    holders: Type.Array(HoldView),
    cycle: Type.Optional(Type.Array(Type.String())),
  },
  { description: 'lock_conflict, wait_timeout or deadlock (with the cycle); not_holder has no holders' },
);

export const ReleaseResponse = Type.Object({ released: Type.Literal(true) });
export const RenewResponse = Type.Object({ expires_at: Type.Integer() });

export const LockStatusResponse = Type.Object({
  locks: Type.Array(
    Type.Object({
      resource: Type.String(),
      mode: Type.Union([LockMode, Type.Null()]),
      holders: Type.Array(HoldView),
      waiters: Type.Array(Type.Object({ client_id: Type.String(), mode: LockMode })),
    }),
  ),
});

export type LockModeWire = Static<typeof LockMode>;
export type HoldWire = Static<typeof HoldView>;
export type AcquireReply = Static<typeof AcquireResponse>;
export type LockStatusReply = Static<typeof LockStatusResponse>;
