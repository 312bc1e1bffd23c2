// The cache protocol's pure pieces one by one (SPEC 6): every cell of the node transition table,
// the home's plans, and the seeds' scenarios played on a small cluster made of those pieces (plans
// executed in order, eviction notices delivered at once; the model test covers late notices).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EMPTY_ENTRY, holders, isEmpty, plan } from '../../../src/cache/directory.js';
import { Lru } from '../../../src/cache/lru.js';
import { isValid, transition } from '../../../src/cache/mesi.js';
import type { CacheEvent } from '../../../src/cache/mesi.js';
import type { DirEntry, Json, Line, LineState, PlanStep } from '../../../src/cache/types.js';

const entry = (exclusive: string | null, ...sharers: string[]): DirEntry => ({
  exclusive,
  sharers: new Set(sharers),
});

/** [next, writeBack, supplies, request, notifyHome] for each (state, event). */
const EXPECTED: Record<
  LineState,
  Record<CacheEvent, [LineState, boolean, boolean, string | null, boolean]>
> = {
  M: {
    read: ['M', false, false, null, false],
    write: ['M', false, false, null, false],
    evict: ['I', true, false, null, true],
    snoop_read: ['S', true, true, null, false],
    invalidate: ['I', true, false, null, false],
  },
  E: {
    read: ['E', false, false, null, false],
    write: ['M', false, false, null, false],
    evict: ['I', false, false, null, true],
    snoop_read: ['S', false, true, null, false],
    invalidate: ['I', false, false, null, false],
  },
  S: {
    read: ['S', false, false, null, false],
    write: ['S', false, false, 'write', false],
    evict: ['I', false, false, null, true],
    snoop_read: ['S', false, true, null, false],
    invalidate: ['I', false, false, null, false],
  },
  I: {
    read: ['I', false, false, 'read_miss', false],
    write: ['I', false, false, 'write', false],
    evict: ['I', false, false, null, false],
    snoop_read: ['I', false, false, null, false],
    invalidate: ['I', false, false, null, false],
  },
};

describe('mesi transitions', () => {
  for (const state of ['M', 'E', 'S', 'I'] as const) {
    for (const event of ['read', 'write', 'evict', 'snoop_read', 'invalidate'] as const) {
      it(`${state} on ${event}`, () => {
        const [next, writeBack, supplies, request, notifyHome] = EXPECTED[state][event];
        assert.deepEqual(transition(state, event), { next, writeBack, supplies, request, notifyHome });
      });
    }
  }

  it('only I is invalid', () => {
    assert.deepEqual(
      (['M', 'E', 'S', 'I'] as const).map((s) => isValid(s)),
      [true, true, true, false],
    );
  });
});

