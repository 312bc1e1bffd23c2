// Test-only hooks (DSS_TEST_HOOKS=1): propose a raw command through Raft and read the placeholder
// state machine, so integration tests can drive replication before the lock manager exists.
import { Type } from 'typebox';
import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import type { Json } from '../../raft/types.js';
import type { ApiContext } from '../context.js';
import type { LeaderForwarder } from '../forward.js';
import { requireRole } from '../roles.js';
import { JsonValue } from '../schemas/common.js';

export interface DebugDeps {
  propose(command: Json): Promise<{ index: number; result: Json }>;
  /** Followers relay proposals to the leader, like every lock request. */
  forwarder: LeaderForwarder;
  state(): unknown;
  /** Resolves once this leader may serve a linearizable read (Raft ReadIndex). */
  readIndex(): Promise<void>;
}

export function debugRoutes(deps: DebugDeps): FastifyPluginCallbackTypebox<{ ctx: ApiContext }> {
  return (app, { ctx }, done) => {
    const onRequest = requireRole(ctx, 'lock');
    app.post(
      '/debug/raft/propose',
      {
        onRequest,
        schema: { hide: true, body: Type.Object({ command: JsonValue }) },
      },
      async (req, reply) => deps.forwarder.handle(req, reply, () => deps.propose(req.body.command)),
    );
    app.get('/debug/raft/state', { onRequest, schema: { hide: true } }, (_req, reply) => {
      void reply.send(deps.state());
    });
    // The same state, read linearizably: relayed to the leader, served after a ReadIndex round.
    app.get('/debug/raft/read', { onRequest, schema: { hide: true } }, async (req, reply) =>
      deps.forwarder.handle(req, reply, async () => {
        await deps.readIndex();
        return deps.state();
      }),
    );
    done();
  };
}
