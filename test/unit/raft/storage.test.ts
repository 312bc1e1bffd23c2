// Raft storage: one behavioural suite run against both implementations, file-only tests for the WAL's
// on-disk behaviour (rotation, compaction, torn tails, corruption), and a model-based property test.
import assert from 'node:assert/strict';
import { appendFile, mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { FileStorage, WalCorruptionError } from '../../../src/raft/storage/file-storage.js';
import { MemoryStorage } from '../../../src/raft/storage/memory-storage.js';
import type { Entry, HardState, PersistedState, RaftStorage, Snapshot } from '../../../src/raft/types.js';

type Storage = RaftStorage & { readonly fsyncCount: number };

interface Implementation {
  name: string;
  /** Returns a factory: each call is a process restart over the same stored data. */
  over(dir: string, segmentBytes: number): () => Storage;
}

const implementations: Implementation[] = [
  { name: 'FileStorage', over: (dir, segmentBytes) => () => new FileStorage(dir, { segmentBytes }) },
  {
    name: 'MemoryStorage',
    over: () => {
      const memory = new MemoryStorage();
      return () => memory;
    },
  },
];

const EMPTY: PersistedState = { hardState: { term: 0, vote: null, commit: 0 }, snapshot: null, entries: [] };

/** A node's storage across restarts, inside a temp dir that is removed (with its files) at the end. */
class Node {
  storage: Storage;
  private readonly opened: Storage[] = [];

  constructor(private readonly factory: () => Storage) {
    this.storage = this.track(factory());
  }

  /** Closes the current storage and loads a new one over the same data, as a restarted process would. */
  async restart(): Promise<PersistedState> {
    await this.storage.close();
    this.storage = this.track(this.factory());
    return this.storage.load();
  }

  async closeAll(): Promise<void> {
    for (const s of this.opened) await s.close().catch(() => undefined);
  }

  private track(s: Storage): Storage {
    this.opened.push(s);
    return s;
  }
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'dss-storage-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Runs `fn` with a loaded node of `impl` over its own temp dir. */
async function withNode(
  impl: Implementation,
  segmentBytes: number,
  fn: (node: Node, dir: string) => Promise<void>,
): Promise<void> {
  await withDir(async (dir) => {
    const node = new Node(impl.over(dir, segmentBytes));
    try {
      await node.storage.load();
      await fn(node, dir);
    } finally {
      await node.closeAll();
    }
  });
}

function entries(from: number, to: number, term = 1): Entry[] {
  const out: Entry[] = [];
  for (let index = from; index <= to; index++) {
    out.push({ index, term, kind: 'command', command: { op: 'set', key: `k${index}`, value: index } });
  }
  return out;
}

function hard(term: number, vote: string | null, commit: number): HardState {
  return { term, vote, commit };
}

function snapshot(index: number, term: number, data: string = `state@${index}`): Snapshot {
  return { meta: { index, term, voters: ['a', 'b', 'c'] }, data: { applied: index, data } };
}

const BIG = 64 * 1024 * 1024;
const SMALL = 4 * 1024;

for (const impl of implementations) {
  describe(`${impl.name}: behaviour shared by both implementations`, () => {
    it('a fresh storage loads the empty state', async () => {
      await withNode(impl, BIG, async (node) => {
        assert.deepEqual(await node.restart(), EMPTY);
      });
    });

    it('round-trips hard state and entries across a restart', async () => {
      await withNode(impl, BIG, async (node) => {
        const batch: Entry[] = [
          { index: 1, term: 1, kind: 'noop', command: null },
          {
            index: 2,
            term: 1,
            kind: 'command',
            command: { s: 'ünïcødé ✓ \u2028', n: [1.5, -2, true, null] },
          },
          { index: 3, term: 2, kind: 'command', command: 'plain' },
        ];
        await node.storage.save(hard(2, 'b', 1), batch, true);
        assert.deepEqual(await node.restart(), {
          hardState: hard(2, 'b', 1),
          snapshot: null,
          entries: batch,
        });
      });
    });

    it('replaces the stored suffix when a batch starts inside the log', async () => {
      await withNode(impl, SMALL, async (node) => {
        await node.storage.save(hard(1, 'a', 0), entries(1, 10, 1), true);
        await node.storage.save(hard(2, 'c', 3), entries(6, 8, 2), true);
        let state = await node.restart();
        assert.deepEqual(state.entries, [...entries(1, 5, 1), ...entries(6, 8, 2)]);
        assert.deepEqual(state.hardState, hard(2, 'c', 3));
        // Truncating to the very first index, then appending after a restart.
        await node.storage.save(null, entries(1, 2, 3), true);
        await node.restart();
        await node.storage.save(null, entries(3, 4, 3), true);
        state = await node.restart();
        assert.deepEqual(state.entries, entries(1, 4, 3));
      });
    });

    it('keeps the latest of several hard-state-only saves', async () => {
      await withNode(impl, BIG, async (node) => {
        await node.storage.save(hard(1, null, 0), [], true);
        await node.storage.save(hard(2, 'a', 0), [], false);
        await node.storage.save(hard(3, 'b', 0), [], true);
        assert.deepEqual(await node.restart(), { ...EMPTY, hardState: hard(3, 'b', 0) });
      });
    });

    it('reloads many entries saved across many segment rotations', async () => {
      await withNode(impl, SMALL, async (node) => {
        for (let from = 1; from <= 3000; from += 7) {
          await node.storage.save(hard(1, 'a', from - 1), entries(from, from + 6), from % 2 === 1);
        }
        const state = await node.restart();
        assert.equal(state.entries.length, 3003);
        assert.deepEqual(state.entries, entries(1, 3003));
        assert.deepEqual(state.hardState, hard(1, 'a', 2996));
      });
    });

    it('serves only entries after the snapshot, before and after compaction', async () => {
      await withNode(impl, SMALL, async (node) => {
        await node.storage.save(hard(4, 'a', 450), entries(1, 500, 4), true);
        await node.storage.saveSnapshot(snapshot(300, 4), false);
        assert.deepEqual(await node.restart(), {
          hardState: hard(4, 'a', 450),
          snapshot: snapshot(300, 4),
          entries: entries(301, 500, 4),
        });
        await node.storage.compact(300);
        await node.storage.save(null, entries(501, 510, 4), true);
        assert.deepEqual(await node.restart(), {
          hardState: hard(4, 'a', 450),
          snapshot: snapshot(300, 4),
          entries: entries(301, 510, 4),
        });
      });
    });

    it('never compacts past the stored snapshot', async () => {
      await withNode(impl, SMALL, async (node) => {
        await node.storage.save(hard(1, null, 100), entries(1, 100), true);
        await node.storage.saveSnapshot(snapshot(10, 1), false);
        await node.storage.compact(90);
        const state = await node.restart();
        assert.deepEqual(state.entries, entries(11, 100));
      });
    });

    it('drops the whole log for a snapshot from the leader, even stored entries past it', async () => {
      await withNode(impl, SMALL, async (node) => {
        await node.storage.save(hard(1, 'a', 5), entries(1, 20, 1), true);
        await node.storage.saveSnapshot(snapshot(15, 3), true);
        assert.deepEqual(await node.restart(), {
          hardState: hard(1, 'a', 5),
          snapshot: snapshot(15, 3),
          entries: [],
        });
        await node.storage.save(hard(3, null, 15), entries(16, 18, 3), true);
        assert.deepEqual((await node.restart()).entries, entries(16, 18, 3));
      });
    });

    it('accepts entries right after a snapshot installed beyond the stored log', async () => {
      await withNode(impl, BIG, async (node) => {
        await node.storage.save(hard(1, 'a', 5), entries(1, 5), true);
        await node.storage.saveSnapshot(snapshot(50, 2), true);
        await node.storage.save(hard(2, 'b', 50), entries(51, 52, 2), true);
        assert.deepEqual(await node.restart(), {
          hardState: hard(2, 'b', 50),
          snapshot: snapshot(50, 2),
          entries: entries(51, 52, 2),
        });
      });
    });

    it('accepts entries right after a local snapshot past the stored log', async () => {
      await withNode(impl, BIG, async (node) => {
        await node.storage.save(null, entries(1, 5), true);
        await node.storage.saveSnapshot(snapshot(8, 1), false);
        await node.storage.save(null, entries(9, 10), true);
        assert.deepEqual((await node.restart()).entries, entries(9, 10));
        await node.storage.save(null, entries(11, 11), true);
        assert.deepEqual((await node.restart()).entries, entries(9, 11));
      });
    });

    it('keeps the newest snapshot, a same-index save replacing the older one', async () => {
      await withNode(impl, BIG, async (node) => {
        await node.storage.save(null, entries(1, 40), true);
        await node.storage.saveSnapshot(snapshot(10, 1), false);
        await node.storage.saveSnapshot(snapshot(30, 1), false);
        await node.storage.saveSnapshot(snapshot(20, 1), false);
        assert.deepEqual((await node.restart()).snapshot, snapshot(30, 1));
        await node.storage.saveSnapshot(snapshot(30, 1, 'second'), false);
        const state = await node.restart();
        assert.deepEqual(state.snapshot, snapshot(30, 1, 'second'));
        assert.deepEqual(state.entries, entries(31, 40));
      });
    });

    it('counts one fsync per synced save, whatever the batch size', async () => {
      await withNode(impl, BIG, async (node) => {
        const s = node.storage;
        const delta = async (op: () => Promise<void>): Promise<number> => {
          const before = s.fsyncCount;
          await op();
          return s.fsyncCount - before;
        };
        assert.equal(await delta(() => s.save(hard(1, 'a', 0), entries(1, 1), true)), 1);
        assert.equal(await delta(() => s.save(hard(1, 'a', 1), entries(2, 5001), true)), 1);
        assert.equal(await delta(() => s.save(hard(1, 'a', 2), [], false)), 0);
        assert.equal(await delta(() => s.save(null, entries(5002, 5010), false)), 0);
        // A synced save with nothing new still flushes what the unsynced ones left...
        assert.equal(await delta(() => s.save(null, [], true)), 1);
        // ...and costs nothing once there is nothing to flush.
        assert.equal(await delta(() => s.save(null, [], true)), 0);
      });
    });

    it('rejects a batch that would leave a hole, and stays usable', async () => {
      await withNode(impl, BIG, async (node) => {
        await node.storage.save(null, entries(1, 3), true);
        await assert.rejects(node.storage.save(null, entries(5, 6), true), /hole after index 3/);
        const gappy = [...entries(4, 4), ...entries(6, 6)];
        await assert.rejects(node.storage.save(null, gappy, true), /not contiguous/);
        await node.storage.save(null, entries(4, 4), true);
        assert.deepEqual((await node.restart()).entries, entries(1, 4));
      });
    });

    it("does not share objects with the caller's", async () => {
      await withNode(impl, BIG, async (node) => {
        const batch = entries(1, 2);
        const hs = hard(1, 'a', 1);
        await node.storage.save(hs, batch, true);
        hs.term = 99;
        (batch[0]!.command as { value: number }).value = -1;
        batch.pop();
        const first = await node.storage.load();
        assert.deepEqual(first.entries, entries(1, 2));
        assert.deepEqual(first.hardState, hard(1, 'a', 1));
        first.entries.length = 0;
        first.hardState.commit = 42;
        const second = await node.storage.load();
        assert.deepEqual(second, { hardState: hard(1, 'a', 1), snapshot: null, entries: entries(1, 2) });
      });
    });
  });
}

const file = implementations[0]!;

async function walFiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => n.startsWith('wal-')).sort();
}

