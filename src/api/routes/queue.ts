// Queue API (SPEC 5). Any queue node accepts every request and relays it to the node that serves the
// queue (its owner on the hash ring); the internal twins (/queue/internal_*) always run here.
import type { FastifyReply } from 'fastify';
import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import { DssError } from '../../errors.js';
import type { Json } from '../../raft/types.js';
import type { QueueRouter, QueueOp } from '../../queue/router.js';
import type { QueueService } from '../../queue/service.js';
import type { ApiContext } from '../context.js';
import { requireRole } from '../roles.js';
import { ErrorResponse } from '../schemas/common.js';
import {
  AckBody,
  AckResponse,
  NackBody,
  NackResponse,
  PopBody,
  PopResponse,
  PushBody,
  PushResponse,
  StatsQuery,
  StatsResponse,
  type AckBodyWire,
  type PopBodyWire,
  type PushBodyWire,
} from '../schemas/queue.js';

/** Names the queue node that ran a request (the owner, or the next one clockwise when it is down). */
export const SERVED_BY = 'x-dss-served-by';

export interface QueueRoutesDeps {
  service: QueueService;
  router: QueueRouter;
  /** How long a relayed request may take beyond any long poll it asked for. */
  relayMarginMs: number;
}

interface Answer {
  code: number;
  payload?: unknown;
}

