// Model check of the cache's coherence protocol (SPEC 6), built only from the pure modules: three
// nodes, each with an Lru L1, a shared memory, and a home per key running `plan` one transaction at a
// time (the serialization the service provides). The glue here is the least a service can do:
// execute the plan's steps in order, apply each node's `transition`, write back when told, and
// deliver eviction notices late (a notice stays pending until delivered, or until its node's next
// request for that key, which must wait for it), so directories list stale holders.
//
// Every value is tagged with a fresh version (a global counter), so "stale" is a comparison.
// Checked after every operation, for every key:
// 1. at most one node in M or E, and no S copy beside it;
// 2. an M line is newer than memory; E and S lines equal memory (clean);
// 3. memory holds the last written version unless a node in M holds it (then that node does);
// 4. every valid line holds the last written version, and every read returns it;
// 5. the directory lists every holder in its true role (M/E as exclusive, S as sharer), lists a
//    non-holder only while that node's eviction notice is pending, and never lists an exclusive
//    holder beside sharers; no L1 exceeds its capacity;
// 6. Writeback Safety: an M line that leaves M (snoop, invalidation, eviction) is in memory, even
//    when a newer write makes the loss invisible to later reads;
// 7. a write sends exactly one message per other holder the directory lists, reaches every real
//    holder, and with no notice pending for the key that is exactly the number of real holders.
//
// Exhaustive part: one key, three nodes, operations read / write / evict / deliver-notice at each
// node, breadth-first to a fixpoint. States are abstracted by renaming versions to their rank among
// the versions present; the protocol never looks at values, so equal abstractions behave alike and
// the fixpoint is the complete reachable state space (no depth bound). Random part: fast-check
// sequences over 2-3 keys with L1 capacities of 1-2 lines, so LRU evictions happen all the time.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { EMPTY_ENTRY, holders, plan } from '../../../src/cache/directory.js';
import { Lru } from '../../../src/cache/lru.js';
import { transition } from '../../../src/cache/mesi.js';
import type { DirEntry, Line, LineState, Plan, Request } from '../../../src/cache/types.js';

const SEED = 6006;

interface Mem {
  value: string;
  version: number;
}

type Op = 'read' | 'write' | 'evict' | 'deliver';

interface Command {
  op: Op;
  node: string;
  key: string;
}

const notice = (node: string, key: string): string => `${node}\u0000${key}`;

/** Three (or so) nodes, memory, and the homes' directories. Throws on any broken invariant. */
class Cluster {
  readonly l1 = new Map<string, Lru<Line>>();
  readonly memory = new Map<string, Mem>();
  readonly dir = new Map<string, DirEntry>();
  /** Eviction notices sent but not processed by the home yet. */
  readonly pending = new Set<string>();
  /** Last written version per key; keys start in memory at version 0. */
  readonly latest = new Map<string, number>();
  version = 0;
  /** Coverage counters: messages that reached a node no longer holding the line. */
  staleSnoops = 0;
  staleInvalidates = 0;
  lruEvictions = 0;

  constructor(
    readonly nodes: readonly string[],
    readonly keys: readonly string[],
    capacity: number,
  ) {
    for (const n of nodes) this.l1.set(n, new Lru<Line>(capacity));
    for (const k of keys) {
      this.memory.set(k, { value: `${k}@0`, version: 0 });
      this.latest.set(k, 0);
    }
  }

  cache(node: string): Lru<Line> {
    return this.l1.get(node)!;
  }

  stateOf(node: string, key: string): LineState {
    return this.cache(node).peek(key)?.state ?? 'I';
  }

  entry(key: string): DirEntry {
    return this.dir.get(key) ?? EMPTY_ENTRY;
  }

  apply(c: Command): void {
    // Writeback Safety (seed 000): whatever makes a line leave M, its value reaches memory. Unseen in
    // the values a later read returns when a write replaces the line, so it is checked on its own.
    const dirty: Array<{ node: string; key: string; version: number }> = [];
    for (const node of this.nodes) {
      for (const [key, line] of this.cache(node).entries()) {
        if (line.state === 'M') dirty.push({ node, key, version: line.version! });
      }
    }
    switch (c.op) {
      case 'read': {
        const got = this.read(c.node, c.key);
        assert.equal(got.version, this.latest.get(c.key), `read at ${c.node} returned a stale value`);
        assert.equal(got.value, `${c.key}@${got.version}`);
        break;
      }
      case 'write':
        this.write(c.node, c.key);
        break;
      case 'evict':
        this.evict(c.node, c.key);
        break;
      case 'deliver':
        this.deliver(c.node, c.key);
        break;
    }
    for (const d of dirty) {
      if (this.stateOf(d.node, d.key) === 'M') continue;
      const mem = this.memory.get(d.key)!.version;
      assert.ok(mem >= d.version, `M line ${d.key}@${d.version} left ${d.node} without a write-back`);
    }
    for (const k of this.keys) this.check(k);
  }

