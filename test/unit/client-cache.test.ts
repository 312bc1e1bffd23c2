// The cache part of the SDK (client.cache) and of the CLI, against a fake cache node: an in-memory
// map behind the SPEC 6 routes that logs every request as it arrived (raw URL, decoded key, body)
// and has a few keys that misbehave on purpose.
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, beforeEach, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { DssClient, DssHttpError, cachePath } from '../../src/client/index.js';
import {
  BadInputError,
  checkKey,
  formatCacheError,
  formatDelete,
  formatFlush,
  formatGet,
  formatLines,
  formatPut,
  parseCacheValue,
} from '../../src/cli/cache-command.js';
import type { Json } from '../../src/raft/types.js';
import { dss } from '../helpers/dss-cli.js';

interface Seen {
  method: string;
  url: string;
  key?: string;
  body: unknown;
  contentType: string | undefined;
}

class FakeCache {
  readonly values = new Map<string, Json>();
  readonly log: Seen[] = [];
  private hits = new Map<string, number>();

  reset(): void {
    this.values.clear();
    this.log.length = 0;
    this.hits.clear();
  }

  hit(key: string): number {
    const n = (this.hits.get(key) ?? 0) + 1;
    this.hits.set(key, n);
    return n;
  }
}

const unavailable = { error: { code: 'unavailable', message: 'home unreachable' } };

function fakeNode(fc: FakeCache, prefix = ''): FastifyInstance {
  const app = Fastify();
  const seen = (
    req: { method: string; url: string; body: unknown; headers: Record<string, unknown> },
    key?: string,
  ) =>
    fc.log.push({
      method: req.method,
      url: req.url,
      ...(key !== undefined ? { key } : {}),
      body: req.body,
      contentType: req.headers['content-type'] as string | undefined,
    });
  app.get(`${prefix}/cache/*`, (req, reply) => {
    const key = (req.params as { '*': string })['*'];
    seen(req, key);
    // Two 503s (no home yet), then the value.
    if (key === 'flaky-get' && fc.hit('get:' + key) <= 2)
      return reply.code(503).header('retry-after', '0').send(unavailable);
    if (key === 'forbidden') return reply.code(403).send({ error: { code: 'forbidden', message: 'no' } });
    if (!fc.values.has(key))
      return reply.code(404).send({ error: { code: 'not_found', message: `no key ${key}` } });
    return { key, value: fc.values.get(key), state: 'E', source: 'memory' };
  });
  app.put(`${prefix}/cache/*`, (req, reply) => {
    const key = (req.params as { '*': string })['*'];
    seen(req, key);
    if (key === 'flaky-put' && fc.hit('put:' + key) === 1) return reply.code(503).send(unavailable);
    if (key === 'big') return reply.code(413).send({ error: { code: 'too_large', message: 'body' } });
    fc.values.set(key, (req.body as { value: Json }).value);
    return { key, state: 'M' };
  });
  app.delete(`${prefix}/cache/*`, (req, reply) => {
    const key = (req.params as { '*': string })['*'];
    seen(req, key);
    if (key === 'flaky-del' && fc.hit('del:' + key) === 1) return reply.code(503).send(unavailable);
    fc.values.delete(key);
    return { deleted: true };
  });
  app.get(`${prefix}/cache`, (req) => {
    seen(req);
    return {
      node_id: 'fake1',
      capacity: 1000,
      size: fc.values.size,
      write_policy: 'write-back',
      lines: [...fc.values.keys()].map((key) => ({ key, state: 'M' })),
    };
  });
  app.post(`${prefix}/cache/flush`, (req) => {
    seen(req);
    return { written_back: fc.values.size };
  });
  return app;
}

