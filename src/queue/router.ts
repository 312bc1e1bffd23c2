// Which node runs a queue request (SPEC 5): the queue's owner on the hash ring, or, when the owner
// is unreachable, the next distinct node clockwise. Any node accepts any request and relays it over
// the internal endpoints (/queue/internal_*), which always run locally, so a request is relayed at
// most once. Redis holds the truth, so correctness never depends on the choice: the owner is where
// long polls meet the pushes that wake them and where the redelivery monitor runs.
import { Agent } from 'undici';
import { DssError } from '../errors.js';
import { neverReachedPeer } from '../transport/transport.js';
import type { HashRing } from './ring.js';

export type QueueOp = 'push' | 'pop' | 'ack' | 'nack' | 'stats';

export interface QueueRouterOptions {
  nodeId: string;
  ring: HashRing;
  /** Base URL of every queue node. */
  urls: ReadonlyMap<string, string>;
  isUp: (nodeId: string) => boolean;
  clusterSecret: string | null;
  ca?: string | Buffer;
}

/** A relayed answer, passed back to the client unchanged. */
export interface Relayed {
  /** The node that ran the request. */
  node: string;
  status: number;
  body: string;
  retryAfter: string | undefined;
}

export class QueueRouter {
  private readonly agent: Agent;

  constructor(private readonly opts: QueueRouterOptions) {
    this.agent = new Agent({
      connections: 128,
      keepAliveTimeout: 30_000,
      connect: { timeout: 2_000, ...(opts.ca !== undefined ? { ca: opts.ca } : {}) },
    });
  }

  /**
   * Runs `local` if this node should serve `queue`, else relays `body` to the node that should.
   * A node that refuses the connection is skipped for the next one clockwise; a failure after the
   * request left is reported as 503 with an unknown outcome (a pop may have delivered, an ack may
   * have acked), which clients retry as they see fit.
   */
  async route<T>(
    queue: string,
    op: QueueOp,
    body: unknown,
    local: () => Promise<T>,
    timeoutMs: number,
    /** The client went away: a relayed request is abandoned (its connection closed) too. */
    gone?: AbortSignal,
  ): Promise<{ local: T } | { relayed: Relayed }> {
    const self = this.opts.nodeId;
    for (const id of this.opts.ring.clockwise(queue)) {
      if (id === self) return { local: await local() };
      if (!this.opts.isUp(id)) continue;
      const url = this.opts.urls.get(id);
      if (url === undefined) continue;
      try {
        return { relayed: { node: id, ...(await this.send(url, op, body, timeoutMs, gone)) } };
      } catch (e) {
        if (neverReachedPeer(e)) continue;
        throw new DssError(
          'unavailable',
          `queue node ${id} failed mid-request: ${String(e)}; outcome unknown`,
          {
            details: { outcome: 'unknown' },
            retryAfter: 1,
          },
        );
      }
    }
    // Every other node is down: Redis is shared, so this node can serve the queue itself.
    return { local: await local() };
  }

  private async send(
    base: string,
    op: QueueOp,
    body: unknown,
    timeoutMs: number,
    gone: AbortSignal | undefined,
  ): Promise<Omit<Relayed, 'node'>> {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (this.opts.clusterSecret !== null) headers.authorization = `Bearer ${this.opts.clusterSecret}`;
    const res = await this.agent.request({
      origin: base,
      path: `/queue/internal_${op}`,
      method: 'POST',
      headers,
      body: JSON.stringify(body),
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      ...(gone ? { signal: gone } : {}),
    });
    const text = await res.body.text();
    const retryAfter = res.headers['retry-after'];
    return {
      status: res.statusCode,
      body: text,
      retryAfter: typeof retryAfter === 'string' ? retryAfter : undefined,
    };
  }

  async close(): Promise<void> {
    await this.agent.close();
  }
}
