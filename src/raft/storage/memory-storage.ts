// In-memory Raft storage for unit tests and the deterministic simulation, with the same semantics as
// FileStorage. It also hosts the log model both implementations share, so a batch, a truncation or a
// log reset means exactly the same thing whether it is applied to memory or replayed from the WAL.
import type { Entry, HardState, PersistedState, RaftStorage, Snapshot } from '../types.js';

export function emptyHardState(): HardState {
  return { term: 0, vote: null, commit: 0 };
}

/**
 * Rejects a batch that would leave the stored log unrestorable. A batch may start anywhere up to just
 * past the stored log or the snapshot, whichever is further: starting at or below the last index is a
 * follower truncation, starting right after the snapshot follows an installed snapshot.
 */
export function checkBatch(entries: readonly Entry[], lastIndex: number, snapshotIndex: number): void {
  const first = entries[0];
  if (first === undefined) return;
  if (!Number.isSafeInteger(first.index) || first.index < 1) {
    throw new Error(`raft storage: entry index ${first.index} is not a positive integer`);
  }
  const limit = Math.max(lastIndex, snapshotIndex) + 1;
  if (first.index > limit) {
    throw new Error(
      `raft storage: entries start at ${first.index}, leaving a hole after index ${limit - 1} ` +
        `(last stored ${lastIndex}, snapshot ${snapshotIndex})`,
    );
  }
  entries.forEach((e, i) => {
    if (e.index !== first.index + i) {
      throw new Error(
        `raft storage: entries not contiguous: expected index ${first.index + i}, got ${e.index}`,
      );
    }
  });
}

/**
 * A contiguous run of log entries above `floor`, plus the last index of the whole log (which may be at
 * or below the floor once everything was compacted or dropped). Holds whatever entries it is given;
 * callers copy first when they must not share them.
 */
export class LogModel {
  private items: Entry[] = [];
  private last = 0;

  constructor(private floor = 0) {}

  get lastIndex(): number {
    return this.last;
  }

  /** Replaces the stored suffix from `batch[0].index` with `batch` (see checkBatch for what is valid). */
  append(batch: readonly Entry[]): void {
    const head = batch[0];
    if (head === undefined) return;
    // A batch past the end only passes checkBatch when a snapshot covers the hole, so nothing stored
    // before it can be needed again.
    if (head.index > this.last + 1) this.items = [];
    else this.truncateFrom(head.index);
    for (const e of batch) if (e.index > this.floor) this.items.push(e);
    this.last = head.index + batch.length - 1;
  }

  /** Forgets every entry: the log now ends at `index` (a snapshot received from the leader). */
  reset(index: number): void {
    this.items = [];
    this.last = index;
  }

  /** Forgets entries at or below `upTo`, now and in later batches. */
  compact(upTo: number): void {
    if (upTo <= this.floor) return;
    this.floor = upTo;
    const head = this.items[0];
    if (head !== undefined) this.items.splice(0, Math.max(0, upTo - head.index + 1));
  }

  /** The stored entries above `index`; they are contiguous, but may start after `index + 1`. */
  entriesAfter(index: number): Entry[] {
    const head = this.items[0];
    if (head === undefined) return [];
    return this.items.slice(Math.max(0, index - head.index + 1));
  }

  private truncateFrom(index: number): void {
    const head = this.items[0];
    if (head !== undefined) this.items.length = Math.min(this.items.length, Math.max(0, index - head.index));
  }
}

/** Fails loudly when the entries to serve do not continue the snapshot: a restart would diverge. */
export function checkRestorable(entries: readonly Entry[], snapshotIndex: number, where: string): void {
  const first = entries[0];
  if (first !== undefined && first.index !== snapshotIndex + 1) {
    throw new Error(
      `${where}: stored entries start at index ${first.index} but the snapshot ends at ${snapshotIndex}: ` +
        `entries ${snapshotIndex + 1}..${first.index - 1} are missing`,
    );
  }
}

/**
 * Keeps the newest snapshot only. `close()` forgets nothing, so calling `load()` again plays a restart
 * with everything saved so far (there is no notion of unsynced data being lost).
 */
export class MemoryStorage implements RaftStorage {
  private hardState = emptyHardState();
  private snapshot: Snapshot | null = null;
  private readonly log = new LogModel();
  private dirty = false;
  private syncs = 0;

  /** Durability barriers so far: one per synced save that had something to flush, one per snapshot. */
  get fsyncCount(): number {
    return this.syncs;
  }

  // The methods settle through a promise executor so that a thrown error becomes a rejection, as it
  // would from the file implementation, and nothing ever waits on a timer (deterministic simulation).
  load(): Promise<PersistedState> {
    return settle(() => {
      const snapshotIndex = this.snapshotIndex();
      const entries = this.log.entriesAfter(snapshotIndex);
      checkRestorable(entries, snapshotIndex, 'MemoryStorage');
      return {
        hardState: { ...this.hardState },
        snapshot: this.snapshot === null ? null : structuredClone(this.snapshot),
        entries: structuredClone(entries),
      };
    });
  }

  save(hardState: HardState | null, entries: Entry[], sync: boolean): Promise<void> {
    return settle(() => {
      checkBatch(entries, this.log.lastIndex, this.snapshotIndex());
      if (hardState !== null) this.hardState = { ...hardState };
      if (entries.length > 0) this.log.append(structuredClone(entries));
      if (hardState !== null || entries.length > 0) this.dirty = true;
      if (sync && this.dirty) {
        this.syncs++;
        this.dirty = false;
      }
    });
  }

  saveSnapshot(snapshot: Snapshot, replaceLog: boolean): Promise<void> {
    return settle(() => {
      if (replaceLog) this.log.reset(snapshot.meta.index);
      // Ties go to the later save, like a file rename over the same name.
      if (snapshot.meta.index >= this.snapshotIndex()) this.snapshot = structuredClone(snapshot);
      this.syncs++;
    });
  }

  compact(upTo: number): Promise<void> {
    // Never past the snapshot: entries it does not cover are the only copy.
    return settle(() => this.log.compact(Math.min(upTo, this.snapshotIndex())));
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  private snapshotIndex(): number {
    return this.snapshot?.meta.index ?? 0;
  }
}

function settle<T>(fn: () => T): Promise<T> {
  return new Promise<T>((resolve) => resolve(fn()));
}
