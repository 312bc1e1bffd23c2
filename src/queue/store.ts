// Redis storage of the distributed queue (SPEC 5). Every state change is ONE Lua script in
// ./scripts, run atomically by Redis, so the result never depends on which node runs it and no
// crash between two Redis calls can lose or strand a message. This class only builds keys,
// checks arguments, and turns the scripts' plain replies into typed results and DssErrors.
//
// Key layout, all sharing the hash tag `{<queue>}` so that every script touches one Redis Cluster
// slot:
//   dss:q:{Q}:ready    LIST  ids ready for delivery; push appends at the tail, pop takes the head
//   dss:q:{Q}:pending  ZSET  id -> visibility deadline (ms since epoch)
//   dss:q:{Q}:dead     LIST  dead-lettered ids, oldest first
//   dss:q:{Q}:msg      HASH  id -> the message's JSON text, exactly as pushed
//   dss:q:{Q}:dc       HASH  id -> delivery count (absent = 0)
//   dss:q:{Q}:seq      STRING id counter (never reset, so ids are never reused)
// Every live id is in exactly one of ready / pending / dead and has a `msg` field; ack deletes both.
//
// Why two queue-wide hashes rather than one JSON object (message + delivery_count) or one hash per
// message: the scripts never decode the message. Redis' cjson would rewrite it on a round trip
// (numbers printed with 14 significant digits, `[]` turned into `{}`), and keeping the count in its
// own hash lets pop bump it with HINCRBY without copying the message. A fixed set of keys also
// means every key a script touches is passed in KEYS, as Redis Cluster requires; per-message keys
// would be computed inside the scripts.
import { existsSync, readFileSync } from 'node:fs';
import type { Cluster, Redis } from 'ioredis';
import { DssError } from '../errors.js';
import { withCommandDeadline } from './redis.js';
import type { Json } from '../raft/types.js';

export type RedisClient = Redis | Cluster;

export interface QueueKeys {
  ready: string;
  pending: string;
  dead: string;
  msg: string;
  dc: string;
  seq: string;
}

export interface PoppedMessage {
  id: string;
  message: Json;
  /** Deliveries so far, this one included (1 on the first delivery). */
  delivery_count: number;
}

export interface PopOptions {
  /** Most messages to deliver (>= 1). */
  max: number;
  visibilityMs: number;
  nowMs: number;
  /** A message is delivered at most this many times; 0 = no limit. */
  maxDeliveries: number;
}

export interface PopResult {
  messages: PoppedMessage[];
  /** Messages found at the head of ready that had used up their deliveries and went to dead. */
  deadLettered: number;
  /**
   * The pop stopped at its bound on dead-lettering (max + 1000 ids looked at) with fewer than `max`
   * messages while ready still holds ids: pop again before concluding the queue is empty.
   */
  more: boolean;
}

export interface RedeliverResult {
  /** Expired messages put back at the head of ready. */
  requeued: number;
  /** Expired messages that had been delivered maxDeliveries times and went to dead. */
  deadLettered: number;
  /** Expired messages remain (the limit was reached): call again. */
  more: boolean;
}

export interface QueueStats {
  ready: number;
  pending: number;
  dead: number;
}

/** Where a nacked message went: ready (at the head), or dead when it had no deliveries left. */
export type NackOutcome = 'ready' | 'dead';

/** Most messages one unpop takes back: one pop's worth (the API's limit on `max`). */
export const MAX_UNPOP = 1000;

/** Expired messages moved per redeliverExpired call unless told otherwise. */
export const DEFAULT_REDELIVER_LIMIT = 1000;

export function queueKeys(queue: string): QueueKeys {
  // A brace would move the hash tag and could scatter one queue's keys over several cluster slots.
  // The API admits no braces in names; this is the storage layer's own guarantee.
  if (queue.length === 0 || queue.includes('{') || queue.includes('}')) {
    throw new DssError('bad_request', `queue name ${JSON.stringify(queue)} is not valid`);
  }
  const p = `dss:q:{${queue}}:`;
  return {
    ready: `${p}ready`,
    pending: `${p}pending`,
    dead: `${p}dead`,
    msg: `${p}msg`,
    dc: `${p}dc`,
    seq: `${p}seq`,
  };
}