export function queueRoutes(deps: QueueRoutesDeps): FastifyPluginCallbackTypebox<{ ctx: ApiContext }> {
  return (app, { ctx }, done) => {
    const onRequest = requireRole(ctx, 'queue');
    const errors = { 400: ErrorResponse, 401: ErrorResponse, 421: ErrorResponse, 503: ErrorResponse };
    const { service, router } = deps;

    const push = async (b: PushBodyWire): Promise<Answer> => {
      const one = b.message !== undefined;
      if (one === (b.messages !== undefined)) {
        throw new DssError('bad_request', 'body must have exactly one of message or messages');
      }
      const ids = await service.push(b.queue, one ? [b.message as Json] : b.messages!);
      return { code: 201, payload: one ? { queue: b.queue, id: ids[0] } : { queue: b.queue, ids } };
    };
    const pop = async (
      b: PopBodyWire,
      gone: AbortSignal | undefined,
      reply: FastifyReply,
    ): Promise<Answer> => {
      const got = await service.pop(
        b.queue,
        {
          max: b.max ?? 1,
          waitMs: b.wait_ms ?? 0,
          ...(b.visibility_ms !== undefined ? { visibilityMs: b.visibility_ms } : {}),
        },
        gone,
      );
      // What a pop took for a client that has left goes back to the queue, not into a closed socket.
      if (gone?.aborted || reply.raw.destroyed) {
        await service.giveBack(b.queue, got);
        return { code: 204 };
      }
      if (got.length === 0) return { code: 204 };
      if (b.max === undefined || b.max === 1) {
        const m = got[0]!;
        return {
          code: 200,
          payload: { queue: b.queue, id: m.id, message: m.message, delivery_count: m.delivery_count },
        };
      }
      return { code: 200, payload: { queue: b.queue, messages: got } };
    };
    const ack = async (b: AckBodyWire): Promise<Answer> => {
      if ((b.id !== undefined) === (b.ids !== undefined)) {
        throw new DssError('bad_request', 'body must have exactly one of id or ids');
      }
      if (b.ids !== undefined && b.delivery_count !== undefined) {
        throw new DssError('bad_request', 'delivery_count goes with a single id, not with ids');
      }
      return {
        code: 200,
        payload: { acked: await service.ack(b.queue, b.ids ?? b.id!, b.delivery_count) },
      };
    };
    const nack = async (b: { queue: string; id: string; delivery_count?: number }): Promise<Answer> => ({
      code: 200,
      payload: { queue: b.queue, id: b.id, state: await service.nack(b.queue, b.id, b.delivery_count) },
    });
    const stats = async (b: { queue: string }): Promise<Answer> => ({
      code: 200,
      payload: { queue: b.queue, owner: service.ownerOf(b.queue), ...(await service.stats(b.queue)) },
    });

    // Handlers send themselves (the payload's shape depends on the status) and resolve with nothing.
    const send = (reply: FastifyReply, a: Answer): void => {
      if (a.payload === undefined) void reply.code(a.code).send();
      else void reply.code(a.code).send(a.payload);
    };

    /**
     * Aborts when the client hangs up before its answer: a long poll then stops waiting (and a relayed
     * one closes its connection to the owner, which stops waiting in turn). Only for long polls: a
     * request that does not wait is over too soon for it to matter.
     */
    const whileClientWaits = async <T>(
      reply: FastifyReply,
      waitMs: number,
      run: (gone: AbortSignal | undefined) => Promise<T>,
    ): Promise<T> => {
      if (waitMs <= 0) return run(undefined);
      const gone = new AbortController();
      const onClose = (): void => {
        if (!reply.raw.writableEnded) gone.abort();
      };
      reply.raw.once('close', onClose);
      try {
        return await run(gone.signal);
      } finally {
        reply.raw.off('close', onClose);
      }
    };

    /** Public entry: run here or relay to the queue's node, then answer either way. */
    const routed = async <B extends { queue: string }>(
      reply: FastifyReply,
      op: QueueOp,
      body: B,
      run: (b: B, gone: AbortSignal | undefined) => Promise<Answer>,
      waitMs = 0,
    ): Promise<void> => {
      const out = await whileClientWaits(reply, waitMs, (gone) =>
        router.route(body.queue, op, body, () => run(body, gone), waitMs + deps.relayMarginMs, gone),
      );
      if ('local' in out) {
        void reply.header(SERVED_BY, ctx.nodeId);
        return send(reply, out.local);
      }
      const r = out.relayed;
      void reply.header(SERVED_BY, r.node);
      if (r.retryAfter !== undefined) void reply.header('retry-after', r.retryAfter);
      if (r.status === 204 || r.body.length === 0) void reply.code(r.status).send();
      else void reply.code(r.status).type('application/json').send(r.body);
    };

    const pushSchema = { body: PushBody, response: { 201: PushResponse, 413: ErrorResponse, ...errors } };
    const popSchema = { body: PopBody, response: { 200: PopResponse, ...errors } };
    const ackSchema = { body: AckBody, response: { 200: AckResponse, 404: ErrorResponse, ...errors } };
    const nackSchema = { body: NackBody, response: { 200: NackResponse, 404: ErrorResponse, ...errors } };

    app.post(
      '/queue/push',
      { onRequest, schema: { summary: 'Push one message or a batch', tags: ['queue'], ...pushSchema } },
      (req, reply) => routed(reply, 'push', req.body, push),
    );
    app.post(
      '/queue/pop',
      {
        onRequest,
        schema: { summary: 'Pop (long-poll with wait_ms); 204 when empty', tags: ['queue'], ...popSchema },
      },
      (req, reply) => routed(reply, 'pop', req.body, (b, gone) => pop(b, gone, reply), req.body.wait_ms ?? 0),
    );
    app.post(
      '/queue/ack',
      { onRequest, schema: { summary: 'Acknowledge delivered messages', tags: ['queue'], ...ackSchema } },
      (req, reply) => routed(reply, 'ack', req.body, ack),
    );
    app.post(
      '/queue/nack',
      {
        onRequest,
        schema: { summary: 'Make a delivered message ready again at once', tags: ['queue'], ...nackSchema },
      },
      (req, reply) => routed(reply, 'nack', req.body, nack),
    );
    app.get(
      '/queue/stats',
      {
        onRequest,
        schema: {
          summary: 'Ready, pending and dead counts, and the owner',
          tags: ['queue'],
          querystring: StatsQuery,
          response: { 200: StatsResponse, ...errors },
        },
      },
      (req, reply) => routed(reply, 'stats', { queue: req.query.queue }, stats),
    );

    // Internal twins: the relaying node already chose this one; never relay again.
    const internal = { onRequest, schema: { tags: ['internal'] } };
    app.post(
      '/queue/internal_push',
      { ...internal, schema: { ...internal.schema, ...pushSchema } },
      async (req, reply) => send(reply, await push(req.body)),
    );
    app.post(
      '/queue/internal_pop',
      { ...internal, schema: { ...internal.schema, ...popSchema } },
      async (req, reply) =>
        send(
          reply,
          await whileClientWaits(reply, req.body.wait_ms ?? 0, (gone) => pop(req.body, gone, reply)),
        ),
    );
    app.post(
      '/queue/internal_ack',
      { ...internal, schema: { ...internal.schema, ...ackSchema } },
      async (req, reply) => send(reply, await ack(req.body)),
    );
    app.post(
      '/queue/internal_nack',
      { ...internal, schema: { ...internal.schema, ...nackSchema } },
      async (req, reply) => send(reply, await nack(req.body)),
    );
    app.post(
      '/queue/internal_stats',
      {
        ...internal,
        schema: { ...internal.schema, body: StatsQuery, response: { 200: StatsResponse, ...errors } },
      },
      async (req, reply) => send(reply, await stats(req.body)),
    );
    done();
  };
}
