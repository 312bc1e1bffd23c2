// TypeScript SDK of DSS. It knows several node URLs: when a node cannot be reached or answers 503
// (no leader yet, shutting down, Redis down) it retries on the next node with exponential backoff
// and jitter, honouring Retry-After. 4xx answers are final, except 421 role_not_served, which
// redirects to a node that serves the role, and 429 rate_limited, which backs off and retries.
import { Agent, type Dispatcher } from 'undici';
import { CacheClient } from './cache.js';
import { LockClient } from './lock.js';
import { QueueClient } from './queue.js';
import type { HealthReply, NodeStatus, PeerStatusWire } from '../api/schemas/ops.js';
import { deadline } from '../transport/deadline.js';
import { DssConnectionError, DssHttpError, errorCode } from './errors.js';

export type HttpMethod = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'DELETE' | 'PATCH';

export interface DssClientOptions {
  /** Base URLs of nodes, e.g. `http://127.0.0.1:8001`. */
  urls: string[];
  /** Bearer token (API_TOKENS). */
  token?: string;
  /** Per attempt, default 10 s. */
  timeoutMs?: number;
  /** Extra attempts after the first, default 3. */
  retries?: number;
  /** First backoff step, default 100 ms; doubles per attempt up to backoffMaxMs (default 2 s). */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** Upper bound on honouring a node's Retry-After, default 5 s. */
  maxRetryAfterMs?: number;
  /** Extra CA (PEM) for nodes with self-signed certificates. */
  ca?: string | Buffer;
  /** Custom undici dispatcher (tests, proxies); the client then does not own or close it. */
  dispatcher?: Dispatcher;
}

export interface RequestOptions {
  /** Talk to this node only (no failover to others). */
  url?: string;
  /** Try this node first, then fail over through the configured ones as usual. */
  prefer?: string;
  query?: Record<string, string | number | boolean | undefined>;
  timeoutMs?: number;
  retries?: number;
  headers?: Record<string, string>;
}

export interface DssResponse<T> {
  status: number;
  /** Undefined for 204/empty bodies. */
  body: T | undefined;
  headers: Record<string, string | string[] | undefined>;
  /** The node that answered. */
  url: string;
}

export interface ClusterNodeStatus extends PeerStatusWire {
  /** The node's own /status when it answered. */
  status?: NodeStatus;
  error?: string;
}

export interface ClusterStatus {
  /** Node whose peer list was used. */
  via: string;
  nodes: ClusterNodeStatus[];
}

const IDEMPOTENT = new Set<HttpMethod>(['GET', 'HEAD', 'PUT', 'DELETE']);

