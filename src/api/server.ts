// The HTTP server of a node: fastify 5 with the TypeBox type provider, SPEC error format everywhere,
// X-DSS-Node on every response, bearer auth, request metrics, OpenAPI docs and the route plugins.
import { createHash, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyHttpOptions,
  type FastifyPluginAsync,
  type FastifyPluginCallback,
  type FastifyRequest,
} from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { ClusterMember, NodeRole } from '../config/index.js';
import { DssError } from '../errors.js';
import type { Logger } from '../log.js';
import { UNMATCHED_ROUTE, type Metrics } from '../metrics/index.js';
import { createAuthCheck, isInternalPath } from './auth.js';
import { ConnectionRateLimiter, MAX_JSON_DEPTH, jsonDepthExceeds } from './limits.js';
import { FORWARDED_HEADER } from './forward.js';
import type {
  ApiContext,
  DssApp,
  PeerReachability,
  RaftApi,
  ReadinessCheck,
  StatusSections,
} from './context.js';
import { registerDocs } from './docs.js';
import { errorBody, sendError } from './errors.js';
import { RouteTable } from './route-table.js';
import { opsRoutes } from './routes/ops.js';
import { raftRoutes } from './routes/raft.js';

export const PUBLIC_BODY_LIMIT = 1024 * 1024;
export const INTERNAL_BODY_LIMIT = 64 * 1024 * 1024;

/** A route plugin contributed by a service (locks, queues, cache); it receives the API context. */
export type ServicePlugin =
  | FastifyPluginCallback<{ ctx: ApiContext }, http.Server, TypeBoxTypeProvider>
  | FastifyPluginAsync<{ ctx: ApiContext }, http.Server, TypeBoxTypeProvider>;

export interface BuildServerOptions {
  nodeId: string;
  roles: NodeRole[];
  cluster: ClusterMember[];
  raft: RaftApi | null;
  metrics: Metrics;
  /** Omit for a silent server (tests). */
  logger?: Logger;
  clusterSecret?: string | null;
  apiTokens?: string[];
  /** OPS_ROUTES_OPEN: /health, /ready, /metrics without a token when API_TOKENS is set (default true). */
  opsRoutesOpen?: boolean;
  readinessChecks?: ReadinessCheck[];
  peers?: PeerReachability;
  statusSections?: StatusSections;
  plugins?: ServicePlugin[];
  /** Serve HTTPS with this certificate chain and key (PEM). */
  tls?: { cert: string | Buffer; key: string | Buffer } | null;
  bodyLimit?: number;
  internalBodyLimit?: number;
  /** Most time a client may take to send a request (slow clients); headers get a third of it. */
  requestTimeoutMs?: number;
  /** Public requests per second per connection; 0 or absent = no limit. */
  ratePerConnection?: number;
}

const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']);