describe('client.cache', () => {
  const fc = new FakeCache();
  let app: FastifyInstance;
  let url: string;
  let client: DssClient;

  before(async () => {
    app = fakeNode(fc);
    await app.listen({ host: '127.0.0.1', port: 0 });
    url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    client = new DssClient({ urls: [url], retries: 3, backoffBaseMs: 1 });
  });

  after(async () => {
    await client.close();
    await app.close();
  });

  beforeEach(() => fc.reset());

  it('puts {value} and gets it back; keys keep their slashes, other characters are encoded', async () => {
    const value = { n: 1, list: [true, null, 'x'], nested: { s: 'é' } };
    assert.deepEqual(await client.cache.put('users/42:profile', value), {
      key: 'users/42:profile',
      state: 'M',
    });
    assert.deepEqual(await client.cache.get('users/42:profile'), {
      key: 'users/42:profile',
      value,
      state: 'E',
      source: 'memory',
    });
    assert.deepEqual(
      fc.log.map((s) => [s.method, s.url, s.key]),
      [
        ['PUT', '/cache/users/42%3Aprofile', 'users/42:profile'],
        ['GET', '/cache/users/42%3Aprofile', 'users/42:profile'],
      ],
    );
    assert.deepEqual(fc.log[0]!.body, { value });
    assert.equal(fc.log[0]!.contentType, 'application/json');
    assert.equal(fc.log[1]!.body, undefined);
  });

  it('sends any JSON value as is: null, a string, a number, an array', async () => {
    for (const value of [null, 'text', 0, -1.5, [], [1, [2]], false] as Json[]) {
      await client.cache.put('v', value);
      assert.deepEqual(fc.log.at(-1)!.body, { value });
      assert.deepEqual((await client.cache.get('v'))?.value, value);
    }
  });

  it('keeps dot segments: the key a/../b is not the key b', async () => {
    await client.cache.put('a/../b', 1);
    await client.cache.put('./c', 2);
    assert.deepEqual(
      fc.log.map((s) => [s.url, s.key]),
      [
        ['/cache/a/../b', 'a/../b'],
        ['/cache/./c', './c'],
      ],
    );
    assert.equal(await client.cache.get('b'), null);
  });

  it('resolves null for a missing key (404 not_found); other errors throw', async () => {
    assert.equal(await client.cache.get('nope'), null);
    await assert.rejects(client.cache.get('forbidden'), (e: unknown) => {
      assert.ok(e instanceof DssHttpError);
      assert.equal(e.status, 403);
      return true;
    });
    await assert.rejects(client.cache.put('big', 'x'), (e: unknown) => {
      assert.ok(e instanceof DssHttpError);
      assert.deepEqual([e.status, e.code], [413, 'too_large']);
      return true;
    });
  });

  it('deletes with DELETE and no body', async () => {
    fc.values.set('gone/soon', 1);
    assert.deepEqual(await client.cache.delete('gone/soon'), { deleted: true });
    assert.deepEqual(
      fc.log.map((s) => [s.method, s.url, s.body]),
      [['DELETE', '/cache/gone/soon', undefined]],
    );
    assert.equal(await client.cache.get('gone/soon'), null);
  });

  it('lists lines with GET /cache and flushes with POST /cache/flush', async () => {
    await client.cache.put('k1', 1);
    await client.cache.put('k2', 2);
    fc.log.length = 0;
    assert.deepEqual(await client.cache.lines(), {
      node_id: 'fake1',
      capacity: 1000,
      size: 2,
      write_policy: 'write-back',
      lines: [
        { key: 'k1', state: 'M' },
        { key: 'k2', state: 'M' },
      ],
    });
    assert.deepEqual(await client.cache.flush(), { written_back: 2 });
    assert.deepEqual(
      fc.log.map((s) => [s.method, s.url, s.body]),
      [
        ['GET', '/cache', undefined],
        ['POST', '/cache/flush', undefined],
      ],
    );
  });

  it('retries 503 on get, put and delete', async () => {
    fc.values.set('flaky-get', 'g');
    assert.equal((await client.cache.get('flaky-get'))?.value, 'g');
    await client.cache.put('flaky-put', 'p');
    assert.deepEqual(await client.cache.delete('flaky-del'), { deleted: true });
    const count = (m: string, key: string) => fc.log.filter((s) => s.method === m && s.key === key).length;
    assert.equal(count('GET', 'flaky-get'), 3);
    assert.equal(count('PUT', 'flaky-put'), 2);
    assert.equal(count('DELETE', 'flaky-del'), 2);
    assert.equal(fc.values.get('flaky-put'), 'p');
  });

  it('gives up after `retries` 503s with the 503', async () => {
    fc.values.set('flaky-get', 'g');
    const once = new DssClient({ urls: [url], retries: 1, backoffBaseMs: 1 });
    try {
      await assert.rejects(once.cache.get('flaky-get'), (e: unknown) => {
        assert.ok(e instanceof DssHttpError);
        assert.equal(e.status, 503);
        return true;
      });
    } finally {
      await once.close();
    }
  });

  it('refuses keys that are not identifiers without sending anything', async () => {
    for (const key of ['', 'a b', 'a?b', 'x#y', 'k'.repeat(257), 'ü']) {
      await assert.rejects(client.cache.get(key), RangeError);
      await assert.rejects(client.cache.put(key, 1), RangeError);
      await assert.rejects(client.cache.delete(key), RangeError);
    }
    assert.equal(fc.log.length, 0);
    assert.equal(cachePath('k'.repeat(256)), '/cache/' + 'k'.repeat(256));
    assert.equal(cachePath('a:b/c.d_e-f'), '/cache/a%3Ab/c.d_e-f');
  });

  it('keeps the path of a base URL', async () => {
    const gw = fakeNode(fc, '/gw');
    await gw.listen({ host: '127.0.0.1', port: 0 });
    const c = new DssClient({ urls: [`http://127.0.0.1:${(gw.server.address() as AddressInfo).port}/gw/`] });
    try {
      await c.cache.put('p/q', 1);
      assert.deepEqual(await c.cache.get('p/q'), { key: 'p/q', value: 1, state: 'E', source: 'memory' });
      assert.deepEqual(
        fc.log.map((s) => s.url),
        ['/gw/cache/p/q', '/gw/cache/p/q'],
      );
    } finally {
      await c.close();
      await gw.close();
    }
  });

  it('dss cache ... runs against a node (CLI wiring, exit codes)', async () => {
    const cli = (...args: string[]) => dss(['--url', url, 'cache', ...args]);
    const put = await cli('put', 'cli/k:1', '{"a":[1,2]}');
    assert.deepEqual([put.code, put.stdout, put.stderr], [0, 'stored cli/k:1 (state M)\n', '']);
    const [got, gotJson, missing, bad, badKey] = await Promise.all([
      cli('get', 'cli/k:1'),
      cli('get', 'cli/k:1', '--json'),
      cli('get', 'cli/none'),
      cli('put', 'cli/k:1', '{not json'),
      cli('get', 'bad key'),
    ]);
    assert.deepEqual([got.code, got.stdout], [0, '{"a":[1,2]}\n']);
    assert.deepEqual(JSON.parse(gotJson.stdout), {
      key: 'cli/k:1',
      value: { a: [1, 2] },
      state: 'E',
      source: 'memory',
    });
    assert.deepEqual(
      [missing.code, missing.stdout, missing.stderr],
      [1, '', 'dss: cache key cli/none not found\n'],
    );
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^dss: value is not JSON .*--text\n$/);
    assert.equal(badKey.code, 2);
    assert.match(badKey.stderr, /^dss: invalid cache key "bad key"/);
    assert.deepEqual(fc.values.get('cli/k:1'), { a: [1, 2] });
    const [lines, flush] = await Promise.all([cli('lines'), cli('flush', '--json')]);
    assert.deepEqual(
      [lines.code, lines.stdout],
      [0, 'fake1: 1 of 1000 lines (write-back)\nKEY      STATE\ncli/k:1  M\n'],
    );
    assert.deepEqual([flush.code, JSON.parse(flush.stdout)], [0, { written_back: 1 }]);
    const del = await cli('del', 'cli/k:1');
    assert.deepEqual([del.code, del.stdout], [0, 'deleted cli/k:1\n']);
    assert.equal(fc.values.has('cli/k:1'), false);
  });
});