async function snapFiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => n.startsWith('snap-')).sort();
}

function flipBits(bytes: Buffer, offset: number, mask: number): void {
  bytes.writeUInt8(bytes.readUInt8(offset) ^ mask, offset);
}

async function lastWal(dir: string): Promise<string> {
  const files = await walFiles(dir);
  return join(dir, files[files.length - 1]!);
}

describe('FileStorage: on disk', () => {
  it('creates a missing directory', async () => {
    await withDir(async (dir) => {
      const nested = join(dir, 'a', 'b');
      const storage = new FileStorage(nested);
      try {
        assert.deepEqual(await storage.load(), EMPTY);
        assert.deepEqual(await walFiles(nested), ['wal-0000000000000001.log']);
      } finally {
        await storage.close();
      }
    });
  });

  it('counts every byte it writes', async () => {
    await withNode(file, BIG, async (node, dir) => {
      const s = node.storage as FileStorage;
      await s.save(hard(1, 'a', 0), entries(1, 20), true);
      await s.save(hard(2, 'a', 0), [], false);
      assert.equal(s.bytesWritten, (await stat(await lastWal(dir))).size);
    });
  });

  it('rotates segments, and compaction deletes whole old ones but never the active one', async () => {
    await withNode(file, SMALL, async (node, dir) => {
      // The only hard-state save happens in the first segment, which compaction deletes.
      await node.storage.save(hard(7, 'c', 0), [], true);
      for (let from = 1; from <= 2000; from += 10)
        await node.storage.save(null, entries(from, from + 9), true);
      const before = await walFiles(dir);
      assert.ok(before.length > 10, `expected many segments, got ${before.length}`);
      await node.storage.saveSnapshot(snapshot(1000, 1), false);
      await node.storage.compact(1000);
      const middle = await walFiles(dir);
      assert.ok(middle.length < before.length && middle.length > 1);
      assert.equal(middle[0]! > before[0]!, true);
      let state = await node.restart();
      assert.deepEqual(state.hardState, hard(7, 'c', 0));
      assert.deepEqual(state.entries, entries(1001, 2000));
      // Covering everything leaves the active segment alone.
      await node.storage.saveSnapshot(snapshot(2000, 1), false);
      await node.storage.compact(2000);
      assert.deepEqual(await walFiles(dir), [before[before.length - 1]!]);
      state = await node.restart();
      assert.deepEqual(state, { hardState: hard(7, 'c', 0), snapshot: snapshot(2000, 1), entries: [] });
    });
  });

  it('keeps only the two newest snapshot files', async () => {
    await withNode(file, BIG, async (node, dir) => {
      await node.storage.save(null, entries(1, 50), true);
      for (const index of [10, 20, 40, 30]) await node.storage.saveSnapshot(snapshot(index, 1), false);
      assert.deepEqual(await snapFiles(dir), ['snap-0000000000000030.json', 'snap-0000000000000040.json']);
    });
  });

  it('falls back to the previous snapshot when the newest fails its checksum', async () => {
    await withNode(file, BIG, async (node, dir) => {
      await node.storage.save(null, entries(1, 50), true);
      await node.storage.saveSnapshot(snapshot(10, 1), false);
      await node.storage.saveSnapshot(snapshot(20, 1), false);
      const newest = join(dir, 'snap-0000000000000020.json');
      const bytes = await readFile(newest);
      flipBits(bytes, bytes.length - 3, 0x01);
      await writeFile(newest, bytes);
      const state = await node.restart();
      assert.deepEqual(state.snapshot, snapshot(10, 1));
      assert.deepEqual(state.entries, entries(11, 50));
    });
  });

  for (const [what, damage] of [
    ['a partial last record', (path: string, size: number) => truncate(path, size - 5)],
    ['garbage appended', (path: string) => appendFile(path, Buffer.from('\x07\x00\x00\x00garbage!!'))],
    ['a zero-filled tail', (path: string) => appendFile(path, Buffer.alloc(4096))],
  ] as const) {
    it(`repairs a torn tail (${what}) and appends cleanly after it`, async () => {
      await withNode(file, BIG, async (node, dir) => {
        await node.storage.save(hard(1, 'a', 0), entries(1, 5), true);
        const whole = (await stat(await lastWal(dir))).size;
        await node.storage.save(hard(1, 'a', 5), entries(6, 8), true);
        const path = await lastWal(dir);
        await node.storage.close();
        const size = (await stat(path)).size;
        await damage(path, size);
        const expectEntries = what === 'a partial last record' ? entries(1, 5) : entries(1, 8);
        const state = await node.restart();
        assert.deepEqual(state.entries, expectEntries);
        if (what === 'a partial last record') {
          assert.deepEqual(state.hardState, hard(1, 'a', 0));
          assert.equal((await stat(path)).size, whole);
        } else {
          assert.equal((await stat(path)).size, size);
        }
        const next = expectEntries.length + 1;
        await node.storage.save(hard(2, 'b', 3), entries(next, next + 1, 2), true);
        assert.deepEqual(await node.restart(), {
          hardState: hard(2, 'b', 3),
          snapshot: null,
          entries: [...expectEntries, ...entries(next, next + 1, 2)],
        });
      });
    });
  }

  it('refuses to load a record damaged in the middle of the newest segment', async () => {
    await withNode(file, BIG, async (node, dir) => {
      await node.storage.save(hard(1, 'a', 0), entries(1, 5), true);
      const path = await lastWal(dir);
      const second = (await stat(path)).size; // where the next record starts
      await node.storage.save(hard(1, 'a', 5), entries(6, 8), true);
      await node.storage.save(hard(1, 'a', 8), entries(9, 9), true);
      await node.storage.close();
      const bytes = await readFile(path);
      flipBits(bytes, second + 20, 0x20);
      await writeFile(path, bytes);
      await assert.rejects(node.restart(), (err: unknown) => {
        assert.ok(err instanceof WalCorruptionError);
        assert.equal(err.file, path);
        assert.equal(err.offset, second);
        assert.match(
          err.message,
          new RegExp(`${path} at byte ${second}: crc mismatch, yet a valid record follows`),
        );
        return true;
      });
    });
  });

  it('refuses a damaged length field rather than cutting off the records after it', async () => {
    await withNode(file, BIG, async (node, dir) => {
      await node.storage.save(null, entries(1, 5), true);
      const path = await lastWal(dir);
      const second = (await stat(path)).size;
      await node.storage.save(null, entries(6, 8), true);
      await node.storage.save(null, entries(9, 9), true);
      await node.storage.close();
      const bytes = await readFile(path);
      bytes[second + 2] = 0x7f; // the record now claims to run far past the end of the file
      await writeFile(path, bytes);
      await assert.rejects(node.restart(), /runs past the end, yet a valid record follows/);
    });
  });

  it('refuses damage in an older segment, even at its very end', async () => {
    await withNode(file, SMALL, async (node, dir) => {
      for (let from = 1; from <= 500; from += 10)
        await node.storage.save(null, entries(from, from + 9), true);
      await node.storage.close();
      const first = join(dir, (await walFiles(dir))[0]!);
      const size = (await stat(first)).size;
      await truncate(first, size - 1);
      await assert.rejects(node.restart(), (err: unknown) => {
        assert.ok(err instanceof WalCorruptionError);
        assert.equal(err.file, first);
        assert.match(err.message, /runs past the end/);
        return true;
      });
    });
  });

  it('refuses a log with a segment missing in the middle, and deletes nothing', async () => {
    await withNode(file, SMALL, async (node, dir) => {
      for (let from = 1; from <= 500; from += 10)
        await node.storage.save(null, entries(from, from + 9), true);
      await node.storage.close();
      const files = await walFiles(dir);
      await rm(join(dir, files[2]!));
      await assert.rejects(node.restart(), /entries 1\.\.\d+ are missing/);
      assert.deepEqual(
        await walFiles(dir),
        files.filter((_, n) => n !== 2),
      );
    });
  });

  it('refuses a log that no longer connects to the snapshot', async () => {
    await withNode(file, SMALL, async (node, dir) => {
      for (let from = 1; from <= 500; from += 10)
        await node.storage.save(null, entries(from, from + 9), true);
      await node.storage.saveSnapshot(snapshot(100, 1), false);
      await node.storage.close();
      // As if a compaction had ignored the snapshot: only the entries' continuity can tell.
      const files = await walFiles(dir);
      for (const name of files.slice(0, -2)) await rm(join(dir, name));
      await assert.rejects(node.restart(), /entries 101\.\.\d+ are missing/);
    });
  });

  it('ignores and deletes segments left over by an interrupted compaction', async () => {
    await withNode(file, SMALL, async (node, dir) => {
      await node.storage.save(hard(3, 'a', 0), [], true);
      for (let from = 1; from <= 500; from += 10)
        await node.storage.save(null, entries(from, from + 9, 3), true);
      await node.storage.save(null, entries(490, 495, 4), true);
      const files = await walFiles(dir);
      const oldest = await readFile(join(dir, files[0]!));
      await node.storage.saveSnapshot(snapshot(400, 3), false);
      await node.storage.compact(400);
      // The deletion of the oldest segment did not survive the crash, but later ones did.
      await writeFile(join(dir, files[0]!), oldest);
      const state = await node.restart();
      assert.deepEqual(state.entries, [...entries(401, 489, 3), ...entries(490, 495, 4)]);
      assert.deepEqual(state.hardState, hard(3, 'a', 0));
      assert.equal((await walFiles(dir)).includes(files[0]!), false);
    });
  });

  it('finishes a log reset cut short by a crash between the snapshot and its WAL record', async () => {
    await withNode(file, BIG, async (node, dir) => {
      await node.storage.save(hard(2, 'a', 3), entries(1, 10, 1), false);
      const path = await lastWal(dir);
      const beforeReset = (await stat(path)).size;
      await node.storage.saveSnapshot(snapshot(6, 2), true);
      await node.storage.close();
      await truncate(path, beforeReset);
      const state = await node.restart();
      assert.deepEqual(state, { hardState: hard(2, 'a', 3), snapshot: snapshot(6, 2), entries: [] });
      assert.ok((await stat(path)).size > beforeReset, 'the reset record is written again');
      await node.storage.save(null, entries(7, 8, 2), true);
      assert.deepEqual((await node.restart()).entries, entries(7, 8, 2));
    });
  });

  it('removes temp files a crash left behind', async () => {
    await withNode(file, BIG, async (node, dir) => {
      await node.storage.close();
      await writeFile(join(dir, 'snap-0000000000000009.json.tmp'), 'half a snap');
      await node.restart();
      assert.deepEqual(await snapFiles(dir), []);
    });
  });

  it('serializes overlapping calls', async () => {
    await withNode(file, SMALL, async (node) => {
      const pending: Promise<void>[] = [];
      for (let from = 1; from <= 300; from += 3)
        pending.push(node.storage.save(null, entries(from, from + 2), true));
      await Promise.all(pending);
      assert.deepEqual((await node.restart()).entries, entries(1, 300));
    });
  });
});

