// Raft transport over HTTP/JSON (SPEC 4.1): one keep-alive undici Pool per peer; each call POSTs a
// batch `{messages:[...]}` to /raft/<endpoint> with its own deadline, and the receiver's responses
// come back in the reply body.
import { Pool, type Dispatcher } from 'undici';
import type { NodeId, RequestMessage, ResponseMessage } from '../raft/types.js';
import { deadline } from './deadline.js';
import type { PeerAddress, RaftEndpoint, Transport } from './transport.js';

export interface HttpTransportOptions {
  /** Other nodes this one sends Raft RPCs to. */
  peers: PeerAddress[];
  /** Sent as `Authorization: Bearer` when set. */
  clusterSecret: string | null;
  /** Extra CA (PEM) to trust for peers' HTTPS certificates. */
  ca?: string | Buffer;
  /** Concurrent connections per peer (votes, appends and a snapshot can overlap). */
  connections?: number;
}

/** Response types a peer may answer on each endpoint (TimeoutNow produces none). */
const RESPONSES_OF: Record<RaftEndpoint, ReadonlySet<ResponseMessage['type']>> = {
  request_vote: new Set(['vote_resp']),
  append_entries: new Set(['append_resp']),
  install_snapshot: new Set(['snapshot_resp']),
};

export class TransportError extends Error {
  constructor(
    message: string,
    readonly peer: NodeId,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'TransportError';
  }
}

export class HttpTransport implements Transport {
  private readonly pools = new Map<NodeId, Pool>();
  private readonly headers: Record<string, string>;
  private closed = false;

  constructor(opts: HttpTransportOptions) {
    this.headers = { 'content-type': 'application/json' };
    if (opts.clusterSecret !== null) this.headers.authorization = `Bearer ${opts.clusterSecret}`;
    for (const peer of opts.peers) {
      this.pools.set(
        peer.id,
        new Pool(peer.url, {
          connections: opts.connections ?? 4,
          keepAliveTimeout: 30_000,
          connect: { timeout: 5_000, ...(opts.ca !== undefined ? { ca: opts.ca } : {}) },
        }),
      );
    }
  }

  async send(
    to: NodeId,
    endpoint: RaftEndpoint,
    msgs: RequestMessage[],
    timeoutMs: number,
  ): Promise<ResponseMessage[]> {
    if (this.closed) throw new TransportError('transport is closed', to);
    const pool = this.pools.get(to);
    if (!pool) throw new TransportError(`unknown peer "${to}"`, to);
    const from = msgs[0]?.from;
    if (from === undefined) return [];
    // undici's own headersTimeout is too coarse (about a second) for election-scale timeouts.
    const limit = deadline(timeoutMs, () => new TransportError(`${to} timed out on ${endpoint}`, to));
    let res: Dispatcher.ResponseData;
    let text: string;
    try {
      res = await pool.request({
        method: 'POST',
        path: `/raft/${endpoint}`,
        headers: this.headers,
        body: JSON.stringify({ messages: msgs }),
        signal: limit.signal,
      });
      // Always read the body: an unread body keeps the keep-alive connection busy.
      text = await res.body.text();
    } finally {
      limit.clear();
    }
    if (res.statusCode !== 200) {
      throw new TransportError(
        `${to} answered ${res.statusCode} on ${endpoint}: ${text.slice(0, 200)}`,
        to,
        res.statusCode,
      );
    }
    return parseResponses(text, { from, to, endpoint });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // destroy, not close: close waits for in-flight requests, which may hang on a dead peer.
    await Promise.all([...this.pools.values()].map((p) => p.destroy()));
  }
}

/**
 * Keeps only well-formed responses to a batch sent `from` -> `to`: a confused or malicious peer must
 * not feed the core messages about other nodes or of the wrong kind.
 */
export function parseResponses(
  text: string,
  req: { from: NodeId; to: NodeId; endpoint: RaftEndpoint },
): ResponseMessage[] {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new TransportError(`${req.to} sent a reply that is not JSON`, req.to);
  }
  if (
    typeof body !== 'object' ||
    body === null ||
    !Array.isArray((body as { messages?: unknown }).messages)
  ) {
    throw new TransportError(`${req.to} sent a reply without messages`, req.to);
  }
  const allowed = RESPONSES_OF[req.endpoint];
  const out: ResponseMessage[] = [];
  for (const m of (body as { messages: unknown[] }).messages) {
    if (typeof m !== 'object' || m === null) continue;
    const r = m as Partial<ResponseMessage>;
    if (r.type === undefined || !allowed.has(r.type) || r.from !== req.to || r.to !== req.from) continue;
    if (hasValidFields(r)) out.push(r);
  }
  return out;
}

const isInt = (v: unknown): boolean => typeof v === 'number' && Number.isSafeInteger(v);
const isBool = (v: unknown): boolean => typeof v === 'boolean';

function hasValidFields(r: Partial<ResponseMessage>): r is ResponseMessage {
  if (!isInt(r.term)) return false;
  switch (r.type) {
    case 'vote_resp':
      return isBool(r.preVote) && isBool(r.granted);
    case 'append_resp':
      return isBool(r.success) && isInt(r.index) && isInt(r.hintIndex) && isInt(r.hintTerm) && isInt(r.ctx);
    case 'snapshot_resp':
      return isInt(r.index);
    default:
      return false;
  }
}
