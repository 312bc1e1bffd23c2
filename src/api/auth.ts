// Bearer-token checks (SPEC 7/8). Runs in onRequest, i.e. before the body is read or parsed, so a
// rejected request never reaches a handler that could change state.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { DssError } from '../errors.js';

/** Internal routes are exactly these prefixes (SPEC 8). */
const INTERNAL_PREFIXES = ['/raft/', '/queue/internal_', '/cache/handle_'];

/** Probes and scraping: open when API_TOKENS is set, unless OPS_ROUTES_OPEN=false. */
const OPS_PATHS = new Set(['/health', '/ready', '/metrics']);

/** Public routes that stay open when API_TOKENS is set: probes, scraping, and the API documentation. */
// The dashboard's page, script and style hold no data (a browser cannot send a bearer token when it
// loads a page); its JSON routes stay behind the tokens, and the page asks for one on a 401.
const OPEN_EXACT = new Set([
  '/openapi.json',
  '/docs',
  '/',
  '/dashboard',
  '/dashboard/',
  '/dashboard/app.js',
  '/dashboard/app.css',
]);
const OPEN_PREFIXES = ['/docs/'];

export function isInternalPath(path: string): boolean {
  return INTERNAL_PREFIXES.some((p) => path.startsWith(p));
}

function isOpenPath(path: string, opsOpen: boolean): boolean {
  if (OPS_PATHS.has(path)) return opsOpen;
  return OPEN_EXACT.has(path) || OPEN_PREFIXES.some((p) => path.startsWith(p));
}

// Hashing both sides gives equal-length buffers for timingSafeEqual and hides the secret's length.
const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

/** Constant-time membership test: every candidate is compared, whatever matches first. */
function matchesAny(presented: string, secrets: Buffer[]): boolean {
  const p = digest(presented);
  let ok = false;
  for (const s of secrets) ok = timingSafeEqual(p, s) || ok;
  return ok;
}

function bearer(request: FastifyRequest): string | null {
  const h = request.headers.authorization;
  if (typeof h !== 'string') return null;
  const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(h);
  return m ? m[1]! : null;
}

/** Path without query string, percent-decoded as the router sees it. */
function pathOf(request: FastifyRequest): string {
  const raw = request.url;
  const q = raw.indexOf('?');
  const path = q >= 0 ? raw.slice(0, q) : raw;
  try {
    return decodeURIComponent(path);
  } catch {
    return path;
  }
}

export interface AuthOptions {
  clusterSecret: string | null;
  apiTokens: string[];
  /** Leave /health, /ready and /metrics open when API_TOKENS is set (default true). */
  opsOpen?: boolean;
}

/** Returns a check for an onRequest hook that throws DssError('unauthorized'); null when auth is off. */
export function createAuthCheck(opts: AuthOptions): ((request: FastifyRequest) => void) | null {
  if (opts.clusterSecret === null && opts.apiTokens.length === 0) return null;
  const internalSecrets = opts.clusterSecret === null ? [] : [digest(opts.clusterSecret)];
  // Peers forwarding public requests authenticate with the cluster secret, so it opens public routes too.
  const publicSecrets = [...opts.apiTokens.map(digest), ...internalSecrets];

  return (request) => {
    // Decide on both the matched route pattern and the decoded path, so neither an encoded URL
    // (`/r%61ft/...`) nor a parametric route can slip past the internal check.
    const pattern = request.routeOptions.url;
    const path = pathOf(request);
    const internal = isInternalPath(path) || (pattern !== undefined && isInternalPath(pattern));
    const token = bearer(request);
    if (internal) {
      if (internalSecrets.length === 0) return;
      if (token === null || !matchesAny(token, internalSecrets)) {
        throw new DssError('unauthorized', 'internal endpoint: missing or wrong cluster secret');
      }
      return;
    }
    if (opts.apiTokens.length === 0 || isOpenPath(pattern ?? path, opts.opsOpen ?? true)) return;
    if (token === null || !matchesAny(token, publicSecrets)) {
      throw new DssError('unauthorized', 'missing or wrong bearer token');
    }
  };
}
