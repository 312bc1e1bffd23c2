// Queue methods of the SDK (SPEC 5) and a consumer loop built on them.
//
// Retry rules. DssClient retries every 503 (with Retry-After) and connection failures that happened
// before the request was sent; a POST that timed out is not retried. What that means per call:
//
// - push / pushBatch: a plain 503 (Redis down, node shutting down) means nothing was stored, so the
//   retry is exact. A 503 with `outcome: "unknown"` (the node relaying to the queue's owner lost the
//   connection after sending, or Redis timed out or dropped the connection after the script was
//   sent) may hide a stored message, and the SDK cannot tell which case it was.
//   It retries anyway: the queue is at-least-once, so the worst a retry can do is store the message
//   (or the whole batch) twice, which consumers must already tolerate because of redeliveries; not
//   retrying would hand the caller an error it can only answer by pushing again, or by losing the
//   message. The guarantee is therefore: when push resolves, the message is stored (at least once);
//   when it rejects, it may or may not be stored. A timed-out push rejects with DssConnectionError
//   (`timedOut`) and is left to the caller for the same reason the client does not retry POSTs.
// - pop: a retried pop whose earlier attempt had an unknown outcome may have delivered messages to
//   nobody; they come back after their visibility deadline (delayed, not lost).
// - ack: retrying is safe. A single ack that gets 404 unknown_message after an attempt with an
//   unknown outcome reports `{acked: 1}`, like lock release: that earlier attempt is what acked it.
//   ackBatch cannot tell, so after such a retry its count may be lower than what was really acked.
// - nack: retrying is safe; a 404 after an unknown outcome is still thrown (the earlier attempt may
//   have nacked it, but its resulting state is unknown). `err.afterUnknownOutcome` tells the cases apart.
// - stats: a GET, always safe.
import type { Json } from '../raft/types.js';
import type { AckReply, DeliveryWire, NackReply, PopReply, StatsReply } from '../api/schemas/queue.js';
import { MAX_BATCH, MAX_POP_WAIT_MS, MAX_VISIBILITY_MS } from '../queue/limits.js';
import { DEFAULT_VNODES, HashRing } from '../queue/ring.js';
import type { DssClient, RequestOptions } from './client.js';
import { DssHttpError } from './errors.js';

export type QueueStats = StatsReply;
export type NackResult = NackReply;
export type AckResult = AckReply;

/** What identifies one delivery of a message: its id and the delivery_count it came with. */
export type DeliveryRef = Pick<QueueDelivery, 'id' | 'delivery_count'>;

function deliveryBody(d: string | DeliveryRef): { id: string; delivery_count?: number } {
  return typeof d === 'string' ? { id: d } : { id: d.id, delivery_count: d.delivery_count };
}

/** One delivered message. Ack or nack it by `id`; unacked, it comes back after its visibility deadline. */
export interface QueueDelivery<T = Json> {
  id: string;
  message: T;
  /** 1 on the first delivery, +1 on every redelivery. */
  delivery_count: number;
}

export interface PopOptions {
  /** Most messages to take at once (1..1000, default 1). */
  max?: number;
  /** Long-poll: wait up to this long (0..30000 ms, default 0) for a message when the queue is empty. */
  waitMs?: number;
  /** Redelivered if not acked within this long (default: the cluster's QUEUE_ACK_TIMEOUT). */
  visibilityMs?: number;
  consumerId?: string;
}

/** Which step of the consumer loop failed. */
export type ConsumeStage = 'pop' | 'handler' | 'ack' | 'nack';

export interface ConsumeErrorContext<T = Json> {
  stage: ConsumeStage;
  queue: string;
  /** The message concerned (absent for pop failures). */
  delivery?: QueueDelivery<T>;
}

export type MessageHandler<T = Json> = (message: T, delivery: QueueDelivery<T>) => unknown;

