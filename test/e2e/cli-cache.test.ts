// `dss cache ...` against a real 3-node cache cluster and a private Redis, run from source as a user
// would: write through one node, read through the others, list lines, flush, delete, and the errors
// a user sees (a missing key exits 1, bad input exits 2).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { TestCluster } from '../helpers/cluster.js';
import { dss } from '../helpers/dss-cli.js';
import { RedisServer } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

interface Lines {
  node_id: string;
  capacity: number;
  size: number;
  lines: { key: string; state: string }[];
}

describe('dss cache (CLI, real cluster)', () => {
  let redis: RedisServer;
  let c: TestCluster;
  let urls: string[];

  before(async () => {
    redis = await RedisServer.start();
    c = await TestCluster.start({ nodes: 3, roles: 'cache', env: { REDIS_URL: redis.url } });
    urls = c.nodes.map((n) => n.url);
    for (const url of urls)
      await waitFor(`${url} ready`, async () => (await fetch(`${url}/ready`)).ok, { timeoutMs: 20_000 });
  });

  after(async () => {
    await c?.stop();
    await redis?.stop();
  });

  it('put on one node, get on the others, lines, flush, del; missing key; bad input', async () => {
    const key = 'cli/user:1';
    const value = { name: 'ada', tags: ['x', 'y'], n: 1.5, none: null };

    const put = await dss(['--url', urls[0]!, 'cache', 'put', key, JSON.stringify(value), '--json']);
    assert.equal(put.code, 0, put.stderr);
    assert.deepEqual(JSON.parse(put.stdout), { key, state: 'M' });

    const got = await dss(['--url', urls[1]!, 'cache', 'get', key, '--json']);
    assert.equal(got.code, 0, got.stderr);
    const entry = JSON.parse(got.stdout) as { key: string; value: unknown; state: string; source: string };
    assert.equal(entry.key, key);
    assert.deepEqual(entry.value, value);
    assert.ok(['M', 'E', 'S'].includes(entry.state), got.stdout);
    assert.ok(['l1', 'peer', 'memory'].includes(entry.source), got.stdout);

    // Without --json, get prints just the value as one line of JSON.
    const plain = await dss(['--url', urls[2]!, 'cache', 'get', key]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.deepEqual(JSON.parse(plain.stdout), value);
    assert.equal(plain.stdout.trim().split('\n').length, 1, plain.stdout);

    // Written on node1, then read on node2 and node3: all three hold the line in S (SPEC 6).
    // Listing lines changes nothing, so the nodes are asked at once.
    const [table, ...listed] = await Promise.all([
      dss(['--url', urls[1]!, 'cache', 'lines']),
      ...urls.map((url) => dss(['--url', url, 'cache', 'lines', '--json'])),
    ]);
    for (const lines of listed) {
      assert.equal(lines.code, 0, lines.stderr);
      const l = JSON.parse(lines.stdout) as Lines;
      assert.equal(l.size, l.lines.length);
      assert.deepEqual(
        l.lines.filter((x) => x.key === key),
        [{ key, state: 'S' }],
        lines.stdout,
      );
    }
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^node2: \d+ of \d+ lines/);
    assert.match(table.stdout, new RegExp(`^${key}\\s+S$`, 'm'));

    // A write leaves a modified line on node1; flush writes it back to main memory (Redis).
    const dirty = { v: 2 };
    const put2 = await dss(['--url', urls[0]!, 'cache', 'put', 'cli/dirty', JSON.stringify(dirty)]);
    assert.equal(put2.code, 0, put2.stderr);
    assert.equal(put2.stdout, 'stored cli/dirty (state M)\n');
    const flush = await dss(['--url', urls[0]!, 'cache', 'flush', '--json']);
    assert.equal(flush.code, 0, flush.stderr);
    const { written_back } = JSON.parse(flush.stdout) as { written_back: number };
    assert.ok(Number.isInteger(written_back) && written_back >= 0, flush.stdout);
    const r = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      await r.connect();
      const stored = await r.get('dss:mem:cli/dirty');
      assert.ok(stored !== null, 'flushed value in Redis');
      assert.deepEqual(JSON.parse(stored), dirty);
    } finally {
      r.disconnect();
    }
    const plainFlush = await dss(['--url', urls[0]!, 'cache', 'flush']);
    assert.equal(plainFlush.code, 0, plainFlush.stderr);
    assert.match(plainFlush.stdout, /^wrote back \d+ modified lines?\n$/);

    // Delete through node3; every node then answers "not found" with exit 1.
    const del = await dss(['--url', urls[2]!, 'cache', 'del', key, '--json']);
    assert.equal(del.code, 0, del.stderr);
    assert.deepEqual(JSON.parse(del.stdout), { deleted: true });
    const gets = await Promise.all(urls.map((url) => dss(['--url', url, 'cache', 'get', key])));
    for (const [i, gone] of gets.entries()) {
      assert.equal(gone.code, 1, `${urls[i]}: ${gone.stdout}${gone.stderr}`);
      assert.equal(gone.stdout, '');
      assert.equal(gone.stderr, `dss: cache key ${key} not found\n`);
    }

    // Bad input: exit 2, one line, nothing sent or stored.
    const [bad, badKey] = await Promise.all([
      dss(['--url', urls[1]!, 'cache', 'put', 'cli/bad', '{not json']),
      dss(['--url', urls[1]!, 'cache', 'get', 'no spaces']),
    ]);
    assert.equal(bad.code, 2, bad.stderr);
    assert.equal(bad.stderr.trim().split('\n').length, 1, `one line: ${bad.stderr}`);
    assert.match(bad.stderr, /^dss: value is not JSON/);
    assert.equal(badKey.code, 2, badKey.stderr);
    const never = await dss(['--url', urls[0]!, 'cache', 'get', 'cli/bad']);
    assert.equal(never.code, 1, never.stderr);
  });
});
