// Periodic, cached liveness probes of the other nodes (GET /health with a short timeout), so that
// GET /status can report reachability instantly and never waits on a dead peer.
import { Agent, request } from 'undici';
import type { PeerReachability } from '../api/context.js';
import type { NodeId } from '../raft/types.js';
import { deadline } from '../transport/deadline.js';
import type { PeerAddress } from '../transport/transport.js';

export interface PeerProberOptions {
  peers: PeerAddress[];
  intervalMs?: number;
  timeoutMs?: number;
  /** Extra CA (PEM) for peers' HTTPS certificates. */
  ca?: string | Buffer;
}

export class PeerProber implements PeerReachability {
  private readonly peers: PeerAddress[];
  private readonly intervalMs: number;
  private readonly timeoutMs: number;
  private readonly agent: Agent;
  /** Time of the last successful probe per peer. */
  private readonly lastOk = new Map<NodeId, number>();
  private readonly inFlight = new Set<NodeId>();
  private timer: NodeJS.Timeout | null = null;

  constructor(opts: PeerProberOptions) {
    this.peers = opts.peers;
    this.intervalMs = opts.intervalMs ?? 2000;
    this.timeoutMs = opts.timeoutMs ?? 1000;
    this.agent = new Agent({
      keepAliveTimeout: 4 * this.intervalMs,
      connections: 1,
      connect: { timeout: this.timeoutMs, ...(opts.ca !== undefined ? { ca: opts.ca } : {}) },
    });
  }

  start(): this {
    if (this.timer || this.peers.length === 0) return this;
    this.probeAll();
    this.timer = setInterval(() => this.probeAll(), this.intervalMs);
    // Probing alone must not keep a process alive.
    this.timer.unref();
    return this;
  }

  /** Reachable when a probe succeeded within the last two intervals (one missed probe is tolerated). */
  isReachable(id: NodeId): boolean {
    const at = this.lastOk.get(id);
    return at !== undefined && performance.now() - at <= 2 * this.intervalMs + this.timeoutMs;
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.agent.destroy();
  }

  private probeAll(): void {
    for (const peer of this.peers) {
      if (this.inFlight.has(peer.id)) continue;
      this.inFlight.add(peer.id);
      void this.probe(peer).finally(() => this.inFlight.delete(peer.id));
    }
  }

  private async probe(peer: PeerAddress): Promise<void> {
    const limit = deadline(this.timeoutMs);
    try {
      const res = await request(`${peer.url}/health`, { dispatcher: this.agent, signal: limit.signal });
      await res.body.dump();
      if (res.statusCode === 200) this.lastOk.set(peer.id, performance.now());
      else this.lastOk.delete(peer.id);
    } catch {
      this.lastOk.delete(peer.id);
    } finally {
      limit.clear();
    }
  }
}
