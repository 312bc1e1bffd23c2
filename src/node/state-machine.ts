// The one state machine a node's Raft group replicates: the lock table, plus the small counting
// machine behind the test hooks (DSS_TEST_HOOKS) so Raft can be exercised with raw commands.
// Routing is by an explicit tag, never by guessing from a command's shape.
import type { Json, StateMachine } from '../raft/types.js';

export const DEBUG_OP = 'debug';

/** Wraps a raw test-hook command so that it reaches the debug machine. */
export function debugCommand(payload: Json): Json {
  return { op: DEBUG_OP, payload };
}

export class NodeStateMachine implements StateMachine {
  constructor(
    private readonly lock: StateMachine,
    private readonly debug: StateMachine,
  ) {}

  apply(command: Json, index: number, term: number): Json {
    if (isObject(command) && command.op === DEBUG_OP) {
      return this.debug.apply(command.payload ?? null, index, term);
    }
    return this.lock.apply(command, index, term);
  }

  snapshot(): Json {
    return { lock: this.lock.snapshot(), debug: this.debug.snapshot() };
  }

  size(): number {
    return this.lock.size() + this.debug.size();
  }

  restore(data: Json): void {
    if (!isObject(data) || data.lock === undefined || data.debug === undefined) {
      throw new Error('node state machine: snapshot lacks its lock or debug part');
    }
    this.lock.restore(data.lock);
    this.debug.restore(data.debug);
  }
}

function isObject(v: Json): v is { [key: string]: Json } {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
