// Property-based fuzzing of every route (issue 7) against one real node with every role: mostly-valid
// bodies with one field mutated, random JSON, invalid JSON text, wrong content types, bodies on GET,
// odd methods, query strings and paths, deep nesting and huge strings, internal routes with and
// without the cluster secret. Properties: never a 5xx (a healthy one-node cluster has no reason for
// 503/504, so none is accepted), every error body is `{"error":{"code","message"}}` (SPEC 3) with
// X-DSS-Node, the process stays up, and a rejected request (4xx) changes no state, as seen through
// the status endpoints (lock table, queue stats, cache values and lines, Raft commit index).
//
// Every route of GET /openapi.json must have a generator here (the first test fails otherwise), so
// a new route cannot be skipped silently. FUZZ_SEED=<n> replays a run; FUZZ_RUNS scales numRuns
// (default 1); FUZZ_SHRINK=1 lets fast-check shrink a failure (slow: it replays against the node).
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { TestCluster } from '../helpers/cluster.js';
import { RedisServer } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

// ---------------------------------------------------------------------------------------------
// JSON trees with raw tokens (text JSON.stringify cannot produce: 1e400, 10 000-deep nesting)

class Raw {
  constructor(readonly text: string) {}
}
type J = null | boolean | number | string | Raw | J[] | { [k: string]: J };

/** JSON text of `v`, with every Raw spliced in verbatim (no recursion: deep Raws are just text). */
function toText(v: J | undefined): string {
  const raws: string[] = [];
  const text = JSON.stringify(v, (_k, x: unknown) => {
    if (x instanceof Raw) {
      raws.push(x.text);
      return `__FZRAW_${raws.length - 1}__`;
    }
    return x;
  });
  if (text === undefined) return '';
  return text.replace(/"__FZRAW_(\d+)__"/g, (_m, i: string) => raws[Number(i)]!);
}

type Path = (string | number)[];

/** Paths of every node below the root (object properties and array elements). */
function pathsOf(v: J, prefix: Path = []): Path[] {
  const out: Path[] = [];
  if (Array.isArray(v)) {
    v.forEach((x, i) => out.push([...prefix, i], ...pathsOf(x, [...prefix, i])));
  } else if (v !== null && typeof v === 'object' && !(v instanceof Raw)) {
    for (const [k, x] of Object.entries(v)) out.push([...prefix, k], ...pathsOf(x, [...prefix, k]));
  }
  return out;
}

function clone(v: J): J {
  if (v instanceof Raw || v === null || typeof v !== 'object') return v;
  if (Array.isArray(v)) return v.map(clone);
  const o: { [k: string]: J } = {};
  for (const [k, x] of Object.entries(v)) define(o, k, clone(x));
  return o;
}

/** An own enumerable property even for `__proto__` (plain assignment would set the prototype). */
function define(o: { [k: string]: J }, k: string, x: J): void {
  Object.defineProperty(o, k, { value: x, enumerable: true, writable: true, configurable: true });
}

function getAt(root: J, path: Path): J {
  let cur = root;
  for (const p of path) cur = (cur as Record<string | number, J>)[p]!;
  return cur;
}

const DELETE = Symbol('delete');
/** A copy of `root` with the node at `path` replaced (or deleted). */
function setAt(root: J, path: Path, value: J | typeof DELETE): J {
  const copy = clone(root);
  const parent = getAt(copy, path.slice(0, -1));
  const last = path[path.length - 1]!;
  if (Array.isArray(parent)) {
    if (value === DELETE) parent.splice(last as number, 1);
    else parent[last as number] = value;
  } else {
    const o = parent as { [k: string]: J };
    if (value === DELETE) delete o[last];
    else define(o, String(last), value);
  }
  return copy;
}

// ---------------------------------------------------------------------------------------------
// The state the generators aim at (seeded in `before`)

const RESOURCES = ['fz/r1', 'fz/r2', 'fz/r3'];
const CLIENTS = ['fz-c1', 'fz-c2', 'fz-c3'];
const QUEUES = ['fz-q1', 'fz-q2'];
const KEYS = ['fz/k1', 'fz/k2', 'fz/k3'];
const MSG_IDS = ['1', '2', '3', '999'];
const DAY_MS = 86_400_000;
const SECRET = 's';
const INTERNAL_PREFIXES = ['/raft/', '/queue/internal_', '/cache/handle_'];

// ---------------------------------------------------------------------------------------------
// Value generators

const HUGE = 100_000;
const hugeString = fc
  .constantFrom('x', 'é', '😀', '\u202e', '\u200f', 'ا', '\ud800', '\\', '"', '%00')
  .map((s) => s.repeat(Math.ceil(HUGE / s.length)));