// ---------------------------------------------------------------- scripts

const SCRIPTS = {
  push: { command: 'dssQueuePush', keys: 3 },
  pop: { command: 'dssQueuePop', keys: 5 },
  ack: { command: 'dssQueueAck', keys: 3 },
  nack: { command: 'dssQueueNack', keys: 4 },
  extend: { command: 'dssQueueExtend', keys: 1 },
  redeliver: { command: 'dssQueueRedeliver', keys: 4 },
  stats: { command: 'dssQueueStats', keys: 3 },
  unpop: { command: 'dssQueueUnpop', keys: 3 },
} as const;

type ScriptName = keyof typeof SCRIPTS;
type ScriptArg = string | number;
/**
 * What defineCommand adds to the client. ioredis flattens array arguments one level, so keys and
 * ARGV go as two arrays: spreading a 100k-message batch into call arguments would overflow the stack.
 */
type ScriptCommand = (keys: readonly string[], args: readonly ScriptArg[]) => Promise<unknown>;

/**
 * tsc does not copy .lua files into dist/, so a build running from dist/queue/ falls back to the
 * sources (dist/queue/../../src/queue/scripts). A build that ships without src/ must copy
 * src/queue/scripts to dist/queue/scripts, which is then found first.
 */
function scriptsDir(): URL {
  const candidates = [
    new URL('./scripts/', import.meta.url),
    new URL('../../src/queue/scripts/', import.meta.url),
  ];
  for (const dir of candidates) if (existsSync(new URL('push.lua', dir))) return dir;
  throw new Error(`queue Lua scripts not found in ${candidates.map((u) => u.pathname).join(' or ')}`);
}

let loaded: Record<ScriptName, string> | undefined;

function loadScripts(): Record<ScriptName, string> {
  if (loaded) return loaded;
  const dir = scriptsDir();
  const read = (name: ScriptName): string => readFileSync(new URL(`${name}.lua`, dir), 'utf8');
  loaded = {
    push: read('push'),
    pop: read('pop'),
    ack: read('ack'),
    nack: read('nack'),
    extend: read('extend'),
    redeliver: read('redeliver'),
    stats: read('stats'),
    unpop: read('unpop'),
  };
  return loaded;
}

// ---------------------------------------------------------------- errors

/**
 * Replies that mean "Redis cannot serve this right now", not "this script is wrong": loading its
 * AOF, busy with a long script, a cluster failover or a read-only replica, out of memory, or a
 * script cache emptied by a restart or failover that ioredis's own EVAL fallback did not cover
 * (NOSCRIPT: the script did not run, so a retry is safe).
 */
const TRANSIENT_REPLY =
  /^(LOADING|BUSY|MASTERDOWN|CLUSTERDOWN|TRYAGAIN|READONLY|OOM|NOREPLICAS|MOVED|ASK|NOSCRIPT)\b/;

/**
 * Anything that is not a reply from Redis (connection refused or closed, the offline queue
 * disabled, retries exhausted, a command timeout, no reachable cluster node) means Redis is
 * unreachable: 503 with Retry-After so clients retry. An error reply that is not transient is a bug
 * in a script or a foreign value under our keys.
 */
export function toDssError(e: unknown): DssError {
  if (e instanceof DssError) return e;
  const message = e instanceof Error ? e.message : String(e);
  const isReply = e instanceof Error && e.name === 'ReplyError';
  if (isReply && !TRANSIENT_REPLY.test(message)) {
    return new DssError('internal', `Redis refused a queue script: ${message}`);
  }
  return new DssError('unavailable', `Redis unavailable: ${message}`);
}

/**
 * Failures that prove the command never left this client: the connection was down when it was
 * issued (no offline queue), or no cluster node could take it.
 */
const NEVER_SENT =
  /Stream isn't writeable|enableOfflineQueue|None of startup nodes is available|Cluster isn't ready|ECONNREFUSED/;

