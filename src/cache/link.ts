// Node-to-node coherence messages of the cache (SPEC 6) over the internal HTTP endpoints
// /cache/handle_*: requests to a key's home, snoops and invalidations from the home to holders, and
// lease renewals. One keep-alive pool per peer; every call has a deadline. Behind an interface so
// tests can cut, delay or count messages.
import { Agent } from 'undici';
import type {
  HomeGrantWire,
  HomeRequestWire,
  LeaseReplyWire,
  LeaseWire,
  SnoopReplyWire,
  SnoopWire,
} from '../api/schemas/cache.js';
import { DssError, HTTP_STATUS, type ErrorCode } from '../errors.js';
import { deadline } from '../transport/deadline.js';
import type { NodeId } from './types.js';

export type SnoopKind = 'snoop_read' | 'invalidate';

export interface CacheLink {
  /** Requester -> home. Non-2xx answers throw DssError with the answer's code. */
  request(home: NodeId, body: HomeRequestWire, timeoutMs: number): Promise<HomeGrantWire>;
  /** Home -> holder. */
  snoop(node: NodeId, kind: SnoopKind, body: SnoopWire, timeoutMs: number): Promise<SnoopReplyWire>;
  /** Holder -> home. */
  lease(home: NodeId, body: LeaseWire, timeoutMs: number): Promise<LeaseReplyWire>;
  close(): Promise<void>;
}

export interface HttpCacheLinkOptions {
  /** Base URL of every cache node. */
  urls: ReadonlyMap<NodeId, string>;
  clusterSecret: string | null;
  ca?: string | Buffer;
}

const KNOWN_CODES = new Set(Object.keys(HTTP_STATUS));

export class HttpCacheLink implements CacheLink {
  private readonly agent: Agent;

  constructor(private readonly opts: HttpCacheLinkOptions) {
    this.agent = new Agent({
      connections: 64,
      keepAliveTimeout: 30_000,
      connect: { timeout: 1_000, ...(opts.ca !== undefined ? { ca: opts.ca } : {}) },
    });
  }

  request(home: NodeId, body: HomeRequestWire, timeoutMs: number): Promise<HomeGrantWire> {
    return this.post(home, '/cache/handle_request', body, timeoutMs);
  }

  snoop(node: NodeId, kind: SnoopKind, body: SnoopWire, timeoutMs: number): Promise<SnoopReplyWire> {
    return this.post(
      node,
      kind === 'snoop_read' ? '/cache/handle_snoop_read' : '/cache/handle_invalidate',
      body,
      timeoutMs,
    );
  }

  lease(home: NodeId, body: LeaseWire, timeoutMs: number): Promise<LeaseReplyWire> {
    return this.post(home, '/cache/handle_lease', body, timeoutMs);
  }

  private async post<T>(node: NodeId, path: string, body: unknown, timeoutMs: number): Promise<T> {
    const base = this.opts.urls.get(node);
    if (base === undefined) throw new DssError('internal', `cache node ${node} is not in CLUSTER_ADDRS`);
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (this.opts.clusterSecret !== null) headers.authorization = `Bearer ${this.opts.clusterSecret}`;
    const limit = deadline(timeoutMs);
    let status: number;
    let text: string;
    try {
      const res = await this.agent.request({
        origin: base,
        path,
        method: 'POST',
        headers,
        body: JSON.stringify(body),
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
        signal: limit.signal,
      });
      status = res.statusCode;
      text = await res.body.text();
    } finally {
      limit.clear();
    }
    if (status >= 200 && status < 300) return JSON.parse(text) as T;
    throw answerError(node, status, text);
  }

  async close(): Promise<void> {
    await this.agent.close();
  }
}

/** A peer's error answer as a DssError: the peer decided, so the outcome is known. */
function answerError(node: NodeId, status: number, text: string): DssError {
  let code: ErrorCode = status === 503 ? 'unavailable' : 'internal';
  let message = `cache node ${node} answered ${status}`;
  try {
    const e = (JSON.parse(text) as { error?: { code?: unknown; message?: unknown } }).error;
    if (typeof e?.code === 'string' && KNOWN_CODES.has(e.code)) code = e.code as ErrorCode;
    if (typeof e?.message === 'string') message = `cache node ${node}: ${e.message}`;
  } catch {
    // not JSON: keep the status-based code
  }
  return new DssError(code, message, {
    details: { peer_status: status },
    ...(status === 503 ? { retryAfter: 1 } : {}),
  });
}
