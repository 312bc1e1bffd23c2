// The simulated replicated state machine: a hash chain folded over every applied entry (no-ops
// included), so two nodes that applied different sequences end up with different states and a
// snapshot is just the chain head.
import type { Entry, Json } from '../../../src/raft/types.js';

export interface ChainState {
  index: number;
  term: number;
  hash: number;
}

/** A comparable identity for an entry's payload: its kind plus its command. */
export function entryKey(e: Entry): string {
  if (e.kind === 'noop') return '~noop';
  return typeof e.command === 'string' ? e.command : JSON.stringify(e.command);
}

/** FNV-1a over the previous hash and the entry's index, term and payload. */
export function chainHash(prev: number, index: number, term: number, key: string): number {
  let h = (0x811c9dc5 ^ prev) >>> 0;
  const s = `${index}|${term}|${key}`;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

export class ChainMachine {
  state: ChainState = { index: 0, term: 0, hash: 0 };

  apply(e: Entry): number {
    this.state = {
      index: e.index,
      term: e.term,
      hash: chainHash(this.state.hash, e.index, e.term, entryKey(e)),
    };
    return this.state.hash;
  }

  snapshot(): Json {
    return { index: this.state.index, term: this.state.term, hash: this.state.hash };
  }

  restore(data: Json): void {
    this.state = parseChainState(data);
  }
}

export function parseChainState(data: Json): ChainState {
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw new Error(`snapshot data is not a chain state: ${JSON.stringify(data)}`);
  }
  const { index, term, hash } = data;
  if (typeof index !== 'number' || typeof term !== 'number' || typeof hash !== 'number') {
    throw new Error(`snapshot data is not a chain state: ${JSON.stringify(data)}`);
  }
  return { index, term, hash };
}
