// `dss queue ...` against a real 3-node queue cluster and a private Redis, run from source as a user
// would: push through one node, pop and ack through others, stats, and the errors a user sees.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { TestCluster } from '../helpers/cluster.js';
import { dss } from '../helpers/dss-cli.js';
import { RedisServer } from '../helpers/redis.js';

describe('dss queue (CLI, real cluster)', () => {
  let redis: RedisServer;
  let c: TestCluster;
  let urls: string[];

  before(async () => {
    redis = await RedisServer.start();
    c = await TestCluster.start({ nodes: 3, roles: 'queue', env: { REDIS_URL: redis.url } });
    urls = c.nodes.map((n) => n.url);
  });

  after(async () => {
    await c?.stop();
    await redis?.stop();
  });

  it('push, stats, pop, ack; empty queue; unknown ack', async () => {
    const pushed = await dss(['--url', urls[0]!, 'queue', 'push', 'cli-q', '{"job":1}', '--json']);
    assert.equal(pushed.code, 0, pushed.stderr);
    const { id } = JSON.parse(pushed.stdout) as { id: string };
    const stats = await dss(['--url', urls[1]!, 'queue', 'stats', 'cli-q', '--json']);
    assert.equal(stats.code, 0, stats.stderr);
    assert.equal((JSON.parse(stats.stdout) as { ready: number }).ready, 1);
    const popped = await dss(['--url', urls[2]!, 'queue', 'pop', 'cli-q', '--json']);
    assert.equal(popped.code, 0, popped.stderr);
    const deliveries = JSON.parse(popped.stdout) as { id: string; message: unknown }[];
    assert.deepEqual(
      deliveries.map((d) => [d.id, d.message]),
      [[id, { job: 1 }]],
    );
    const acked = await dss(['--url', urls[0]!, 'queue', 'ack', 'cli-q', id]);
    assert.equal(acked.code, 0, acked.stderr);
    const empty = await dss(['--url', urls[1]!, 'queue', 'pop', 'cli-q']);
    assert.equal(empty.code, 0);
    assert.match(empty.stdout, /empty/);
    const unknown = await dss(['--url', urls[1]!, 'queue', 'ack', 'cli-q', id]);
    assert.notEqual(unknown.code, 0);
    assert.match(unknown.stderr, /unknown_message/);
    const bad = await dss(['--url', urls[1]!, 'queue', 'push', 'cli-q', '{not json']);
    assert.notEqual(bad.code, 0);
    assert.equal(bad.stderr.trim().split('\n').length, 1, `one line: ${bad.stderr}`);
  });
});