export interface ConsumeOptions<T = Json> {
  /** Handlers running at once (default 1). The loop never takes more messages than it can start. */
  concurrency?: number;
  /** Most messages per pop (default: `concurrency`; never more than the free handler slots). */
  max?: number;
  /** Long-poll length of each pop, default 10000 ms. stop() may have to wait for one poll to end. */
  waitMs?: number;
  visibilityMs?: number;
  consumerId?: string;
  /**
   * Called for every failure: pop (the loop backs off and polls again), handler (the message is
   * nacked), ack and nack (the message comes back after its visibility deadline). Default: a line on
   * stderr. Errors thrown by onError itself are ignored.
   */
  onError?: (err: unknown, ctx: ConsumeErrorContext<T>) => void;
  /** Backoff after a failed pop: starts here (default 200 ms), doubles up to backoffMaxMs (5000 ms). */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** Request options of every call the loop makes. */
  request?: RequestOptions;
}

export interface Consumer {
  /** Ends the loop: no more pops, waits for the poll in progress and every running handler. */
  stop(): Promise<void>;
  /** Resolves when the loop has ended (after stop()); never rejects. */
  readonly done: Promise<void>;
}

/** Default per-attempt timeout, to which a long poll adds its waitMs (as lock acquire does). */
const DEFAULT_TIMEOUT_MS = 10_000;

export class QueueClient {
  /** The cluster's queue ring, learned from GET /status once (null: not known, asked again later). */
  private ring: Promise<{ ring: HashRing; urls: Map<string, string> } | null> | null = null;
  private ringRetryAt = 0;

  constructor(private readonly client: DssClient) {}

  /**
   * Request options that send a queue's calls to its owner first, as the nodes compute it: any node
   * would relay there anyway, so this saves a hop. The usual failover follows if the owner fails.
   */
  private async routed(queue: string, req: RequestOptions): Promise<RequestOptions> {
    if (req.url !== undefined || req.prefer !== undefined) return req;
    if (this.ring === null && Date.now() >= this.ringRetryAt) this.ring = this.learnRing();
    const known = this.ring ? await this.ring : null;
    const url = known?.urls.get(known.ring.owner(queue));
    return url === undefined ? req : { ...req, prefer: url };
  }

  private async learnRing(): Promise<{ ring: HashRing; urls: Map<string, string> } | null> {
    try {
      const st = await this.client.status(undefined, { retries: 1, timeoutMs: 2000 });
      const queueNodes = st.peers.filter((p) => p.roles.includes('queue'));
      if (queueNodes.length === 0) throw new Error('no queue nodes');
      const section = st.queue as { vnodes?: unknown } | undefined;
      const vnodes = typeof section?.vnodes === 'number' ? section.vnodes : DEFAULT_VNODES;
      return {
        ring: new HashRing(
          queueNodes.map((p) => p.id),
          vnodes,
        ),
        urls: new Map(queueNodes.map((p) => [p.id, p.url])),
      };
    } catch {
      // Routing is an optimization: go through any node, and ask again in a while.
      this.ring = null;
      this.ringRetryAt = Date.now() + 10_000;
      return null;
    }
  }

  /** Stores one message (any JSON); resolves once Redis accepted it. */
  async push(queue: string, message: Json, req: RequestOptions = {}): Promise<{ queue: string; id: string }> {
    return this.client.request('POST', '/queue/push', { queue, message }, await this.routed(queue, req));
  }

  /** Stores a batch atomically (all or nothing), ids in the order of `messages`. */
  async pushBatch(
    queue: string,
    messages: Json[],
    req: RequestOptions = {},
  ): Promise<{ queue: string; ids: string[] }> {
    if (messages.length === 0) return { queue, ids: [] };
    return this.client.request('POST', '/queue/push', { queue, messages }, await this.routed(queue, req));
  }

  /**
   * Takes up to `max` messages, waiting up to `waitMs` for the first one. Resolves with `null` when
   * the queue stayed empty (204), else with a non-empty list, whatever `max` was.
   */
  async pop<T = Json>(
    queue: string,
    opts: PopOptions = {},
    req: RequestOptions = {},
  ): Promise<QueueDelivery<T>[] | null> {
    const waitMs = opts.waitMs ?? 0;
    const res = await this.client.requestFull<PopReply>(
      'POST',
      '/queue/pop',
      {
        queue,
        ...(opts.consumerId !== undefined ? { consumer_id: opts.consumerId } : {}),
        ...(opts.max !== undefined ? { max: opts.max } : {}),
        wait_ms: waitMs,
        ...(opts.visibilityMs !== undefined ? { visibility_ms: opts.visibilityMs } : {}),
      },
      // A long poll legitimately takes up to waitMs before answering.
      { ...(await this.routed(queue, req)), timeoutMs: (req.timeoutMs ?? DEFAULT_TIMEOUT_MS) + waitMs },
    );
    if (res.status === 204 || res.body === undefined) return null;
    const list = deliveriesOf(res.body);
    return list.length === 0 ? null : (list as QueueDelivery<T>[]);
  }

