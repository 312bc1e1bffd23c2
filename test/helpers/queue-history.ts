// Jepsen-style history of distributed-queue operations and a "total queue" checker (SPEC 5).
//
// A test records each call when it is sent (`invoke`) and each answer when it arrives (`complete`),
// from as many concurrent clients as it likes. Every pushed message carries a unique payload string,
// so a delivery can be traced back to the push that produced it. At the end the test drains every
// queue completely (pops and acks until Redis holds nothing) and `checkQueueHistory` decides from the
// history alone whether the queue kept its at-least-once promise:
//
//  - nothing lost: every ACKNOWLEDGED push (some attempt answered 201) was delivered and acked at
//    least once. After a complete drain, a message that was delivered but never acked would still be
//    in Redis and so would have been delivered again; "never acked" therefore means lost too;
//  - nothing unexpected: every delivery carries a payload that was pushed to that queue, not before it
//    was pushed, and not under an id that a push answered for another payload;
//  - no anomalies: an id is never given to two payloads, a message is never delivered again after
//    an ack of it was answered ok, and its delivery_count never repeats or goes back in real time
//    (each means Redis forgot a write it had acknowledged, which `appendfsync always` forbids);
//  - duplicates are allowed (at-least-once) and counted: deliveries beyond the first per payload.
//
// Outcomes a client does not know (`unknown`: timeouts, connection errors, 503, 504) are treated as
// "may or may not have happened": an indeterminate push may show up or not, an ack with an unknown
// outcome may have deleted the message (so it counts as a possible ack, reported separately), a pop
// with an unknown outcome delivered nothing the checker can see (the message comes back after its
// visibility timeout). A definite refusal of a push (400, 413) means it was not stored.
import { performance } from 'node:perf_hooks';

export type QueueOp = 'push' | 'pop' | 'ack';
/** `failed`: refused for sure (400/413), nothing stored. `unknown`: may or may not have been stored. */
export type PushOutcome = 'ok' | 'failed' | 'unknown';
/** `ok`: deliveries received. `empty`: 204. `unknown`: may have delivered messages nobody saw. */
export type PopOutcome = 'ok' | 'empty' | 'unknown';
/** `not_pending`: 404 unknown_message, nothing changed. `unknown`: may (later) have deleted it. */
export type AckOutcome = 'ok' | 'not_pending' | 'unknown';
export type QueueOutcome = PushOutcome | PopOutcome | AckOutcome;

/** One delivered message as a pop answered it. `payload` is the unique payload string. */
export interface DeliveryRecord {
  id: string;
  payload: string;
  delivery_count: number;
}

export interface QueueInvokeEvent {
  type: 'invoke';
  id: number;
  /** Epoch milliseconds, fractional. */
  time: number;
  client: string;
  op: QueueOp;
  queue: string;
  /** push: the unique payload sent. */
  payload?: string;
  /** ack: the message id acked. */
  messageId?: string;
  /** The node the request was sent to (diagnostics only). */
  node?: string;
}

export interface CompleteFields {
  /** push ok: the id the queue gave the message. */
  messageId?: string;
  /** pop ok: what was delivered (at least one). */
  deliveries?: DeliveryRecord[];
  /** Error code or status of a failure (`unavailable`, `ECONNREFUSED`, `timeout`, `404`...). */
  code?: string;
  /** `x-dss-served-by` of the answer (diagnostics only). */
  servedBy?: string;
}

export interface QueueCompleteEvent extends CompleteFields {
  type: 'complete';
  id: number;
  time: number;
  outcome: QueueOutcome;
}

/** Free text, e.g. nemesis actions; ignored by the checker, shown in excerpts. */
export interface QueueNoteEvent {
  type: 'note';
  time: number;
  text: string;
}

export type QueueEvent = QueueInvokeEvent | QueueCompleteEvent | QueueNoteEvent;

const OUTCOMES: Record<QueueOp, readonly QueueOutcome[]> = {
  push: ['ok', 'failed', 'unknown'],
  pop: ['ok', 'empty', 'unknown'],
  ack: ['ok', 'not_pending', 'unknown'],
};