describe('directory plans', () => {
  it('read miss with no copy: memory, E', () => {
    const p = plan(EMPTY_ENTRY, { kind: 'read_miss', node: 'A' });
    assert.deepEqual(p.steps, [{ kind: 'grant', node: 'A', state: 'E', data: 'memory' }]);
    assert.deepEqual(p.entry, entry('A'));
  });

  it('read miss with an exclusive holder: snoop it, both S', () => {
    const p = plan(entry('A'), { kind: 'read_miss', node: 'B' });
    assert.deepEqual(p.steps, [
      { kind: 'snoop', node: 'A' },
      { kind: 'grant', node: 'B', state: 'S', data: 'snoop' },
    ]);
    assert.deepEqual(p.entry, entry(null, 'A', 'B'));
  });

  it('read miss with sharers: the smallest sharer supplies', () => {
    const p = plan(entry(null, 'C', 'B'), { kind: 'read_miss', node: 'A' });
    assert.deepEqual(p.steps[0], { kind: 'snoop', node: 'B' });
    assert.deepEqual(holders(p.entry), ['A', 'B', 'C']);
  });

  it('a stale listing of the requester is dropped, not messaged', () => {
    const p = plan(entry('A'), { kind: 'read_miss', node: 'A' });
    assert.deepEqual(p.steps, [{ kind: 'grant', node: 'A', state: 'E', data: 'memory' }]);
    const q = plan(entry(null, 'A', 'B'), { kind: 'read_miss', node: 'A' });
    assert.deepEqual(q.steps[0], { kind: 'snoop', node: 'B' });
    const w = plan(entry('A'), { kind: 'write', node: 'A' });
    assert.deepEqual(w.steps, [{ kind: 'grant', node: 'A', state: 'M', data: 'none' }]);
  });

  it('write: one invalidation per other holder, then M', () => {
    const inval = (steps: readonly PlanStep[]): string[] =>
      steps.filter((s) => s.kind === 'invalidate').map((s) => s.node);
    assert.deepEqual(inval(plan(EMPTY_ENTRY, { kind: 'write', node: 'A' }).steps), []);
    assert.deepEqual(inval(plan(entry(null, 'A', 'B', 'C'), { kind: 'write', node: 'A' }).steps), ['B', 'C']);
    assert.deepEqual(inval(plan(entry(null, 'B', 'C'), { kind: 'write', node: 'A' }).steps), ['B', 'C']);
    const p = plan(entry('B'), { kind: 'write', node: 'A' });
    assert.deepEqual(p.steps, [
      { kind: 'invalidate', node: 'B' },
      { kind: 'grant', node: 'A', state: 'M', data: 'none' },
    ]);
    assert.deepEqual(p.entry, entry('A'));
  });

  it('evict notice delists the node, and an entry nobody holds is empty', () => {
    const p = plan(entry('A'), { kind: 'evict', node: 'A' });
    assert.deepEqual(p.steps, []);
    assert.ok(isEmpty(p.entry));
    assert.deepEqual(plan(entry(null, 'A', 'B'), { kind: 'evict', node: 'A' }).entry, entry(null, 'B'));
    assert.deepEqual(plan(entry(null, 'B'), { kind: 'evict', node: 'C' }).entry, entry(null, 'B'));
  });

  it('refuses an entry with an exclusive holder beside sharers', () => {
    assert.throws(() => plan(entry('A', 'B'), { kind: 'read_miss', node: 'C' }), /beside sharers/);
  });
});

interface ReadResult {
  value: Json;
  state: LineState;
  source: 'l1' | 'peer' | 'memory';
}

/** Nodes with an L1 each, memory, and one home doing everything in order. */
class Mini {
  readonly l1 = new Map<string, Lru<Line>>();
  readonly memory = new Map<string, Json>();
  readonly dir = new Map<string, DirEntry>();
  writeBacks: string[] = [];
  messages = 0;

  constructor(nodes: string[], capacity = 8) {
    for (const n of nodes) this.l1.set(n, new Lru<Line>(capacity));
  }

  state(node: string, key: string): LineState {
    return this.l1.get(node)!.peek(key)?.state ?? 'I';
  }

  read(node: string, key: string): ReadResult {
    const line = this.l1.get(node)!.get(key);
    const tr = transition(line?.state ?? 'I', 'read');
    if (tr.request === null) return { value: line!.value, state: line!.state, source: 'l1' };
    const { state, snooped } = this.transact(node, key, 'read_miss');
    const value = snooped ?? this.memory.get(key) ?? null;
    this.install(node, key, { state: state as 'E' | 'S', value });
    return { value, state, source: snooped === undefined ? 'memory' : 'peer' };
  }

  write(node: string, key: string, value: Json): void {
    const line = this.l1.get(node)!.get(key);
    if (transition(line?.state ?? 'I', 'write').request !== null) this.transact(node, key, 'write');
    this.install(node, key, { state: 'M', value });
  }

  private install(node: string, key: string, line: Line): void {
    const victim = this.l1.get(node)!.set(key, line);
    if (victim === null) return;
    const tr = transition(victim.value.state, 'evict');
    if (tr.writeBack) this.writeBack(node, victim.key, victim.value.value);
    if (tr.notifyHome) this.transact(node, victim.key, 'evict');
  }

  private writeBack(node: string, key: string, value: Json): void {
    this.memory.set(key, value);
    this.writeBacks.push(`${node}:${key}`);
  }

