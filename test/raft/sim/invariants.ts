// Global safety bookkeeping for a simulated run: every check here holds in any correct Raft no
// matter what the network, the disks' timing or crashes do. The cluster calls these after every
// event; each violation throws an InvariantViolation naming the property.
import type { Entry, Message, NodeId, RaftStatus, Snapshot } from '../../../src/raft/types.js';
import { type ChainMachine, entryKey, parseChainState } from './state-machine.js';
import type { DurableStore } from './storage.js';
import { violation } from './violation.js';

interface Registered {
  key: string;
  prevTerm: number;
  node: NodeId;
}

interface LogView {
  logEntries(): Entry[];
  logOffset(): { index: number; term: number };
}

/** Per-node memo so an unchanged log prefix is not re-verified on every event. */
export interface LogCheckMemo {
  arr: Entry[] | null;
  offset: number;
  verified: number;
  last: Entry | null;
  /** Highest index of this node's committed prefix already compared with the applied history. */
  commitChecked: number;
}

export function freshMemo(): LogCheckMemo {
  return { arr: null, offset: -1, verified: 0, last: null, commitChecked: 0 };
}

export class SafetyChecker {
  /** Election safety: the one leader of each term, over the whole run. */
  readonly leaders = new Map<number, NodeId>();
  /** Highest term any node has held so far. */
  maxTerm = 0;
  /** Commands a leader accepted / refused (propose returned null). */
  readonly accepted = new Set<string>();
  readonly refused = new Set<string>();

  // The applied history (entries applied anywhere, hence committed), 1-based; [0] is a sentinel.
  private readonly gTerm: number[] = [0];
  private readonly gKey: string[] = [''];
  private readonly gHash: number[] = [0];
  /** Upper bound on the term in which each entry was committed: maxTerm when first applied. */
  private readonly gStamp: number[] = [0];
  private readonly commandAt = new Map<string, number>();
  /** Log matching across all logs ever seen: (index, term) -> payload and the previous entry's term. */
  private readonly registry = new Map<number, Map<number, Registered>>();

  maxApplied(): number {
    return this.gTerm.length - 1;
  }

  indexOfCommand(key: string): number | undefined {
    return this.commandAt.get(key);
  }

  describeApplied(index: number): string {
    return `${index}/${this.gTerm[index]}=${this.gKey[index]}`;
  }

  /**
   * Election safety (at most one leader per term) and, the first time a node is seen leading a
   * term, leader completeness. Returns true for a newly seen leader.
   */
  observe(id: NodeId, st: RaftStatus, log: LogView): boolean {
    if (st.term > this.maxTerm) this.maxTerm = st.term;
    if (st.role !== 'leader') return false;
    const prev = this.leaders.get(st.term);
    if (prev === id) return false;
    if (prev !== undefined)
      violation('election safety', `${id} and ${prev} are both leader of term ${st.term}`);
    this.leaders.set(st.term, id);
    this.checkLeaderCompleteness(id, st.term, log.logOffset(), log.logEntries());
    return true;
  }

  /** Every entry committed in an earlier term is in the new leader's log (or under its snapshot). */
  private checkLeaderCompleteness(
    id: NodeId,
    term: number,
    off: { index: number; term: number },
    entries: Entry[],
  ): void {
    const max = this.maxApplied();
    if (
      off.index > 0 &&
      off.index <= max &&
      this.gStamp[off.index]! < term &&
      off.term !== this.gTerm[off.index]
    ) {
      violation(
        'leader completeness',
        `new leader ${id} (term ${term}) has snapshot ${off.index}/${off.term} but ${this.describeApplied(off.index)} was applied`,
      );
    }
    for (let i = off.index + 1; i <= max; i++) {
      if (this.gStamp[i]! >= term) continue;
      const e = entries[i - off.index - 1];
      if (!e || e.term !== this.gTerm[i] || entryKey(e) !== this.gKey[i]) {
        const has = e ? `${e.index}/${e.term}=${entryKey(e)}` : 'nothing';
        violation(
          'leader completeness',
          `new leader ${id} of term ${term} has ${has} at index ${i}, but ${this.describeApplied(i)} was ` +
            `committed in term <= ${this.gStamp[i]} and applied`,
        );
      }
    }
  }