/** Wall clock with sub-millisecond resolution (epoch ms). */
export function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * Outcome of an HTTP answer to a single-message push, a pop, or a single-id ack (`status`
 * undefined or 0: no answer at all). Anything not definite is `unknown`, which is always safe.
 */
export function outcomeOfStatus(op: 'push', status: number | undefined): PushOutcome;
export function outcomeOfStatus(op: 'pop', status: number | undefined): PopOutcome;
export function outcomeOfStatus(op: 'ack', status: number | undefined): AckOutcome;
export function outcomeOfStatus(op: QueueOp, status: number | undefined): QueueOutcome {
  switch (op) {
    case 'push':
      return status === 201 ? 'ok' : status === 400 || status === 413 ? 'failed' : 'unknown';
    case 'pop':
      return status === 200 ? 'ok' : status === 204 ? 'empty' : 'unknown';
    case 'ack':
      return status === 200 ? 'ok' : status === 404 ? 'not_pending' : 'unknown';
  }
}

function validate(id: number, op: QueueOp, outcome: QueueOutcome, f: CompleteFields): void {
  if (!OUTCOMES[op].includes(outcome)) {
    throw new Error(`op #${id}: outcome ${outcome} is not one of ${OUTCOMES[op].join(', ')} (${op})`);
  }
  if (op === 'push' && outcome === 'ok' && (typeof f.messageId !== 'string' || f.messageId === '')) {
    throw new Error(`op #${id}: an ok push needs the message id it was given`);
  }
  if (op === 'pop' && outcome === 'ok' && (!f.deliveries || f.deliveries.length === 0)) {
    throw new Error(`op #${id}: an ok pop needs its deliveries (an empty pop is 'empty')`);
  }
  if (op === 'pop' && outcome !== 'ok' && f.deliveries && f.deliveries.length > 0) {
    throw new Error(`op #${id}: only an ok pop has deliveries`);
  }
  for (const d of f.deliveries ?? []) {
    if (
      typeof d.id !== 'string' ||
      typeof d.payload !== 'string' ||
      !Number.isSafeInteger(d.delivery_count)
    ) {
      throw new Error(`op #${id}: malformed delivery ${JSON.stringify(d)}`);
    }
  }
}

/**
 * Records a history. Call an `invoke` method just before sending a request and `complete` as soon
 * as its answer (or failure) is known.
 */
export class QueueHistory {
  readonly events: QueueEvent[] = [];
  private nextId = 1;
  private readonly open = new Map<number, QueueOp>();
  private readonly now: () => number;

  constructor(opts: { now?: () => number } = {}) {
    this.now = opts.now ?? wallClockMs;
  }

  private invoke(client: string, op: QueueOp, queue: string, extra: Partial<QueueInvokeEvent>): number {
    const id = this.nextId++;
    const ev: QueueInvokeEvent = { type: 'invoke', id, time: this.now(), client, op, queue };
    if (extra.payload !== undefined) ev.payload = extra.payload;
    if (extra.messageId !== undefined) ev.messageId = extra.messageId;
    if (extra.node !== undefined) ev.node = extra.node;
    this.open.set(id, op);
    this.events.push(ev);
    return id;
  }

  push(client: string, queue: string, payload: string, node?: string): number {
    return this.invoke(client, 'push', queue, { payload, ...(node !== undefined ? { node } : {}) });
  }

  pop(client: string, queue: string, node?: string): number {
    return this.invoke(client, 'pop', queue, node !== undefined ? { node } : {});
  }

  ack(client: string, queue: string, messageId: string, node?: string): number {
    return this.invoke(client, 'ack', queue, { messageId, ...(node !== undefined ? { node } : {}) });
  }

  complete(id: number, outcome: QueueOutcome, fields: CompleteFields = {}): void {
    const time = this.now();
    const op = this.open.get(id);
    if (op === undefined) throw new Error(`complete(#${id}): no invocation with that id is open`);
    validate(id, op, outcome, fields);
    this.open.delete(id);
    const ev: QueueCompleteEvent = { type: 'complete', id, time, outcome };
    if (fields.messageId !== undefined) ev.messageId = fields.messageId;
    if (fields.deliveries !== undefined) ev.deliveries = fields.deliveries.map((d) => ({ ...d }));
    if (fields.code !== undefined) ev.code = fields.code;
    if (fields.servedBy !== undefined) ev.servedBy = fields.servedBy;
    this.events.push(ev);
  }

