// The SDK sends a queue's calls to the queue's owner first (the ring learned from GET /status), so
// no node has to relay them; with the owner down it fails over through the configured nodes.
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { DssClient } from '../../src/client/index.js';
import { HashRing } from '../../src/queue/ring.js';

describe('SDK queue routing', () => {
  const apps: FastifyInstance[] = [];
  const hits = new Map<string, string[]>();
  let urls: string[] = [];

  before(async () => {
    for (const id of ['q1', 'q2', 'q3']) {
      const app = Fastify();
      app.get('/status', () => ({
        node_id: id,
        roles: ['queue'],
        raft: { state: 'follower', term: 0, leader_id: null, commit_index: 0, last_applied: 0 },
        peers: urls.map((url, i) => ({ id: `q${i + 1}`, url, roles: ['queue'], reachable: true })),
        queue: { vnodes: 150 },
      }));
      app.post('/queue/push', (req, reply) => {
        const { queue } = req.body as { queue: string };
        hits.set(queue, [...(hits.get(queue) ?? []), id]);
        return reply.code(201).send({ queue, id: '1' });
      });
      await app.listen({ host: '127.0.0.1', port: 0 });
      apps.push(app);
    }
    urls = apps.map((a) => `http://127.0.0.1:${(a.server.address() as AddressInfo).port}`);
  });

  after(async () => {
    for (const a of apps) await a.close();
  });

  it('pushes go straight to the owner computed from the ring', async () => {
    const ring = new HashRing(['q1', 'q2', 'q3'], 150);
    const client = new DssClient({ urls: [urls[0]!] });
    try {
      for (let i = 0; i < 30; i++) await client.queue.push(`orders-${i}`, { i });
      for (let i = 0; i < 30; i++) assert.deepEqual(hits.get(`orders-${i}`), [ring.owner(`orders-${i}`)]);
    } finally {
      await client.close();
    }
  });

  it('fails over when the owner does not answer', async () => {
    const ring = new HashRing(['q1', 'q2', 'q3'], 150);
    const queue = Array.from({ length: 100 }, (_, i) => `fo-${i}`).find((q) => ring.owner(q) === 'q3')!;
    const client = new DssClient({ urls: [urls[0]!, urls[1]!], retries: 2, backoffBaseMs: 1 });
    try {
      await client.queue.push('warm-up', 1); // learns the ring while q3 still answers
      await apps[2]!.close();
      const r = await client.queue.push(queue, 'x');
      assert.equal(r.id, '1');
      assert.ok(['q1', 'q2'].includes(hits.get(queue)![0]!));
    } finally {
      await client.close();
    }
  });
});
