import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  checkQueueHistory,
  historyExcerpt,
  outcomeOfStatus,
  QueueHistory,
  type AckOutcome,
  type DeliveryRecord,
  type PushOutcome,
  type QueueCheckResult,
  type QueueEvent,
} from '../helpers/queue-history.js';

// Hand-written histories: times are milliseconds after T0 (epoch-like, as the recorder produces).
const T0 = 1_700_000_000_000;

class Builder {
  readonly events: QueueEvent[] = [];
  private id = 0;

  private op(
    invoke: Omit<Extract<QueueEvent, { type: 'invoke' }>, 'type' | 'id' | 'time'>,
    sent: number,
    answered: number | undefined,
    complete: Omit<Extract<QueueEvent, { type: 'complete' }>, 'type' | 'id' | 'time'>,
  ): this {
    const id = ++this.id;
    this.events.push({ type: 'invoke', id, time: T0 + sent, ...invoke });
    if (answered !== undefined) this.events.push({ type: 'complete', id, time: T0 + answered, ...complete });
    return this;
  }

  push(
    payload: string,
    t: number,
    outcome: PushOutcome = 'ok',
    messageId?: string,
    queue = 'q',
    /** null: never answered. */
    answered: number | null = t + 1,
  ): this {
    return this.op({ client: 'producer', op: 'push', queue, payload }, t, answered ?? undefined, {
      outcome,
      ...(messageId !== undefined ? { messageId } : {}),
    });
  }

  pop(
    t: number,
    deliveries: [id: string, payload: string, count: number][],
    queue = 'q',
    client = 'c',
  ): this {
    const ds: DeliveryRecord[] = deliveries.map(([id, payload, delivery_count]) => ({
      id,
      payload,
      delivery_count,
    }));
    return this.op({ client, op: 'pop', queue }, t, t + 1, {
      outcome: ds.length > 0 ? 'ok' : 'empty',
      ...(ds.length > 0 ? { deliveries: ds } : {}),
    });
  }

  popUnknown(t: number, queue = 'q'): this {
    return this.op({ client: 'c', op: 'pop', queue }, t, t + 3000, { outcome: 'unknown', code: 'timeout' });
  }

  ack(messageId: string, t: number, outcome: AckOutcome = 'ok', queue = 'q', answered = t + 1): this {
    return this.op({ client: 'c', op: 'ack', queue, messageId }, t, answered, { outcome });
  }

  /** push -> pop -> ack of one message, one ms apart from t. */
  full(payload: string, id: string, t: number, queue = 'q'): this {
    return this.push(payload, t, 'ok', id, queue)
      .pop(t + 2, [[id, payload, 1]], queue)
      .ack(id, t + 4, 'ok', queue);
  }

  check(): QueueCheckResult {
    return checkQueueHistory(this.events);
  }
}

function assertClean(r: QueueCheckResult): void {
  assert.deepEqual(r.lost, [], r.lost.map((l) => l.detail).join('\n'));
  assert.deepEqual(r.unexpected, [], r.unexpected.map((u) => u.detail).join('\n'));
  assert.deepEqual(r.anomalies, []);
  assert.equal(r.ok, true);
}

