// The home node's side of the protocol (SPEC 6): for one key, its directory entry and the plan of
// each bus transaction. Pure: the service serializes a key's transactions at its home (the node the
// hash ring picks), calls `plan` for one at a time, executes the steps, and stores `plan.entry`.
//
// Rules:
// - Read miss, another node exclusive (M/E): snoop it (an M line is written back first), both end in
//   S. Read miss with sharers: the data comes from a peer (SPEC 6: "data comes from the peer"), the
//   sharer with the smallest id so plans are deterministic. Clean sharers equal memory, so when that
//   sharer answers "not held" (a stale listing) memory serves. No copy anywhere: memory, and E.
// - Write: every other listed holder is invalidated, one message each (an M holder writes back
//   before dropping), then the writer is the only holder, in M. The writer needs no data: a write
//   replaces the whole value.
// - Eviction notice: the node is delisted.
// - The requester is never a holder when it asks (E/M hit locally; S only asks to write, and its own
//   copy is not invalidated), so a listing of it as exclusive, or as a sharer on a read miss, is
//   stale and dropped rather than messaged. A stale listing of another node costs one harmless
//   message; it is never skipped, because the home cannot tell it from a real holder.
import type { DirEntry, NodeId, Plan, PlanStep, Request } from './types.js';

/** The entry of a key nobody holds. Homes need not store it. */
export const EMPTY_ENTRY: DirEntry = Object.freeze({
  exclusive: null,
  sharers: Object.freeze(new Set<NodeId>()),
});

/** Node ids in code-unit order (not localeCompare: the order must not depend on the host's ICU). */
function sorted(ids: Iterable<NodeId>): NodeId[] {
  return [...ids].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** Every node the entry lists as holding the line, sorted. */
export function holders(entry: DirEntry): NodeId[] {
  return entry.exclusive === null ? sorted(entry.sharers) : [entry.exclusive];
}

export function isEmpty(entry: DirEntry): boolean {
  return entry.exclusive === null && entry.sharers.size === 0;
}

/** The entry without `node`. */
export function without(entry: DirEntry, node: NodeId): DirEntry {
  if (entry.exclusive === node) return { exclusive: null, sharers: entry.sharers };
  if (!entry.sharers.has(node)) return entry;
  const sharers = new Set(entry.sharers);
  sharers.delete(node);
  return { exclusive: entry.exclusive, sharers };
}

/**
 * The plan for `req` given the key's current entry (`EMPTY_ENTRY` when the home has none). Throws
 * on an entry that breaks its invariant (an exclusive holder beside sharers): executing any plan for
 * it could hand out a second writable copy, so the home must not guess.
 */
export function plan(entry: DirEntry, req: Request): Plan {
  if (entry.exclusive !== null && entry.sharers.size > 0) {
    throw new Error(`cache directory: exclusive holder ${entry.exclusive} listed beside sharers`);
  }
  switch (req.kind) {
    case 'read_miss':
      return planReadMiss(without(entry, req.node), req.node);
    case 'write':
      return planWrite(entry, req.node);
    case 'evict':
      return { steps: [], entry: without(entry, req.node) };
  }
}

function planReadMiss(entry: DirEntry, reader: NodeId): Plan {
  if (entry.exclusive !== null) {
    const owner = entry.exclusive;
    return {
      steps: [
        { kind: 'snoop', node: owner },
        { kind: 'grant', node: reader, state: 'S', data: 'snoop' },
      ],
      entry: { exclusive: null, sharers: new Set([owner, reader]) },
    };
  }
  const supplier = sorted(entry.sharers)[0];
  if (supplier !== undefined) {
    const sharers = new Set(entry.sharers);
    sharers.add(reader);
    return {
      steps: [
        { kind: 'snoop', node: supplier },
        { kind: 'grant', node: reader, state: 'S', data: 'snoop' },
      ],
      entry: { exclusive: null, sharers },
    };
  }
  return {
    steps: [{ kind: 'grant', node: reader, state: 'E', data: 'memory' }],
    entry: { exclusive: reader, sharers: new Set() },
  };
}

function planWrite(entry: DirEntry, writer: NodeId): Plan {
  const steps: PlanStep[] = [];
  for (const node of holders(entry)) if (node !== writer) steps.push({ kind: 'invalidate', node });
  steps.push({ kind: 'grant', node: writer, state: 'M', data: 'none' });
  return { steps, entry: { exclusive: writer, sharers: new Set() } };
}
