// Placeholder state machine until the lock manager exists: it counts applied commands and keeps a
// running digest of them, so tests can check that every replica applied the same commands in the
// same order. Commands carrying a string `id` have it recorded (integration tests look them up).
import { createHash } from 'node:crypto';
import type { Json, StateMachine } from './types.js';

export interface NoopState {
  count: number;
  /** sha256 chained over every applied command's JSON, in order ('' before the first). */
  digest: string;
  ids: string[];
}

export class NoopStateMachine implements StateMachine {
  private state: NoopState = { count: 0, digest: '', ids: [] };

  apply(command: Json): Json {
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
    }
    return { count: s.count };
  }

  snapshot(): Json {
    return { count: this.state.count, digest: this.state.digest, ids: [...this.state.ids] };
  }

  restore(data: Json): void {
    this.state = parseState(data);
  }

  /** A copy of the current state (for the debug endpoint and tests). */
  view(): NoopState {
    return { count: this.state.count, digest: this.state.digest, ids: [...this.state.ids] };
  }
}

function parseState(data: Json): NoopState {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw new Error('noop state machine: snapshot is not an object');
  }
  const { count, digest, ids } = data;
  if (typeof count !== 'number' || typeof digest !== 'string' || !Array.isArray(ids)) {
    throw new Error('noop state machine: snapshot lacks count/digest/ids');
  }
  return { count, digest, ids: ids.filter((x): x is string => typeof x === 'string') };
}