/** Failures where the request surely or probably never got processed: safe to send elsewhere. */
const CONNECT_ERRORS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
]);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class DssClient {
  /** Lock manager calls (SPEC 4.3). */
  readonly lock: LockClient;
  /** Queue calls and a consumer loop (SPEC 5). */
  readonly queue: QueueClient;
  /** Cache calls (SPEC 6). */
  readonly cache: CacheClient;
  private readonly urls: string[];
  private readonly token: string | undefined;
  private readonly timeoutMs: number;
  private readonly retries: number;
  private readonly backoffBaseMs: number;
  private readonly backoffMaxMs: number;
  private readonly maxRetryAfterMs: number;
  private readonly dispatcher: Dispatcher;
  private readonly ownsDispatcher: boolean;
  /** Index in `urls` of the node that answered last: requests stick to a working node. */
  private preferred = 0;

  constructor(opts: DssClientOptions) {
    if (opts.urls.length === 0) throw new Error('DssClient needs at least one node URL');
    this.urls = opts.urls.map(normalizeUrl);
    this.lock = new LockClient(this);
    this.queue = new QueueClient(this);
    this.cache = new CacheClient(this);
    this.token = opts.token;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.retries = opts.retries ?? 3;
    this.backoffBaseMs = opts.backoffBaseMs ?? 100;
    this.backoffMaxMs = opts.backoffMaxMs ?? 2000;
    this.maxRetryAfterMs = opts.maxRetryAfterMs ?? 5000;
    this.ownsDispatcher = opts.dispatcher === undefined;
    this.dispatcher =
      opts.dispatcher ??
      new Agent({ keepAliveTimeout: 30_000, ...(opts.ca !== undefined ? { connect: { ca: opts.ca } } : {}) });
  }

  /** Body of a successful answer; throws DssHttpError / DssConnectionError otherwise. */
  async request<T>(method: HttpMethod, path: string, body?: unknown, opts: RequestOptions = {}): Promise<T> {
    const res = await this.requestFull<T>(method, path, body, opts);
    return res.body as T;
  }

  /** Like request() but also returns status and headers (for 201/204 distinctions). */
  async requestFull<T>(
    method: HttpMethod,
    path: string,
    body?: unknown,
    opts: RequestOptions = {},
  ): Promise<DssResponse<T>> {
    const retries = opts.retries ?? this.retries;
    const candidates = opts.url
      ? [normalizeUrl(opts.url)]
      : opts.prefer
        ? preferFirst(normalizeUrl(opts.prefer), this.rotation())
        : this.rotation();
    const tried = new Set<string>();
    let index = 0;
    let lastError: unknown;
    let unknownOutcome = false;
    for (let attempt = 0; attempt <= retries; attempt++) {
      const url = candidates[index % candidates.length]!;
      tried.add(url);
      let delayMs: number;
      try {
        const res = await this.send<T>(method, url, path, body, opts);
        if (res.status < 400) {
          this.remember(url);
          return res;
        }
        const wait = retryAfterMs(res.headers);
        const err = new DssHttpError({
          status: res.status,
          body: res.body,
          url,
          ...(wait !== undefined ? { retryAfterMs: wait } : {}),
          afterUnknownOutcome: unknownOutcome,
        });
        if (res.status === 421 && !opts.url) {
          // Misdirected: go straight to a node that serves the role.
          const serving = servingUrls(res.body).filter((u) => !tried.has(u));
          if (serving.length === 0) throw err;
          candidates.splice(index + 1, 0, ...serving);
          index++;
          lastError = err;
          continue;
        }
        // 429: refused before it ran (RATE_LIMIT_PER_CONNECTION), so a retry is always safe.
        if (res.status !== 503 && res.status !== 429) throw err;
        if (err.outcomeUnknown) unknownOutcome = true;
        lastError = err;
        delayMs = Math.max(this.backoff(attempt), Math.min(err.retryAfterMs ?? 0, this.maxRetryAfterMs));
      } catch (e) {
        if (e instanceof DssHttpError) throw e;
        const timedOut = isTimeout(e);
        const retryable = timedOut ? IDEMPOTENT.has(method) : CONNECT_ERRORS.has(errorCode(e) ?? '');
        lastError = new DssConnectionError(url, e, timedOut);
        if (!retryable) throw lastError;
        // A node we have not tried yet is worth trying at once; cycling back waits.
        const next = candidates[(index + 1) % candidates.length]!;
        delayMs = tried.has(next) ? this.backoff(attempt) : 0;
      }
      index++;
      if (attempt < retries && delayMs > 0) await sleep(delayMs);
    }
    throw lastError;
  }

  health(url?: string): Promise<HealthReply> {
    return this.request<HealthReply>('GET', '/health', undefined, url ? { url } : {});
  }

  status(url?: string, opts: RequestOptions = {}): Promise<NodeStatus> {
    return this.request<NodeStatus>('GET', '/status', undefined, { ...opts, ...(url ? { url } : {}) });
  }

  /** Prometheus text of one node. */
  metrics(url: string): Promise<string> {
    return this.request<string>('GET', '/metrics', undefined, { url });
  }

  /**
   * Status of every node the cluster lists, fetched in parallel; nodes that do not answer quickly are
   * marked unreachable instead of failing the whole call.
   */
  async clusterStatus(): Promise<ClusterStatus> {
    const first = await this.status();
    const self = first.peers.find((p) => p.id === first.node_id);
    const selfUrl = self?.url;
    const nodes = await Promise.all(
      first.peers.map(async (peer): Promise<ClusterNodeStatus> => {
        if (peer.id === first.node_id) return { ...peer, reachable: true, status: first };
        try {
          const status = await this.status(peer.url, {
            retries: 0,
            timeoutMs: Math.min(this.timeoutMs, 2000),
          });
          return { ...peer, reachable: true, status };
        } catch (e) {
          return { ...peer, reachable: false, error: e instanceof Error ? e.message : String(e) };
        }
      }),
    );
    return { via: selfUrl ?? first.node_id, nodes };
  }

  async close(): Promise<void> {
    if (this.ownsDispatcher) await this.dispatcher.close();
  }

  private async send<T>(
    method: HttpMethod,
    base: string,
    path: string,
    body: unknown,
    opts: RequestOptions,
  ): Promise<DssResponse<T>> {
    const headers: Record<string, string> = { accept: 'application/json', ...opts.headers };
    if (this.token !== undefined) headers.authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    // Straight to the dispatcher with origin and path apart: undici's request(url) would parse the
    // URL and resolve dot segments, so the cache key `a/../b` (a valid identifier) would become `b`.
    // Paths are built by the SDK (constant routes, encoded identifiers, an encoded query string).
    const target = new URL(base);
    const prefix = target.pathname === '/' ? '' : target.pathname;
    const limit = deadline(opts.timeoutMs ?? this.timeoutMs);
    let res: Dispatcher.ResponseData;
    let text: string;
    try {
      res = await this.dispatcher.request({
        origin: target.origin,
        path: prefix + path + queryString(opts.query),
        method,
        headers,
        signal: limit.signal,
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      text = await res.body.text();
    } finally {
      limit.clear();
    }
    const type = String(res.headers['content-type'] ?? '');
    let parsed: unknown = undefined;
    if (text !== '') {
      if (type.includes('json')) {
        try {
          parsed = JSON.parse(text);
        } catch {
          parsed = text;
        }
      } else {
        parsed = text;
      }
    }
    return { status: res.statusCode, body: parsed as T | undefined, headers: res.headers, url: base };
  }

  /** Configured URLs starting at the preferred one. */
  private rotation(): string[] {
    return [...this.urls.slice(this.preferred), ...this.urls.slice(0, this.preferred)];
  }

  private remember(url: string): void {
    const i = this.urls.indexOf(url);
    if (i >= 0) this.preferred = i;
  }

  /** Full jitter in [base/2, base] so that many clients do not retry in lockstep. */
  private backoff(attempt: number): number {
    const step = Math.min(this.backoffMaxMs, this.backoffBaseMs * 2 ** attempt);
    return Math.round(step / 2 + (Math.random() * step) / 2);
  }
}

function normalizeUrl(u: string): string {
  return u.replace(/\/+$/, '');
}

function queryString(q: RequestOptions['query']): string {
  if (!q) return '';
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== undefined) params.set(k, String(v));
  const s = params.toString();
  return s === '' ? '' : `?${s}`;
}

function retryAfterMs(headers: Record<string, string | string[] | undefined>): number | undefined {
  const raw = headers['retry-after'];
  const v = Array.isArray(raw) ? raw[0] : raw;
  if (v === undefined) return undefined;
  if (/^\d+(\.\d+)?$/.test(v.trim())) return Number(v) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

function servingUrls(body: unknown): string[] {
  if (typeof body !== 'object' || body === null || !('nodes' in body) || !Array.isArray(body.nodes))
    return [];
  return (body.nodes as unknown[]).flatMap((n) =>
    typeof n === 'object' && n !== null && 'url' in n && typeof n.url === 'string'
      ? [normalizeUrl(n.url)]
      : [],
  );
}

function isTimeout(e: unknown): boolean {
  if (e instanceof Error && (e.name === 'TimeoutError' || e.name === 'AbortError')) return true;
  const code = errorCode(e);
  return code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'ABORT_ERR';
}

function preferFirst(url: string, rotation: string[]): string[] {
  return [url, ...rotation.filter((u) => u !== url)];
}