  private transact(
    node: string,
    key: string,
    kind: 'read_miss' | 'write' | 'evict',
  ): { state: LineState; snooped: Json | undefined } {
    const p = plan(this.dir.get(key) ?? EMPTY_ENTRY, { kind, node });
    let snooped: Json | undefined;
    let state: LineState = 'I';
    for (const step of p.steps) {
      if (step.kind === 'grant') {
        state = step.state;
        continue;
      }
      this.messages++;
      const cache = this.l1.get(step.node)!;
      const line = cache.peek(key);
      const tr = transition(line?.state ?? 'I', step.kind === 'snoop' ? 'snoop_read' : step.kind);
      if (line === undefined) continue;
      if (tr.writeBack) this.writeBack(step.node, key, line.value);
      if (tr.supplies) snooped = line.value;
      if (tr.next === 'I') cache.delete(key);
      else cache.update(key, { ...line, state: tr.next });
    }
    this.dir.set(key, p.entry);
    return { state, snooped };
  }
}

describe('seed scenarios', () => {
  it('read miss with no other copy → E, from memory', () => {
    const c = new Mini(['A', 'B']);
    c.memory.set('k', 1);
    assert.deepEqual(c.read('A', 'k'), { value: 1, state: 'E', source: 'memory' });
    assert.deepEqual(c.read('A', 'k'), { value: 1, state: 'E', source: 'l1' });
  });

  it('second reader → both S, data from the peer', () => {
    const c = new Mini(['A', 'B']);
    c.memory.set('k', 1);
    c.read('A', 'k');
    assert.deepEqual(c.read('B', 'k'), { value: 1, state: 'S', source: 'peer' });
    assert.equal(c.state('A', 'k'), 'S');
    assert.deepEqual(c.writeBacks, []);
  });

  it('write on S → writer M, every other copy I, one message per other holder', () => {
    const c = new Mini(['A', 'B', 'C']);
    c.memory.set('k', 1);
    for (const n of ['A', 'B', 'C']) c.read(n, 'k');
    c.messages = 0;
    c.write('A', 'k', 2);
    assert.deepEqual(
      ['A', 'B', 'C'].map((n) => c.state(n, 'k')),
      ['M', 'I', 'I'],
    );
    assert.equal(c.messages, 2);
    assert.equal(c.memory.get('k'), 1, 'write-back policy: memory waits for the M line');
  });

  it('write in E → M with no message', () => {
    const c = new Mini(['A', 'B']);
    c.read('A', 'k');
    c.messages = 0;
    c.write('A', 'k', 5);
    assert.equal(c.state('A', 'k'), 'M');
    assert.equal(c.messages, 0);
  });

  it('read of a key another node holds in M → write-back first, then both S', () => {
    const c = new Mini(['A', 'B']);
    c.write('A', 'k', 'dirty');
    assert.equal(c.memory.has('k'), false);
    assert.deepEqual(c.read('B', 'k'), { value: 'dirty', state: 'S', source: 'peer' });
    assert.deepEqual(c.writeBacks, ['A:k']);
    assert.equal(c.memory.get('k'), 'dirty');
    assert.equal(c.state('A', 'k'), 'S');
  });

  it('A writes v1, B reads, C writes v2, B reads v2', () => {
    const c = new Mini(['A', 'B', 'C']);
    c.write('A', 'k', 'v1');
    assert.equal(c.read('B', 'k').value, 'v1');
    c.write('C', 'k', 'v2');
    assert.deepEqual(
      ['A', 'B', 'C'].map((n) => c.state(n, 'k')),
      ['I', 'I', 'M'],
    );
    assert.deepEqual(c.read('B', 'k'), { value: 'v2', state: 'S', source: 'peer' });
    assert.equal(c.memory.get('k'), 'v2');
  });

  it('LRU eviction of an M line writes it back and delists the node', () => {
    const c = new Mini(['A', 'B'], 1);
    c.write('A', 'x', 'x1');
    c.read('A', 'y');
    assert.equal(c.state('A', 'x'), 'I');
    assert.deepEqual(c.writeBacks, ['A:x']);
    assert.equal(c.memory.get('x'), 'x1');
    assert.ok(isEmpty(c.dir.get('x')!));
    assert.deepEqual(c.read('B', 'x'), { value: 'x1', state: 'E', source: 'memory' });
  });
});