describe('dss cache output', () => {
  it('parses values: JSON, or text with --text; bad JSON is bad input', () => {
    assert.deepEqual(parseCacheValue('{"a":[1,null]}'), { a: [1, null] });
    assert.equal(parseCacheValue('null'), null);
    assert.equal(parseCacheValue('hello world', true), 'hello world');
    assert.throws(() => parseCacheValue('hello'), BadInputError);
    assert.throws(() => checkKey(''), BadInputError);
    assert.equal(checkKey('a/b:c'), 'a/b:c');
  });

  it('formats get, put, del, lines and flush readably or as JSON', () => {
    const entry = { key: 'k', value: { a: 1 }, state: 'S' as const, source: 'peer' as const };
    assert.deepEqual(formatGet('k', entry, false), { stdout: '{"a":1}\n', stderr: '', exitCode: 0 });
    assert.deepEqual(JSON.parse(formatGet('k', entry, true).stdout), entry);
    assert.deepEqual(formatGet('k', null, false), {
      stdout: '',
      stderr: 'dss: cache key k not found\n',
      exitCode: 1,
    });
    assert.equal(formatGet('k', null, true).stdout, 'null\n');
    assert.equal(formatPut({ key: 'k', state: 'M' }, false).stdout, 'stored k (state M)\n');
    assert.equal(formatDelete('k', { deleted: true }, false).stdout, 'deleted k\n');
    assert.deepEqual(JSON.parse(formatDelete('k', { deleted: true }, true).stdout), { deleted: true });
    const lines = {
      node_id: 'node2',
      capacity: 10,
      size: 2,
      write_policy: 'write-back',
      lines: [
        { key: 'alpha', state: 'M' as const },
        { key: 'b', state: 'S' as const },
      ],
    };
    assert.equal(
      formatLines(lines, false).stdout,
      'node2: 2 of 10 lines (write-back)\nKEY    STATE\nalpha  M\nb      S\n',
    );
    assert.equal(
      formatLines({ ...lines, size: 0, lines: [] }, false).stdout,
      'node2: 0 of 10 lines (write-back)\n',
    );
    assert.equal(formatFlush({ written_back: 1 }, false).stdout, 'wrote back 1 modified line\n');
    assert.equal(formatFlush({ written_back: 3 }, false).stdout, 'wrote back 3 modified lines\n');
  });

  it('bad input exits 2, everything else 1', () => {
    assert.equal(formatCacheError(new BadInputError('value is not JSON'), false).exitCode, 2);
    const e = new DssHttpError({
      status: 503,
      body: { error: { code: 'unavailable', message: 'x' } },
      url: 'http://n1',
    });
    assert.deepEqual(formatCacheError(e, false), {
      stdout: '',
      stderr: 'dss: 503 unavailable: x (http://n1)\n',
      exitCode: 1,
    });
  });
});
