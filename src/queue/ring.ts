// The queue service's consistent hash ring (SPEC 5). Pure and deterministic: every node builds it
// from the same queue-node ids and vnode count and must agree on every queue's owner without
// talking to the others, so nothing here may depend on input order, locale, clock or randomness.
//
// Positions are the first 4 bytes of md5 read as an unsigned big-endian 32-bit integer, so any tool
// with md5 can reproduce the placement (e.g. to tell an operator which node owns a queue).
// Node `n` owns the virtual nodes `"n:0"` .. `"n:<vnodes-1>"`; a key belongs to the first virtual
// node at or after its position, wrapping past 2^32 - 1 to the lowest one. Two virtual nodes of
// different nodes can land on the same 32-bit position (the birthday bound makes that likely once
// there are tens of thousands of them), so ties are ordered by node id, compared by UTF-16 code
// units rather than localeCompare, whose result depends on the host's ICU data.
import { createHash } from 'node:crypto';

/** SPEC 7 has no QUEUE_VNODES variable; this is the count SPEC 5 names. */
export const DEFAULT_VNODES = 150;

/** Position of a string on the 2^32 ring: md5 of its UTF-8 bytes, first 4 bytes big-endian. */
export function ringPosition(key: string): number {
  return createHash('md5').update(key, 'utf8').digest().readUInt32BE(0);
}

/** The name whose md5 places virtual node `index` of `nodeId`. */
export function vnodeName(nodeId: string, index: number): string {
  return `${nodeId}:${index}`;
}

/** True when node id `a` sorts before `b` in the ring's canonical (code-unit) order. */
function idBefore(a: string, b: string): boolean {
  return a < b;
}

/** Keys whose clockwise lists are remembered; beyond that the memo starts over (queue names are few). */
const WALK_CACHE_MAX = 65_536;

export class HashRing {
  /** Virtual nodes per node. */
  readonly vnodes: number;
  /** Node ids in canonical order, so `nodes()` is the same on every node whatever the input order. */
  readonly #ids: readonly string[];
  /** Virtual node positions, ascending; ties in canonical node-id order. */
  readonly #positions: Uint32Array;
  /** For each entry of #positions, the index of its node in #ids. */
  readonly #owners: Uint32Array;
  /**
   * Full clockwise node lists of recently asked keys: every queue request asks, and an md5 plus a
   * walk per request showed in profiles. The ring never changes, so entries never go stale.
   */
  readonly #walks = new Map<string, readonly string[]>();

  /**
   * Throws RangeError on an empty node list (a ring with no owner is a configuration error the
   * caller should handle before building one), on duplicate ids, and on a vnode count that is not
   * a positive integer.
   */
  constructor(nodeIds: readonly string[], vnodes: number = DEFAULT_VNODES) {
    if (!Number.isSafeInteger(vnodes) || vnodes < 1) {
      throw new RangeError(`HashRing: vnodes must be a positive integer, got ${String(vnodes)}`);
    }
    if (nodeIds.length === 0) throw new RangeError('HashRing: needs at least one node');
    const ids = [...nodeIds].sort((a, b) => (idBefore(a, b) ? -1 : idBefore(b, a) ? 1 : 0));
    for (let i = 1; i < ids.length; i++) {
      if (ids[i] === ids[i - 1])
        throw new RangeError(`HashRing: duplicate node id ${JSON.stringify(ids[i])}`);
    }

    const count = ids.length * vnodes;
    const rawPositions = new Uint32Array(count);
    const rawOwners = new Uint32Array(count);
    for (let n = 0; n < ids.length; n++) {
      const id = ids[n]!;
      for (let v = 0; v < vnodes; v++) {
        rawPositions[n * vnodes + v] = ringPosition(vnodeName(id, v));
        rawOwners[n * vnodes + v] = n;
      }
    }
    // Node indices follow canonical id order, so sorting by (position, node index) is the tie rule.
    const order = new Uint32Array(count);
    for (let i = 0; i < count; i++) order[i] = i;
    order.sort((a, b) => rawPositions[a]! - rawPositions[b]! || rawOwners[a]! - rawOwners[b]!);
    const positions = new Uint32Array(count);
    const owners = new Uint32Array(count);
    for (let i = 0; i < count; i++) {
      positions[i] = rawPositions[order[i]!]!;
      owners[i] = rawOwners[order[i]!]!;
    }

    this.vnodes = vnodes;
    this.#ids = Object.freeze(ids);
    this.#positions = positions;
    this.#owners = owners;
  }

  /** Node ids in canonical order (sorted by code units). */
  nodes(): readonly string[] {
    return this.#ids;
  }

  get size(): number {
    return this.#ids.length;
  }

  has(nodeId: string): boolean {
    return this.#ids.includes(nodeId);
  }

  /** The node owning `key`. */
  owner(key: string): string {
    return this.#ids[this.#owners[this.#firstAtOrAfter(ringPosition(key))]!]!;
  }

  /**
   * Up to `n` distinct nodes (default all), clockwise from the owner: where a key's requests go
   * when the nodes before it in the list are unreachable.
   */
  preferenceList(key: string, n: number = this.#ids.length): string[] {
    if (!Number.isSafeInteger(n) || n < 0) {
      throw new RangeError(`HashRing: preference list length must be a non-negative integer, got ${n}`);
    }
    const out: string[] = [];
    if (n === 0) return out;
    this.#walk(key, (id) => out.push(id) >= n);
    return out;
  }

  /**
   * The first node clockwise from the owner for which `isUp` holds, or null when none does. `isUp`
   * is asked about each node at most once, in clockwise order, and not beyond the answer.
   */
  ownerAmong(key: string, isUp: (nodeId: string) => boolean): string | null {
    for (const id of this.clockwise(key)) if (isUp(id)) return id;
    return null;
  }

  /** Every node, clockwise from `key`'s owner (memoized; do not mutate). */
  clockwise(key: string): readonly string[] {
    let list = this.#walks.get(key);
    if (list === undefined) {
      const out: string[] = [];
      this.#walk(key, (id) => {
        out.push(id);
        return false;
      });
      if (this.#walks.size >= WALK_CACHE_MAX) this.#walks.clear();
      this.#walks.set(key, (list = Object.freeze(out)));
    }
    return list;
  }

  /**
   * Calls `visit` with each distinct node clockwise from `key`'s owner until it returns true or every
   * node has been visited.
   */
  #walk(key: string, visit: (nodeId: string) => boolean): void {
    const total = this.#positions.length;
    const nodeCount = this.#ids.length;
    const seen = new Uint8Array(nodeCount);
    let distinct = 0;
    let i = this.#firstAtOrAfter(ringPosition(key));
    for (let step = 0; step < total && distinct < nodeCount; step++, i = i + 1 === total ? 0 : i + 1) {
      const owner = this.#owners[i]!;
      if (seen[owner] === 1) continue;
      seen[owner] = 1;
      distinct++;
      if (visit(this.#ids[owner]!)) return;
    }
  }

  /** Index of the first virtual node at or after `position`, wrapping to 0 past the last one. */
  #firstAtOrAfter(position: number): number {
    const positions = this.#positions;
    let lo = 0;
    let hi = positions.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (positions[mid]! < position) lo = mid + 1;
      else hi = mid;
    }
    return lo === positions.length ? 0 : lo;
  }
}