/**
 * toDssError for a state-changing script: when it may have run all the same (a timeout, a connection
 * lost after the write) the 503 says `outcome: "unknown"`, as a relay that failed mid-request does,
 * so that a client retrying an ack that then finds its message gone knows the first try may have
 * acked it. A transient error reply means the script did not run.
 */
export function scriptError(e: unknown): DssError {
  const err = toDssError(e);
  if (e instanceof DssError || err.code !== 'unavailable') return err;
  if ((e instanceof Error && e.name === 'ReplyError') || NEVER_SENT.test(err.message)) return err;
  return new DssError('unavailable', `${err.message}; outcome unknown`, { details: { outcome: 'unknown' } });
}

// ---------------------------------------------------------------- argument checks

function checkInt(name: string, v: number, min: number): void {
  if (!Number.isSafeInteger(v) || v < min) {
    throw new DssError('bad_request', `${name} must be an integer >= ${min}, got ${v}`);
  }
}

function checkId(id: string): void {
  if (typeof id !== 'string' || id.length === 0) {
    throw new DssError('bad_request', 'message id must be a non-empty string');
  }
}

// ---------------------------------------------------------------- reply parsing

function badReply(script: ScriptName, reply: unknown): DssError {
  return new DssError('internal', `unexpected reply from queue script ${script}: ${JSON.stringify(reply)}`);
}

function asInt(script: ScriptName, reply: unknown): number {
  if (typeof reply !== 'number' || !Number.isSafeInteger(reply)) throw badReply(script, reply);
  return reply;
}

function asArray(script: ScriptName, reply: unknown): unknown[] {
  if (!Array.isArray(reply)) throw badReply(script, reply);
  return reply as unknown[];
}

function asString(script: ScriptName, reply: unknown): string {
  if (typeof reply !== 'string') throw badReply(script, reply);
  return reply;
}

function parseMessage(id: string, text: string): Json {
  try {
    return JSON.parse(text) as Json;
  } catch {
    throw new DssError('internal', `stored message ${id} is not valid JSON`);
  }
}

// ---------------------------------------------------------------- the adapter

export class QueueStore {
  private readonly commands: Record<ScriptName, ScriptCommand>;

  /**
   * Scripts are registered on the client itself (defineCommand), so several stores may share one
   * client. The client's options decide how fast an unreachable Redis becomes a 503 rather than a
   * hang: a node should use `enableOfflineQueue: false` (connect first: with lazyConnect, await
   * connect()), `maxRetriesPerRequest: 1`, `commandTimeout` (a few seconds, for a hung server),
   * `autoResendUnfulfilledCommands: false` (never re-run a script whose reply was lost: a re-run ack
   * or pop is not idempotent) and a capped `retryStrategy` so it keeps reconnecting.
   */
  constructor(private readonly redis: RedisClient) {
    const lua = loadScripts();
    const commands: Partial<Record<ScriptName, ScriptCommand>> = {};
    for (const name of Object.keys(SCRIPTS) as ScriptName[]) {
      const { command, keys } = SCRIPTS[name];
      redis.defineCommand(command, { lua: lua[name], numberOfKeys: keys });
      // defineCommand adds an untyped method; this is the one place it is given its type.
      const fn = (redis as unknown as Record<string, ScriptCommand | undefined>)[command];
      if (!fn) throw new Error(`ioredis defineCommand did not add ${command}`);
      commands[name] = fn.bind(redis);
    }
    this.commands = commands as Record<ScriptName, ScriptCommand>;
  }

  private async run(name: ScriptName, keys: readonly string[], args: readonly ScriptArg[]): Promise<unknown> {
    try {
      return await withCommandDeadline(this.commands[name](keys, args));
    } catch (e) {
      throw scriptError(e);
    }
  }