const oddString = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.constantFrom(
    '',
    ' ',
    '\ud800',
    '\udfff',
    'a\ud800b',
    '\u202efz/r1',
    '\u200ffz-c1',
    '👨‍👩‍👧‍👦',
    'fz/r1\u0000',
    '../../etc/passwd',
    'fz r1',
    '%2e%2e',
    'a'.repeat(257),
    'a'.repeat(256),
    '__proto__',
    'constructor',
  ),
);
/** Numbers never valid for any duration, count or size field (no small non-negative integers). */
const badNumber = fc.oneof(
  fc.integer({ max: -1 }),
  fc.double({ noNaN: true, noDefaultInfinity: true }).filter((x) => !Number.isInteger(x)),
  fc.constantFrom(1e15, 2 ** 53, 2 ** 53 + 2, 1e308, -1e308, 1.5, 0.1, -0.5, -1),
  fc
    .constantFrom('1e400', '-1e400', '123456789012345678901234567890', '1.0000000000000002')
    .map((t) => new Raw(t)),
);
/** Nesting 1000-5000 deep, as raw text (never built as a tree). */
const deepNesting = fc
  .tuple(fc.integer({ min: 1000, max: 5000 }), fc.constantFrom('array', 'object', 'mixed'))
  .map(([d, kind]) => {
    if (kind === 'array') return new Raw('['.repeat(d) + ']'.repeat(d));
    if (kind === 'object') return new Raw('{"a":'.repeat(d) + '1' + '}'.repeat(d));
    return new Raw('[{"a":'.repeat(d) + '1' + '}]'.repeat(d));
  });
const smallJson: fc.Arbitrary<J> = fc.jsonValue({ maxDepth: 2 }) as fc.Arbitrary<J>;

/** A value of another JSON type than `orig`: always fails validation of a typed, non-any field. */
function wrongType(orig: J): fc.Arbitrary<J> {
  const opts: fc.Arbitrary<J>[] = [fc.constant(null)];
  if (typeof orig !== 'boolean') opts.push(fc.boolean());
  if (typeof orig !== 'string') opts.push(fc.constantFrom('100', '', 'true', 'null'), oddString);
  if (typeof orig !== 'number') opts.push(fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }));
  else opts.push(badNumber);
  if (!Array.isArray(orig)) opts.push(fc.array(smallJson, { maxLength: 3 }));
  if (orig === null || typeof orig !== 'object' || Array.isArray(orig))
    opts.push(fc.dictionary(fc.string({ maxLength: 5 }), smallJson, { maxKeys: 3 }));
  return fc.oneof(...opts);
}

/** Anything at all, including values the field may accept. */
const anyBad: fc.Arbitrary<J> = fc.oneof(
  { weight: 3, arbitrary: oddString },
  { weight: 1, arbitrary: hugeString },
  { weight: 2, arbitrary: badNumber },
  { weight: 1, arbitrary: fc.constantFrom<J>(null, true, false, [], {}) },
  { weight: 1, arbitrary: deepNesting },
  { weight: 1, arbitrary: smallJson },
);

const extraKey = fc.oneof(
  fc.string({ maxLength: 10 }),
  fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', ''),
);

/**
 * One mutation of `base`. `strict`: the result never validates (for internal routes, where a valid
 * request from a made-up peer would change coherence state the test cannot see).
 */
function mutate(base: J, strict: boolean): fc.Arbitrary<{ body: J; what: string }> {
  const paths = pathsOf(base);
  const pick = fc.constantFrom(...paths);
  const options: fc.Arbitrary<{ body: J; what: string }>[] = [
    pick.chain((p) =>
      wrongType(getAt(base, p)).map((v) => ({
        body: setAt(base, p, v),
        what: `wrong type at ${p.join('.')}`,
      })),
    ),
    pick.map((p) => ({ body: setAt(base, p, DELETE), what: `missing ${p.join('.')}` })),
  ];
  if (!strict) {
    options.push(
      pick.chain((p) =>
        anyBad.map((v) => ({ body: setAt(base, p, v), what: `odd value at ${p.join('.')}` })),
      ),
      fc.tuple(extraKey, fc.oneof(smallJson, anyBad)).map(([k, v]) => {
        const copy = clone(base) as { [k: string]: J };
        define(copy, k, v);
        return { body: copy, what: `extra field ${JSON.stringify(k)}` };
      }),
      fc.constant({ body: base, what: 'valid' }),
    );
  }
  return fc.oneof(...options);
}

// ---------------------------------------------------------------------------------------------
// Routes

interface RouteSpec {
  method: string;
  /** The path as the OpenAPI document names it. */
  doc: string;
  internal: boolean;
  /** Concrete path (cache keys vary). */
  path: fc.Arbitrary<string>;
  /** A valid body (safe: no short TTL, no wait, no short visibility). */
  body?: fc.Arbitrary<J>;
  /** A valid query string (without '?'). */
  query?: fc.Arbitrary<string>;
  /** Internal cache messages: only ever sent invalid with the right secret. */
  strict?: boolean;
}

const res = fc.constantFrom(...RESOURCES);
const cli = fc.constantFrom(...CLIENTS);
const que = fc.constantFrom(...QUEUES);
const mid = fc.constantFrom(...MSG_IDS);
const key = fc.constantFrom(...KEYS);
const nodeId = fc.constantFrom('node1', 'node2', 'node9');
const small = fc.integer({ min: 0, max: 5 });

const route = (method: string, doc: string, rest: Partial<RouteSpec> = {}): RouteSpec => ({
  method,
  doc,
  internal: INTERNAL_PREFIXES.some((p) => doc.startsWith(p)),
  path: fc.constant(doc),
  ...rest,
});
const obj = <T extends Record<string, fc.Arbitrary<J>>>(r: T): fc.Arbitrary<J> => fc.record(r);

