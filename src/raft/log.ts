// The in-memory Raft log of one node: entries after the compacted prefix, plus the bookkeeping of
// what has been handed to storage (stable), committed and handed out for apply. Pure data structure.
import type { Entry, SnapshotMeta } from './types.js';

export class RaftLog {
  /** Index and term of the entry just before `entries[0]` (the compacted prefix's last entry). */
  private offsetIndex: number;
  private offsetTerm: number;
  private entries: Entry[];
  committed: number;
  /** Highest index handed out for apply (applied once the driver advances). */
  applied: number;
  /** Highest index known persisted by the driver. */
  stableIndex: number;
  /** First index not yet handed to the driver for persistence. */
  unstableFrom: number;

  constructor(snapshot: SnapshotMeta | null, entries: Entry[], commit: number) {
    this.offsetIndex = snapshot?.index ?? 0;
    this.offsetTerm = snapshot?.term ?? 0;
    this.entries = entries.filter((e) => e.index > this.offsetIndex);
    for (let i = 0; i < this.entries.length; i++) {
      if (this.entries[i]!.index !== this.offsetIndex + 1 + i) {
        throw new Error(`raft log: persisted entries are not contiguous after index ${this.offsetIndex}`);
      }
    }
    this.stableIndex = this.lastIndex();
    this.unstableFrom = this.lastIndex() + 1;
    this.applied = this.offsetIndex;
    // A persisted commit can never exceed what this node stored; clamp defensively.
    this.committed = Math.max(this.offsetIndex, Math.min(commit, this.lastIndex()));
  }

  firstIndex(): number {
    return this.offsetIndex + 1;
  }

  lastIndex(): number {
    return this.offsetIndex + this.entries.length;
  }

  lastTerm(): number {
    return this.term(this.lastIndex()) ?? this.offsetTerm;
  }

  offset(): { index: number; term: number } {
    return { index: this.offsetIndex, term: this.offsetTerm };
  }

  /** Term of the entry at `index`, or undefined when it is compacted away or beyond the end. */
  term(index: number): number | undefined {
    if (index === this.offsetIndex) return this.offsetTerm;
    if (index < this.offsetIndex || index > this.lastIndex()) return undefined;
    return this.entries[index - this.offsetIndex - 1]!.term;
  }

  matchTerm(index: number, term: number): boolean {
    return this.term(index) === term;
  }

  entry(index: number): Entry | undefined {
    if (index <= this.offsetIndex || index > this.lastIndex()) return undefined;
    return this.entries[index - this.offsetIndex - 1];
  }

  /** Entries in [lo, hi), which must lie within the held range. */
  slice(lo: number, hi: number): Entry[] {
    if (lo <= this.offsetIndex) throw new Error(`raft log: slice from compacted index ${lo}`);
    return this.entries.slice(
      lo - this.offsetIndex - 1,
      Math.min(hi, this.lastIndex() + 1) - this.offsetIndex - 1,
    );
  }

  all(): Entry[] {
    return this.entries;
  }

  /** Raft's up-to-date check (paper 5.4.1): is a candidate's log at least as new as ours? */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const myTerm = this.lastTerm();
    return lastTerm > myTerm || (lastTerm === myTerm && lastIndex >= this.lastIndex());
  }

  /** Leader-side append of fresh entries at the end. */
  append(entries: Entry[]): void {
    for (const e of entries) {
      if (e.index !== this.lastIndex() + 1)
        throw new Error(`raft log: append of ${e.index} is not contiguous`);
      this.entries.push(e);
    }
  }

  /**
   * Follower-side AppendEntries: if the entry at prevIndex has prevTerm, drop any conflicting suffix,
   * append what is new, advance commit. Returns the last index known to match the leader, or null.
   */
  maybeAppend(prevIndex: number, prevTerm: number, leaderCommit: number, entries: Entry[]): number | null {
    if (!this.matchTerm(prevIndex, prevTerm)) return null;
    const lastNew = prevIndex + entries.length;
    let firstNew = -1;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      if (e.index <= this.offsetIndex) continue; // covered by our snapshot: committed, hence equal
      const mine = this.term(e.index);
      if (mine !== e.term) {
        firstNew = i;
        break;
      }
    }
    if (firstNew >= 0) {
      const from = entries[firstNew]!.index;
      if (from <= this.committed) {
        throw new Error(`raft log: conflict at committed index ${from} (committed ${this.committed})`);
      }
      this.truncateFrom(from);
      for (let i = firstNew; i < entries.length; i++) this.entries.push(entries[i]!);
    }
    this.commitTo(Math.min(leaderCommit, lastNew));
    return lastNew;
  }

  private truncateFrom(index: number): void {
    if (index <= this.lastIndex()) {
      this.entries.length = index - this.offsetIndex - 1;
      this.stableIndex = Math.min(this.stableIndex, index - 1);
      this.unstableFrom = Math.min(this.unstableFrom, index);
    }
  }

  commitTo(index: number): boolean {
    if (index > this.committed) {
      if (index > this.lastIndex())
        throw new Error(`raft log: commit ${index} beyond last ${this.lastIndex()}`);
      this.committed = index;
      return true;
    }
    return false;
  }

  /** First index of the run of entries with `term` that contains `index` (for fast back-off hints). */
  firstIndexOfTerm(index: number, term: number): number {
    let i = index;
    while (i - 1 > this.offsetIndex && i - 1 > this.committed && this.term(i - 1) === term) i--;
    return i;
  }

  /** Largest index <= `index` whose term is <= `term`, scanning back; for the leader's use of hints. */
  lastIndexWithTermAtMost(index: number, term: number): number {
    let i = Math.min(index, this.lastIndex());
    while (i > this.offsetIndex) {
      const t = this.term(i)!;
      if (t <= term) return i;
      i--;
    }
    return this.offsetIndex;
  }

  unstableEntries(): Entry[] {
    if (this.unstableFrom > this.lastIndex()) return [];
    return this.slice(this.unstableFrom, this.lastIndex() + 1);
  }

  markHandedOut(): void {
    this.unstableFrom = this.lastIndex() + 1;
  }

  /** The driver persisted entries up to `index` with `term`; ignore if the log changed meanwhile. */
  stableTo(index: number, term: number): void {
    if (this.term(index) === term && index > this.stableIndex && index < this.unstableFrom) {
      this.stableIndex = index;
    }
  }

  /** Replace the whole log by a snapshot received from the leader. */
  restore(meta: SnapshotMeta): void {
    this.offsetIndex = meta.index;
    this.offsetTerm = meta.term;
    this.entries = [];
    this.committed = meta.index;
    this.applied = meta.index;
    this.stableIndex = meta.index;
    this.unstableFrom = meta.index + 1;
  }

  /** Drop entries up to `index` (already applied and handed to storage). */
  compact(index: number): void {
    if (index <= this.offsetIndex) return;
    if (index > this.applied || index >= this.unstableFrom) {
      throw new Error(`raft log: cannot compact to ${index} (applied ${this.applied})`);
    }
    const term = this.term(index)!;
    this.entries = this.entries.slice(index - this.offsetIndex);
    this.offsetIndex = index;
    this.offsetTerm = term;
  }
}
