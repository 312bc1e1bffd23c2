// Role guard (SPEC 1.1): a request for a role this node does not run gets 421 role_not_served naming
// the nodes that do, so clients (and the SDK) can go there instead.
import type { FastifyPluginCallback, FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify';
import type { ClusterMember, NodeRole } from '../config/index.js';
import { DssError } from '../errors.js';

export interface RoleView {
  roles: readonly NodeRole[];
  cluster: readonly ClusterMember[];
}

export function nodesServing(view: RoleView, role: NodeRole): { id: string; url: string }[] {
  return view.cluster.filter((m) => m.roles.includes(role)).map((m) => ({ id: m.id, url: m.url }));
}

export function roleNotServed(view: RoleView, role: NodeRole): DssError {
  return new DssError('role_not_served', `this node does not run the ${role} role`, {
    details: { role, nodes: nodesServing(view, role) },
  });
}

/** Throws 421 unless this node runs `role`; for code paths outside a route hook. */
export function assertRole(view: RoleView, role: NodeRole): void {
  if (!view.roles.includes(role)) throw roleNotServed(view, role);
}

/**
 * Route-level onRequest hooks: `{ onRequest: requireRole(ctx, 'queue') }`. They run before the body
 * is read, so a misdirected request costs no parsing. A node that serves the role gets no hook at
 * all (an empty list): the hot paths (cache hits) pay nothing for the check.
 */
export function requireRole(
  view: RoleView,
  role: NodeRole,
): Array<(request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction) => void> {
  if (view.roles.includes(role)) return [];
  return [(_request, _reply, done) => done(roleNotServed(view, role))];
}

/**
 * Routes of a role this node does not run answer 421 instead of 404, whatever the method or path
 * under the role's prefix, so a client pointed at the wrong node learns where to go. The service's
 * real routes are not registered on such a node, so these wildcards never shadow them.
 */
export function roleNotServedRoutes(
  role: NodeRole,
  prefix: string,
): FastifyPluginCallback<{ ctx: RoleView }> {
  return (app, { ctx }, done) => {
    const refuse = (): never => {
      throw roleNotServed(ctx, role);
    };
    app.all(prefix, { schema: { hide: true } }, refuse);
    app.all(`${prefix}/*`, { schema: { hide: true } }, refuse);
    done();
  };
}
