// Test-only routes for the cache benchmark (DSS_TEST_HOOKS=1, nodes with a Redis client): the same
// HTTP stack as the cache's GET, doing nothing (the HTTP ceiling) or one Redis GET (a cache-less
// read-through), so `npm run bench -- cache` can compare hits with both in one server process.
import { Type } from 'typebox';
import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import { DssError } from '../../errors.js';
import type { Json } from '../../raft/types.js';
import { toDssError, type RedisClient } from '../../queue/store.js';
import type { ApiContext } from '../context.js';
import { ErrorResponse, Identifier, JsonValue } from '../schemas/common.js';

export interface BenchHookDeps {
  redis: RedisClient;
}

const CONST_VALUE: Json = { bench: 'const', n: 1 };

export function benchHookRoutes(deps: BenchHookDeps): FastifyPluginCallbackTypebox<{ ctx: ApiContext }> {
  return (app, _opts, done) => {
    const reply = Type.Object({ key: Type.String(), value: JsonValue });
    app.get('/debug/bench/const', { schema: { hide: true, response: { 200: reply } } }, () => ({
      key: 'const',
      value: CONST_VALUE,
    }));
    // One GET of the Redis key named (raw, e.g. dss:mem:K); its JSON text is parsed and sent back.
    app.get(
      '/debug/bench/redis_get',
      {
        schema: {
          hide: true,
          querystring: Type.Object({ key: Identifier }),
          response: { 200: reply, 404: ErrorResponse, 503: ErrorResponse },
        },
      },
      async (req) => {
        let text: string | null;
        try {
          text = await deps.redis.get(req.query.key);
        } catch (e) {
          throw toDssError(e);
        }
        if (text === null) throw new DssError('not_found', `no Redis key ${req.query.key}`);
        return { key: req.query.key, value: JSON.parse(text) as Json };
      },
    );
    done();
  };
}