  /**
   * Acks one delivered message; 404 unknown_message (not pending: unknown, acked, or redelivered)
   * throws. Given the delivery itself rather than its id, the ack carries its delivery_count as a
   * receipt: if the message was delivered again since (its visibility ran out), nothing happens.
   */
  async ack(
    queue: string,
    delivery: string | DeliveryRef,
    req: RequestOptions = {},
  ): Promise<{ acked: number }> {
    try {
      return await this.client.request<AckResult>(
        'POST',
        '/queue/ack',
        { queue, ...deliveryBody(delivery) },
        await this.routed(queue, req),
      );
    } catch (e) {
      if (e instanceof DssHttpError && e.code === 'unknown_message' && e.afterUnknownOutcome)
        return { acked: 1 };
      throw e;
    }
  }

  /** Acks many; ids that are not pending are skipped, and `acked` counts the others. */
  async ackBatch(queue: string, ids: string[], req: RequestOptions = {}): Promise<{ acked: number }> {
    if (ids.length === 0) return { acked: 0 };
    return this.client.request<AckResult>(
      'POST',
      '/queue/ack',
      { queue, ids },
      await this.routed(queue, req),
    );
  }

  /**
   * Gives a delivered message back: ready again at once (at the head of the queue), or dead-lettered
   * when it has used up its deliveries. 404 unknown_message when it is not pending (with the
   * delivery given, when it is not pending under that delivery any more).
   */
  async nack(queue: string, delivery: string | DeliveryRef, req: RequestOptions = {}): Promise<NackResult> {
    return this.client.request<NackResult>(
      'POST',
      '/queue/nack',
      { queue, ...deliveryBody(delivery) },
      await this.routed(queue, req),
    );
  }

  /** Ready, pending and dead counts, and the queue's owner on the hash ring. */
  async stats(queue: string, req: RequestOptions = {}): Promise<QueueStats> {
    return this.client.request<QueueStats>('GET', '/queue/stats', undefined, {
      ...(await this.routed(queue, req)),
      query: { queue },
    });
  }

  /**
   * Runs `handler` for every message of `queue` until stop(): long-polls, runs up to `concurrency`
   * handlers at once, acks each message whose handler resolved and nacks each whose handler threw
   * (when the nack fails too, the message comes back after its visibility deadline). Failed pops are
   * reported to onError and retried with backoff; the loop never stops by itself.
   */
  consume<T = Json>(queue: string, handler: MessageHandler<T>, opts: ConsumeOptions<T> = {}): Consumer {
    // Values every pop would be refused for (400) would make the loop fail forever: refuse them here.
    const check = (name: string, v: number | undefined, min: number, max: number): void => {
      if (v !== undefined && !(Number.isInteger(v) && v >= min && v <= max))
        throw new RangeError(`consume: ${name} must be an integer from ${min} to ${max}, got ${v}`);
    };
    check('waitMs', opts.waitMs, 0, MAX_POP_WAIT_MS);
    check('visibilityMs', opts.visibilityMs, 1, MAX_VISIBILITY_MS);
    check('concurrency', opts.concurrency, 1, Number.MAX_SAFE_INTEGER);
    check('max', opts.max, 1, MAX_BATCH);
    return new ConsumerLoop<T>(this, queue, handler, opts);
  }
}

/** Both reply shapes of pop as one list. */
function deliveriesOf(body: PopReply): DeliveryWire[] {
  if ('messages' in body) return body.messages;
  return [{ id: body.id, message: body.message, delivery_count: body.delivery_count }];
}

class ConsumerLoop<T> implements Consumer {
  readonly done: Promise<void>;
  private stopped = false;
  private readonly running = new Set<Promise<void>>();
  /** Wakes the loop from pause(): stop() always, a finished handler only when it waits for a slot. */
  private wake: (() => void) | undefined;
  private wakeOnSlot = false;
  private readonly concurrency: number;
  private readonly max: number;
  private readonly req: RequestOptions;

