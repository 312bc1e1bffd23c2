// Cache API (SPEC 6) and the coherence messages between cache nodes (/cache/handle_*). Registered on
// every node: one without the cache role answers 421 naming the nodes that have it.
import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { GetResult } from '../../cache/l1.js';
import type { CacheService } from '../../cache/service.js';
import type { Data } from '../../cache/types.js';
import { DssError } from '../../errors.js';
import type { ApiContext } from '../context.js';
import { requireRole, roleNotServed } from '../roles.js';
import {
  CacheDeleteResponse,
  CacheFlushResponse,
  CacheGetResponse,
  type CacheGetReply,
  CacheLinesResponse,
  CachePutBody,
  CachePutResponse,
  HomeGrantResponse,
  HomeRequestBody,
  LeaseBody,
  LeaseResponse,
  SnoopBody,
  SnoopResponse,
} from '../schemas/cache.js';
import { ErrorResponse, Identifier } from '../schemas/common.js';

export interface CacheRoutesDeps {
  /** Null on nodes without the cache role. */
  service: CacheService | null;
  /** CACHE_MAX_VALUE_BYTES: largest value a PUT may store, as JSON text (default 256 KiB). */
  maxValueBytes?: number;
}

/** The key is the rest of the path, so keys may contain '/' (SPEC 3 identifiers). */
const KeyParams = Type.Object({ '*': Identifier });

const JSON_TYPE = 'application/json; charset=utf-8';

/**
 * The JSON text of each cached value, made on its first hit: a line's Data is never changed in
 * place (a write or a fill brings a new one), so the text stays right for as long as the line keeps
 * that Data, and goes with it. Hits then send prepared text instead of serializing the value each
 * time: with the L1's cheaper touch, a hit's CPU over a route answering a constant fell from 5-8 µs
 * to 3-4 µs (docs/BENCHMARKS.md, cache).
 */
const valueText = new WeakMap<Data, string>();

/** The CacheGetResponse body of a hit, as text; the same fields and order the schema gives. */
function hitBody(r: GetResult): string {
  let text = valueText.get(r.data);
  if (text === undefined) {
    text = JSON.stringify(r.data.value ?? null);
    valueText.set(r.data, text);
  }
  return `{"key":${JSON.stringify(r.key)},"value":${text},"state":"${r.state}","source":"${r.source}"}`;
}

export function cacheRoutes(deps: CacheRoutesDeps): FastifyPluginCallbackTypebox<{ ctx: ApiContext }> {
  return (app, { ctx }, done) => {
    const onRequest = requireRole(ctx, 'cache');
    const maxValueBytes = deps.maxValueBytes ?? 256 * 1024;
    const errors = {
      400: ErrorResponse,
      401: ErrorResponse,
      421: ErrorResponse,
      503: ErrorResponse,
      504: ErrorResponse,
    };
    const answer = (r: GetResult): CacheGetReply => {
      if (!r.data.present) throw new DssError('not_found', `cache key ${r.key} has no value`);
      return { key: r.key, value: r.data.value ?? null, state: r.state, source: r.source };
    };
    const svc = (): CacheService => {
      if (deps.service === null) throw roleNotServed(ctx, 'cache');
      return deps.service;
    };

    app.get(
      '/cache/*',
      {
        onRequest,
        schema: {
          summary: "Read a key through this node's L1 (MESI); 404 when it has no value",
          tags: ['cache'],
          params: KeyParams,
          response: { 200: CacheGetResponse, 404: ErrorResponse, ...errors },
        },
      },
      (req, reply) => {
        const key = req.params['*'];
        const s = svc();
        // Hits (the common case) are answered without a promise in between, with prepared text.
        const hit = s.hitNow(key);
        if (hit === null) return s.get(key).then(answer);
        if (!hit.data.present) return answer(hit);
        // Text the schema would have produced (see hitBody), so it is sent as it is.
        void reply.type(JSON_TYPE).send(hitBody(hit) as unknown as CacheGetReply);
      },
    );
    app.put(
      '/cache/*',
      {
        onRequest,
        schema: {
          summary: 'Write a key: every other copy is invalidated first; this node ends in M',
          tags: ['cache'],
          params: KeyParams,
          body: CachePutBody,
          response: { 200: CachePutResponse, 413: ErrorResponse, ...errors },
        },
      },
      async (req) => {
        const key = req.params['*'];
        if (!('value' in req.body)) throw new DssError('bad_request', 'body must have a value');
        const bytes = Buffer.byteLength(JSON.stringify(req.body.value) ?? '');
        if (bytes > maxValueBytes) {
          throw new DssError(
            'payload_too_large',
            `value is ${bytes} bytes of JSON, more than ${maxValueBytes} (CACHE_MAX_VALUE_BYTES)`,
          );
        }
        await svc().put(key, { present: true, value: req.body.value });
        return { key, state: 'M' as const };
      },
    );
    app.delete(
      '/cache/*',
      {
        onRequest,
        schema: {
          summary: 'Delete a key (a write of "no value": other copies are invalidated)',
          tags: ['cache'],
          params: KeyParams,
          response: { 200: CacheDeleteResponse, ...errors },
        },
      },
      async (req) => {
        await svc().put(req.params['*'], { present: false });
        return { deleted: true };
      },
    );
    app.get(
      '/cache',
      {
        onRequest,
        schema: {
          summary: "This node's L1: its lines and their MESI states",
          tags: ['cache'],
          response: { 200: CacheLinesResponse, ...errors },
        },
      },
      () => {
        const s = svc();
        const st = s.status();
        return {
          node_id: ctx.nodeId,
          capacity: st.capacity,
          size: st.size,
          write_policy: st.write_policy,
          lines: s.lines(),
        };
      },
    );
    app.post(
      '/cache/flush',
      {
        onRequest,
        schema: {
          summary: 'Write every M line of this node back to Redis (they stay cached)',
          tags: ['cache'],
          response: { 200: CacheFlushResponse, ...errors },
        },
      },
      async () => ({ written_back: await svc().flush() }),
    );

    // Internal: coherence messages between cache nodes.
    const internal = { onRequest, schema: { tags: ['internal'] } };
    app.post(
      '/cache/handle_request',
      {
        ...internal,
        schema: {
          ...internal.schema,
          summary: 'A bus transaction for a key this node is home of',
          body: HomeRequestBody,
          response: { 200: HomeGrantResponse, 409: ErrorResponse, ...errors },
        },
      },
      (req) => svc().handleRequest(req.body),
    );
    app.post(
      '/cache/handle_snoop_read',
      {
        ...internal,
        schema: {
          ...internal.schema,
          summary: "Snoop read from the key's home: write back if M, supply the data, end in S",
          body: SnoopBody,
          response: { 200: SnoopResponse, 409: ErrorResponse, ...errors },
        },
      },
      (req) => svc().handleSnoop('snoop_read', req.body),
    );
    app.post(
      '/cache/handle_invalidate',
      {
        ...internal,
        schema: {
          ...internal.schema,
          summary: "Invalidate from the key's home: write back if M, then drop the line",
          body: SnoopBody,
          response: { 200: SnoopResponse, 409: ErrorResponse, ...errors },
        },
      },
      (req) => svc().handleSnoop('invalidate', req.body),
    );
    app.post(
      '/cache/handle_lease',
      {
        ...internal,
        schema: {
          ...internal.schema,
          summary: 'Coherence lease: renew, join (after dropping every line of this home) or leave',
          body: LeaseBody,
          response: { 200: LeaseResponse, ...errors },
        },
      },
      (req) => svc().handleLease(req.body),
    );
    done();
  };
}