  note(text: string): void {
    this.events.push({ type: 'note', time: this.now(), text });
  }

  /** Ids invoked and not completed yet; the checker treats them as `unknown`. */
  pending(): number[] {
    return [...this.open.keys()];
  }

  check(opts: QueueCheckOptions = {}): QueueCheckResult {
    return checkQueueHistory(this.events, opts);
  }

  /** The events that concern a payload or a message (see `historyExcerpt`). */
  excerpt(about: ExcerptFilter, opts: { notes?: boolean } = {}): string[] {
    return historyExcerpt(this.events, about, opts);
  }
}

// ---------------------------------------------------------------- checker

export interface QueueCheckOptions {
  /** At most this many entries per list (lost, unexpected, anomalies; default 100); counts are exact. */
  maxReported?: number;
}

export interface LostMessage {
  queue: string;
  payload: string;
  /** never_delivered: no delivery at all. never_acked: delivered, but no ack of it ever succeeded. */
  reason: 'never_delivered' | 'never_acked';
  /** Ids the pushes were answered with, and ids it was delivered under. */
  messageIds: string[];
  deliveries: number;
  detail: string;
}

export type UnexpectedReason =
  'never_pushed' | 'refused_push' | 'wrong_queue' | 'before_push' | 'id_of_other_payload';

export interface UnexpectedDelivery {
  queue: string;
  messageId: string;
  payload: string;
  deliveryCount: number;
  /** The pop that delivered it. */
  op: number;
  reason: UnexpectedReason;
  detail: string;
}

export interface QueueCheckCounts {
  events: number;
  clients: number;
  queues: number;
  /** Push attempts by outcome (never-answered ones count as unknown and in `pending`). */
  pushes: Record<PushOutcome, number>;
  pops: Record<PopOutcome, number>;
  acks: Record<AckOutcome, number>;
  /** Invoked, never completed. */
  pending: number;
  /** Distinct payloads: some push of it answered ok / none ok but some unknown / all refused. */
  payloads: { acknowledged: number; indeterminate: number; refused: number };
  /** Indeterminate payloads that were / were not delivered (neither is an error). */
  indeterminate: { delivered: number; notDelivered: number };
  /** Every message delivered by an ok pop (duplicates and unexpected ones included). */
  deliveries: number;
  /** Acknowledged payloads delivered at least once. */
  delivered: number;
  /** Acknowledged payloads with an ack answered ok. */
  acked: number;
  /** Acknowledged payloads whose only acks had unknown outcomes (counted as possibly acked). */
  ackedIndeterminately: number;
  /**
   * Deliveries beyond the first per payload = `redeliveries` (an id delivered again) + `extraIds`
   * (first deliveries of a second id of the same payload: a retried push was stored twice).
   */
  duplicates: { total: number; redeliveries: number; extraIds: number };
  /** Highest delivery_count seen. */
  maxDeliveryCount: number;
  lost: number;
  unexpected: number;
  anomalies: number;
}

export interface QueueCheckResult {
  /** No lost message, no unexpected delivery, no anomaly. */
  ok: boolean;
  lost: LostMessage[];
  unexpected: UnexpectedDelivery[];
  anomalies: string[];
  /** Same as counts.duplicates.total. */
  duplicates: number;
  counts: QueueCheckCounts;
}

interface Op {
  id: number;
  client: string;
  op: QueueOp;
  queue: string;
  invoke: number;
  complete: number | undefined;
  outcome: QueueOutcome;
  payload: string | undefined;
  /** push: the answered id; ack: the acked id. */
  messageId: string | undefined;
  deliveries: DeliveryRecord[];
}

interface Delivery {
  queue: string;
  id: string;
  payload: string;
  count: number;
  pop: Op;
}

const msgKey = (queue: string, id: string): string => `${queue}\u0000${id}`;