  /**
   * Log matching, checked in its inductive form over every log ever observed: an (index, term)
   * pair always denotes the same payload and follows the same previous term. Together with
   * contiguity this is "same index and term => identical prefix" for every pair of logs, across
   * time and crashes. Also: a node's committed prefix equals the applied history.
   */
  checkLog(id: NodeId, st: RaftStatus, log: LogView, memo: LogCheckMemo): void {
    const off = log.logOffset();
    const entries = log.logEntries();
    const max = this.maxApplied();
    if (off.index > max) {
      violation(
        'snapshot',
        `${id}'s log starts after ${off.index}, beyond anything applied anywhere (${max})`,
      );
    }
    if (off.index > 0 && off.term !== this.gTerm[off.index]) {
      violation(
        'log matching',
        `${id}'s snapshot ends at ${off.index}/${off.term}, applied history has ${this.describeApplied(off.index)}`,
      );
    }
    let start = 0;
    if (
      memo.arr === entries &&
      memo.offset === off.index &&
      memo.verified > 0 &&
      memo.verified <= entries.length &&
      entries[memo.verified - 1] === memo.last
    ) {
      start = memo.verified;
    }
    let prevTerm = start === 0 ? off.term : entries[start - 1]!.term;
    for (let p = start; p < entries.length; p++) {
      const e = entries[p]!;
      if (e.index !== off.index + 1 + p) {
        violation(
          'log structure',
          `${id}'s log is not contiguous: position ${p} holds index ${e.index} after offset ${off.index}`,
        );
      }
      if (e.term < prevTerm)
        violation('log structure', `${id}'s log has term ${e.term} at ${e.index} after term ${prevTerm}`);
      const key = entryKey(e);
      let byTerm = this.registry.get(e.index);
      if (!byTerm) this.registry.set(e.index, (byTerm = new Map<number, Registered>()));
      const seen = byTerm.get(e.term);
      if (!seen) byTerm.set(e.term, { key, prevTerm, node: id });
      else if (seen.key !== key || seen.prevTerm !== prevTerm) {
        violation(
          'log matching',
          `${id} holds ${e.index}/${e.term}=${key} after term ${prevTerm}, but ${seen.node} held ` +
            `${e.index}/${e.term}=${seen.key} after term ${seen.prevTerm}`,
        );
      }
      prevTerm = e.term;
    }
    memo.arr = entries;
    memo.offset = off.index;
    memo.verified = entries.length;
    memo.last = entries[entries.length - 1] ?? null;

    // Committed prefix agreement: what this node calls committed is what was applied elsewhere.
    if (memo.commitChecked < off.index) memo.commitChecked = off.index;
    const upTo = Math.min(st.commitIndex, max, off.index + entries.length);
    for (let i = memo.commitChecked + 1; i <= upTo; i++) {
      const e = entries[i - off.index - 1]!;
      if (e.term !== this.gTerm[i] || entryKey(e) !== this.gKey[i]) {
        violation(
          'state machine safety',
          `${id} considers ${e.index}/${e.term}=${entryKey(e)} committed, but ${this.describeApplied(i)} was applied`,
        );
      }
      memo.commitChecked = i;
    }
  }

  /** A node applies one committed entry: contiguity, agreement with every other node, no inventions. */
  onApply(id: NodeId, sm: ChainMachine, applied: number, e: Entry): number {
    if (e.index !== applied + 1) {
      violation('state machine safety', `${id} applies index ${e.index} right after ${applied}`);
    }
    const hash = sm.apply(e);
    const key = entryKey(e);
    const max = this.maxApplied();
    if (e.index <= max) {
      if (e.term !== this.gTerm[e.index] || key !== this.gKey[e.index] || hash !== this.gHash[e.index]) {
        violation(
          'state machine safety',
          `${id} applies ${e.index}/${e.term}=${key}, but ${this.describeApplied(e.index)} was applied elsewhere`,
        );
      }
      return e.index;
    }
    if (e.kind === 'command') {
      if (this.refused.has(key))
        violation('state machine safety', `${id} applies ${key}, whose proposal was refused`);
      if (!this.accepted.has(key))
        violation('state machine safety', `${id} applies ${key}, which nobody proposed`);
      const at = this.commandAt.get(key);
      if (at !== undefined) {
        violation('state machine safety', `${id} applies ${key} at ${e.index}, already applied at ${at}`);
      }
      this.commandAt.set(key, e.index);
    }
    this.gTerm.push(e.term);
    this.gKey.push(key);
    this.gHash.push(hash);
    this.gStamp.push(this.maxTerm);
    return e.index;
  }

