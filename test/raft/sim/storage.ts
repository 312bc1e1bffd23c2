// What a node's disk holds, modelled exactly as the driver (src/raft/node.ts) persists a Ready:
// snapshot first (replacing the log), then the hard state and the entries (a suffix replace from
// entries[0].index), all in one atomic write. A crash keeps this and nothing else. It also checks
// that what the core asks to persist is coherent, since a driver could not restart from it otherwise.
import type { Entry, HardState, PersistedState, Ready, Snapshot } from '../../../src/raft/types.js';
import { violation } from './violation.js';

export function cloneJson<T>(v: T): T {
  return v === null || typeof v !== 'object' ? v : structuredClone(v);
}

export function cloneEntry(e: Entry): Entry {
  return { index: e.index, term: e.term, kind: e.kind, command: cloneJson(e.command) };
}

export function cloneSnapshot(s: Snapshot): Snapshot {
  return {
    meta: { index: s.meta.index, term: s.meta.term, voters: s.meta.voters.slice() },
    data: cloneJson(s.data),
  };
}

export class DurableStore {
  hardState: HardState = { term: 0, vote: null, commit: 0 };
  /** The hard state as of the last fsync: Readies with mustSync=false (commit-only) are not synced. */
  private syncedHardState: HardState = { term: 0, vote: null, commit: 0 };
  snapshot: Snapshot | null = null;
  /** Contiguous entries; they may start at or below the snapshot's index (retained for lagging peers). */
  entries: Entry[] = [];

  constructor(readonly nodeId: string) {}

  /** A disk that already holds `p` (for scenarios that start from a given state). */
  static holding(nodeId: string, p: PersistedState): DurableStore {
    const store = new DurableStore(nodeId);
    store.hardState = { ...p.hardState };
    store.syncedHardState = { ...p.hardState };
    store.snapshot = p.snapshot ? cloneSnapshot(p.snapshot) : null;
    store.entries = p.entries.map(cloneEntry);
    return store;
  }

  snapshotIndex(): number {
    return this.snapshot?.meta.index ?? 0;
  }

  private firstEntryIndex(): number {
    return this.entries[0]?.index ?? this.snapshotIndex() + 1;
  }

  lastIndex(): number {
    const last = this.entries[this.entries.length - 1];
    return Math.max(this.snapshotIndex(), last?.index ?? 0);
  }

  entryAt(index: number): Entry | undefined {
    return this.entries[index - this.firstEntryIndex()];
  }

  /** Term of the entry at `index`, if stored (the snapshot's last entry counts). */
  termAt(index: number): number | undefined {
    const e = this.entryAt(index);
    if (e) return e.term;
    if (index === this.snapshotIndex()) return this.snapshot?.meta.term ?? 0;
    return undefined;
  }

  /** Step 1 of handling a Ready. Throws InvariantViolation when the write would be incoherent. */
  persist(rd: Ready): void {
    const who = this.nodeId;
    if (rd.snapshot) this.saveSnapshot(rd.snapshot, true, 'Ready.snapshot');
    const hs = rd.hardState;
    if (hs) {
      const old = this.hardState;
      if (hs.term < old.term)
        violation('durability', `${who} persists term ${hs.term} below stored term ${old.term}`);
      if (hs.term === old.term && old.vote !== null && hs.vote !== old.vote) {
        violation(
          'vote once per term',
          `${who} changes its vote in term ${hs.term} from ${old.vote} to ${hs.vote}`,
        );
      }
      if (hs.commit < old.commit) {
        violation('durability', `${who} persists commit ${hs.commit} below stored commit ${old.commit}`);
      }
      this.hardState = { term: hs.term, vote: hs.vote, commit: hs.commit };
    }
    if (rd.entries.length > 0) {
      const first = rd.entries[0]!.index;
      rd.entries.forEach((e, i) => {
        if (e.index !== first + i || (i > 0 && e.term < rd.entries[i - 1]!.term)) {
          const shown = rd.entries.map((x) => `${x.index}/${x.term}`).join(',');
          violation('storage', `${who} Ready.entries not contiguous with non-decreasing terms: ${shown}`);
        }
      });
      const si = this.snapshotIndex();
      if (first <= si) {
        violation(
          'storage',
          `${who} Ready.entries start at ${first}, inside the stored snapshot (index ${si})`,
        );
      }
      if (first > this.lastIndex() + 1) {
        violation(
          'storage',
          `${who} Ready.entries start at ${first}, leaving a gap after stored ${this.lastIndex()}`,
        );
      }
      const prevTerm = this.termAt(first - 1) ?? 0;
      if (rd.entries[0]!.term < prevTerm) {
        violation(
          'storage',
          `${who} Ready.entries[0] (${first}/${rd.entries[0]!.term}) follows a higher term ${prevTerm}`,
        );
      }
      if (this.entries.length > 0) {
        this.entries.length = Math.max(0, first - this.firstEntryIndex());
      }
      for (const e of rd.entries) this.entries.push(cloneEntry(e));
    }
    if (rd.mustSync || rd.snapshot) this.syncedHardState = { ...this.hardState };
    else if (hs && (hs.term !== this.syncedHardState.term || hs.vote !== this.syncedHardState.vote)) {
      violation('durability', `${who} changes term or vote in a Ready with mustSync=false`);
    }
    if (this.hardState.commit > this.lastIndex()) {
      violation(
        'durability',
        `${who} stored commit ${this.hardState.commit} is beyond its stored log (last index ${this.lastIndex()})`,
      );
    }
  }

  /**
   * Store a snapshot. `replaceLog` (a snapshot received from the leader) discards every stored entry;
   * otherwise (a local snapshot for compaction) the stored entries stay until `compact`.
   */
  saveSnapshot(snap: Snapshot, replaceLog: boolean, what: string): void {
    const si = this.snapshotIndex();
    if (snap.meta.index <= si) {
      violation(
        'storage',
        `${this.nodeId} ${what} at ${snap.meta.index} is not newer than stored snapshot ${si}`,
      );
    }
    if (replaceLog) this.entries = [];
    else if (this.termAt(snap.meta.index) !== snap.meta.term) {
      violation(
        'durability',
        `${this.nodeId} local snapshot at ${snap.meta.index}/${snap.meta.term} disagrees with its stored log ` +
          `(term ${this.termAt(snap.meta.index)})`,
      );
    }
    this.snapshot = cloneSnapshot(snap);
  }

  /** A crash before the OS flushed the last unsynced write: the commit index may go back. */
  loseUnsynced(): void {
    this.hardState = { ...this.syncedHardState };
  }

  /** Drop stored entries with index <= upTo. */
  compact(upTo: number): void {
    const drop = upTo - this.firstEntryIndex() + 1;
    if (drop > 0) this.entries = this.entries.slice(drop);
  }

  /** What a restarted node loads. */
  load(): PersistedState {
    return {
      hardState: { ...this.hardState },
      snapshot: this.snapshot ? cloneSnapshot(this.snapshot) : null,
      entries: this.entries.map(cloneEntry),
    };
  }
}
