// Lock API (SPEC 4.3). Any lock node accepts every request; followers relay to the Raft leader.
import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import type { LockService } from '../../lock/service.js';
import type { ApiContext } from '../context.js';
import type { LeaderForwarder } from '../forward.js';
import { requireRole } from '../roles.js';
import { ErrorResponse } from '../schemas/common.js';
import {
  AcquireBody,
  AcquireResponse,
  LockRefusal,
  LockStatusResponse,
  ReleaseBody,
  ReleaseResponse,
  RenewBody,
  RenewResponse,
  StatusQuery,
} from '../schemas/lock.js';

export interface LockRoutesDeps {
  service: LockService;
  forwarder: LeaderForwarder;
  defaultTtlMs: number;
  /**
   * How long a relayed request may take beyond any wait it asked for. A leader cut off by a
   * partition is replaced within an election timeout, so waiting much longer only delays the
   * client's retry against the new leader.
   */
  relayMarginMs: number;
}

export function lockRoutes(deps: LockRoutesDeps): FastifyPluginCallbackTypebox<{ ctx: ApiContext }> {
  return (app, { ctx }, done) => {
    const onRequest = requireRole(ctx, 'lock');
    const errors = { 400: ErrorResponse, 421: ErrorResponse, 503: ErrorResponse, 504: ErrorResponse };
    const { service, forwarder } = deps;

    app.post(
      '/lock/acquire',
      {
        onRequest,
        schema: {
          summary: 'Acquire a lock (blocking up to wait_ms)',
          tags: ['lock'],
          body: AcquireBody,
          response: { 200: AcquireResponse, 409: LockRefusal, ...errors },
        },
      },
      (req, reply) => {
        const b = req.body;
        const waitMs = b.wait_ms ?? 0;
        return forwarder.handle(
          req,
          reply,
          () =>
            service.acquire({
              resource: b.resource,
              client_id: b.client_id,
              mode: b.mode ?? 'exclusive',
              ttl_ms: b.ttl_ms ?? deps.defaultTtlMs,
              wait_ms: waitMs,
            }),
          waitMs + deps.relayMarginMs,
        );
      },
    );

    app.post(
      '/lock/release',
      {
        onRequest,
        schema: {
          summary: 'Release a lock held by client_id',
          tags: ['lock'],
          body: ReleaseBody,
          response: { 200: ReleaseResponse, 409: ErrorResponse, ...errors },
        },
      },
      (req, reply) =>
        forwarder.handle(
          req,
          reply,
          () => service.release(req.body.resource, req.body.client_id),
          deps.relayMarginMs,
        ),
    );

    app.post(
      '/lock/renew',
      {
        onRequest,
        schema: {
          summary: 'Extend a hold by ttl_ms from now',
          tags: ['lock'],
          body: RenewBody,
          response: { 200: RenewResponse, 409: ErrorResponse, ...errors },
        },
      },
      (req, reply) =>
        forwarder.handle(
          req,
          reply,
          () => service.renew(req.body.resource, req.body.client_id, req.body.ttl_ms ?? deps.defaultTtlMs),
          deps.relayMarginMs,
        ),
    );

    app.get(
      '/lock/status',
      {
        onRequest,
        schema: {
          summary: 'Lock table (linearizable: served by the leader after a ReadIndex round)',
          tags: ['lock'],
          querystring: StatusQuery,
          response: { 200: LockStatusResponse, ...errors },
        },
      },
      (req, reply) =>
        forwarder.handle(req, reply, () => service.status(req.query.resource), deps.relayMarginMs),
    );
    done();
  };
}
