// Errors the SDK throws: an HTTP error answer, or no answer at all.

/** A node answered with a non-2xx status. `code` is the SPEC error code when the body had one. */
export class DssHttpError extends Error {
  readonly status: number;
  readonly code: string;
  /** The parsed body (JSON when it was JSON, else the text). Lock conflicts carry holders etc. here. */
  readonly body: unknown;
  readonly url: string;
  /** Retry-After in ms, when the node sent one. */
  readonly retryAfterMs: number | undefined;
  /**
   * An earlier attempt of this call failed with "outcome unknown" (the command may have been applied),
   * so this answer may describe the state after our own earlier attempt.
   */
  readonly afterUnknownOutcome: boolean;

  constructor(opts: {
    status: number;
    body: unknown;
    url: string;
    retryAfterMs?: number;
    afterUnknownOutcome?: boolean;
  }) {
    const err = errorOf(opts.body);
    super(`${opts.status} ${err.code}: ${err.message} (${opts.url})`);
    this.name = 'DssHttpError';
    this.status = opts.status;
    this.code = err.code;
    this.body = opts.body;
    this.url = opts.url;
    this.retryAfterMs = opts.retryAfterMs;
    this.afterUnknownOutcome = opts.afterUnknownOutcome ?? false;
  }

  /** The node could not tell whether the command was applied (body `outcome: "unknown"`). */
  get outcomeUnknown(): boolean {
    return (
      typeof this.body === 'object' &&
      this.body !== null &&
      (this.body as { outcome?: unknown }).outcome === 'unknown'
    );
  }
}

/** No HTTP answer: connection refused or reset, DNS failure, timeout. */
export class DssConnectionError extends Error {
  readonly url: string;
  readonly timedOut: boolean;

  constructor(url: string, cause: unknown, timedOut: boolean) {
    const reason =
      cause instanceof Error ? `${errorCode(cause) ?? cause.name}: ${cause.message}` : String(cause);
    super(`${timedOut ? 'timed out' : 'cannot reach'} ${url}: ${reason}`, { cause });
    this.name = 'DssConnectionError';
    this.url = url;
    this.timedOut = timedOut;
  }
}

function errorOf(body: unknown): { code: string; message: string } {
  if (typeof body === 'object' && body !== null && 'error' in body) {
    const e = body.error;
    if (typeof e === 'object' && e !== null) {
      const { code, message } = e as { code?: unknown; message?: unknown };
      return {
        code: typeof code === 'string' ? code : 'unknown',
        message: typeof message === 'string' ? message : '',
      };
    }
  }
  return { code: 'unknown', message: typeof body === 'string' ? body.slice(0, 200) : '' };
}

export function errorCode(e: unknown): string | undefined {
  if (typeof e === 'object' && e !== null && 'code' in e && typeof e.code === 'string') return e.code;
  return undefined;
}