describe('QueueHistory recorder', () => {
  it('records invocations and completions and validates outcomes', () => {
    let now = 100;
    const h = new QueueHistory({ now: () => now++ });
    const p = h.push('prod', 'q', 'm1', 'node1');
    h.complete(p, 'ok', { messageId: '1', servedBy: 'node2' });
    const pop = h.pop('cons', 'q');
    assert.deepEqual(h.pending(), [pop]);
    h.complete(pop, 'ok', { deliveries: [{ id: '1', payload: 'm1', delivery_count: 1 }] });
    h.note('nemesis: kill node1');
    const a = h.ack('cons', 'q', '1');
    h.complete(a, 'ok');
    assert.deepEqual(h.pending(), []);
    assert.equal(h.events.length, 7);
    assert.deepEqual(h.events[0], {
      type: 'invoke',
      id: 1,
      time: 100,
      client: 'prod',
      op: 'push',
      queue: 'q',
      payload: 'm1',
      node: 'node1',
    });
    assert.deepEqual(h.events[1], {
      type: 'complete',
      id: 1,
      time: 101,
      outcome: 'ok',
      messageId: '1',
      servedBy: 'node2',
    });
    const r = h.check();
    assertClean(r);
    assert.equal(r.counts.acked, 1);

    assert.throws(() => h.complete(p, 'ok', { messageId: '1' }), /no invocation with that id is open/);
    const p2 = h.push('prod', 'q', 'm2');
    assert.throws(() => h.complete(p2, 'ok'), /needs the message id/);
    assert.throws(() => h.complete(p2, 'empty'), /not one of ok, failed, unknown/);
    const pop2 = h.pop('cons', 'q');
    assert.throws(() => h.complete(pop2, 'ok'), /needs its deliveries/);
    assert.throws(
      () => h.complete(pop2, 'empty', { deliveries: [{ id: '1', payload: 'x', delivery_count: 1 }] }),
      /only an ok pop has deliveries/,
    );
    const a2 = h.ack('cons', 'q', '2');
    assert.throws(() => h.complete(a2, 'failed'), /not one of ok, not_pending, unknown/);
  });

  it('maps HTTP statuses to outcomes, unknown when in doubt', () => {
    assert.equal(outcomeOfStatus('push', 201), 'ok');
    assert.equal(outcomeOfStatus('push', 400), 'failed');
    assert.equal(outcomeOfStatus('push', 413), 'failed');
    assert.equal(outcomeOfStatus('push', 503), 'unknown');
    assert.equal(outcomeOfStatus('push', undefined), 'unknown');
    assert.equal(outcomeOfStatus('pop', 200), 'ok');
    assert.equal(outcomeOfStatus('pop', 204), 'empty');
    assert.equal(outcomeOfStatus('pop', 0), 'unknown');
    assert.equal(outcomeOfStatus('ack', 200), 'ok');
    assert.equal(outcomeOfStatus('ack', 404), 'not_pending');
    assert.equal(outcomeOfStatus('ack', 504), 'unknown');
  });

  it('rejects malformed histories', () => {
    assert.throws(
      () => checkQueueHistory([{ type: 'complete', id: 1, time: 1, outcome: 'ok', messageId: '1' }]),
      /completed but never invoked/,
    );
    assert.throws(
      () =>
        checkQueueHistory([
          { type: 'invoke', id: 1, time: 5, client: 'c', op: 'push', queue: 'q', payload: 'x' },
          { type: 'complete', id: 1, time: 4, outcome: 'ok', messageId: '1' },
        ]),
      /completed before it was invoked/,
    );
  });
});

describe('checkQueueHistory: good histories pass', () => {
  it('pushes, pops and acks of several messages on several queues', () => {
    const r = new Builder()
      .full('a', '1', 0)
      .full('b', '2', 10)
      .full('c', '1', 20, 'other')
      .pop(30, [])
      .check();
    assertClean(r);
    assert.equal(r.duplicates, 0);
    assert.deepEqual(r.counts.payloads, { acknowledged: 3, indeterminate: 0, refused: 0 });
    assert.deepEqual(r.counts.pops, { ok: 3, empty: 1, unknown: 0 });
    assert.equal(r.counts.acked, 3);
    assert.equal(r.counts.queues, 2);
  });

  it('a consumer that crashed without acking: redelivered and acked later', () => {
    const r = new Builder()
      .push('a', 0, 'ok', '1')
      .pop(2, [['1', 'a', 1]], 'q', 'crasher')
      .popUnknown(3) // timed out: may have delivered, nobody saw it
      .pop(2000, [['1', 'a', 2]])
      .ack('1', 2002)
      .check();
    assertClean(r);
    assert.equal(r.counts.maxDeliveryCount, 2);
  });

  it('an ack whose outcome is unknown counts as a possible ack', () => {
    const r = new Builder()
      .push('a', 0, 'ok', '1')
      .pop(2, [['1', 'a', 1]])
      .ack('1', 4, 'unknown', 'q', 3000)
      .check();
    assertClean(r);
    assert.equal(r.counts.ackedIndeterminately, 1);
    assert.equal(r.counts.acked, 0);
  });

  it('a late ack answered not_pending after another consumer acked the redelivery', () => {
    const r = new Builder()
      .push('a', 0, 'ok', '1')
      .pop(2, [['1', 'a', 1]], 'q', 'slow')
      .pop(2000, [['1', 'a', 2]], 'q', 'fast')
      .ack('1', 2002)
      .ack('1', 2500, 'not_pending')
      .check();
    assertClean(r);
  });
});

