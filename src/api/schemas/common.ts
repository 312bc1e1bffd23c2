// Schema building blocks shared by routes.
import { Type } from 'typebox';
import type { Json } from '../../raft/types.js';

/** Any JSON value (typed as Json instead of unknown so handlers need no casts). */
export const JsonValue = Type.Unsafe<Json>({});

/** Non-negative integer that survives a JSON round trip exactly (rejects 1e300, 2^60, Infinity). */
export const Count = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });

export const NodeIdString = Type.String({
  minLength: 1,
  maxLength: 64,
  pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$',
});

/** SPEC 3: identifiers are 1-256 chars of [A-Za-z0-9._:/-]. */
export const Identifier = Type.String({ minLength: 1, maxLength: 256, pattern: '^[A-Za-z0-9._:/-]+$' });

export const ErrorResponse = Type.Object(
  {
    error: Type.Object({ code: Type.String(), message: Type.String() }, { additionalProperties: true }),
  },
  { additionalProperties: true, description: 'SPEC error format; details may be merged at the top level' },
);