  read(node: string, key: string): Mem {
    const line = this.cache(node).get(key);
    const tr = transition(line?.state ?? 'I', 'read');
    if (tr.request === null) {
      assert.ok(line !== undefined);
      assert.equal(tr.next, line.state);
      return { value: line.value as string, version: line.version! };
    }
    assert.equal(tr.request, 'read_miss');
    const { grant, data } = this.transact(key, { kind: 'read_miss', node });
    assert.ok(grant.state !== 'M', 'a read is never granted M');
    assert.ok(data !== null, 'a read miss must be granted data');
    this.install(node, key, { state: grant.state, value: data.value, version: data.version });
    return data;
  }

  write(node: string, key: string): void {
    const version = ++this.version;
    const value = `${key}@${version}`;
    const line = this.cache(node).get(key);
    const tr = transition(line?.state ?? 'I', 'write');
    if (tr.request === null) {
      // E/M: no message at all, so the directory must already name this node.
      assert.equal(this.entry(key).exclusive, node);
      assert.equal(tr.next, 'M');
      this.cache(node).set(key, { state: 'M', value, version });
    } else {
      assert.equal(tr.request, 'write');
      const before = this.entry(key);
      const realOthers = this.nodes.filter((n) => n !== node && this.stateOf(n, key) !== 'I');
      const { grant, invalidated } = this.transact(key, { kind: 'write', node });
      assert.equal(grant.state, 'M');
      assert.equal(grant.data, 'none');
      const listedOthers = holders(before).filter((n) => n !== node);
      assert.deepEqual(invalidated, listedOthers, 'one invalidation per other listed holder');
      for (const n of realOthers) assert.ok(invalidated.includes(n), `holder ${n} not invalidated`);
      const anyPending = this.nodes.some((n) => this.pending.has(notice(n, key)));
      if (!anyPending) assert.equal(invalidated.length, realOthers.length);
      this.install(node, key, { state: 'M', value, version });
    }
    this.latest.set(key, version);
  }

  /** An eviction the node chooses (the exhaustive run's stand-in for LRU pressure). */
  evict(node: string, key: string): void {
    const line = this.cache(node).delete(key);
    if (line !== undefined) this.drop(node, key, line);
    else assert.equal(transition('I', 'evict').notifyHome, false, 'no line, nothing to tell the home');
  }

  deliver(node: string, key: string): void {
    if (!this.pending.delete(notice(node, key))) return;
    const p = plan(this.entry(key), { kind: 'evict', node });
    assert.equal(p.steps.length, 0);
    this.store(key, p);
  }

  /** A line has left `node`'s L1: run the eviction transition (write-back, then the notice). */
  private drop(node: string, key: string, line: Line): void {
    const tr = transition(line.state, 'evict');
    assert.equal(tr.next, 'I');
    if (tr.writeBack) this.memory.set(key, { value: line.value as string, version: line.version! });
    if (tr.notifyHome) this.pending.add(notice(node, key));
  }

  private install(node: string, key: string, line: Line): void {
    const victim = this.cache(node).set(key, line);
    if (victim !== null) {
      this.lruEvictions++;
      this.drop(node, victim.key, victim.value);
    }
  }

  private store(key: string, p: Plan): void {
    if (p.entry.exclusive === null && p.entry.sharers.size === 0) this.dir.delete(key);
    else this.dir.set(key, p.entry);
  }

