// The L1's LRU (src/cache/lru.ts): recency order, capacity, the victim handed back on eviction,
// and which calls count as a use (get, set) and which do not (peek, update, has).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Lru } from '../../../src/cache/lru.js';

const keys = (l: Lru<number>): string[] => l.entries().map(([k]) => k);

describe('Lru', () => {
  it('rejects a capacity that is not a positive integer', () => {
    for (const c of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      assert.throws(() => new Lru<number>(c), RangeError);
    }
  });

  it('evicts the least recently used entry and returns it', () => {
    const l = new Lru<number>(2);
    assert.equal(l.set('a', 1), null);
    assert.equal(l.set('b', 2), null);
    assert.deepEqual(l.set('c', 3), { key: 'a', value: 1 });
    assert.deepEqual(keys(l), ['b', 'c']);
    assert.equal(l.size, 2);
    assert.equal(l.has('a'), false);
  });

  it('get touches: the entry read becomes the most recent', () => {
    const l = new Lru<number>(2);
    l.set('a', 1);
    l.set('b', 2);
    assert.equal(l.get('a'), 1);
    assert.deepEqual(l.set('c', 3), { key: 'b', value: 2 });
    assert.deepEqual(keys(l), ['a', 'c']);
    assert.equal(l.get('zz'), undefined);
  });

  it('peek, has and update do not touch; update keeps the place and never inserts', () => {
    const l = new Lru<number>(2);
    l.set('a', 1);
    l.set('b', 2);
    assert.equal(l.peek('a'), 1);
    assert.equal(l.has('a'), true);
    assert.equal(l.update('a', 10), true);
    assert.equal(l.update('zz', 0), false);
    assert.deepEqual(l.entries(), [
      ['a', 10],
      ['b', 2],
    ]);
    assert.deepEqual(l.set('c', 3), { key: 'a', value: 10 });
  });

  it('replacing a key in a full cache touches it and evicts nothing', () => {
    const l = new Lru<number>(2);
    l.set('a', 1);
    l.set('b', 2);
    assert.equal(l.set('a', 11), null);
    assert.deepEqual(keys(l), ['b', 'a']);
    assert.equal(l.get('a'), 11);
  });

  it('delete returns the value and frees room', () => {
    const l = new Lru<number>(1);
    l.set('a', 1);
    assert.equal(l.delete('a'), 1);
    assert.equal(l.delete('a'), undefined);
    assert.equal(l.set('b', 2), null);
  });

  it('victimFor names what set would evict, without changing anything', () => {
    const l = new Lru<number>(2);
    l.set('a', 1);
    assert.equal(l.victimFor('b'), null);
    l.set('b', 2);
    assert.equal(l.victimFor('a'), null);
    assert.deepEqual(l.victimFor('c'), { key: 'a', value: 1 });
    assert.deepEqual(keys(l), ['a', 'b']);
    assert.deepEqual(l.set('c', 3), { key: 'a', value: 1 });
  });

  it('capacity 1 keeps only the last key set', () => {
    const l = new Lru<number>(1);
    l.set('a', 1);
    assert.deepEqual(l.set('b', 2), { key: 'a', value: 1 });
    assert.deepEqual(l.entries(), [['b', 2]]);
  });

  it('matches a naive array model on random operations', () => {
    type Cmd = {
      op: 'get' | 'peek' | 'set' | 'insert' | 'update' | 'delete' | 'victimFor';
      key: string;
      value: number;
    };
    const cmd: fc.Arbitrary<Cmd> = fc.record({
      op: fc.constantFrom<Cmd['op']>('get', 'peek', 'set', 'set', 'insert', 'update', 'delete', 'victimFor'),
      key: fc.constantFrom('a', 'b', 'c', 'd', 'e'),
      value: fc.integer(),
    });
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 4 }), fc.array(cmd, { maxLength: 60 }), (cap, cmds) => {
        const l = new Lru<number>(cap);
        // Least recent first, like entries().
        let model: Array<[string, number]> = [];
        const at = (k: string): number => model.findIndex(([mk]) => mk === k);
        for (const c of cmds) {
          const i = at(c.key);
          switch (c.op) {
            case 'get': {
              const want = i < 0 ? undefined : model[i]![1];
              if (i >= 0) model = [...model.filter((_, j) => j !== i), model[i]!];
              assert.equal(l.get(c.key), want);
              break;
            }
            case 'peek':
              assert.equal(l.peek(c.key), i < 0 ? undefined : model[i]![1]);
              break;
            case 'set': {
              let want: { key: string; value: number } | null = null;
              if (i >= 0) model.splice(i, 1);
              else if (model.length >= cap) {
                const [k, v] = model.shift()!;
                want = { key: k, value: v };
              }
              model.push([c.key, c.value]);
              assert.deepEqual(l.set(c.key, c.value), want);
              break;
            }
            case 'insert':
              // Never evicts, so the model may exceed the capacity until deletes bring it back.
              if (i >= 0) model.splice(i, 1);
              model.push([c.key, c.value]);
              l.insert(c.key, c.value);
              break;
            case 'victimFor': {
              const want = i >= 0 || model.length < cap ? null : { key: model[0]![0], value: model[0]![1] };
              assert.deepEqual(l.victimFor(c.key), want);
              break;
            }
            case 'update':
              if (i >= 0) model[i] = [c.key, c.value];
              assert.equal(l.update(c.key, c.value), i >= 0);
              break;
            case 'delete': {
              const want = i < 0 ? undefined : model[i]![1];
              if (i >= 0) model.splice(i, 1);
              assert.equal(l.delete(c.key), want);
              break;
            }
          }
          assert.deepEqual(l.entries(), model);
          assert.deepEqual(
            [...l.oldestKeys()],
            model.map(([k]) => k),
          );
          assert.equal(l.size, model.length);
        }
      }),
      { seed: 4242, numRuns: 300 },
    );
  });
});