describe('checkQueueHistory: indeterminate pushes never fail the check', () => {
  it('an unknown push that never shows up, and one that does', () => {
    const r = new Builder()
      .push('ghost', 0, 'unknown', undefined, 'q', 3000)
      .push('maybe', 1, 'unknown', undefined, 'q', null) // never answered at all
      .pop(10, [['7', 'maybe', 1]])
      .ack('7', 12)
      .full('sure', '8', 20)
      .check();
    assertClean(r);
    assert.deepEqual(r.counts.payloads, { acknowledged: 1, indeterminate: 2, refused: 0 });
    assert.deepEqual(r.counts.indeterminate, { delivered: 1, notDelivered: 1 });
    assert.equal(r.counts.pending, 1);
    assert.equal(r.counts.pushes.unknown, 2);
  });

  it('a retried push stored twice: both copies delivered, one counted as a duplicate', () => {
    const r = new Builder()
      .push('a', 0, 'unknown', undefined, 'q', 3000)
      .push('a', 3001, 'ok', '2')
      .pop(3010, [
        ['1', 'a', 1],
        ['2', 'a', 1],
      ])
      .ack('1', 3012)
      .ack('2', 3013)
      .check();
    assertClean(r);
    assert.deepEqual(r.counts.duplicates, { total: 1, redeliveries: 0, extraIds: 1 });
    assert.equal(r.counts.payloads.acknowledged, 1);
  });
});

