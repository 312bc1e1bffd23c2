// What the dashboard shows, as JSON: one node's own view (its Raft state, its applied lock table,
// the depths of the queues it owns, its L1 lines), and the cluster view a node assembles by asking
// every other node for its own view over HTTP, so a browser talks to one node only.
import { Agent } from 'undici';
import { Value } from 'typebox/value';
import type { ApiContext } from '../api/context.js';
import { raftSection } from '../api/routes/ops.js';
import {
  DashboardNodeResponse,
  type DashboardCacheWire,
  type DashboardClusterNodeWire,
  type DashboardClusterReply,
  type DashboardLocksWire,
  type DashboardNodeReply,
  type DashboardQueuesWire,
} from '../api/schemas/dashboard.js';
import type { LockState } from '../lock/types.js';
import { deadline } from '../transport/deadline.js';

/** Default cap on the resources, queues and cache lines one node lists. */
export const DASHBOARD_LIMIT = 200;
/** A peer that has not answered its snapshot within this counts as unreachable. */
export const PEER_TIMEOUT_MS = 1000;
/** Queue depths come from Redis; a slow Redis must not hold the whole snapshot up. */
const QUEUE_TIMEOUT_MS = 800;

/** The lock table (src/lock/table.ts) as the dashboard reads it. */
export interface LockSource {
  sample(limit: number): { total: number; states: LockState[] };
}

/** The queue service (src/queue/service.ts) as the dashboard reads it. */
export interface QueueSource {
  knownQueues(): Promise<string[]>;
  ownerOf(queue: string): string;
  stats(queue: string): Promise<{ ready: number; pending: number; dead: number }>;
}

/** The cache service (src/cache/service.ts) as the dashboard reads it. */
export interface CacheSource {
  /** Least recently used first. */
  lines(): Array<{ key: string; state: 'M' | 'E' | 'S' }>;
  status(): { size: number; capacity: number; write_policy: string };
}

/** The services of this node; absent for a role it does not run. */
export interface DashboardSources {
  locks?: LockSource | null;
  queues?: QueueSource | null;
  cache?: CacheSource | null;
}

const message = (e: unknown): string => (e instanceof Error ? e.message : String(e));

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

function lockView(ctx: ApiContext, source: LockSource, limit: number): DashboardLocksWire {
  const raft = ctx.raft?.status();
  const { total, states } = source.sample(limit);
  return {
    view_of: ctx.nodeId,
    leader: raft?.role === 'leader',
    applied_index: raft?.lastApplied ?? 0,
    total,
    omitted: Math.max(0, total - states.length),
    resources: states.map((s) => ({
      resource: s.resource,
      mode: s.holders[0]?.mode ?? null,
      holders: s.holders.map((h) => ({
        client_id: h.client_id,
        mode: h.mode,
        fencing_token: h.fencing_token,
        expires_at: h.expires_at,
      })),
      waiters: s.waiters.map((w) => ({ client_id: w.client_id, mode: w.mode })),
    })),
  };
}

async function queueView(ctx: ApiContext, source: QueueSource, limit: number): Promise<DashboardQueuesWire> {
  try {
    const read = async (): Promise<DashboardQueuesWire> => {
      const owned = (await source.knownQueues()).filter((q) => source.ownerOf(q) === ctx.nodeId).sort();
      const shown = owned.slice(0, limit);
      const queues = await Promise.all(
        shown.map(async (queue) => {
          const s = await source.stats(queue);
          return { queue, ready: s.ready, pending: s.pending, dead: s.dead };
        }),
      );
      return { total: owned.length, omitted: owned.length - shown.length, queues };
    };
    return await withTimeout(read(), QUEUE_TIMEOUT_MS, 'queue depths');
  } catch (e) {
    return { total: 0, omitted: 0, queues: [], error: message(e) };
  }
}

function cacheView(source: CacheSource, limit: number): DashboardCacheWire {
  const st = source.status();
  const all = source.lines();
  const counts = { M: 0, E: 0, S: 0 };
  for (const l of all) counts[l.state]++;
  // The most recently used lines, listed by key so rows do not jump around between refreshes.
  const lines = all.slice(Math.max(0, all.length - limit)).map((l) => ({ key: l.key, state: l.state }));
  lines.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return {
    capacity: st.capacity,
    size: st.size,
    write_policy: st.write_policy,
    counts,
    omitted: all.length - lines.length,
    lines,
  };
}

/** This node's own view. Never throws: a failing part (Redis down) is reported inside it. */
export async function nodeSnapshot(
  ctx: ApiContext,
  sources: DashboardSources,
  limit = DASHBOARD_LIMIT,
): Promise<DashboardNodeReply> {
  const queues = sources.queues ? await queueView(ctx, sources.queues, limit) : null;
  return {
    node_id: ctx.nodeId,
    roles: [...ctx.roles],
    time: Date.now(),
    raft: ctx.raft ? raftSection(ctx.raft.status()) : null,
    locks: sources.locks ? lockView(ctx, sources.locks, limit) : null,
    queues,
    cache: sources.cache ? cacheView(sources.cache, limit) : null,
  };
}

