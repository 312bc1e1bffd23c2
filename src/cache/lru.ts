// A node's L1 (SPEC 6): at most `capacity` lines, least recently used evicted first. Pure data
// structure. A Map keeps insertion order and deletes/inserts in O(1), so "move to most recent" is a
// delete plus a set and the least recent entry is the Map's first key.
//
// Eviction is never silent: `set` of a new key into a full cache hands the victim back, and the
// caller must run the eviction transition on it (write an M line back, notify the home). A caller
// that must write back *before* the line leaves the L1 asks `victimFor` first and deletes it itself.

export interface Evicted<V> {
  readonly key: string;
  readonly value: V;
}

export class Lru<V> {
  readonly capacity: number;
  /** Least recently used first. */
  readonly #map = new Map<string, V>();

  /** Throws RangeError unless `capacity` is a positive integer (SPEC 7's CACHE_MAX_SIZE). */
  constructor(capacity: number) {
    if (!Number.isSafeInteger(capacity) || capacity < 1) {
      throw new RangeError(`Lru: capacity must be a positive integer, got ${String(capacity)}`);
    }
    this.capacity = capacity;
  }

  get size(): number {
    return this.#map.size;
  }

  has(key: string): boolean {
    return this.#map.has(key);
  }

  /** The value, marked most recently used: a local access. */
  get(key: string): V | undefined {
    const map = this.#map;
    if (!map.has(key)) return undefined;
    const value = map.get(key) as V;
    map.delete(key);
    map.set(key, value);
    return value;
  }

  /** The value without touching it: remote snoops must not keep a line alive that nobody here uses. */
  peek(key: string): V | undefined {
    return this.#map.get(key);
  }

  /**
   * Stores `value` as most recently used. Replacing a key never evicts. Inserting a new key into a
   * full cache removes the least recently used entry and returns it; otherwise null.
   */
  set(key: string, value: V): Evicted<V> | null {
    const map = this.#map;
    if (map.has(key)) {
      map.delete(key);
      map.set(key, value);
      return null;
    }
    let evicted: Evicted<V> | null = null;
    if (map.size >= this.capacity) {
      const victim = map.keys().next();
      if (victim.done !== true) {
        evicted = { key: victim.value, value: map.get(victim.value) as V };
        map.delete(victim.value);
      }
    }
    map.set(key, value);
    return evicted;
  }

  /**
   * Stores `value` as most recently used without evicting anything, even beyond capacity: for a
   * caller whose victims must be written back before they leave, which makes room itself first.
   */
  insert(key: string, value: V): void {
    const map = this.#map;
    map.delete(key);
    map.set(key, value);
  }

  /** Keys, least recently used first, lazily (eviction looks at the first few only). */
  oldestKeys(): IterableIterator<string> {
    return this.#map.keys();
  }

  /** Replaces an existing key's value in place, keeping its recency (a snoop's state change). */
  update(key: string, value: V): boolean {
    if (!this.#map.has(key)) return false;
    this.#map.set(key, value);
    return true;
  }

  /** Removes `key`; returns its value, if it was there. */
  delete(key: string): V | undefined {
    const map = this.#map;
    if (!map.has(key)) return undefined;
    const value = map.get(key) as V;
    map.delete(key);
    return value;
  }

  /** The entry `set(key, ...)` would evict now, or null if it would evict nothing. */
  victimFor(key: string): Evicted<V> | null {
    const map = this.#map;
    if (map.has(key) || map.size < this.capacity) return null;
    const victim = map.keys().next();
    return victim.done === true ? null : { key: victim.value, value: map.get(victim.value) as V };
  }

  /** Entries, least recently used first (e.g. to list or flush the L1). */
  entries(): Array<[string, V]> {
    return [...this.#map];
  }
}