/** The obviously-right reference: every entry in a map, snapshot index and log end tracked by hand. */
class Model {
  hardState: HardState = { term: 0, vote: null, commit: 0 };
  snapshot: Snapshot | null = null;
  last = 0;
  private readonly log = new Map<number, Entry>();

  snapshotIndex(): number {
    return this.snapshot?.meta.index ?? 0;
  }

  save(hs: HardState | null, batch: Entry[]): void {
    if (hs) this.hardState = { ...hs };
    const first = batch[0];
    if (!first) return;
    for (const index of [...this.log.keys()]) if (index >= first.index) this.log.delete(index);
    for (const e of batch) this.log.set(e.index, structuredClone(e));
    this.last = first.index + batch.length - 1;
  }

  saveSnapshot(s: Snapshot, replaceLog: boolean): void {
    if (replaceLog) {
      this.log.clear();
      this.last = s.meta.index;
    }
    if (s.meta.index >= this.snapshotIndex()) this.snapshot = structuredClone(s);
  }

  load(): PersistedState {
    const out: Entry[] = [];
    for (let i = this.snapshotIndex() + 1; this.log.has(i); i++) out.push(this.log.get(i)!);
    return { hardState: { ...this.hardState }, snapshot: this.snapshot, entries: out };
  }
}

