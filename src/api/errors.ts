// The one place where anything thrown inside the HTTP layer becomes a SPEC error response:
// `{"error":{"code","message"}}` plus any `details` merged at the top level of the body.
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import type { FastifySchemaValidationError } from 'fastify/types/schema.js';
import { DssError, HTTP_STATUS, isDssError, type ErrorCode } from '../errors.js';
import type { Logger } from '../log.js';

export interface ErrorBody {
  error: { code: string; message: string };
  [detail: string]: unknown;
}

export interface MappedError {
  status: number;
  body: ErrorBody;
  headers: Record<string, string>;
  /** Unexpected failures are logged with their stack; client mistakes are not. */
  unexpected: boolean;
}

export function errorBody(code: string, message: string, details?: Record<string, unknown>): ErrorBody {
  // `error` last so that a detail can never overwrite it.
  return { ...details, error: { code, message } };
}

/** Error code for a bare HTTP status (errors raised by fastify itself). */
function codeForStatus(status: number): ErrorCode {
  switch (status) {
    case 401:
      return 'unauthorized';
    case 403:
      return 'forbidden';
    case 404:
      return 'not_found';
    case 405:
      return 'method_not_allowed';
    case 409:
      return 'conflict';
    case 413:
      return 'payload_too_large';
    case 415:
      return 'unsupported_media_type';
    case 429:
      return 'rate_limited';
    case 503:
      return 'unavailable';
    case 504:
      return 'timeout';
    default:
      return status >= 500 ? 'internal' : 'bad_request';
  }
}

/** Messages of fastify's own client errors, reworded for API users. */
const FASTIFY_MESSAGES: Record<string, string> = {
  FST_ERR_CTP_INVALID_JSON_BODY: 'body is not valid JSON',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'body is empty but Content-Type is application/json',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'Content-Length does not match the body',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'Content-Type must be application/json',
  FST_ERR_BAD_URL: 'URL is not valid',
  FST_ERR_MAX_PARAM_LENGTH: 'URL parameter is too long',
};

function isFastifyError(e: unknown): e is FastifyError {
  return e instanceof Error && ('statusCode' in e || 'validation' in e || 'code' in e);
}

export function mapError(err: unknown, bodyLimit?: number): MappedError {
  if (isDssError(err)) {
    const headers: Record<string, string> = {};
    if ((err.status === 503 || err.status === 429) && err.retryAfter !== undefined)
      headers['retry-after'] = String(Math.ceil(err.retryAfter));
    if (err.code === 'unauthorized') headers['www-authenticate'] = 'Bearer';
    return {
      status: err.status,
      body: errorBody(err.code, err.message, err.details),
      headers,
      unexpected: false,
    };
  }
  if (isFastifyError(err)) {
    if (err.validation) {
      const message = describeValidation(err.validation, err.validationContext ?? 'body');
      return { status: 400, body: errorBody('bad_request', message), headers: {}, unexpected: false };
    }
    const status = err.statusCode;
    // A JSON SyntaxError from the body parser arrives with statusCode 400 and no fastify code.
    if (status !== undefined && status >= 400 && status < 500) {
      const code = codeForStatus(status);
      let message =
        FASTIFY_MESSAGES[err.code] ?? (err instanceof SyntaxError ? 'body is not valid JSON' : err.message);
      if (code === 'payload_too_large') {
        message = bodyLimit ? `body is larger than ${bodyLimit} bytes` : 'body is too large';
      }
      return { status, body: errorBody(code, message), headers: {}, unexpected: false };
    }
  }
  return {
    status: HTTP_STATUS.internal,
    body: errorBody('internal', 'internal error'),
    headers: {},
    unexpected: true,
  };
}

/** "body.ttl_ms must be integer", "body.resource is required", "query.mode must be one of ...". */
export function describeValidation(errors: FastifySchemaValidationError[], context: string): string {
  const first = errors[0];
  if (!first) return `${context} is invalid`;
  const path = first.instancePath.split('/').filter((s) => s !== '');
  const at = (extra?: string): string =>
    [context, ...path, ...(extra === undefined ? [] : [extra])].join('.').replace(/\.(\d+)(?=\.|$)/g, '[$1]');
  const params = first.params;
  if (first.keyword === 'required' && typeof params.missingProperty === 'string') {
    return `${at(params.missingProperty)} is required`;
  }
  // Unions of literals fail on each branch: gather the allowed values of all of them.
  const allowed = errors
    .filter((e) => e.instancePath === first.instancePath)
    .flatMap((e) => {
      const p = e.params;
      if (e.keyword === 'const') return [p.allowedValue];
      if (e.keyword === 'enum' && Array.isArray(p.allowedValues)) return p.allowedValues as unknown[];
      return [];
    });
  if (allowed.length > 0) return `${at()} must be one of ${allowed.map((v) => JSON.stringify(v)).join(', ')}`;
  return `${at()} ${first.message ?? 'is invalid'}`;
}

/** Sends a mapped error; used by the error handler and by handlers outside fastify's pipeline. */
export function sendError(
  reply: FastifyReply,
  err: unknown,
  logger?: Logger,
  request?: FastifyRequest,
): void {
  const limit = request?.routeOptions.bodyLimit;
  const mapped = mapError(err, limit);
  if (mapped.unexpected) {
    (logger ?? reply.log).error(
      { err, method: request?.method, url: request?.url },
      'unexpected error while handling a request',
    );
  }
  void reply
    .code(mapped.status)
    .headers(mapped.headers)
    .type('application/json; charset=utf-8')
    .send(mapped.body);
}

/** Convenience for route code: throw `fail('bad_request', 'to must be ...')`. */
export function fail(code: ErrorCode, message: string, details?: Record<string, unknown>): DssError {
  return new DssError(code, message, details ? { details } : {});
}