export interface PeerFetcherOptions {
  /** Sent as a bearer token to peers, which accept it on every route. */
  clusterSecret: string | null;
  ca?: string | Buffer;
  timeoutMs?: number;
}

/** Reads other nodes' snapshots over HTTP: one keep-alive pool, a short deadline per call. */
export class PeerSnapshots {
  private readonly agent: Agent;
  private readonly timeoutMs: number;

  constructor(private readonly opts: PeerFetcherOptions) {
    this.timeoutMs = opts.timeoutMs ?? PEER_TIMEOUT_MS;
    this.agent = new Agent({
      connections: 4,
      keepAliveTimeout: 10_000,
      connect: { timeout: this.timeoutMs, ...(opts.ca !== undefined ? { ca: opts.ca } : {}) },
    });
  }

  /**
   * One peer's snapshot, or why not. `authorization` (the browser's own bearer token) is passed on
   * when there is no cluster secret, so a cluster with API_TOKENS alone still works.
   */
  async fetch(
    member: { id: string; url: string },
    authorization: string | undefined,
  ): Promise<{ reachable: boolean; error: string | null; snapshot: DashboardNodeReply | null }> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.opts.clusterSecret !== null) headers.authorization = `Bearer ${this.opts.clusterSecret}`;
    else if (authorization !== undefined) headers.authorization = authorization;
    let status: number;
    let text: string;
    const limit = deadline(this.timeoutMs);
    try {
      const res = await this.agent.request({
        origin: member.url,
        path: '/dashboard/api/node',
        method: 'GET',
        headers,
        headersTimeout: this.timeoutMs,
        bodyTimeout: this.timeoutMs,
        signal: limit.signal,
      });
      status = res.statusCode;
      text = await res.body.text();
    } catch (e) {
      const why =
        e instanceof Error && e.name === 'TimeoutError'
          ? `no answer within ${this.timeoutMs} ms`
          : message(e);
      return { reachable: false, error: why, snapshot: null };
    } finally {
      limit.clear();
    }
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      return { reachable: true, error: `answered ${status} with a body that is not JSON`, snapshot: null };
    }
    if (status !== 200) {
      const e = (body as { error?: { message?: unknown } } | null)?.error;
      const why = typeof e?.message === 'string' ? e.message : 'error';
      return { reachable: true, error: `answered ${status}: ${why}`, snapshot: null };
    }
    if (!Value.Check(DashboardNodeResponse, body)) {
      return {
        reachable: true,
        error: 'answered with a snapshot this node does not understand',
        snapshot: null,
      };
    }
    return { reachable: true, error: null, snapshot: body };
  }

  async close(): Promise<void> {
    await this.agent.close();
  }
}

/** The Raft leader of the highest term any node reports, preferring a node that says it leads. */
export function pickLeader(nodes: DashboardClusterNodeWire[]): { id: string; term: number } | null {
  let leader: { id: string; term: number } | null = null;
  for (const n of nodes) {
    const raft = n.snapshot?.raft;
    if (raft?.state === 'leader' && (leader === null || raft.term > leader.term)) {
      leader = { id: n.id, term: raft.term };
    }
  }
  if (leader !== null) return leader;
  for (const n of nodes) {
    const raft = n.snapshot?.raft;
    if (raft && raft.leader_id !== null && (leader === null || raft.term > leader.term)) {
      leader = { id: raft.leader_id, term: raft.term };
    }
  }
  return leader;
}

/** Whose lock table to show: the leader's, else the one that has applied the most. */
export function pickLockView(
  nodes: DashboardClusterNodeWire[],
  leader: { id: string; term: number } | null,
): string | null {
  if (leader !== null && nodes.some((n) => n.id === leader.id && n.snapshot?.locks)) return leader.id;
  let best: { id: string; applied: number } | null = null;
  for (const n of nodes) {
    const locks = n.snapshot?.locks;
    if (locks && (best === null || locks.applied_index > best.applied)) {
      best = { id: n.id, applied: locks.applied_index };
    }
  }
  return best?.id ?? null;
}

/** Every node's snapshot, fetched in parallel; an unreachable node is marked so, never an error. */
export async function clusterSnapshot(
  ctx: ApiContext,
  sources: DashboardSources,
  peers: PeerSnapshots,
  authorization: string | undefined,
  limit = DASHBOARD_LIMIT,
): Promise<DashboardClusterReply> {
  const nodes = await Promise.all(
    ctx.cluster.map(async (m): Promise<DashboardClusterNodeWire> => {
      const started = performance.now();
      const base = { id: m.id, url: m.url, roles: [...m.roles] };
      const got =
        m.id === ctx.nodeId
          ? { reachable: true, error: null, snapshot: await nodeSnapshot(ctx, sources, limit) }
          : await peers.fetch(m, authorization);
      return { ...base, ...got, elapsed_ms: Math.round(performance.now() - started) };
    }),
  );
  const leader = pickLeader(nodes);
  return {
    served_by: ctx.nodeId,
    time: Date.now(),
    leader,
    lock_view: pickLockView(nodes, leader),
    nodes,
  };
}