function parse(events: readonly QueueEvent[]): { ops: Op[]; pending: number; t0: number } {
  const invokes = new Map<number, QueueInvokeEvent>();
  const completes = new Map<number, QueueCompleteEvent>();
  let t0 = Infinity;
  for (const e of events) {
    if (!Number.isFinite(e.time)) throw new Error(`event at ${String(e.time)}: time is not finite`);
    t0 = Math.min(t0, e.time);
    if (e.type === 'note') continue;
    const map: Map<number, QueueEvent> = e.type === 'invoke' ? invokes : completes;
    if (map.has(e.id)) throw new Error(`op #${e.id}: two ${e.type} events`);
    map.set(e.id, e);
  }
  const ops: Op[] = [];
  let pending = 0;
  for (const [id, inv] of invokes) {
    if (inv.op === 'push' && typeof inv.payload !== 'string') throw new Error(`push #${id}: no payload`);
    if (inv.op === 'ack' && typeof inv.messageId !== 'string') throw new Error(`ack #${id}: no message id`);
    const done = completes.get(id);
    if (done) {
      validate(id, inv.op, done.outcome, done);
      if (done.time < inv.time) throw new Error(`op #${id}: completed before it was invoked`);
    } else pending++;
    ops.push({
      id,
      client: inv.client,
      op: inv.op,
      queue: inv.queue,
      invoke: inv.time,
      complete: done?.time,
      outcome: done?.outcome ?? 'unknown',
      payload: inv.payload,
      messageId: inv.op === 'push' ? done?.messageId : inv.messageId,
      deliveries: done?.deliveries ?? [],
    });
  }
  for (const id of completes.keys()) {
    if (!invokes.has(id)) throw new Error(`op #${id}: completed but never invoked`);
  }
  ops.sort((a, b) => a.invoke - b.invoke || a.id - b.id);
  return { ops, pending, t0: t0 === Infinity ? 0 : t0 };
}

/**
 * Checks a history of queue operations recorded up to and including a complete drain of every
 * queue (events in any order; ids link invocations and completions). Throws on a malformed history
 * (a test bug); returns what the history proves about the queue.
 */
