// Operational endpoints (SPEC 8): liveness, readiness, status, Prometheus metrics.
import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import { DssError } from '../../errors.js';
import type { RaftStatus } from '../../raft/types.js';
import type { ApiContext, CheckResult, RaftApi, ReadinessCheck } from '../context.js';
import { ErrorResponse } from '../schemas/common.js';
import {
  HealthResponse,
  ReadyResponse,
  StatusResponse,
  type CheckOutcomeWire,
  type NodeStatus,
  type RaftSectionWire,
} from '../schemas/ops.js';

/** A readiness check must answer within this, so /ready never hangs on a stuck dependency. */
const CHECK_TIMEOUT_MS = 1000;

export function raftLeaderCheck(raft: RaftApi): ReadinessCheck {
  return {
    name: 'raft',
    check: () => {
      const s = raft.status();
      return Promise.resolve(
        s.leaderId !== null ? { ok: true } : { ok: false, reason: `no Raft leader known (term ${s.term})` },
      );
    },
  };
}

async function runCheck(c: ReadinessCheck): Promise<CheckOutcomeWire> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<CheckResult>((resolve) => {
    timer = setTimeout(
      () => resolve({ ok: false, reason: `no answer within ${CHECK_TIMEOUT_MS} ms` }),
      CHECK_TIMEOUT_MS,
    );
  });
  try {
    const r = await Promise.race([c.check(), timeout]);
    return r.ok ? { name: c.name, ok: true } : { name: c.name, ok: false, reason: r.reason ?? 'not ready' };
  } catch (e) {
    return { name: c.name, ok: false, reason: e instanceof Error ? e.message : String(e) };
  } finally {
    clearTimeout(timer);
  }
}

export function raftSection(s: RaftStatus): RaftSectionWire {
  return {
    // PreVote is an implementation detail; clients see the three states of the paper.
    state: s.role === 'precandidate' ? 'candidate' : s.role,
    term: s.term,
    leader_id: s.leaderId,
    commit_index: s.commitIndex,
    last_applied: s.lastApplied,
  };
}

export function buildStatus(ctx: ApiContext): NodeStatus {
  const raft = ctx.raft;
  const raftReachable = raft ? raft.reachablePeers() : new Set<string>();
  const status: NodeStatus = {
    node_id: ctx.nodeId,
    roles: [...ctx.roles],
    raft: raft ? raftSection(raft.status()) : null,
    peers: ctx.cluster.map((m) => ({
      id: m.id,
      url: m.url,
      roles: [...m.roles],
      reachable: m.id === ctx.nodeId || raftReachable.has(m.id) || ctx.peers.isReachable(m.id),
    })),
  };
  for (const [name, section] of Object.entries(ctx.statusSections)) status[name] = section();
  return status;
}

export const opsRoutes: FastifyPluginCallbackTypebox<{ ctx: ApiContext }> = (app, { ctx }, done) => {
  app.get(
    '/health',
    { schema: { summary: 'Liveness', tags: ['ops'], response: { 200: HealthResponse } } },
    (_req, reply) => {
      void reply.send({ status: 'ok', node_id: ctx.nodeId });
    },
  );

  app.get(
    '/ready',
    {
      schema: {
        summary: 'Readiness: every check passes (Raft has a leader, Redis answers, ...)',
        tags: ['ops'],
        response: { 200: ReadyResponse, 503: ErrorResponse },
      },
    },
    async () => {
      const checks = await Promise.all(ctx.readinessChecks.map(runCheck));
      const failing = checks.filter((c) => !c.ok);
      if (failing.length > 0) {
        throw new DssError(
          'unavailable',
          `not ready: ${failing.map((c) => `${c.name} (${c.reason})`).join('; ')}`,
          {
            details: { checks },
          },
        );
      }
      return { status: 'ready' as const, node_id: ctx.nodeId, checks };
    },
  );

  app.get(
    '/status',
    { schema: { summary: 'Node and cluster status', tags: ['ops'], response: { 200: StatusResponse } } },
    (_req, reply) => {
      void reply.send(buildStatus(ctx));
    },
  );

  app.get(
    '/metrics',
    { schema: { summary: 'Prometheus metrics', tags: ['ops'], produces: ['text/plain'] } },
    async (_req, reply) => {
      const text = await ctx.metrics.scrape();
      return reply.type(ctx.metrics.contentType).send(text);
    },
  );

  done();
};
