// Errors are values with a SPEC error code; the HTTP layer maps code -> status in one place.

export type ErrorCode =
  | 'bad_request'
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'method_not_allowed'
  | 'conflict'
  | 'lock_conflict'
  | 'wait_timeout'
  | 'deadlock'
  | 'not_holder'
  | 'unknown_message'
  | 'stale_member'
  | 'payload_too_large'
  | 'limit_exceeded'
  | 'rate_limited'
  | 'unsupported_media_type'
  | 'role_not_served'
  | 'no_leader'
  | 'not_leader'
  | 'no_quorum'
  | 'unavailable'
  | 'shutting_down'
  | 'timeout'
  | 'internal';

export const HTTP_STATUS: Record<ErrorCode, number> = {
  bad_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  method_not_allowed: 405,
  conflict: 409,
  lock_conflict: 409,
  wait_timeout: 409,
  deadlock: 409,
  not_holder: 409,
  unknown_message: 404,
  stale_member: 409,
  payload_too_large: 413,
  limit_exceeded: 409,
  rate_limited: 429,
  unsupported_media_type: 415,
  role_not_served: 421,
  no_leader: 503,
  not_leader: 503,
  no_quorum: 503,
  unavailable: 503,
  shutting_down: 503,
  timeout: 504,
  internal: 500,
};

export class DssError extends Error {
  readonly code: ErrorCode;
  /** Extra fields merged into the error body (e.g. `leader_id`, `nodes`). */
  readonly details: Record<string, unknown> | undefined;
  /** Seconds for a Retry-After header (503s). */
  readonly retryAfter: number | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    opts: { details?: Record<string, unknown>; retryAfter?: number } = {},
  ) {
    super(message);
    this.name = 'DssError';
    this.code = code;
    this.details = opts.details;
    this.retryAfter = opts.retryAfter ?? (HTTP_STATUS[code] === 503 ? 1 : undefined);
  }

  get status(): number {
    return HTTP_STATUS[this.code];
  }
}

export function isDssError(e: unknown): e is DssError {
  return e instanceof DssError;
}