describe('checkQueueHistory: lost messages fail the check', () => {
  it('an acknowledged push that is never delivered', () => {
    const b = new Builder().full('a', '1', 0).push('lost-one', 10, 'ok', '2').full('c', '3', 20);
    const r = b.check();
    assert.equal(r.ok, false);
    assert.equal(r.counts.lost, 1);
    assert.equal(r.lost.length, 1);
    const l = r.lost[0]!;
    assert.equal(l.payload, 'lost-one');
    assert.equal(l.reason, 'never_delivered');
    assert.deepEqual(l.messageIds, ['2']);
    assert.match(l.detail, /push #\d+ ok id 2/);
    assert.deepEqual(r.unexpected, []);
    const ex = historyExcerpt(b.events, { payload: 'lost-one' });
    assert.equal(ex.length, 1);
    assert.match(ex[0]!, /push "q" "lost-one" → ok id 2/);
  });

  it('an acknowledged push delivered but never acked (it should still have been in the queue)', () => {
    const r = new Builder()
      .push('a', 0, 'ok', '1')
      .pop(2, [['1', 'a', 1]], 'q', 'crasher')
      .pop(5000, [])
      .check();
    assert.equal(r.ok, false);
    assert.equal(r.lost[0]?.reason, 'never_acked');
    assert.match(r.lost[0].detail, /never acked, yet not in the queue any more/);
  });

  it('a delivered message whose every ack was answered not_pending', () => {
    const r = new Builder()
      .push('a', 0, 'ok', '1')
      .pop(2, [['1', 'a', 1]])
      .ack('1', 4, 'not_pending')
      .check();
    assert.equal(r.ok, false);
    assert.equal(r.lost[0]?.reason, 'never_acked');
    assert.match(r.lost[0].detail, /answered not_pending/);
  });

  it('a push whose first attempt was unknown and retry ok is still required', () => {
    const r = new Builder().push('a', 0, 'unknown', undefined, 'q', 3000).push('a', 3001, 'ok', '5').check();
    assert.equal(r.counts.lost, 1);
    assert.equal(r.counts.payloads.acknowledged, 1);
  });
});

describe('checkQueueHistory: unexpected deliveries fail the check', () => {
  it('a payload that was never pushed', () => {
    const r = new Builder()
      .full('a', '1', 0)
      .pop(10, [['2', 'intruder', 1]])
      .ack('2', 12)
      .check();
    assert.equal(r.ok, false);
    assert.equal(r.counts.unexpected, 1);
    assert.equal(r.unexpected[0]?.reason, 'never_pushed');
    assert.equal(r.unexpected[0]?.payload, 'intruder');
    assert.deepEqual(r.lost, []);
  });

  it('a payload pushed to another queue', () => {
    const r = new Builder()
      .push('a', 0, 'ok', '1', 'q1')
      .pop(2, [['1', 'a', 1]], 'q2')
      .pop(3, [['1', 'a', 1]], 'q1')
      .ack('1', 4, 'ok', 'q1')
      .check();
    assert.equal(r.unexpected[0]?.reason, 'wrong_queue');
    assert.equal(r.counts.unexpected, 1);
  });

  it('a payload whose pushes were all refused', () => {
    const r = new Builder()
      .push('a', 0, 'failed')
      .pop(2, [['1', 'a', 1]])
      .ack('1', 4)
      .check();
    assert.equal(r.unexpected[0]?.reason, 'refused_push');
    assert.equal(r.counts.payloads.refused, 1);
  });

  it('delivered before it was pushed', () => {
    const r = new Builder()
      .pop(0, [['1', 'a', 1]])
      .push('a', 10, 'ok', '1')
      .ack('1', 12)
      .check();
    assert.equal(r.unexpected[0]?.reason, 'before_push');
  });

  it('an id that a push answered for another payload', () => {
    const r = new Builder()
      .push('a', 0, 'ok', '1')
      .push('b', 1, 'unknown', undefined, 'q', 3000)
      .pop(3010, [['1', 'b', 1]])
      .check();
    assert.equal(r.ok, false);
    assert.equal(r.unexpected[0]?.reason, 'id_of_other_payload');
    assert.equal(r.lost[0]?.payload, 'a');
    assert.ok(r.anomalies[0]?.startsWith('id reused'));
  });
});

describe('checkQueueHistory: duplicates and anomalies', () => {
  it('counts deliveries beyond the first per payload', () => {
    const r = new Builder()
      .push('a', 0, 'ok', '1')
      .push('b', 1, 'ok', '2')
      .pop(2, [['1', 'a', 1]], 'q', 'crash1')
      .pop(1500, [['1', 'a', 2]], 'q', 'crash2')
      .pop(3000, [
        ['1', 'a', 3],
        ['2', 'b', 1],
      ])
      .ack('1', 3002)
      .ack('2', 3003)
      .full('c', '3', 4000)
      .check();
    assertClean(r);
    assert.equal(r.duplicates, 2);
    assert.deepEqual(r.counts.duplicates, { total: 2, redeliveries: 2, extraIds: 0 });
    assert.equal(r.counts.deliveries, 5);
    assert.equal(r.counts.delivered, 3);
    assert.equal(r.counts.maxDeliveryCount, 3);
  });

  it('an acked message delivered again is an anomaly', () => {
    const r = new Builder()
      .push('a', 0, 'ok', '1')
      .pop(2, [['1', 'a', 1]])
      .ack('1', 4)
      .pop(10, [['1', 'a', 2]])
      .check();
    assert.equal(r.ok, false);
    assert.equal(r.counts.anomalies, 1);
    assert.match(r.anomalies[0]!, /^acked message delivered again/);
  });

  it('an id given to two payloads (the id counter went back) is an anomaly', () => {
    const r = new Builder().full('a', '1', 0).full('b', '1', 10).check();
    assert.equal(r.ok, false);
    assert.deepEqual(r.lost, []);
    assert.deepEqual(r.unexpected, []);
    assert.equal(r.counts.anomalies, 1, r.anomalies.join('\n'));
    assert.match(r.anomalies[0]!, /^id reused: queue "q" id 1 .*"a" and "b"/);
  });

  it('a repeated or regressing delivery_count is an anomaly', () => {
    const r = new Builder()
      .push('a', 0, 'ok', '1')
      .pop(2, [['1', 'a', 2]])
      .pop(2000, [['1', 'a', 1]])
      .pop(4000, [['1', 'a', 2]])
      .ack('1', 4002)
      .check();
    assert.equal(r.ok, false);
    assert.ok(
      r.anomalies.some((a) => a.startsWith('repeated delivery_count')),
      r.anomalies.join('\n'),
    );
    assert.ok(
      r.anomalies.some((a) => a.startsWith('delivery_count went back')),
      r.anomalies.join('\n'),
    );
  });
});