type Op =
  | { t: 'save'; back: number; count: number; term: number; withHs: boolean; sync: boolean }
  | { t: 'snapshot'; ahead: number; replaceLog: boolean }
  | { t: 'compact'; ahead: number }
  | { t: 'restart' };

/** Where a snapshot or compaction lands relative to the end of the log: usually inside, sometimes past. */
const aheadArb = fc.oneof(fc.integer({ min: -30, max: 0 }), fc.integer({ min: 1, max: 3 }));

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      t: fc.constant('save' as const),
      // Mostly plain appends; sometimes a truncation.
      back: fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 2, arbitrary: fc.nat({ max: 8 }) }),
      count: fc.nat({ max: 12 }),
      term: fc.nat({ max: 5 }),
      withHs: fc.boolean(),
      sync: fc.boolean(),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ t: fc.constant('snapshot' as const), ahead: aheadArb, replaceLog: fc.boolean() }),
  },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('compact' as const), ahead: aheadArb }) },
  { weight: 1, arbitrary: fc.constant({ t: 'restart' as const }) },
);

/** Plays `ops` against `impl` and the model, comparing what a restart loads at every restart. */
async function playAgainstModel(impl: Implementation, dir: string, ops: Op[]): Promise<void> {
  const node = new Node(impl.over(dir, 300));
  const model = new Model();
  try {
    assert.deepEqual(await node.storage.load(), EMPTY);
    for (const [n, op] of ops.entries()) {
      const end = Math.max(model.last, model.snapshotIndex());
      switch (op.t) {
        case 'save': {
          const from = Math.max(1, end + 1 - op.back);
          const batch = entries(from, from + op.count - 1, op.term);
          const hs = op.withHs ? hard(n, n % 2 ? 'x' : null, n) : null;
          await node.storage.save(hs, batch, op.sync);
          model.save(hs, batch);
          break;
        }
        case 'snapshot': {
          const s = snapshot(Math.max(1, end + op.ahead), n);
          await node.storage.saveSnapshot(s, op.replaceLog);
          model.saveSnapshot(s, op.replaceLog);
          break;
        }
        case 'compact':
          await node.storage.compact(Math.max(0, end + op.ahead));
          break;
        case 'restart':
          assert.deepEqual(await node.restart(), model.load());
          break;
      }
    }
    assert.deepEqual(await node.restart(), model.load());
  } finally {
    await node.closeAll();
  }
}

describe('storage matches a trivial model under random operations', () => {
  for (const [impl, numRuns] of [
    [implementations[0]!, 150],
    [implementations[1]!, 300],
  ] as const) {
    it(impl.name, async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(opArb, { maxLength: 40 }), async (ops) => {
          await withDir((dir) => playAgainstModel(impl, dir, ops));
        }),
        { numRuns },
      );
    });
  }
});
