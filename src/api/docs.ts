// OpenAPI 3 document generated from the route schemas, and Swagger UI served from the package's own
// bundled assets (no CDN, works offline).
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { VERSION } from '../version.js';
import type { DssApp } from './context.js';

/** Must run before any route is added: @fastify/swagger collects routes as they are registered. */
export async function registerDocs(app: DssApp): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'DSS — Distributed Synchronization Service',
        version: VERSION,
        description:
          'Locks (Raft), queues (consistent hashing on Redis) and a MESI-coherent cache. ' +
          'Errors are `{"error":{"code","message"}}`. Routes tagged `internal` are node-to-node.',
      },
      components: {
        securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      },
      tags: [
        { name: 'ops', description: 'Health, readiness, status, metrics' },
        { name: 'internal', description: 'Node-to-node endpoints (CLUSTER_SECRET)' },
      ],
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs', staticCSP: true });
  app.get('/openapi.json', { schema: { hide: true } }, (_req, reply) => {
    void reply.send(app.swagger());
  });
}