export function checkQueueHistory(
  events: readonly QueueEvent[],
  opts: QueueCheckOptions = {},
): QueueCheckResult {
  const maxReported = opts.maxReported ?? 100;
  const { ops, pending, t0 } = parse(events);
  const at = (t: number): string => `+${(t - t0).toFixed(1)} ms`;

  const counts: QueueCheckCounts = {
    events: events.length,
    clients: new Set(ops.map((o) => o.client)).size,
    queues: new Set(ops.map((o) => o.queue)).size,
    pushes: { ok: 0, failed: 0, unknown: 0 },
    pops: { ok: 0, empty: 0, unknown: 0 },
    acks: { ok: 0, not_pending: 0, unknown: 0 },
    pending,
    payloads: { acknowledged: 0, indeterminate: 0, refused: 0 },
    indeterminate: { delivered: 0, notDelivered: 0 },
    deliveries: 0,
    delivered: 0,
    acked: 0,
    ackedIndeterminately: 0,
    duplicates: { total: 0, redeliveries: 0, extraIds: 0 },
    maxDeliveryCount: 0,
    lost: 0,
    unexpected: 0,
    anomalies: 0,
  };

  // Pushes per payload; the payload each answered (queue, id) belongs to.
  const pushesOf = new Map<string, Op[]>();
  /** The payloads whose push was answered with (queue, id): more than one means an id was reused. */
  const payloadsOfId = new Map<string, Set<string>>();
  const deliveries: Delivery[] = [];
  const acksOf = new Map<string, Op[]>();
  for (const o of ops) {
    if (o.op === 'push') {
      counts.pushes[o.outcome as PushOutcome]++;
      const p = o.payload!;
      let list = pushesOf.get(p);
      if (!list) pushesOf.set(p, (list = []));
      list.push(o);
      if (o.outcome === 'ok') {
        const k = msgKey(o.queue, o.messageId!);
        let set = payloadsOfId.get(k);
        if (!set) payloadsOfId.set(k, (set = new Set()));
        set.add(p);
      }
    } else if (o.op === 'pop') {
      counts.pops[o.outcome as PopOutcome]++;
      for (const d of o.deliveries) {
        deliveries.push({ queue: o.queue, id: d.id, payload: d.payload, count: d.delivery_count, pop: o });
      }
    } else {
      counts.acks[o.outcome as AckOutcome]++;
      const k = msgKey(o.queue, o.messageId!);
      let list = acksOf.get(k);
      if (!list) acksOf.set(k, (list = []));
      list.push(o);
    }
  }
  counts.deliveries = deliveries.length;
  // In the order the answers arrived: "first delivery" means the first one the clients saw.
  deliveries.sort((a, b) => a.pop.complete! - b.pop.complete! || a.pop.id - b.pop.id);

  // ---- unexpected deliveries
  const unexpected: UnexpectedDelivery[] = [];
  const expectedDeliveries = new Map<string, Delivery[]>();
  for (const d of deliveries) {
    counts.maxDeliveryCount = Math.max(counts.maxDeliveryCount, d.count);
    const pushes = pushesOf.get(d.payload) ?? [];
    const where = `queue "${d.queue}" id ${d.id} (delivery_count ${d.count}) delivered by pop #${d.pop.id} of "${d.pop.client}" (sent ${at(d.pop.invoke)}, answered ${at(d.pop.complete!)})`;
    const bad = (reason: UnexpectedReason, why: string): void => {
      counts.unexpected++;
      if (unexpected.length < maxReported) {
        unexpected.push({
          queue: d.queue,
          messageId: d.id,
          payload: d.payload,
          deliveryCount: d.count,
          op: d.pop.id,
          reason,
          detail: `${reason}: payload ${JSON.stringify(d.payload)} from ${where}: ${why}`,
        });
      }
    };
    const owners = payloadsOfId.get(msgKey(d.queue, d.id));
    if (pushes.length === 0) {
      bad('never_pushed', 'no push of this payload was ever sent');
      continue;
    }
    const here = pushes.filter((p) => p.queue === d.queue);
    if (here.length === 0) {
      bad(
        'wrong_queue',
        `it was pushed to ${[...new Set(pushes.map((p) => `"${p.queue}"`))].join(', ')} only`,
      );
      continue;
    }
    const possible = here.filter((p) => p.outcome !== 'failed');
    if (possible.length === 0) {
      bad(
        'refused_push',
        `every push of it to this queue was refused (${here.map((p) => `#${p.id}`).join(', ')})`,
      );
      continue;
    }
    const firstSent = Math.min(...possible.map((p) => p.invoke));
    if (d.pop.complete! < firstSent) {
      bad('before_push', `the pop was answered before any push of it was sent (${at(firstSent)})`);
      continue;
    }
    if (owners !== undefined && !owners.has(d.payload)) {
      const others = [...owners].map((o) => JSON.stringify(o)).join(', ');
      bad('id_of_other_payload', `the push of ${others} was answered with this id`);
      continue;
    }
    let list = expectedDeliveries.get(d.payload);
    if (!list) expectedDeliveries.set(d.payload, (list = []));
    list.push(d);
  }

  // ---- anomalies: per message (queue, id), in the order the pops were answered
  const anomalies: string[] = [];
  const anomaly = (s: string): void => {
    counts.anomalies++;
    if (anomalies.length < maxReported) anomalies.push(s);
  };
  const byMessage = new Map<string, Delivery[]>();
  for (const d of deliveries) {
    const k = msgKey(d.queue, d.id);
    let list = byMessage.get(k);
    if (!list) byMessage.set(k, (list = []));
    list.push(d);
  }
  // An id answered to, or delivered with, two payloads: the queue's id counter went back. The
  // per-message checks below would only repeat that for such an id, so they skip it.
  const reused = new Set<string>();
  for (const k of new Set([...payloadsOfId.keys(), ...byMessage.keys()])) {
    const payloads = new Set([
      ...(payloadsOfId.get(k) ?? []),
      ...(byMessage.get(k) ?? []).map((d) => d.payload),
    ]);
    if (payloads.size > 1) {
      reused.add(k);
      const [queue, id] = k.split('\u0000') as [string, string];
      anomaly(
        `id reused: queue "${queue}" id ${id} was given to or delivered with payloads ` +
          `${[...payloads].map((p) => JSON.stringify(p)).join(' and ')}`,
      );
    }
  }
  for (const [k, ds] of byMessage) {
    if (reused.has(k)) continue;
    const [queue, id] = k.split('\u0000') as [string, string];
    const seen = new Map<number, Delivery>();
    for (const d of ds) {
      const prev = seen.get(d.count);
      if (prev) {
        anomaly(
          `repeated delivery_count: queue "${queue}" id ${id} was delivered with delivery_count ${d.count} ` +
            `twice (pops #${prev.pop.id} and #${d.pop.id})`,
        );
      } else seen.set(d.count, d);
    }
    // Real-time order: a pop answered before another was sent delivered an earlier count.
    const byAnswer = [...ds].sort((a, b) => a.pop.complete! - b.pop.complete!);
    for (const y of ds) {
      for (const x of byAnswer) {
        if (x.pop.complete! >= y.pop.invoke) break;
        if (x.count > y.count) {
          anomaly(
            `delivery_count went back: queue "${queue}" id ${id} was delivered with count ${x.count} by ` +
              `pop #${x.pop.id} (answered ${at(x.pop.complete!)}), then with count ${y.count} by pop ` +
              `#${y.pop.id} (sent ${at(y.pop.invoke)})`,
          );
          break;
        }
      }
    }
    // Resurrection: delivered by a pop sent after an ack of this id was answered ok.
    const okAcks = (acksOf.get(k) ?? []).filter((a) => a.outcome === 'ok');
    if (okAcks.length > 0) {
      const firstAcked = okAcks.reduce((m, a) => (a.complete! < m.complete! ? a : m));
      const late = ds.find((d) => d.pop.invoke > firstAcked.complete!);
      if (late) {
        anomaly(
          `acked message delivered again: queue "${queue}" id ${id} was acked by ack #${firstAcked.id} ` +
            `(answered ok ${at(firstAcked.complete!)}) and then delivered by pop #${late.pop.id} ` +
            `(sent ${at(late.pop.invoke)}, delivery_count ${late.count})`,
        );
      }
    }
  }

  // ---- per payload: lost, indeterminate, duplicates
  const lost: LostMessage[] = [];
  for (const [payload, pushes] of pushesOf) {
    const okPushes = pushes.filter((p) => p.outcome === 'ok');
    const ds = expectedDeliveries.get(payload) ?? [];
    if (ds.length > 0) {
      const ids = new Set<string>();
      for (const d of ds) {
        const k = msgKey(d.queue, d.id);
        if (ids.has(k)) counts.duplicates.redeliveries++;
        else if (ids.size > 0) counts.duplicates.extraIds++;
        ids.add(k);
      }
    }
    if (okPushes.length === 0) {
      if (pushes.every((p) => p.outcome === 'failed')) counts.payloads.refused++;
      else {
        counts.payloads.indeterminate++;
        if (ds.length > 0) counts.indeterminate.delivered++;
        else counts.indeterminate.notDelivered++;
      }
      continue;
    }
    counts.payloads.acknowledged++;
    const queue = okPushes[0]!.queue;
    const ids = [...new Set([...okPushes.map((p) => p.messageId!), ...ds.map((d) => d.id)])];
    const describe = (): string => {
      const pushText = pushes
        .map(
          (p) =>
            `push #${p.id} ${p.outcome}${p.messageId ? ` id ${p.messageId}` : ''} (sent ${at(p.invoke)})`,
        )
        .join(', ');
      return `payload ${JSON.stringify(payload)} in queue "${queue}": ${pushText}`;
    };
    if (ds.length === 0) {
      counts.lost++;
      if (lost.length < maxReported) {
        lost.push({
          queue,
          payload,
          reason: 'never_delivered',
          messageIds: ids,
          deliveries: 0,
          detail: `never_delivered: ${describe()}; never delivered`,
        });
      }
      continue;
    }
    counts.delivered++;
    const acks = ds.flatMap((d) => acksOf.get(msgKey(d.queue, d.id)) ?? []);
    const uniqueAcks = [...new Set(acks)];
    if (uniqueAcks.some((a) => a.outcome === 'ok')) {
      counts.acked++;
      continue;
    }
    if (uniqueAcks.some((a) => a.outcome === 'unknown')) {
      counts.ackedIndeterminately++;
      continue;
    }
    counts.lost++;
    if (lost.length < maxReported) {
      const last = ds[ds.length - 1]!;
      lost.push({
        queue,
        payload,
        reason: 'never_acked',
        messageIds: ids,
        deliveries: ds.length,
        detail:
          `never_acked: ${describe()}; delivered ${ds.length} time(s), last as id ${last.id} ` +
          `(delivery_count ${last.count}) by pop #${last.pop.id} answered ${at(last.pop.complete!)}; ` +
          (uniqueAcks.length === 0
            ? 'never acked, yet not in the queue any more'
            : `its acks (${uniqueAcks.map((a) => `#${a.id}`).join(', ')}) were all answered not_pending`),
      });
    }
  }
  counts.duplicates.total = counts.duplicates.redeliveries + counts.duplicates.extraIds;

  return {
    ok: counts.lost === 0 && counts.unexpected === 0 && counts.anomalies === 0,
    lost,
    unexpected,
    anomalies,
    duplicates: counts.duplicates.total,
    counts,
  };
}

// ---------------------------------------------------------------- excerpts

export interface ExcerptFilter {
  payload?: string;
  queue?: string;
  messageId?: string;
}

/**
 * Human-readable lines for every operation that concerns a payload (its pushes, the pops that
 * delivered it, the acks of the ids it was delivered under) or a message (queue + id), in time order;
 * with `notes`, the notes (nemesis actions) between the first and last of them too.
 */
export function historyExcerpt(
  events: readonly QueueEvent[],
  about: ExcerptFilter,
  opts: { notes?: boolean } = {},
): string[] {
  const { ops, t0 } = parse(events);
  const at = (t: number | undefined): string => (t === undefined ? 'never' : `+${(t - t0).toFixed(1)}`);
  const keys = new Set<string>();
  if (about.queue !== undefined && about.messageId !== undefined)
    keys.add(msgKey(about.queue, about.messageId));
  if (about.payload !== undefined) {
    for (const o of ops) {
      if (o.op === 'push' && o.payload === about.payload && o.messageId)
        keys.add(msgKey(o.queue, o.messageId));
      for (const d of o.deliveries) if (d.payload === about.payload) keys.add(msgKey(o.queue, d.id));
    }
  }
  const lines: { t: number; text: string }[] = [];
  for (const o of ops) {
    const span = `[${at(o.invoke)} → ${at(o.complete)}] #${o.id} ${o.client}`;
    if (
      o.op === 'push' &&
      (o.payload === about.payload || (o.messageId && keys.has(msgKey(o.queue, o.messageId))))
    ) {
      lines.push({
        t: o.invoke,
        text: `${span} push "${o.queue}" ${JSON.stringify(o.payload)} → ${o.outcome}${o.messageId ? ` id ${o.messageId}` : ''}`,
      });
    } else if (o.op === 'pop') {
      const mine = o.deliveries.filter((d) => d.payload === about.payload || keys.has(msgKey(o.queue, d.id)));
      for (const d of mine) {
        lines.push({
          t: o.invoke,
          text: `${span} pop "${o.queue}" → id ${d.id} ${JSON.stringify(d.payload)} delivery_count ${d.delivery_count}`,
        });
      }
    } else if (o.op === 'ack' && keys.has(msgKey(o.queue, o.messageId!))) {
      lines.push({ t: o.invoke, text: `${span} ack "${o.queue}" id ${o.messageId} → ${o.outcome}` });
    }
  }
  if (opts.notes && lines.length > 0) {
    const lo = Math.min(...lines.map((l) => l.t));
    const hi = Math.max(...lines.map((l) => l.t));
    for (const e of events) {
      if (e.type === 'note' && e.time >= lo - 1000 && e.time <= hi + 1000) {
        lines.push({ t: e.time, text: `[${at(e.time)}] note: ${e.text}` });
      }
    }
  }
  return lines.sort((a, b) => a.t - b.t).map((l) => l.text);
}
