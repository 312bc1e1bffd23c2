// The built-in web dashboard (SPEC 8), served by every node whatever its roles: one static page
// (HTML, CSS and script shipped as string constants in page.ts, so nothing is built or copied at
// run time) that polls this node's cluster snapshot, which this node assembles from every node's
// own snapshot.
import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import type { ApiContext } from '../api/context.js';
import { ErrorResponse } from '../api/schemas/common.js';
import { DashboardClusterResponse, DashboardNodeResponse } from '../api/schemas/dashboard.js';
import { DASHBOARD_CSS, DASHBOARD_HTML, DASHBOARD_JS } from './page.js';
import {
  clusterSnapshot,
  DASHBOARD_LIMIT,
  nodeSnapshot,
  PeerSnapshots,
  type DashboardSources,
} from './snapshot.js';

export interface DashboardRoutesDeps {
  sources: DashboardSources;
  clusterSecret: string | null;
  /** Trusted for HTTPS calls to peers (TLS_CA). */
  ca?: string | Buffer;
  /** Cap on resources, queues and cache lines per node (default 200). */
  limit?: number;
  peerTimeoutMs?: number;
}

/** The page's own script and style only; data goes in through textContent, never as markup. */
const PAGE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

export function dashboardRoutes(
  deps: DashboardRoutesDeps,
): FastifyPluginCallbackTypebox<{ ctx: ApiContext }> {
  return (app, { ctx }, done) => {
    const limit = deps.limit ?? DASHBOARD_LIMIT;
    const peers = new PeerSnapshots({
      clusterSecret: deps.clusterSecret,
      ...(deps.ca !== undefined ? { ca: deps.ca } : {}),
      ...(deps.peerTimeoutMs !== undefined ? { timeoutMs: deps.peerTimeoutMs } : {}),
    });
    app.addHook('onClose', () => peers.close());

    const hidden = { schema: { hide: true } };
    // Relative redirects, so the page also works behind a proxy that mounts the node under a prefix.
    app.get('/', hidden, (_req, reply) => reply.redirect('dashboard', 302));
    app.get('/dashboard/', hidden, (_req, reply) => reply.redirect('../dashboard', 302));
    app.get('/dashboard', hidden, (_req, reply) =>
      reply
        .header('cache-control', 'no-cache')
        .header('content-security-policy', PAGE_CSP)
        .header('x-content-type-options', 'nosniff')
        .type('text/html; charset=utf-8')
        .send(DASHBOARD_HTML),
    );
    app.get('/dashboard/app.js', hidden, (_req, reply) =>
      reply
        .header('cache-control', 'no-cache')
        .header('x-content-type-options', 'nosniff')
        .type('text/javascript; charset=utf-8')
        .send(DASHBOARD_JS),
    );
    app.get('/dashboard/app.css', hidden, (_req, reply) =>
      reply
        .header('cache-control', 'no-cache')
        .header('x-content-type-options', 'nosniff')
        .type('text/css; charset=utf-8')
        .send(DASHBOARD_CSS),
    );

    app.get(
      '/dashboard/api/node',
      {
        schema: {
          summary:
            "This node's view for the dashboard: Raft state, its applied lock table, the depths of the " +
            'queues it owns, its L1 lines (each capped, with how many were left out)',
          tags: ['dashboard'],
          response: { 200: DashboardNodeResponse, 401: ErrorResponse },
        },
      },
      async (_req, reply) => {
        void reply.header('cache-control', 'no-store');
        return nodeSnapshot(ctx, deps.sources, limit);
      },
    );
    app.get(
      '/dashboard/api/cluster',
      {
        schema: {
          summary:
            "Every node's dashboard view, read by this node in parallel (an unreachable node is marked, " +
            'not an error), with the leader and whose lock table to show',
          tags: ['dashboard'],
          response: { 200: DashboardClusterResponse, 401: ErrorResponse },
        },
      },
      async (req, reply) => {
        void reply.header('cache-control', 'no-store');
        return clusterSnapshot(ctx, deps.sources, peers, req.headers.authorization, limit);
      },
    );
    done();
  };
}