  /** One serialized transaction at the key's home: plan, execute the steps in order, store the entry. */
  private transact(
    key: string,
    req: Request,
  ): {
    grant: { state: 'M' | 'E' | 'S'; data: 'snoop' | 'memory' | 'none' };
    data: Mem | null;
    invalidated: string[];
  } {
    // The requester's own late notice must reach the home before its request does.
    this.deliver(req.node, key);
    const p = plan(this.entry(key), req);
    let snooped: Mem | null = null;
    const invalidated: string[] = [];
    let grant: { state: 'M' | 'E' | 'S'; data: 'snoop' | 'memory' | 'none' } | null = null;
    let data: Mem | null = null;
    p.steps.forEach((step, i) => {
      assert.equal(grant, null, 'grant must be the last step');
      switch (step.kind) {
        case 'snoop':
        case 'invalidate': {
          assert.notEqual(step.node, req.node, 'the requester is never messaged');
          if (step.kind === 'invalidate') invalidated.push(step.node);
          const cache = this.cache(step.node);
          const line = cache.peek(key);
          const tr = transition(line?.state ?? 'I', step.kind === 'snoop' ? 'snoop_read' : 'invalidate');
          assert.equal(tr.request, null);
          assert.equal(tr.notifyHome, false);
          if (line === undefined) {
            if (step.kind === 'snoop') this.staleSnoops++;
            else this.staleInvalidates++;
            assert.equal(tr.supplies || tr.writeBack, false);
            break;
          }
          const mine: Mem = { value: line.value as string, version: line.version! };
          if (tr.writeBack) this.memory.set(key, mine);
          if (tr.supplies) snooped = mine;
          if (tr.next === 'I') cache.delete(key);
          else cache.update(key, { ...line, state: tr.next });
          assert.equal(tr.next, step.kind === 'invalidate' ? 'I' : 'S');
          break;
        }
        case 'grant':
          assert.equal(step.node, req.node);
          assert.equal(i, p.steps.length - 1);
          grant = { state: step.state, data: step.data };
          if (step.data === 'snoop') data = snooped ?? { ...this.memory.get(key)! };
          else if (step.data === 'memory') data = { ...this.memory.get(key)! };
          break;
      }
    });
    assert.ok(grant !== null, 'a miss or write plan ends in a grant');
    this.store(key, p);
    return { grant, data, invalidated };
  }

  check(key: string): void {
    const latest = this.latest.get(key)!;
    const mem = this.memory.get(key)!;
    const entry = this.entry(key);
    const states = this.nodes.map((n) => this.stateOf(n, key));
    const where = (): string => `${key}: ${this.describe(key)}`;
    const exclusive = this.nodes.filter((_, i) => states[i] === 'M' || states[i] === 'E');
    const shared = this.nodes.filter((_, i) => states[i] === 'S');
    assert.ok(exclusive.length <= 1, `more than one M/E copy: ${where()}`);
    assert.ok(exclusive.length === 0 || shared.length === 0, `S beside M/E: ${where()}`);
    let dirty: number | null = null;
    for (const n of this.nodes) {
      const line = this.cache(n).peek(key);
      if (line === undefined) continue;
      if (line.state === 'M') {
        assert.ok(line.version! > mem.version, `M line not newer than memory: ${where()}`);
        dirty = line.version!;
      } else assert.equal(line.version, mem.version, `${line.state} line differs from memory: ${where()}`);
      assert.equal(line.version, latest, `stale valid line at ${n}: ${where()}`);
    }
    assert.equal(dirty ?? mem.version, latest, `last write lost: ${where()}`);
    assert.ok(entry.exclusive === null || entry.sharers.size === 0, `bad entry: ${where()}`);
    this.nodes.forEach((n, i) => {
      const s = states[i]!;
      const listed = entry.exclusive === n ? 'X' : entry.sharers.has(n) ? 'S' : '-';
      if (s === 'M' || s === 'E') assert.equal(listed, 'X', `unlisted exclusive ${n}: ${where()}`);
      else if (s === 'S') assert.equal(listed, 'S', `unlisted sharer ${n}: ${where()}`);
      else if (listed !== '-') assert.ok(this.pending.has(notice(n, key)), `stale listing ${n}: ${where()}`);
    });
    for (const n of this.nodes) assert.ok(this.cache(n).size <= this.cache(n).capacity);
  }

  /** The abstract state of one key: versions renamed to their rank, so equal abstractions act alike. */
  abstract(key: string): string {
    const versions = new Set<number>([this.latest.get(key)!, this.memory.get(key)!.version]);
    for (const n of this.nodes) {
      const v = this.cache(n).peek(key)?.version;
      if (v !== undefined) versions.add(v);
    }
    const rank = new Map([...versions].sort((a, b) => a - b).map((v, i) => [v, i]));
    const parts = this.nodes.map((n) => {
      const line = this.cache(n).peek(key);
      const p = this.pending.has(notice(n, key)) ? '!' : '';
      return line === undefined ? `I${p}` : `${line.state}${rank.get(line.version!)}${p}`;
    });
    const e = this.entry(key);
    return [
      ...parts,
      `mem${rank.get(this.memory.get(key)!.version)}`,
      `last${rank.get(this.latest.get(key)!)}`,
      `x=${e.exclusive ?? '-'}`,
      `s=${[...e.sharers].sort().join('')}`,
    ].join(' ');
  }

