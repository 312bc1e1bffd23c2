// Any node accepts any lock request; a follower relays it to the Raft leader (seed 002: "forward
// to leader") and passes the leader's answer back unchanged. A relayed request is never relayed
// again, so a stale view of who leads cannot bounce a request around the cluster.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Agent, errors as undiciErrors } from 'undici';
import type { ClusterMember } from '../config/index.js';
import { DssError } from '../errors.js';
import { deadline } from '../transport/deadline.js';
import { neverReachedPeer } from '../transport/transport.js';
import type { RaftApi } from './context.js';

export const FORWARDED_HEADER = 'x-dss-forwarded-by';

export interface ForwarderOptions {
  nodeId: string;
  cluster: readonly ClusterMember[];
  raft: RaftApi;
  clusterSecret: string | null;
  ca?: string | Buffer;
}

export class LeaderForwarder {
  private readonly agent: Agent;
  private readonly urls: Map<string, string>;

  constructor(private readonly opts: ForwarderOptions) {
    this.urls = new Map(opts.cluster.map((m) => [m.id, m.url]));
    this.agent = new Agent({
      connections: 64,
      keepAliveTimeout: 30_000,
      connect: { timeout: 2_000, ...(opts.ca !== undefined ? { ca: opts.ca } : {}) },
    });
  }

  /**
   * Run `local` when this node leads; otherwise relay the request to the leader and send its reply.
   * `timeoutMs` bounds the relay (a blocking acquire needs its wait_ms on top of the usual).
   */
  async handle<T>(
    req: FastifyRequest,
    reply: FastifyReply,
    local: () => Promise<T>,
    timeoutMs = 10_000,
  ): Promise<T | undefined> {
    const st = this.opts.raft.status();
    if (st.role === 'leader') return local();
    if (st.leaderId === null || st.leaderId === this.opts.nodeId) {
      throw new DssError('no_leader', 'no Raft leader at the moment; retry shortly');
    }
    if (req.headers[FORWARDED_HEADER] !== undefined) {
      // We were chosen as the leader by a peer but are not; the sender's view is stale.
      throw new DssError('not_leader', `not the leader; the leader is ${st.leaderId}`, {
        details: { leader_id: st.leaderId },
      });
    }
    const base = this.urls.get(st.leaderId);
    if (base === undefined) throw new DssError('no_leader', `leader ${st.leaderId} is not in CLUSTER_ADDRS`);
    const headers: Record<string, string> = { [FORWARDED_HEADER]: this.opts.nodeId };
    if (req.body !== undefined) headers['content-type'] = 'application/json';
    if (this.opts.clusterSecret !== null) headers.authorization = `Bearer ${this.opts.clusterSecret}`;
    else if (typeof req.headers.authorization === 'string') headers.authorization = req.headers.authorization;
    const limit = deadline(timeoutMs);
    try {
      const res = await this.agent.request({
        origin: base,
        path: req.url,
        method: req.method,
        headers,
        body: req.body === undefined ? null : JSON.stringify(req.body),
        signal: limit.signal,
      });
      const text = await res.body.text();
      const retryAfter = res.headers['retry-after'];
      if (typeof retryAfter === 'string') void reply.header('retry-after', retryAfter);
      void reply.header('x-dss-leader', st.leaderId);
      // The leader's answer is relayed as it is; the handler then resolves with nothing to send.
      void reply.code(res.statusCode).type('application/json').send(text);
      return undefined;
    } catch (e) {
      const timedOut = e instanceof DOMException && e.name === 'TimeoutError';
      if (timedOut || e instanceof undiciErrors.HeadersTimeoutError) {
        throw new DssError('timeout', `the leader ${st.leaderId} did not answer within ${timeoutMs} ms`, {
          details: { outcome: 'unknown' },
        });
      }
      // The leader died or is unreachable: answer at once so the client can retry. Only a refused
      // connection proves the request never reached it; otherwise it may have been executed.
      const neverSent = neverReachedPeer(e);
      throw new DssError('no_leader', `the leader ${st.leaderId} is unreachable; retry shortly`, {
        retryAfter: 1,
        ...(neverSent ? {} : { details: { outcome: 'unknown' } }),
      });
    } finally {
      limit.clear();
    }
  }

  async close(): Promise<void> {
    await this.agent.close();
  }
}
