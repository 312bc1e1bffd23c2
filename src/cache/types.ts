// Types of the cache's pure core (SPEC 6): line states, the lines a node keeps in its L1, the home
// node's directory entry for a key, and the plan the home computes for one bus transaction. Plain
// data only: the service moves these over HTTP and executes the plans.
import type { Json, NodeId } from '../raft/types.js';

export type { Json, NodeId };

/** Largest CACHE_LEASE_MS the configuration accepts. */
export const MAX_CACHE_LEASE_MS = 600_000;

/** Largest per-message timeout a cache node uses (half the lease, capped; see CacheService). */
export const MAX_CACHE_MESSAGE_TIMEOUT_MS = 1_000;

/**
 * A bus transaction's deadline: long enough for one that waits out a dead holder's lease behind
 * another one. The internal API's bound on `deadline_ms` is this for the longest lease, so that no
 * lease the configuration accepts makes every remote miss a 400.
 */
export function homeDeadlineMs(leaseMs: number, messageTimeoutMs: number): number {
  return 2 * leaseMs + 4 * messageTimeoutMs + 1_000;
}

export const MAX_HOME_DEADLINE_MS = homeDeadlineMs(MAX_CACHE_LEASE_MS, MAX_CACHE_MESSAGE_TIMEOUT_MS);

/** MESI state of one key's line at one node. 'I' lines are not kept in the L1: absent means I. */
export type LineState = 'M' | 'E' | 'S' | 'I';

/** The states a line actually stored in an L1 can be in. */
export type HeldState = Exclude<LineState, 'I'>;

/** One L1 line. */
export interface Line {
  readonly state: HeldState;
  readonly value: Json;
  /**
   * Monotonic version of the value when the writer assigns one. Optional because coherence never
   * compares versions (the home's serialization does the ordering); it exists for diagnostics and
   * for the model test, which uses it to tell a stale value from the latest one.
   */
  readonly version?: number;
}

/**
 * What the home node knows about one key. Invariant: `exclusive !== null` implies `sharers` is
 * empty. The entry may list a node that has already dropped the line (its eviction notice is still
 * on the way), never the other way round: every node holding the line is listed.
 */
export interface DirEntry {
  /** The node holding the line in M or E, if any. */
  readonly exclusive: NodeId | null;
  /** Nodes holding the line in S. */
  readonly sharers: ReadonlySet<NodeId>;
}

/** A bus transaction for one key, as the home receives it. */
export type Request =
  /** `node` has no valid line and wants to read. */
  | { readonly kind: 'read_miss'; readonly node: NodeId }
  /** `node` holds the line in S or not at all and wants to write a whole new value. */
  | { readonly kind: 'write'; readonly node: NodeId }
  /** `node` has dropped its line (after writing an M line back). */
  | { readonly kind: 'evict'; readonly node: NodeId };

/** Where a granted line's data comes from. */
export type DataSource =
  /**
   * The answer of the plan's `snoop` step; memory when the snooped node answers that it no longer
   * holds the line (safe: a node writes an M line back before dropping it).
   */
  | 'snoop'
  | 'memory'
  /** A write replaces the whole value, so the writer needs no data. */
  | 'none';

/** One step of a plan. Steps run in order; consecutive `invalidate` steps may run concurrently. */
export type PlanStep =
  /** Ask `node` for the line: it writes back first if in M, answers with its data, and ends in S. */
  | { readonly kind: 'snoop'; readonly node: NodeId }
  /** `node` writes back first if in M, then drops the line. Harmless if it no longer holds it. */
  | { readonly kind: 'invalidate'; readonly node: NodeId }
  /** The requester may install the line in `state`, filled from `data`. Always the last step. */
  | {
      readonly kind: 'grant';
      readonly node: NodeId;
      readonly state: 'M' | 'E' | 'S';
      readonly data: DataSource;
    };

/** The home's answer to one request: what to do, and the entry once every step has been done. */
export interface Plan {
  readonly steps: readonly PlanStep[];
  readonly entry: DirEntry;
}

/** A value as it moves between nodes and memory; absent keys are cached too (a GET is then a 404). */
export interface Data {
  readonly present: boolean;
  readonly value?: Json;
}

/**
 * A fencing token: the home's epoch (raised at every start of the home) and its grant counter,
 * compared lexicographically. Every grant of a line that may write memory gets a larger one.
 */
export type Token = readonly [epoch: number, counter: number];

export function tokenLess(a: Token, b: Token): boolean {
  return a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);
}