  /** Stores the messages (delivery count 0) at the tail of ready, in order; returns their ids. */
  /**
   * Appends the messages (all or none). `maxLength` (0 = none) bounds the messages the queue holds,
   * ready, pending and dead together: a batch that would pass it is refused whole (409
   * limit_exceeded). `maxMessageBytes` bounds each message's JSON text (413).
   */
  async push(
    queue: string,
    messages: readonly Json[],
    limits: { maxLength?: number; maxMessageBytes?: number } = {},
  ): Promise<string[]> {
    const k = queueKeys(queue);
    if (messages.length === 0) return [];
    const texts = messages.map((m, i) => {
      const text: unknown = JSON.stringify(m);
      if (typeof text !== 'string') throw new DssError('bad_request', `message ${i} is not JSON`);
      if (limits.maxMessageBytes !== undefined && Buffer.byteLength(text) > limits.maxMessageBytes) {
        throw new DssError(
          'payload_too_large',
          `message ${i} is ${Buffer.byteLength(text)} bytes of JSON, more than ${limits.maxMessageBytes} (QUEUE_MAX_MESSAGE_BYTES)`,
        );
      }
      return text;
    });
    const maxLength = limits.maxLength ?? 0;
    const reply = asArray(
      'push',
      await this.run('push', [k.ready, k.msg, k.seq], [String(maxLength), ...texts]),
    );
    if (reply[0] === 'full') {
      throw new DssError(
        'limit_exceeded',
        `queue ${queue} holds ${String(reply[1])} messages; ${messages.length} more would pass ${maxLength} (QUEUE_MAX_LENGTH)`,
        { details: { limit: 'QUEUE_MAX_LENGTH', max: maxLength } },
      );
    }
    if (reply.length !== messages.length) throw badReply('push', reply);
    return reply.map((id) => asString('push', id));
  }

  /**
   * Delivers up to `max` messages from the head of ready, each pending until nowMs + visibilityMs.
   * A message already delivered maxDeliveries times is dead-lettered here instead of delivered.
   */
  async pop(queue: string, opts: PopOptions): Promise<PopResult> {
    const k = queueKeys(queue);
    checkInt('max', opts.max, 1);
    checkInt('visibility_ms', opts.visibilityMs, 0);
    checkInt('now', opts.nowMs, 0);
    checkInt('max_deliveries', opts.maxDeliveries, 0);
    const reply = asArray(
      'pop',
      await this.run(
        'pop',
        [k.ready, k.pending, k.dead, k.msg, k.dc],
        [opts.nowMs, opts.visibilityMs, opts.max, opts.maxDeliveries],
      ),
    );
    if (reply.length % 3 !== 2) throw badReply('pop', reply);
    const messages: PoppedMessage[] = [];
    for (let i = 2; i < reply.length; i += 3) {
      const id = asString('pop', reply[i]);
      messages.push({
        id,
        message: parseMessage(id, asString('pop', reply[i + 1])),
        delivery_count: asInt('pop', reply[i + 2]),
      });
    }
    return { messages, deadLettered: asInt('pop', reply[0]), more: asInt('pop', reply[1]) === 1 };
  }

  /**
   * Undoes deliveries that reached no consumer: each message still pending under that delivery (its
   * delivery_count unchanged) goes back to the head of ready in the given order, its count one lower.
   * Returns how many went back; the others had already moved on (redelivered, acked) and are untouched.
   */
  async unpop(queue: string, msgs: readonly Pick<PoppedMessage, 'id' | 'delivery_count'>[]): Promise<number> {
    const k = queueKeys(queue);
    if (msgs.length === 0) return 0;
    if (msgs.length > MAX_UNPOP) {
      throw new DssError(
        'bad_request',
        `unpop takes at most ${MAX_UNPOP} messages (one pop), got ${msgs.length}`,
      );
    }
    const args: string[] = [];
    for (const m of msgs) {
      checkId(m.id);
      checkInt('delivery_count', m.delivery_count, 1);
      args.push(m.id, String(m.delivery_count));
    }
    return asInt('unpop', await this.run('unpop', [k.pending, k.ready, k.dc], args));
  }