const pushBody = fc.oneof(
  obj({ queue: que, message: smallJson }),
  obj({ queue: que, messages: fc.array(smallJson, { minLength: 1, maxLength: 3 }) }),
);
const popBody = obj({
  queue: que,
  consumer_id: cli,
  max: fc.integer({ min: 1, max: 3 }),
  wait_ms: fc.constant(0),
  visibility_ms: fc.constant(43_200_000),
});
const ackBody = fc.oneof(
  obj({ queue: que, id: mid }),
  obj({ queue: que, ids: fc.array(mid, { minLength: 1, maxLength: 3 }) }),
);
const nackBody = obj({ queue: que, id: mid });
const raftBase = { from: fc.constantFrom('node2', 'node1'), to: fc.constant('node1'), term: small };
const raftBatch = (m: fc.Arbitrary<J>): fc.Arbitrary<J> =>
  obj({ messages: fc.array(m, { minLength: 1, maxLength: 2 }) });

const SPECS: RouteSpec[] = [
  route('GET', '/health'),
  route('GET', '/ready'),
  route('GET', '/status'),
  route('GET', '/metrics'),
  route('GET', '/dashboard/api/node'),
  route('GET', '/dashboard/api/cluster'),
  route('POST', '/lock/acquire', {
    body: obj({
      resource: res,
      client_id: cli,
      mode: fc.constantFrom('exclusive', 'shared'),
      ttl_ms: fc.constant(DAY_MS),
      wait_ms: fc.constant(0),
    }),
  }),
  route('POST', '/lock/release', { body: obj({ resource: res, client_id: cli }) }),
  route('POST', '/lock/renew', { body: obj({ resource: res, client_id: cli, ttl_ms: fc.constant(DAY_MS) }) }),
  route('GET', '/lock/status', { query: res.map((r) => `resource=${pct(r)}`) }),
  route('POST', '/queue/push', { body: pushBody }),
  route('POST', '/queue/pop', { body: popBody }),
  route('POST', '/queue/ack', { body: ackBody }),
  route('POST', '/queue/nack', { body: nackBody }),
  route('GET', '/queue/stats', { query: que.map((q) => `queue=${q}`) }),
  route('POST', '/queue/internal_push', { body: pushBody }),
  route('POST', '/queue/internal_pop', { body: popBody }),
  route('POST', '/queue/internal_ack', { body: ackBody }),
  route('POST', '/queue/internal_nack', { body: nackBody }),
  route('POST', '/queue/internal_stats', { body: obj({ queue: que }) }),
  route('GET', '/cache/{*}', { path: key.map((k) => `/cache/${k}`) }),
  route('PUT', '/cache/{*}', { path: key.map((k) => `/cache/${k}`), body: obj({ value: smallJson }) }),
  route('DELETE', '/cache/{*}', { path: key.map((k) => `/cache/${k}`) }),
  route('GET', '/cache'),
  route('POST', '/cache/flush'),
  route('POST', '/cache/handle_request', {
    strict: true,
    body: obj({
      from: nodeId,
      gen: small,
      epoch: small,
      kind: fc.constantFrom('read_miss', 'write', 'evict'),
      key,
      deadline_ms: fc.constant(1000),
    }),
  }),
  route('POST', '/cache/handle_snoop_read', {
    strict: true,
    body: obj({ from: nodeId, epoch: small, key, seq: small, gen: small }),
  }),
  route('POST', '/cache/handle_invalidate', {
    strict: true,
    body: obj({ from: nodeId, epoch: small, key, seq: small, gen: small }),
  }),
  route('POST', '/cache/handle_lease', {
    strict: true,
    body: obj({ from: nodeId, gen: small, epoch: small, op: fc.constantFrom('renew', 'join', 'leave') }),
  }),
  // A one-node cluster has no other voter, so every Raft RPC is refused whatever its body.
  route('POST', '/raft/request_vote', {
    body: raftBatch(
      obj({
        ...raftBase,
        type: fc.constant('vote'),
        preVote: fc.boolean(),
        lastLogIndex: small,
        lastLogTerm: small,
      }),
    ),
  }),
  route('POST', '/raft/append_entries', {
    body: raftBatch(
      fc.oneof(
        obj({
          ...raftBase,
          type: fc.constant('append'),
          prevLogIndex: small,
          prevLogTerm: small,
          entries: fc.array(
            obj({
              index: fc.integer({ min: 1, max: 9 }),
              term: small,
              kind: fc.constant('command'),
              command: smallJson,
            }),
            { maxLength: 2 },
          ),
          commit: small,
          ctx: small,
        }),
        obj({ ...raftBase, type: fc.constant('timeout_now') }),
      ),
    ),
  }),
  route('POST', '/raft/install_snapshot', {
    body: raftBatch(
      obj({
        ...raftBase,
        type: fc.constant('snapshot'),
        snapshot: obj({
          meta: obj({ index: small, term: small, voters: fc.constant(['node1', 'node2']) }),
          data: smallJson,
        }),
      }),
    ),
  }),
];
const specKey = (method: string, doc: string): string => `${method.toUpperCase()} ${doc}`;
const SPEC_BY_KEY = new Map(SPECS.map((s) => [specKey(s.method, s.doc), s]));

/** Routes the OpenAPI document hides; fuzzed by path and method only. */
const HIDDEN_PATHS = [
  '/openapi.json',
  '/docs',
  '/docs/',
  '/',
  '/dashboard',
  '/dashboard/',
  '/dashboard/app.js',
];

// ---------------------------------------------------------------------------------------------
// HTTP

interface Req {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: string | Buffer;
  /** What the generator meant, for failure messages. */
  what: string;
}
interface Res {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });

