// Placeholder state machine until the lock manager exists: it counts applied commands and keeps a
// running digest of them, so tests can check that every replica applied the same commands in the
// same order. Commands carrying a string `id` have it recorded with its log index (integration tests
// look them up, and crash tests check that every acknowledged command kept its index).
import { createHash } from 'node:crypto';
import type { Json, StateMachine } from './types.js';

export interface NoopState {
  count: number;
  /** sha256 chained over every applied command's JSON, in order ('' before the first). */
  digest: string;
  ids: string[];
  /** indexes[n]: the log index ids[n] was applied at. */
  indexes: number[];
}

export class NoopStateMachine implements StateMachine {
  private state: NoopState = { count: 0, digest: '', ids: [], indexes: [] };

  apply(command: Json, index: number): Json {
    const s = this.state;
    s.count += 1;
    s.digest = createHash('sha256')
      .update(s.digest)
      .update('\n')
      .update(JSON.stringify(command))
      .digest('hex');
    if (
      typeof command === 'object' &&
      command !== null &&
      !Array.isArray(command) &&
      typeof command.id === 'string'
    ) {
      s.ids.push(command.id);
      s.indexes.push(index);
    }
    return { count: s.count };
  }

  snapshot(): Json {
    const s = this.state;
    return { count: s.count, digest: s.digest, ids: [...s.ids], indexes: [...s.indexes] };
  }

  restore(data: Json): void {
    this.state = parseState(data);
  }

  /**
   * 0, though the ids grow with every command: this machine exists for tests and the debug endpoint,
   * whose tests set the snapshot spacing themselves (RAFT_SNAPSHOT_EVERY) to land crashes mid-snapshot.
   */
  size(): number {
    return 0;
  }

  /** A copy of the current state (for the debug endpoint and tests). */
  view(): NoopState {
    const s = this.state;
    return { count: s.count, digest: s.digest, ids: [...s.ids], indexes: [...s.indexes] };
  }
}

function parseState(data: Json): NoopState {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw new Error('noop state machine: snapshot is not an object');
  }
  const { count, digest, ids, indexes } = data;
  if (typeof count !== 'number' || typeof digest !== 'string' || !Array.isArray(ids)) {
    throw new Error('noop state machine: snapshot lacks count/digest/ids');
  }
  // Snapshots written before indexes were recorded have none: 0 stands for "not known".
  const at = Array.isArray(indexes) ? indexes : [];
  const state: NoopState = { count, digest, ids: [], indexes: [] };
  ids.forEach((id, n) => {
    if (typeof id !== 'string') return;
    const index = at[n];
    state.ids.push(id);
    state.indexes.push(typeof index === 'number' ? index : 0);
  });
  return state;
}
