// Internal Raft RPCs (SPEC 4.1). A peer POSTs `{messages:[...]}`, a batch of requests for that
// endpoint in order, and gets back `{messages:[...]}`, the responses the local Raft node produced
// for them once they are durable.
import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import type { RequestMessage, ResponseMessage } from '../../raft/types.js';
import type { ApiContext } from '../context.js';
import { fail } from '../errors.js';
import { requireRole, roleNotServed } from '../roles.js';
import { ErrorResponse } from '../schemas/common.js';
import { AppendEntriesBody, RaftReply, SnapshotRequestBody, VoteRequestBody } from '../schemas/raft.js';

export interface RaftRoutesOptions {
  ctx: ApiContext;
  /** Snapshots can be large: these routes accept more than public ones. */
  bodyLimit: number;
}

export const raftRoutes: FastifyPluginCallbackTypebox<RaftRoutesOptions> = (
  app,
  { ctx, bodyLimit },
  done,
) => {
  const voters = new Set(ctx.cluster.filter((m) => m.roles.includes('lock')).map((m) => m.id));
  const onRequest = requireRole(ctx, 'lock');

  const handle = async (msgs: RequestMessage[]): Promise<{ messages: ResponseMessage[] }> => {
    // Misaddressed traffic (stale config, wrong port) must not reach the core: its term could
    // disrupt this node's group. The driver answers a batch as coming from one peer.
    const from = msgs[0]!.from;
    for (const [i, msg] of msgs.entries()) {
      if (msg.to !== ctx.nodeId) {
        throw fail('bad_request', `body.messages[${i}].to is "${msg.to}" but this node is "${ctx.nodeId}"`);
      }
      if (msg.from !== from)
        throw fail('bad_request', `body.messages[${i}].from differs from messages[0].from`);
    }
    if (from === ctx.nodeId || !voters.has(from)) {
      throw fail('bad_request', `body.messages[0].from "${from}" is not another lock node of this cluster`);
    }
    if (!ctx.raft) throw roleNotServed(ctx, 'lock');
    return { messages: await ctx.raft.handleRequests(msgs) };
  };

  const common = {
    bodyLimit,
    onRequest,
  };
  const responses = { 200: RaftReply, 400: ErrorResponse, 401: ErrorResponse, 421: ErrorResponse };

  app.post(
    '/raft/request_vote',
    {
      ...common,
      schema: {
        summary: 'RequestVote / PreVote',
        tags: ['internal'],
        body: VoteRequestBody,
        response: responses,
      },
    },
    (req) => handle(req.body.messages),
  );
  app.post(
    '/raft/append_entries',
    {
      ...common,
      schema: {
        summary: 'AppendEntries (and leader-transfer TimeoutNow)',
        tags: ['internal'],
        body: AppendEntriesBody,
        response: responses,
      },
    },
    (req) => handle(req.body.messages),
  );
  app.post(
    '/raft/install_snapshot',
    {
      ...common,
      schema: {
        summary: 'InstallSnapshot',
        tags: ['internal'],
        body: SnapshotRequestBody,
        response: responses,
      },
    },
    (req) => handle(req.body.messages),
  );

  done();
};