  describe(key: string): string {
    return `${this.abstract(key)} pending=${[...this.pending].map((p) => p.replace('\u0000', '/')).join(',')}`;
  }
}

const NODES = ['A', 'B', 'C'] as const;
const OPS: readonly Op[] = ['read', 'write', 'evict', 'deliver'];

describe('MESI model: exhaustive over one key and three nodes', () => {
  it('reaches exactly the legal state combinations, with every invariant after every step', (t) => {
    const key = 'k';
    const replay = (path: readonly Command[]): Cluster => {
      const c = new Cluster(NODES, [key], 1);
      for (const cmd of path) c.apply(cmd);
      return c;
    };
    const initial = replay([]);
    const seen = new Map<string, readonly Command[]>([[initial.abstract(key), []]]);
    let frontier: Array<readonly Command[]> = [[]];
    let depth = 0;
    let transitions = 0;
    let staleSnoops = 0;
    let staleInvalidates = 0;
    const combos = new Set<string>();
    while (frontier.length > 0) {
      const next: Array<readonly Command[]> = [];
      for (const path of frontier) {
        for (const node of NODES) {
          for (const op of OPS) {
            const cmd: Command = { op, node, key };
            let c: Cluster;
            try {
              c = replay([...path, cmd]);
            } catch (err) {
              const trace = [...path, cmd].map((x) => `${x.op}@${x.node}`).join(' ');
              throw new Error(`after ${trace}: ${(err as Error).message}`, { cause: err });
            }
            transitions++;
            staleSnoops += c.staleSnoops;
            staleInvalidates += c.staleInvalidates;
            combos.add(NODES.map((n) => c.stateOf(n, key)).join(''));
            const abs = c.abstract(key);
            if (!seen.has(abs)) {
              seen.set(abs, [...path, cmd]);
              next.push([...path, cmd]);
            }
          }
        }
      }
      if (next.length > 0) depth++;
      frontier = next;
    }
    // 1 (all I) + 3 (one M) + 3 (one E) + 7 (a non-empty set of S): every legal combination.
    assert.deepEqual(
      [...combos].sort(),
      [
        'EII',
        'IEI',
        'IIE',
        'III',
        'IIM',
        'IIS',
        'IMI',
        'ISI',
        'ISS',
        'MII',
        'SII',
        'SIS',
        'SSI',
        'SSS',
      ].sort(),
    );
    // The stale-directory paths were explored too, not just the tidy ones.
    assert.ok(staleSnoops > 0 && staleInvalidates > 0);
    assert.ok([...seen.keys()].some((s) => s.includes('!')));
    t.diagnostic(`${seen.size} abstract states, depth ${depth}, ${transitions} transitions checked`);
  });
});

describe('MESI model: random sequences over several keys under LRU pressure', () => {
  const command = (keys: readonly string[]): fc.Arbitrary<Command> =>
    fc.record({
      // Reads and writes dominate so lines fill the L1s and LRU evicts them.
      op: fc.constantFrom<Op>('read', 'read', 'read', 'write', 'write', 'evict', 'deliver'),
      node: fc.constantFrom(...NODES),
      key: fc.constantFrom(...keys),
    });
  const scenario = fc
    .record({ keyCount: fc.integer({ min: 2, max: 3 }), capacity: fc.integer({ min: 1, max: 2 }) })
    .chain(({ keyCount, capacity }) => {
      const keys = ['a', 'b', 'c'].slice(0, keyCount);
      return fc.record({
        keys: fc.constant(keys),
        capacity: fc.constant(capacity),
        cmds: fc.array(command(keys), { minLength: 1, maxLength: 80, size: 'max' }),
      });
    });

  it('keeps every invariant after every step', (t) => {
    let lruEvictions = 0;
    fc.assert(
      fc.property(scenario, ({ keys, capacity, cmds }) => {
        const c = new Cluster(NODES, keys, capacity);
        for (const cmd of cmds) c.apply(cmd);
        // Every pending notice delivered: the directory then lists exactly the real holders.
        for (const n of NODES) for (const k of keys) c.deliver(n, k);
        for (const k of keys) {
          c.check(k);
          const real = NODES.filter((n) => c.stateOf(n, k) !== 'I');
          assert.deepEqual(holders(c.entry(k)), real);
        }
        lruEvictions += c.lruEvictions;
      }),
      { seed: SEED, numRuns: 400 },
    );
    assert.ok(lruEvictions > 1000, `LRU pressure too low: ${lruEvictions} evictions`);
    t.diagnostic(`${lruEvictions} LRU evictions`);
  });
});