  /**
   * Deletes pending messages. With one id, an id that is not pending (unknown, already acked, or
   * redelivered after its deadline) is a 404 `unknown_message`; with a list, the count says how
   * many were acked and ids that were not pending are skipped without effect. A `receipt` (the
   * delivery_count of the delivery being acked) makes a single ack act on that delivery only: one
   * made since to another consumer counts as not pending.
   */
  async ack(queue: string, id: string, receipt?: number): Promise<1>;
  async ack(queue: string, ids: readonly string[]): Promise<number>;
  async ack(queue: string, idOrIds: string | readonly string[], receipt?: number): Promise<number> {
    const k = queueKeys(queue);
    const ids = typeof idOrIds === 'string' ? [idOrIds] : idOrIds;
    ids.forEach(checkId);
    if (ids.length === 0) return 0;
    if (receipt !== undefined) checkInt('delivery_count', receipt, 1);
    const acked = asInt(
      'ack',
      await this.run('ack', [k.pending, k.msg, k.dc], [receipt === undefined ? '' : String(receipt), ...ids]),
    );
    if (typeof idOrIds === 'string' && acked === 0) {
      throw new DssError('unknown_message', `no pending message ${idOrIds} in queue ${queue}`);
    }
    return acked;
  }

  /**
   * Makes a pending message deliverable again at once: at the head of ready, so it is the next one
   * delivered, or to dead when it has already been delivered maxDeliveries times (0 = no limit).
   * Not pending (or, with a `receipt`, pending under another delivery) -> 404 `unknown_message`,
   * nothing changed.
   */
  async nack(queue: string, id: string, maxDeliveries = 0, receipt?: number): Promise<NackOutcome> {
    const k = queueKeys(queue);
    checkId(id);
    checkInt('max_deliveries', maxDeliveries, 0);
    if (receipt !== undefined) checkInt('delivery_count', receipt, 1);
    const r = asInt(
      'nack',
      await this.run(
        'nack',
        [k.pending, k.ready, k.dead, k.dc],
        [id, maxDeliveries, receipt === undefined ? '' : String(receipt)],
      ),
    );
    if (r === 0) throw new DssError('unknown_message', `no pending message ${id} in queue ${queue}`);
    if (r === 1) return 'ready';
    if (r === 2) return 'dead';
    throw badReply('nack', r);
  }

  /** Sets a pending message's visibility deadline (ms since epoch); false when it is not pending. */
  async extend(queue: string, id: string, deadlineMs: number): Promise<boolean> {
    const k = queueKeys(queue);
    checkId(id);
    checkInt('deadline', deadlineMs, 0);
    return asInt('extend', await this.run('extend', [k.pending], [id, deadlineMs])) === 1;
  }

  /**
   * The redelivery monitor's step: moves up to `limit` pending messages whose deadline is <= nowMs
   * back to the head of ready (earliest deadline first), or to dead when they have been delivered
   * maxDeliveries times. Safe to run from several nodes at once.
   */
  async redeliverExpired(
    queue: string,
    nowMs: number,
    maxDeliveries: number,
    limit: number = DEFAULT_REDELIVER_LIMIT,
  ): Promise<RedeliverResult> {
    const k = queueKeys(queue);
    checkInt('now', nowMs, 0);
    checkInt('max_deliveries', maxDeliveries, 0);
    checkInt('limit', limit, 1);
    const reply = asArray(
      'redeliver',
      await this.run('redeliver', [k.pending, k.ready, k.dead, k.dc], [nowMs, maxDeliveries, limit]),
    );
    if (reply.length !== 3) throw badReply('redeliver', reply);
    return {
      requeued: asInt('redeliver', reply[0]),
      deadLettered: asInt('redeliver', reply[1]),
      more: asInt('redeliver', reply[2]) === 1,
    };
  }

  /** Ready, pending and dead counts read in one atomic step. */
  async stats(queue: string): Promise<QueueStats> {
    const k = queueKeys(queue);
    const reply = asArray('stats', await this.run('stats', [k.ready, k.pending, k.dead], []));
    if (reply.length !== 3) throw badReply('stats', reply);
    return {
      ready: asInt('stats', reply[0]),
      pending: asInt('stats', reply[1]),
      dead: asInt('stats', reply[2]),
    };
  }
}
