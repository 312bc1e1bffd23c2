// The lock table's replicated commands and their results. Every field a decision depends on is in
// the command (the leader's clock included), so every replica's apply reaches the same result.
// These are type aliases, not interfaces, so that a result is assignable to the Raft `Json` type.

export type LockMode = 'exclusive' | 'shared';

export type Hold = {
  client_id: string;
  mode: LockMode;
  /**
   * Log index of the entry that granted this hold, or the next number up when that entry granted
   * several (shared holders let in together): strictly increasing over all grants.
   */
  fencing_token: number;
  /** Epoch ms on the leader's clock. */
  expires_at: number;
};

export type Waiter = {
  client_id: string;
  mode: LockMode;
  ttl_ms: number;
  /** Log index of the acquire that queued it: its age, for picking the youngest in a deadlock. */
  since: number;
  /** Epoch ms after which the leader gives up on it (wait_ms elapsed). */
  wait_until: number;
};

export type LockState = {
  resource: string;
  holders: Hold[];
  waiters: Waiter[];
};

/** `now` is always the proposing leader's wall clock (epoch ms) when it proposed the command. */
export type LockCommand =
  | {
      op: 'acquire';
      resource: string;
      client_id: string;
      mode: LockMode;
      ttl_ms: number;
      /** 0: fail at once on conflict; > 0: queue as a waiter until `now + wait_ms`. */
      wait_ms: number;
      now: number;
    }
  | { op: 'release'; resource: string; client_id: string; now: number }
  | { op: 'renew'; resource: string; client_id: string; ttl_ms: number; now: number }
  /**
   * Expiry monitor: drop holds on the resource whose expires_at <= now. A named hold renewed since
   * the monitor saw it stays; any other hold on the resource that is expired at `now` goes too.
   */
  | { op: 'expire'; resource: string; client_ids: string[]; now: number }
  /** Waiter deadline passed: remove the waiter if it is still waiting and its wait_until <= now. */
  | { op: 'wait_timeout'; resource: string; client_id: string; now: number }
  /**
   * A new leader's first command (etcd's rule): every hold gets `extend_ms` more, counted from its
   * expiry or from `now` if that is later, so no hold ends early because this leader's clock is
   * ahead of the one that granted it.
   */
  | { op: 'extend_all'; extend_ms: number; now: number };

/** A waiter that became a holder as a side effect of a command (answered at once by the leader). */
export type Grant = {
  resource: string;
  client_id: string;
  mode: LockMode;
  fencing_token: number;
  expires_at: number;
};

export type AcquireResult =
  | { status: 'granted'; hold: Hold }
  | { status: 'queued' }
  | { status: 'conflict'; holders: Hold[] }
  | { status: 'deadlock'; cycle: string[] };

/**
 * `grants` lists every waiter this entry turned into a holder (the acquirer's own earlier waiter
 * included); `result` answers the request that proposed the entry.
 */
export type LockResult =
  | { op: 'acquire'; result: AcquireResult; grants: Grant[]; aborted: Aborted[] }
  | { op: 'release'; released: boolean; grants: Grant[] }
  | { op: 'renew'; renewed: boolean; expires_at?: number }
  | { op: 'expire'; expired: string[]; grants: Grant[] }
  | { op: 'wait_timeout'; removed: boolean; grants: Grant[] }
  | { op: 'extend_all'; extended: number; grants: Grant[]; aborted: Aborted[] };

/** What apply returns for a command that is not a well-formed LockCommand (state unchanged). */
export type LockApplyError = { error: string };

/** A waiter aborted to break a deadlock (it may be another client than the one whose acquire closed the cycle). */
export type Aborted = {
  resource: string;
  client_id: string;
  cycle: string[];
};
