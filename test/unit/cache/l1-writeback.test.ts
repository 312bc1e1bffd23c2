// A node's L1 (src/cache/l1.ts) while its memory (Redis) fails or hangs, with dirty lines it may not
// lose: evictions that cannot write back are retried at a bounded rate and the L1 shrinks back once
// memory answers; a flush over a hung Redis ends by its deadline; a stopped node stops writing.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { CacheL1, type LineRec } from '../../../src/cache/l1.js';
import type { CacheHome } from '../../../src/cache/home.js';
import type { CacheLink } from '../../../src/cache/link.js';
import type { Data, Token } from '../../../src/cache/types.js';
import { waitFor } from '../../helpers/wait.js';

/** A memory whose writes fail at once (Redis down), hang (Redis frozen) or land. */
class StubMemory {
  mode: 'down' | 'hung' | 'up' = 'down';
  hangMs = 300;
  writes = 0;
  readonly stored = new Map<string, Data>();

  write = async (key: string, _token: Token, data: Data): Promise<boolean> => {
    this.writes++;
    if (this.mode === 'hung') {
      await delay(this.hangMs);
      throw new Error('Redis call timed out');
    }
    if (this.mode === 'down')
      throw new Error("Stream isn't writeable and enableOfflineQueue options is false");
    this.stored.set(key, data);
    return true;
  };
  read = (): Promise<Data> => Promise.resolve({ present: false });
  readAndFence = (): Promise<Data> => Promise.resolve({ present: false });
  fence = (): Promise<void> => Promise.resolve();
  nextEpoch = (): Promise<number> => Promise.resolve(1);
}

/** An L1 that is its own home for every key, holding `dirty` dirty lines (more than `capacity`). */
function l1With(memory: StubMemory, capacity: number, dirty: number, leaseMs = 2_000): CacheL1 {
  const l1 = new CacheL1({
    nodeId: 'a',
    capacity,
    writePolicy: 'write-back',
    homeOf: () => 'a',
    peers: [],
    home: { currentEpoch: 1 } as unknown as CacheHome,
    link: {} as unknown as CacheLink,
    memory,
    leaseMs,
    messageTimeoutMs: Math.min(1_000, leaseMs / 2),
  });
  const inner = l1 as unknown as { l1: { insert(k: string, v: LineRec): void }; shrinkTo(n: number): void };
  for (let i = 0; i < dirty; i++) {
    inner.l1.insert(`k${i}`, {
      state: 'M',
      dirty: true,
      home: 'a',
      epoch: 1,
      gen: 0,
      seq: i,
      token: [1, i],
      data: { present: true, value: i },
    });
  }
  return l1;
}

const shrink = (l1: CacheL1, n: number): void => (l1 as unknown as { shrinkTo(n: number): void }).shrinkTo(n);

describe('CacheL1 with failing memory', () => {
  it('retries failed evictions with one backing-off timer, and shrinks back once memory answers', async () => {
    const memory = new StubMemory();
    const l1 = l1With(memory, 2, 6);
    shrink(l1, 2); // what makeRoom does when a line comes in
    await delay(1_500);
    // 4 lines over capacity, retried every 0.1, 0.2, 0.4, 0.8 s: a few dozen writes, not thousands.
    assert.ok(memory.writes <= 40, `${memory.writes} write attempts in 1.5 s`);
    assert.equal(l1.size, 6, 'no dirty line is dropped while memory fails');
    memory.mode = 'up';
    await waitFor('the L1 back to its capacity', () => l1.size === 2);
    assert.equal(memory.stored.size, 4);
    await l1.stop();
  });

  it('a flush over a hung Redis ends by its deadline, naming how many lines failed', async () => {
    const memory = new StubMemory();
    memory.mode = 'hung';
    // Lease 100 ms: a transaction deadline of 1.4 s (2 leases + 4 message timeouts + 1 s).
    const l1 = l1With(memory, 100, 20, 100);
    const t0 = performance.now();
    await assert.rejects(l1.flush(), /20 dirty lines could not be written back/);
    const took = performance.now() - t0;
    assert.ok(took < 1_400 + 2 * memory.hangMs, `flush took ${Math.round(took)} ms`);
    memory.mode = 'up';
    assert.equal(await l1.flush(), 20);
    await l1.stop();
  });

  it('a stop writes back what it can by its deadline and then stops writing', async () => {
    const memory = new StubMemory();
    // Dropped by a rejoin while memory was down: written again in the background.
    const l1 = l1With(memory, 100, 0, 100);
    const line: LineRec = {
      state: 'M',
      dirty: true,
      home: 'a',
      epoch: 1,
      gen: 0,
      seq: 1,
      token: [1, 1],
      data: { present: true, value: 'late' },
    };
    (l1 as unknown as { retryWriteBack(k: string, l: LineRec, e: unknown): void }).retryWriteBack(
      'late',
      line,
      new Error('down'),
    );
    await waitFor('a retry', () => memory.writes >= 2);
    const t0 = performance.now();
    await l1.stop();
    assert.ok(performance.now() - t0 < 3_000, 'the stop kept to its deadline');
    const after = memory.writes;
    await delay(600);
    assert.equal(memory.writes, after, 'nothing written after the stop returned');
  });
});