  /** A snapshot (received, or loaded at restart) is exactly the applied history's state at its index. */
  checkSnapshot(id: NodeId, snap: Snapshot, what: string): void {
    const st = parseChainState(snap.data);
    const i = snap.meta.index;
    if (st.index !== i || st.term !== snap.meta.term) {
      violation(
        'snapshot',
        `${id} ${what}: meta ${i}/${snap.meta.term} but data is the state at ${st.index}/${st.term}`,
      );
    }
    if (i > this.maxApplied()) {
      violation('snapshot', `${id} ${what} at ${i} covers entries nobody applied (max ${this.maxApplied()})`);
    }
    if (this.gTerm[i] !== st.term || this.gHash[i] !== st.hash) {
      violation(
        'state machine safety',
        `${id} ${what} at ${i} differs from the applied history at that index`,
      );
    }
  }

  /** A node restores its state machine from a snapshot delivered in a Ready. */
  onRestore(id: NodeId, snap: Snapshot, applied: number): number {
    if (snap.meta.index <= applied) {
      violation(
        'state machine safety',
        `${id} is told to restore snapshot ${snap.meta.index} after applying ${applied} (would un-apply entries)`,
      );
    }
    this.checkSnapshot(id, snap, 'Ready.snapshot');
    return snap.meta.index;
  }

  /**
   * Messages leave only after the Ready that produced them is durable: whatever a message claims
   * about its sender must hold on the sender's disk at that moment. The exception (`early`) is a
   * leader's append, sent while its own write is under way: its entries may not be on disk yet,
   * but its term and the commit index it announces must be.
   */
  checkSent(id: NodeId, store: DurableStore, m: Message, early = false): void {
    if (m.from !== id || m.to === id)
      violation('messages', `${id} emits ${m.type} from ${m.from} to ${m.to}`);
    const hs = store.hardState;
    const preVote = (m.type === 'vote' || m.type === 'vote_resp') && m.preVote;
    if (!preVote && m.term > hs.term) {
      violation(
        'persist before send',
        `${id} sends ${m.type} of term ${m.term} while its stored term is ${hs.term}`,
      );
    }
    switch (m.type) {
      case 'vote':
        if (!m.preVote && m.term === hs.term && hs.vote !== id) {
          violation(
            'persist before send',
            `${id} asks for votes in term ${m.term} without a stored vote for itself`,
          );
        }
        return;
      case 'vote_resp':
        if (!m.preVote && m.granted && m.term === hs.term && hs.vote !== m.to) {
          violation(
            'persist before send',
            `${id} grants its term-${m.term} vote to ${m.to} but stored vote is ${hs.vote ?? 'none'}`,
          );
        }
        return;
      case 'append_resp':
        // Only same-term acks: an ack of an earlier term may describe a log the node truncated since
        // (a newer leader replaced it before the Ready was persisted); that leader's election
        // already guarantees no quorum of that earlier term can count it.
        if (m.success && m.term === hs.term && m.index > store.lastIndex()) {
          violation(
            'persist before send',
            `${id} acknowledges index ${m.index} but stored only up to ${store.lastIndex()}`,
          );
        }
        return;
      case 'snapshot_resp':
        if (m.index > store.lastIndex()) {
          violation(
            'persist before send',
            `${id} reports index ${m.index} but stored only up to ${store.lastIndex()}`,
          );
        }
        return;
      case 'append': {
        if (m.term !== hs.term) return; // a message of an earlier leadership, harmless like a delayed one
        if (m.commit > store.lastIndex()) {
          violation(
            'persist before send',
            `${id} announces commit ${m.commit} beyond its stored log ${store.lastIndex()}`,
          );
        }
        const check = (index: number, term: number, what: string): void => {
          const stored = store.termAt(index);
          if (stored === undefined ? index > store.snapshotIndex() : stored !== term) {
            violation(
              'persist before send',
              `${id} sends ${what} ${index}/${term} but its disk has ${stored === undefined ? 'nothing' : `term ${stored}`} there`,
            );
          }
        };
        if (early) return;
        if (m.prevLogIndex > 0) check(m.prevLogIndex, m.prevLogTerm, 'prev');
        for (const e of m.entries) check(e.index, e.term, 'entry');
        return;
      }
      default:
        return;
    }
  }
}