export async function buildServer(opts: BuildServerOptions): Promise<DssApp> {
  const nodeId = opts.nodeId;
  const bodyLimit = opts.bodyLimit ?? PUBLIC_BODY_LIMIT;
  const ctx: ApiContext = {
    nodeId,
    roles: opts.roles,
    cluster: opts.cluster,
    raft: opts.raft,
    metrics: opts.metrics,
    readinessChecks: opts.readinessChecks ?? [],
    peers: opts.peers ?? { isReachable: () => false },
    statusSections: opts.statusSections ?? {},
  };

  const tls = opts.tls ?? null;
  const fastifyOptions: FastifyHttpOptions<http.Server> = {
    bodyLimit,
    // Raft heartbeats alone would flood an info-level request log; errors are still logged.
    logController: new LogController({ disableRequestLogging: true }),
    // During shutdown we answer 503 ourselves, in the SPEC format (fastify's own 503 is not).
    return503OnClosing: false,
    // SPEC identifiers are up to 256 chars, more once percent-encoded (fastify's default is 100).
    routerOptions: { maxParamLength: 1024 },
    ajv: {
      // SPEC 3: no coercion ("100" is not an integer), unknown fields are kept and ignored,
      // schema defaults are applied.
      customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: true, allErrors: false },
    },
    frameworkErrors: (error, _request, reply) => {
      void reply.header('x-dss-node', nodeId);
      sendError(reply, error, opts.logger);
    },
    clientErrorHandler: (err, socket) => rejectMalformed(err, socket, nodeId),
    serverFactory: (handler) => {
      // Slow clients (slowloris): a request must arrive whole within requestTimeout, its headers
      // within a third of it; node checks both every connectionsCheckingInterval.
      const requestTimeout = opts.requestTimeoutMs ?? 30_000;
      const timeouts = {
        requestTimeout,
        headersTimeout: Math.max(100, Math.floor(requestTimeout / 3)),
        connectionsCheckingInterval: Math.min(1_000, Math.max(50, Math.floor(requestTimeout / 10))),
      };
      return tls
        ? https.createServer({ cert: tls.cert, key: tls.key, ...timeouts }, handler)
        : http.createServer(timeouts, handler);
    },
  };
  const logger: FastifyBaseLogger | undefined = opts.logger;
  const app: DssApp = Fastify({
    ...fastifyOptions,
    ...(logger ? { loggerInstance: logger } : { logger: false }),
  }).withTypeProvider<TypeBoxTypeProvider>();

  installBodyParsers(app);

  const routes = new RouteTable();
  app.addHook('onRoute', routes.onRoute);

  let closing = false;
  app.addHook('preClose', (done) => {
    closing = true;
    done();
  });

  const authCheck = createAuthCheck({
    clusterSecret: opts.clusterSecret ?? null,
    apiTokens: opts.apiTokens ?? [],
    opsOpen: opts.opsRoutesOpen ?? true,
  });
  const limiter = opts.ratePerConnection ? new ConnectionRateLimiter(opts.ratePerConnection) : null;
  // A relay says so in a header; with a cluster secret it must also carry the secret to count.
  const secretDigest = opts.clusterSecret ? sha256(`Bearer ${opts.clusterSecret}`) : null;
  const isPeerRelay = (request: FastifyRequest): boolean => {
    if (request.headers[FORWARDED_HEADER] === undefined) return false;
    if (secretDigest === null) return true;
    const auth = request.headers.authorization;
    return typeof auth === 'string' && timingSafeEqual(sha256(auth), secretDigest);
  };
  app.addHook('onRequest', (request, reply, done) => {
    void reply.header('x-dss-node', nodeId);
    try {
      if (closing) throw new DssError('shutting_down', 'node is shutting down');
      authCheck?.(request);
      // Peers' traffic (Raft, coherence, requests relayed to the leader, which carry many clients
      // over a few connections) is the cluster's own: never rate limited.
      if (limiter !== null && !isInternalPath(request.url) && !isPeerRelay(request))
        limiter.take(request.raw.socket);
      done();
    } catch (e) {
      done(e as Error);
    }
  });

  // fastify asks to close the connection after any body it refused (too large, not JSON), so that
  // unread body bytes are never taken for the next request. Closing with bytes still unread makes
  // the kernel send a RST, and a client still sending its body then loses the 413 (ECONNRESET).
  // When the body's length is declared and bounded, node reads and discards the rest instead, and
  // the connection stays usable.
  app.addHook('onSend', (request, reply, payload, done) => {
    if (!closing && reply.getHeader('connection') === 'close' && isDrainable(request.raw)) {
      reply.removeHeader('connection');
    }
    done(null, payload);
  });

  app.addHook('onResponse', (request, reply, done) => {
    const method = KNOWN_METHODS.has(request.method) ? request.method : 'OTHER';
    // The route pattern (`/cache/*`, never the key) keeps the label bounded; requests that matched
    // no route (404, 405, unparsable URLs) share one value instead of their URL.
    const route = request.routeOptions.url ?? UNMATCHED_ROUTE;
    opts.metrics.httpDuration.observe(
      { method, route, status_code: String(reply.statusCode) },
      reply.elapsedTime / 1000,
    );
    done();
  });

  app.setErrorHandler((error, request, reply) => {
    sendError(reply, error, opts.logger, request);
  });

  app.setNotFoundHandler((request, reply) => {
    const q = request.url.indexOf('?');
    const path = q >= 0 ? request.url.slice(0, q) : request.url;
    const allowed = routes.allowedMethods(path);
    if (allowed.length > 0) {
      void reply.header('allow', allowed.join(', '));
      sendError(reply, new DssError('method_not_allowed', `${request.method} is not allowed on ${path}`));
      return;
    }
    sendError(reply, new DssError('not_found', `no route ${request.method} ${path}`));
  });

  await registerDocs(app);
  await app.register(opsRoutes, { ctx });
  await app.register(raftRoutes, { ctx, bodyLimit: opts.internalBodyLimit ?? INTERNAL_BODY_LIMIT });
  for (const plugin of opts.plugins ?? []) await app.register(plugin, { ctx });
  return app;
}

/**
 * JSON only (SPEC 3): text/plain bodies get 415 like any other non-JSON type, and an empty body
 * with a JSON content type counts as no body (some clients send the header on bodiless DELETEs).
 */
function installBodyParsers(app: DssApp): void {
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim() === '') {
      done(null, undefined);
      return;
    }
    // Internal bodies wrap public values a few levels deeper (a cache value inside a coherence
    // message): they get twice the depth, and are still scanned, in case no secret guards them.
    const maxDepth = isInternalPath(request.url) ? 2 * MAX_JSON_DEPTH : MAX_JSON_DEPTH;
    if (jsonDepthExceeds(text, maxDepth)) {
      done(new DssError('bad_request', `body: JSON nested deeper than ${maxDepth} levels`), undefined);
      return;
    }
    void parseJson(request, text, done);
  });
}

/** Most body bytes read and discarded after an early answer, rather than closing on them. */
export const DRAIN_LIMIT = 64 * 1024 * 1024;

function isDrainable(req: http.IncomingMessage): boolean {
  if (req.headers['transfer-encoding'] !== undefined) return false;
  const length = Number(req.headers['content-length'] ?? 0);
  return Number.isSafeInteger(length) && length <= DRAIN_LIMIT;
}

/** A request node's HTTP parser rejected before fastify saw it: answer in the SPEC format anyway. */
function rejectMalformed(err: Error & { code?: string }, socket: Socket, nodeId: string): void {
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const [status, reason, message] =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'Request Header Fields Too Large', 'request headers are too large']
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'Request Timeout', 'request timed out']
        : [400, 'Bad Request', 'malformed HTTP request'];
  const body = JSON.stringify(errorBody(status === 408 ? 'timeout' : 'bad_request', message));
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nX-DSS-Node: ${nodeId}\r\nConnection: close\r\n\r\n${body}`,
  );
}

const sha256 = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();