  constructor(
    private readonly q: QueueClient,
    private readonly queue: string,
    private readonly handler: MessageHandler<T>,
    private readonly opts: ConsumeOptions<T>,
  ) {
    this.concurrency = Math.max(1, Math.floor(opts.concurrency ?? 1));
    // A pop takes at most MAX_BATCH: more handlers than that just take several pops to fill.
    this.max = Math.min(MAX_BATCH, Math.max(1, Math.floor(opts.max ?? this.concurrency)));
    this.req = opts.request ?? {};
    this.done = this.loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.done;
  }

  private async loop(): Promise<void> {
    const base = this.opts.backoffBaseMs ?? 200;
    const cap = this.opts.backoffMaxMs ?? 5000;
    let failures = 0;
    try {
      while (!this.stopped) {
        const free = this.concurrency - this.running.size;
        if (free <= 0) {
          await this.pause();
          continue;
        }
        let got: QueueDelivery<T>[] | null;
        try {
          got = await this.q.pop<T>(
            this.queue,
            {
              max: Math.min(free, this.max),
              waitMs: this.opts.waitMs ?? 10_000,
              ...(this.opts.visibilityMs !== undefined ? { visibilityMs: this.opts.visibilityMs } : {}),
              ...(this.opts.consumerId !== undefined ? { consumerId: this.opts.consumerId } : {}),
            },
            this.req,
          );
          failures = 0;
        } catch (e) {
          this.report(e, { stage: 'pop', queue: this.queue });
          const step = Math.min(cap, base * 2 ** failures++);
          const hinted = e instanceof DssHttpError ? (e.retryAfterMs ?? 0) : 0;
          await this.pause(Math.min(cap, Math.max(hinted, step / 2 + (Math.random() * step) / 2)));
          continue;
        }
        if (got === null) continue;
        for (const d of got) {
          if (this.stopped) this.track(this.giveBack(d));
          else this.track(this.handle(d));
        }
      }
    } finally {
      while (this.running.size > 0) await Promise.allSettled([...this.running]);
    }
  }

  private track(p: Promise<void>): void {
    this.running.add(p);
    void p.finally(() => {
      this.running.delete(p);
      if (this.wakeOnSlot) this.wake?.();
    });
  }

  /** Waits until stop(), and until `ms` passed (backoff) or else a handler finished (free slot). */
  private async pause(ms?: number): Promise<void> {
    if (this.stopped) return;
    let timer: NodeJS.Timeout | undefined;
    this.wakeOnSlot = ms === undefined;
    await new Promise<void>((resolve) => {
      this.wake = resolve;
      if (ms !== undefined) timer = setTimeout(resolve, ms);
    });
    clearTimeout(timer);
    this.wake = undefined;
  }

  private async handle(d: QueueDelivery<T>): Promise<void> {
    try {
      await this.handler(d.message, d);
    } catch (e) {
      this.report(e, { stage: 'handler', queue: this.queue, delivery: d });
      await this.giveBack(d);
      return;
    }
    try {
      await this.q.ack(this.queue, d, this.req);
    } catch (e) {
      this.report(e, { stage: 'ack', queue: this.queue, delivery: d });
    }
  }

  /** Nack: ready again at once. If that fails the visibility deadline brings the message back anyway. */
  private async giveBack(d: QueueDelivery<T>): Promise<void> {
    try {
      await this.q.nack(this.queue, d, this.req);
    } catch (e) {
      this.report(e, { stage: 'nack', queue: this.queue, delivery: d });
    }
  }

  private report(err: unknown, ctx: ConsumeErrorContext<T>): void {
    try {
      if (this.opts.onError) this.opts.onError(err, ctx);
      else {
        const what = ctx.delivery ? ` message ${ctx.delivery.id}` : '';
        const text = err instanceof Error ? err.message : String(err);
        process.stderr.write(`dss consumer ${ctx.queue}: ${ctx.stage}${what} failed: ${text}\n`);
      }
    } catch {
      // A failing error reporter must not stop the loop.
    }
  }
}