function send(port: number, r: Req, timeoutMs = 15_000): Promise<Res> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { ...r.headers };
    if (r.body !== undefined) headers['content-length'] = Buffer.byteLength(r.body);
    let answered = false;
    const req = http.request(
      { host: '127.0.0.1', port, method: r.method, path: r.path, headers, agent, timeout: timeoutMs },
      (res) => {
        answered = true;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            text: Buffer.concat(chunks).toString('utf8'),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (e) => {
      if (!answered) reject(e);
    });
    req.end(r.body);
  });
}

/**
 * A request over a raw socket that reads the answer even when the server closes before the body is
 * all written (an oversized body gets its 413 early; node's client would only report EPIPE).
 */
function sendRaw(port: number, r: Req, timeoutMs = 15_000): Promise<Res> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    sock.setTimeout(timeoutMs, () => sock.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    let done = false;
    /** Resolves once the status line, headers and Content-Length bytes of body have arrived. */
    const tryParse = (final: boolean): void => {
      if (done) return;
      const raw = Buffer.concat(chunks).toString('latin1');
      const head = raw.indexOf('\r\n\r\n');
      const m = /^HTTP\/1\.1 (\d{3})/.exec(raw);
      if (head < 0 || !m) {
        if (final) reject(new Error(`no HTTP answer: ${JSON.stringify(raw.slice(0, 200))}`));
        return;
      }
      const headers: http.IncomingHttpHeaders = {};
      for (const line of raw.slice(0, head).split('\r\n').slice(1)) {
        const i = line.indexOf(':');
        headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
      const len = Number(headers['content-length'] ?? NaN);
      const body = Buffer.from(raw.slice(head + 4), 'latin1');
      if (!final && (Number.isNaN(len) || body.length < len)) return;
      done = true;
      sock.destroy();
      resolve({
        status: Number(m[1]),
        headers,
        text: (Number.isNaN(len) ? body : body.subarray(0, len)).toString('utf8'),
      });
    };
    sock.on('data', (c: Buffer) => {
      chunks.push(c);
      tryParse(false);
    });
    sock.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EPIPE' && e.code !== 'ECONNRESET') reject(e);
    });
    sock.on('close', () => tryParse(true));
    const body = r.body === undefined ? Buffer.alloc(0) : Buffer.from(r.body);
    const lines = [`${r.method} ${r.path} HTTP/1.1`, 'Host: 127.0.0.1'];
    for (const [k, v] of Object.entries(r.headers)) lines.push(`${k}: ${v}`);
    lines.push(`Content-Length: ${body.length}`);
    // Headers and body at once, as most clients send them: an oversized body is answered 413
    // before it has been read, and the node must read and discard the rest rather than reset.
    sock.write(Buffer.concat([Buffer.from(lines.join('\r\n') + '\r\n\r\n'), body]));
  });
}

/** Keeps fast-check's report of a failing request short (bodies can be megabytes). */
function describable(r: Req): Req {
  const body =
    r.body === undefined ? '' : ` body(${r.body.length})=${JSON.stringify(String(r.body).slice(0, 300))}`;
  const text = `${r.method} ${r.path.slice(0, 300)} ${JSON.stringify(r.headers).slice(0, 200)}${body} [${r.what}]`;
  return Object.assign(r, { [fc.toStringMethod]: () => text });
}

/** Never a 5xx; every error in the SPEC format; X-DSS-Node on every answer. */
function checkResponse(r: Req, res: Res): void {
  const ctx = (): string =>
    `${r.method} ${r.path.slice(0, 200)} (${r.what}) -> ${res.status} ${res.text.slice(0, 300)}`;
  assert.ok(res.status >= 100 && res.status < 500, `5xx or invalid status: ${ctx()}`);
  assert.ok(res.headers['x-dss-node'], `no X-DSS-Node header: ${ctx()}`);
  if (res.status >= 400 && r.method !== 'HEAD') {
    let parsed: unknown;
    try {
      parsed = JSON.parse(res.text);
    } catch {
      assert.fail(`error body is not JSON: ${ctx()}`);
    }
    const e = (parsed as { error?: { code?: unknown; message?: unknown } } | null)?.error;
    assert.ok(
      e && typeof e.code === 'string' && /^[a-z][a-z0-9_]*$/.test(e.code) && typeof e.message === 'string',
      `error body not {"error":{"code","message"}}: ${ctx()}`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// State snapshots through the status endpoints

interface Snap {
  commit: number;
  locks: string;
  queues: string;
  values: string;
  lines: Map<string, string>;
}

describe('fuzzing every route (one real node, all roles)', () => {
  let redis: RedisServer;
  let c: TestCluster;
  let url: string;
  let port: number;
  let pid: number;
  let sent = 0;
  const statuses = new Map<number, number>();
  const seed = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) : Date.now() % 2 ** 31;
  const scale = Number(process.env.FUZZ_RUNS ?? '1');
  const params = (numRuns: number): fc.Parameters<unknown> => ({
    seed,
    numRuns: Math.max(1, Math.round(numRuns * scale)),
    endOnFailure: process.env.FUZZ_SHRINK !== '1',
  });

  const json = async (path: string): Promise<unknown> => {
    const res = await send(port, { method: 'GET', path, headers: {}, what: 'snapshot' });
    assert.ok(res.status === 200 || res.status === 404, `snapshot ${path}: ${res.status} ${res.text}`);
    return JSON.parse(res.text) as unknown;
  };
  const call = async (method: string, path: string, body?: unknown): Promise<Res> => {
    const res = await send(port, {
      method,
      path,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      what: 'setup',
    });
    assert.ok(res.status < 300, `setup ${method} ${path}: ${res.status} ${res.text}`);
    return res;
  };

  const snapshot = async (): Promise<Snap> => {
    // Values first: a read loads its line, so lines are stable once every key has been read.
    const values = await Promise.all(KEYS.map((k) => json(`/cache/${k}`)));
    const [status, locks, lines, ...queues] = await Promise.all([
      json('/status'),
      json('/lock/status'),
      json('/cache'),
      ...QUEUES.map((q) => json(`/queue/stats?queue=${q}`)),
    ]);
    return {
      commit: (status as { raft: { commit_index: number } }).raft.commit_index,
      locks: JSON.stringify(locks),
      queues: JSON.stringify(queues),
      values: JSON.stringify(values),
      lines: new Map(
        (lines as { lines: { key: string; state: string }[] }).lines.map((l) => [l.key, l.state]),
      ),
    };
  };

  let current: Snap;

  /** Sends one fuzzed request and checks every property; the snapshot is carried between calls. */
  const probe = async (r: Req): Promise<Res> => {
    sent++;
    let res: Res;
    try {
      res = await (r.body !== undefined && r.body.length > 1_000_000 ? sendRaw(port, r) : send(port, r));
    } catch (e) {
      assert.fail(`${r.method} ${r.path.slice(0, 200)} (${r.what}): ${(e as Error).message}`);
    }
    checkResponse(r, res);
    statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
    assert.doesNotThrow(() => process.kill(pid, 0), `node died after ${r.method} ${r.path.slice(0, 200)}`);
    // A HEAD is answered before its GET handler finishes: let a cache read load its line first.
    if (r.method.toUpperCase() === 'HEAD') await new Promise((resolve) => setTimeout(resolve, 100));
    const after = await snapshot();
    if (res.status >= 400) {
      const ctx = `${r.method} ${r.path.slice(0, 200)} (${r.what}) -> ${res.status} ${res.text.slice(0, 200)}`;
      assert.equal(after.locks, current.locks, `lock table changed by a rejected request: ${ctx}`);
      assert.equal(after.queues, current.queues, `queue stats changed by a rejected request: ${ctx}`);
      assert.equal(after.values, current.values, `cache values changed by a rejected request: ${ctx}`);
      // A GET of a key is a read: it may load (or cache the absence of) that key's line.
      const read =
        ['GET', 'HEAD'].includes(r.method.toUpperCase()) && r.path.startsWith('/cache/')
          ? r.path.slice('/cache/'.length).split('?')[0]!
          : null;
      const lines = (m: Map<string, string>): string =>
        JSON.stringify(
          [...m].filter(([k]) => k !== read && !(read !== null && decodeSafe(read) === k)).sort(),
        );
      assert.equal(
        lines(after.lines),
        lines(current.lines),
        `cache lines changed by a rejected request: ${ctx}`,
      );
      // 409s (lock_conflict, not_holder) are decided through the log; nothing else may append.
      if (res.status !== 409)
        assert.equal(after.commit, current.commit, `Raft log appended for a rejected request: ${ctx}`);
    }
    current = after;
    if (sent % 50 === 0) await assertHealthy();
    return res;
  };

  const assertHealthy = async (): Promise<void> => {
    assert.doesNotThrow(() => process.kill(pid, 0), 'node process is gone');
    const h = await send(port, { method: 'GET', path: '/health', headers: {}, what: 'health' });
    assert.equal(h.status, 200, `/health: ${h.status} ${h.text}`);
  };

  before(async () => {
    process.stderr.write(`fuzz.test.ts: FUZZ_SEED=${seed}\n`);
    redis = await RedisServer.start();
    c = await TestCluster.start({
      nodes: 1,
      roles: 'lock,queue,cache',
      direct: true,
      env: {
        REDIS_URL: redis.url,
        CLUSTER_SECRET: SECRET,
        // Nothing may change by itself during the run: no expiry, no redelivery, no eviction.
        LOCK_DEFAULT_TTL: '86400',
        QUEUE_ACK_TIMEOUT: '86400',
        CACHE_MAX_SIZE: '100000',
        LOG_LEVEL: 'warn',
      },
    });
    const node = c.nodes[0]!;
    url = node.url;
    port = node.port;
    pid = node.proc!.pid!;
    await c.leader();
    await waitFor('node ready', async () => (await fetch(`${url}/ready`)).status === 200, {
      timeoutMs: 20_000,
    });
    // Seed: r1 held exclusively by c1, r2 shared by c1 and c2, r3 free (no waiters, one-day TTLs);
    // q1 has three messages, one of them delivered for 12 h; k1 and k2 have values, k3 none.
    const acquire = (resource: string, client_id: string, mode: string): Promise<Res> =>
      call('POST', '/lock/acquire', { resource, client_id, mode, ttl_ms: DAY_MS });
    await acquire('fz/r1', 'fz-c1', 'exclusive');
    await acquire('fz/r2', 'fz-c1', 'shared');
    await acquire('fz/r2', 'fz-c2', 'shared');
    await call('POST', '/queue/push', { queue: 'fz-q1', messages: [{ n: 1 }, { n: 2 }, { n: 3 }] });
    await call('POST', '/queue/pop', { queue: 'fz-q1', visibility_ms: 43_200_000 });
    await call('PUT', '/cache/fz/k1', { value: { a: 1 } });
    await call('PUT', '/cache/fz/k2', { value: 'x' });
    await snapshot();
    current = await snapshot();
  });

  after(async () => {
    agent.destroy();
    await c?.stop();
    await redis?.stop();
    const byStatus = [...statuses].sort(([a], [b]) => a - b).map(([st, n]) => `${st}: ${n}`);
    process.stderr.write(`fuzz.test.ts: ${sent} fuzzed requests (${byStatus.join(', ')})\n`);
  });

  it('every route of the OpenAPI document has a generator, internal ones included', async () => {
    const doc = (await json('/openapi.json')) as { paths: Record<string, Record<string, unknown>> };
    const methods = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options'];
    const documented = Object.entries(doc.paths).flatMap(([p, ops]) =>
      Object.keys(ops)
        .filter((m) => methods.includes(m))
        .map((m) => specKey(m, p)),
    );
    const missing = documented.filter((k) => !SPEC_BY_KEY.has(k));
    assert.deepEqual(missing, [], 'routes without a fuzz generator: add them to SPECS');
    const stale = [...SPEC_BY_KEY.keys()].filter((k) => !documented.includes(k));
    assert.deepEqual(stale, [], 'generators for routes the document does not have');
    for (const prefix of INTERNAL_PREFIXES) {
      assert.ok(
        documented.some((k) => k.includes(` ${prefix}`)),
        `no internal route under ${prefix} in the document`,
      );
    }
  });

  const bodyReq = (spec: RouteSpec, path: string, body: J | undefined, what: string, auth: boolean): Req => ({
    method: spec.method,
    path,
    headers: {
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      ...(auth && spec.internal ? { authorization: `Bearer ${SECRET}` } : {}),
    },
    ...(body !== undefined ? { body: toText(body) } : {}),
    what,
  });

  /** A request that mostly validates: one field of a valid body (or query) mutated. */
  const mutatedReq = (spec: RouteSpec): fc.Arbitrary<Req> => {
    const strict = spec.strict === true;
    const query = spec.query
      ? fc.oneof(
          spec.query,
          fc.constantFrom(
            '',
            'resource=',
            'queue=',
            'queue=a%20b',
            'resource=%ZZ',
            'queue=' + 'q'.repeat(300),
          ),
          fc.tuple(spec.query, oddString).map(([q, s]) => `${q}&${q.split('=')[0]}=${pct(s)}`),
          oddString.map((s) => `${spec.query ? 'queue' : 'x'}=${pct(s)}&resource=${pct(s)}`),
        )
      : fc.constant('');
    const body = spec.body ? spec.body.chain((b) => mutate(b, strict)) : fc.constant(undefined);
    return fc
      .tuple(spec.path, query, body)
      .map(([path, q, b]) =>
        bodyReq(spec, q ? `${path}?${q}` : path, b?.body, b ? b.what : `query ${q.slice(0, 80)}`, true),
      );
  };

  it('mostly-valid bodies and queries with one field mutated: never a 5xx, rejections change nothing', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc
          .constantFrom(...SPECS)
          .chain(mutatedReq)
          .map(describable),
        async (r) => void (await probe(r)),
      ),
      params(1200),
    );
    await assertHealthy();
  });

  it('internal routes without the right secret: 401 and nothing changes', async () => {
    const internal = SPECS.filter((s) => s.internal);
    const wrongAuth = fc.constantFrom<Record<string, string>>(
      {},
      { authorization: 'Bearer' },
      { authorization: 'Bearer wrong' },
      { authorization: `Bearer ${SECRET}x` },
      { authorization: `Basic ${Buffer.from(`u:${SECRET}`).toString('base64')}` },
      { authorization: SECRET },
      { authorization: `Bearer  ${SECRET} extra` },
      { authorization: 'Bearer ' + 'a'.repeat(8000) },
      { 'x-dss-forwarded-by': 'node1' },
    );
    await fc.assert(
      fc.asyncProperty(
        fc
          .constantFrom(...internal)
          .chain((spec) =>
            fc.tuple(fc.constant(spec), spec.body!, wrongAuth, fc.boolean(), fc.constantFrom('', '%2F', '/')),
          ),
        async ([spec, body, headers, encoded, slash]) => {
          // Percent-encoded and trailing-slash spellings of the same route must not slip past.
          const path = encoded
            ? spec.doc.replace(/^\/(\w)/, (_m, ch: string) => `/%${ch.charCodeAt(0).toString(16)}`)
            : spec.doc;
          const r: Req = {
            method: 'POST',
            path: slash === '' ? path : path + slash,
            headers: { 'content-type': 'application/json', ...headers },
            body: toText(body),
            what: `valid body, auth ${JSON.stringify(headers).slice(0, 60)}`,
          };
          const res = await probe(r);
          if (slash === '') assert.equal(res.status, 401, `${r.path}: ${res.status} ${res.text}`);
          else assert.ok(res.status === 401 || res.status === 404, `${r.path}: ${res.status} ${res.text}`);
        },
      ),
      params(200),
    );
    await assertHealthy();
  });

  /** A valid (safe) body for a route, or an invalid one where a valid one must not be sent. */
  const baseBody = (spec: RouteSpec): fc.Arbitrary<J | undefined> =>
    spec.body
      ? spec.strict
        ? spec.body.chain((b) => mutate(b, true)).map((m) => m.body)
        : spec.body
      : fc.constant(undefined);

  const invalidJson = fc.oneof(
    fc.constantFrom(
      '{',
      '}',
      '[',
      '{"resource":',
      '{"resource":"fz/r1",}',
      '[1,]',
      "{'a':1}",
      'NaN',
      'undefined',
      '{"a":1}{"b":2}',
      '\ufeff{"queue":"fz-q1","message":1}',
      '{"queue":"fz-q1","message":1',
      '"\\ud800"',
      '{"a":"\\u00"}',
      '\u0000',
      ' ',
      '{"__proto__":{"x":1},"queue":"fz-q1","message":1}',
      '{"constructor":{"prototype":{"x":1}},"queue":"fz-q1","message":1}',
      '[' + '1,'.repeat(50_000) + '1]',
      '{"value":' + '['.repeat(100_000),
      ']'.repeat(100_000),
    ),
    fc.string({ unit: 'binary', maxLength: 200 }).filter((s) => {
      try {
        JSON.parse(s);
        return false;
      } catch {
        return true;
      }
    }),
  );

  const contentTypes = fc.constantFrom(
    null,
    'text/plain',
    'application/x-www-form-urlencoded',
    'multipart/form-data; boundary=fz',
    'application/xml',
    'application/json-patch+json',
    'application/jsonx',
    'application/json; charset=utf-16',
    'application/json; charset=latin1',
    'APPLICATION/JSON',
    'application/json;;;',
    '*/*',
    '',
    'application/octet-stream',
  );

  const renderAs = (ct: string | null, body: J | undefined): string => {
    if (body === undefined) return '';
    if (
      ct === 'application/x-www-form-urlencoded' &&
      body !== null &&
      typeof body === 'object' &&
      !Array.isArray(body) &&
      !(body instanceof Raw)
    )
      return new URLSearchParams(
        Object.entries(body).map(([k, v]: [string, J]): [string, string] => [k, toText(v)]),
      ).toString();
    if (ct?.startsWith('multipart/'))
      return `--fz\r\nContent-Disposition: form-data; name="body"\r\n\r\n${toText(body)}\r\n--fz--\r\n`;
    return toText(body);
  };

  const oddPath = (doc: string): fc.Arbitrary<string> =>
    fc.oneof(
      fc.constantFrom(
        doc + '/',
        doc + '/..',
        doc + '/../..',
        '/x/..' + doc,
        '/%2e%2e' + doc,
        doc.replace(/\//g, '//'),
        doc.replace(/\//g, '%2F'),
        doc.toUpperCase(),
        doc + '%00',
        doc + '%',
        doc + '%zz',
        doc + '#frag',
        doc + ';x=1',
        doc + '/' + 'a'.repeat(5000),
        '/' + 'a/'.repeat(3000),
        doc + '/' + 'a'.repeat(100_000),
        '/cache/' + 'k'.repeat(2000),
        '/cache/%',
        '/cache/%E0%A4%A',
        '/cache/%ED%A0%80',
        '/cache/..%2F..%2Fetc',
        '/cache/fz/k1/',
        '/cache/',
        '/cache//fz/k1',
        '/cache/fz%2Fk1',
        '/cache/\u00ff\u00e9',
        '/r%61ft/request_vote',
        '/queue/internal_%70ush',
        '*',
      ),
      fc
        .string({
          unit: fc.integer({ min: 0x21, max: 0xff }).map((n) => String.fromCharCode(n)),
          maxLength: 60,
        })
        .map((s) => `${doc}/${s}`),
      fc.string({ unit: 'grapheme', maxLength: 20 }).map((s) => `${doc}/${pct(s)}`),
    );

  const oddQuery = fc.oneof(
    fc.constantFrom(
      '?',
      '??',
      '?&&&',
      '?resource=fz/r1&resource=fz/r2',
      '?queue=fz-q1&queue=fz-q2',
      '?resource[]=x',
      '?queue[a]=1',
      '?__proto__=1',
      '?constructor[prototype][x]=1',
      '?resource=%',
      '?queue=%E0%A4%A',
      '?queue=%ED%A0%80',
      '?resource=' + 'r'.repeat(10_000),
      '?' + 'a=1&'.repeat(2000),
    ),
    fc
      .string({
        unit: fc.integer({ min: 0x21, max: 0xff }).map((n) => String.fromCharCode(n)),
        maxLength: 60,
      })
      .map((s) => `?${s}`),
    fc.dictionary(oddString, oddString, { maxKeys: 3 }).map((d) => `?${new URLSearchParams(d).toString()}`),
  );

  const oddMethod = fc.constantFrom(
    'GET',
    'HEAD',
    'POST',
    'PUT',
    'DELETE',
    'PATCH',
    'OPTIONS',
    'TRACE',
    'PROPFIND',
    'SEARCH',
    'FOO',
    'M-SEARCH',
    'get',
  );

  it('garbage: random JSON, invalid JSON, wrong content types, odd methods, paths and queries', async () => {
    const anyRoute = fc.constantFrom(...SPECS);
    const withAuth = (
      spec: RouteSpec,
      r: Omit<Req, 'headers'> & { headers?: Record<string, string> },
    ): Req => ({
      ...r,
      headers: { ...(r.headers ?? {}), ...(spec.internal ? { authorization: `Bearer ${SECRET}` } : {}) },
    });
    const cases: fc.Arbitrary<Req> = fc.oneof(
      // Fully random JSON with the right content type.
      fc.tuple(anyRoute, fc.jsonValue() as fc.Arbitrary<J>).chain(([spec, v]) =>
        spec.path.map((p) =>
          withAuth(spec, {
            method: spec.method,
            path: p,
            headers: { 'content-type': 'application/json' },
            body: toText(v),
            what: 'random JSON',
          }),
        ),
      ),
      // Text that is not JSON.
      fc.tuple(anyRoute, invalidJson).chain(([spec, text]) =>
        spec.path.map((p) =>
          withAuth(spec, {
            method: spec.method === 'GET' ? 'POST' : spec.method,
            path: p,
            headers: { 'content-type': 'application/json' },
            body: text,
            what: `invalid JSON ${JSON.stringify(text.slice(0, 40))}`,
          }),
        ),
      ),
      // A (safe) body with another content type, or none.
      fc.tuple(anyRoute, contentTypes).chain(([spec, ct]) =>
        fc.tuple(spec.path, baseBody(spec)).map(([p, b]) =>
          withAuth(spec, {
            method: spec.method,
            path: p,
            headers: ct === null ? {} : { 'content-type': ct },
            body: renderAs(ct, b ?? { queue: 'fz-q1' }),
            what: `content-type ${String(ct)}`,
          }),
        ),
      ),
      // Bodies on GET, DELETE and bodiless POSTs.
      fc
        .tuple(
          fc.constantFrom(...SPECS.filter((s) => s.body === undefined)),
          fc.oneof(smallJson, fc.constant<J>({ resource: 'fz/r1', queue: 'fz-q1', value: 1 })),
          contentTypes,
        )
        .chain(([spec, v, ct]) =>
          spec.path.map((p) =>
            withAuth(spec, {
              method: spec.method,
              path: p,
              headers: ct === null ? {} : { 'content-type': ct },
              body: toText(v),
              what: `body on ${spec.method}`,
            }),
          ),
        ),
      // Odd methods (with or without a body) on every route and the hidden ones.
      fc
        .tuple(
          fc.constantFrom(...SPECS.map((s) => s.doc.replace('{*}', 'fz/k1')), ...HIDDEN_PATHS),
          oddMethod,
          fc.option(smallJson),
        )
        .map(([p, m, b]): Req => ({
          method: m,
          path: p,
          headers: b === null ? {} : { 'content-type': 'application/json' },
          ...(b === null ? {} : { body: toText(b) }),
          what: `method ${m}`,
        })),
      // Odd paths and query strings.
      fc.tuple(anyRoute, fc.boolean(), oddQuery).chain(([spec, pathOdd, q]) =>
        fc.tuple(pathOdd ? oddPath(spec.doc.replace('/{*}', '')) : spec.path, baseBody(spec)).map(([p, b]) =>
          withAuth(spec, {
            method: spec.method,
            path: pathOdd ? p : p + q,
            headers: b === undefined ? {} : { 'content-type': 'application/json' },
            ...(b === undefined ? {} : { body: toText(b) }),
            what: pathOdd ? 'odd path' : 'odd query',
          }),
        ),
      ),
    );
    await fc.assert(
      fc.asyncProperty(cases.map(describable), async (r) => void (await probe(r))),
      params(1000),
    );
    await assertHealthy();
  });

  it('deep nesting, huge strings and oversized bodies', async () => {
    const withBody = SPECS.filter((s) => s.body !== undefined);
    const big = fc.oneof(deepNesting, hugeString);
    const cases: fc.Arbitrary<Req> = fc.oneof(
      // One field (any depth) replaced by a 1000+ deep value or a 100 KB string.
      fc.constantFrom(...withBody).chain((spec) =>
        fc.tuple(spec.path, spec.body!, big).chain(([p, b, v]) => {
          const paths = pathsOf(b);
          return fc
            .constantFrom(...paths)
            .map((at) => bodyReq(spec, p, setAt(b, at, v), `big value at ${at.join('.')}`, true));
        }),
      ),
      // The whole body deep.
      fc
        .tuple(fc.constantFrom(...withBody), deepNesting)
        .chain(([spec, v]) => spec.path.map((p) => bodyReq(spec, p, v, 'deep body', true))),
      // Over the 1 MiB public limit.
      fc
        .constantFrom(...withBody.filter((s) => !s.internal))
        .chain((spec) =>
          spec.path.map((p) =>
            bodyReq(
              spec,
              p,
              { queue: 'fz-q1', message: 'x'.repeat(1_100_000), value: 1 },
              'body over 1 MiB',
              true,
            ),
          ),
        ),
    );
    await fc.assert(
      fc.asyncProperty(cases.map(describable), async (r) => void (await probe(r))),
      params(80),
    );
    await assertHealthy();
  });
});

/** encodeURIComponent, except that a lone surrogate becomes its WTF-8 bytes instead of throwing. */
function pct(s: string): string {
  let out = '';
  for (const ch of s) {
    const c = ch.charCodeAt(0);
    if (ch.length === 1 && c >= 0xd800 && c <= 0xdfff) {
      for (const b of [0xe0 | (c >> 12), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f)])
        out += `%${b.toString(16).toUpperCase()}`;
    } else out += encodeURIComponent(ch);
  }
  return out;
}

function decodeSafe(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
