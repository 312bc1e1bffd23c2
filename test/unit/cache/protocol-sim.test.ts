// In-process simulation of the cache's coherence protocol (SPEC 6) with the real CacheService,
// CacheHome and CacheL1 of three nodes, and no real I/O:
// - main memory is a Map with the fencing of scripts/write.lua (a write lands only if its token is
//   >= the key's fence, lexicographically, and raises the fence) and of scripts/read.lua (a grant's
//   read raises the fence with it), behind small random delays; home epochs count per node id;
// - the link between nodes calls the target node's handlers (CacheService.handleRequest /
//   handleSnoop / handleLease) after small random delays, honours every call's timeoutMs, turns a
//   handler's error into what HttpCacheLink would give (a DssError with the same code), and can
//   inject faults: a node FROZEN (nothing it sends or receives moves, its memory calls and its
//   clients wait, until it thaws: a GC pause or SIGSTOP); a node UNREACHABLE ('unknown': messages
//   to or from it are lost, or delivered with the answer lost, and the caller times out with an
//   error that is not a DssError; 'refused': ECONNREFUSED, the message never arrived; 'flaky': a
//   third of its messages arrive and then the connection resets); a node's MEMORY failing (a call
//   refused, or applied with its answer lost); a node RESTARTED (its CacheService is dropped without
//   any goodbye, as by SIGKILL, and a fresh one with a new home epoch takes its place);
// - clients (three per node) run random get / put / delete on six keys with an L1 capacity of 3,
//   so that evictions are frequent; every call is recorded with performance.now() around it and the
//   history is checked with checkLinearizable (test/helpers/linearizability.ts): an error saying
//   `outcome: 'unknown'` (or a call cut short by a kill) is a pending call, any other failed write
//   had no effect and is left out, and failed reads are left out;
// - once the clients have stopped and the cluster is quiet, the L1s are checked against each other,
//   the homes' directories and memory (see checkInvariants).
// A broken variant (a link that answers invalidations "not held" without delivering them) proves
// that the checks can fail. The directed tests at the end replay, step by step, interleavings the
// random runs found (or could find) in the protocol.
//
// Every scenario draws its random choices from a seed (printed; CACHE_SIM_SEED=<n> replays the
// choices, though real timers still interleave differently from run to run).
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { describe, it, type TestContext } from 'node:test';
import type {
  HomeGrantWire,
  HomeRequestWire,
  LeaseReplyWire,
  LeaseWire,
  SnoopReplyWire,
  SnoopWire,
} from '../../../src/api/schemas/cache.js';
import type { LineRec } from '../../../src/cache/l1.js';
import type { CacheLink, SnoopKind } from '../../../src/cache/link.js';
import type { Lru } from '../../../src/cache/lru.js';
import type { MainMemory } from '../../../src/cache/memory.js';
import { CacheService } from '../../../src/cache/service.js';
import { tokenLess, type Data, type Json, type NodeId, type Token } from '../../../src/cache/types.js';
import type { CacheWritePolicy } from '../../../src/config/index.js';
import { DssError, isDssError } from '../../../src/errors.js';
import { createLogger } from '../../../src/log.js';
import { HashRing } from '../../../src/queue/ring.js';
import {
  canonicalJson,
  checkLinearizable,
  type CheckResult,
  type Operation,
} from '../../helpers/linearizability.js';

const NODES: readonly NodeId[] = ['n1', 'n2', 'n3'];
const LEASE_MS = 150;
const CAPACITY = 3;
const CLIENTS_PER_NODE = 3;
/** Keys per home node: 6 keys in all, twice the L1 capacity. */
const KEYS_PER_HOME = 2;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------ seeded randomness

class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  /** mulberry32 */
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)]!;
  }
  fork(): Rng {
    return new Rng(Math.floor(this.next() * 2 ** 32));
  }
}

function seedFor(scenario: number): number {
  const fixed = process.env.CACHE_SIM_SEED;
  if (fixed !== undefined && fixed !== '') return (Number(fixed) + scenario) >>> 0;
  return Math.floor(Math.random() * 2 ** 31);
}

// ------------------------------------------------------------------ main memory (write.lua semantics)

class Store {
  /** JSON text per key, as Redis holds it. */
  readonly values = new Map<string, string>();
  readonly fences = new Map<string, Token>();
  private readonly epochs = new Map<string, number>();

  read(key: string): Data {
    const text = this.values.get(key);
    return text === undefined ? { present: false } : { present: true, value: JSON.parse(text) as Json };
  }

  /** read.lua: raises the fence to `token` (never lowers it), then reads. */
  readAndFence(key: string, token: Token): Data {
    const current = this.fences.get(key);
    if (current === undefined || tokenLess(current, token)) this.fences.set(key, [token[0], token[1]]);
    return this.read(key);
  }

  /** write.lua: refused (false) below the fence; otherwise raises the fence and applies `op`. */
  apply(key: string, token: Token, op: 'set' | 'del' | 'fence', text?: string): boolean {
    const current = this.fences.get(key);
    if (current !== undefined && tokenLess(token, current)) return false;
    this.fences.set(key, [token[0], token[1]]);
    if (op === 'set') this.values.set(key, text!);
    else if (op === 'del') this.values.delete(key);
    return true;
  }

  nextEpoch(nodeId: string): number {
    const e = (this.epochs.get(nodeId) ?? 0) + 1;
    this.epochs.set(nodeId, e);
    return e;
  }
}

// ------------------------------------------------------------------ one incarnation of a node

interface Instance {
  readonly node: NodeId;
  readonly incarnation: number;
  svc: CacheService;
  alive: boolean;
  /** Resolves when this incarnation is killed. */
  readonly killed: Promise<void>;
  kill(): void;
}

/** What the checks read of an L1 beyond its public surface. */
interface L1Internals {
  l1: Lru<LineRec>;
  servable(line: LineRec): boolean;
  links: Map<NodeId, { joined: boolean }>;
}
const internals = (svc: CacheService): L1Internals => svc.l1 as unknown as L1Internals;

/**
 * 'unknown': every message to or from the node is lost (or delivered with its answer lost) and the
 * caller times out; 'refused': the caller gets ECONNREFUSED at once; 'flaky': a third of the messages
 * are delivered and then the connection resets (ECONNRESET: outcome unknown), the rest go through.
 */
type Unreachable = 'unknown' | 'refused' | 'flaky';
type CallKind = 'request' | 'snoop' | 'lease';

function refusedError(to: NodeId): Error {
  return Object.assign(new Error(`connect ECONNREFUSED (simulated, ${to})`), { code: 'ECONNREFUSED' });
}

class SimTimeout extends Error {
  constructor(to: NodeId, ms: number) {
    super(`simulated: no answer from ${to} within ${ms} ms`);
    this.name = 'TimeoutError';
  }
}

/** What HttpCacheLink makes of a peer's error answer: the same code, known outcome. */
function wireError(to: NodeId, e: unknown): DssError {
  if (isDssError(e)) {
    return new DssError(e.code, `cache node ${to}: ${e.message}`, { details: { peer_status: e.status } });
  }
  return new DssError('internal', `cache node ${to} answered 500: ${String(e)}`, {
    details: { peer_status: 500 },
  });
}

class Sim {
  readonly ring = new HashRing([...NODES]);
  readonly store = new Store();
  private readonly current = new Map<NodeId, Instance>();
  private readonly frozen = new Map<NodeId, { thawed: Promise<void>; thaw: () => void }>();
  private readonly unreachable = new Map<NodeId, Unreachable>();
  private readonly memoryFaults = new Set<NodeId>();
  private incarnations = 0;
  /** Broken variant: invalidations are answered "not held" and never delivered. */
  dropInvalidations = false;
  /** Directed tests: hold or fail chosen memory calls (see MemoryHook). */
  memoryHook: MemoryHook | null = null;
  /** Directed tests: the next request from `from` to `to` is delivered, then the connection resets. */
  resetNextRequest: { from: NodeId; to: NodeId } | null = null;
  /**
   * Directed tests: lease messages (renewals, joins) of this node are lost, and nothing else of it:
   * its lease runs out in its own time, neither renewed nor refused.
   */
  loseLeasesOf: NodeId | null = null;
  /** Directed tests: snoops and invalidations to this node are lost; all else goes through. */
  loseSnoopsTo: NodeId | null = null;
  readonly counters = { messages: 0, lost: 0, refused: 0, resets: 0, timeouts: 0, memoryErrors: 0 };
  /** What the services count (CacheMetricsSink), summed over nodes. */
  readonly metrics = { hits: 0, misses: 0, invalidations: 0, writebacks: 0, revocations: 0 };
  /** Warnings the services log (home gave up on a holder, a dirty value fenced out...), by message. */
  readonly events = new Map<string, number>();

  constructor(
    private readonly rng: Rng,
    readonly policy: CacheWritePolicy,
    /** How often a memory call takes 10-40 ms (a slow Redis) instead of 0-3 ms. */
    private readonly slowMemory = 0,
  ) {}

  async start(): Promise<void> {
    for (const node of NODES) this.spawn(node);
    await this.waitReady(5_000);
  }

  async waitReady(timeoutMs: number): Promise<void> {
    const until = performance.now() + timeoutMs;
    for (;;) {
      const ready = NODES.every((n) => {
        const svc = this.instance(n).svc;
        return svc.ready() && [...internals(svc).links.values()].every((l) => l.joined);
      });
      if (ready) return;
      if (performance.now() > until) throw new Error('simulated cluster did not get ready');
      await sleep(10);
    }
  }

  instance(node: NodeId): Instance {
    return this.current.get(node)!;
  }

  private spawn(node: NodeId): Instance {
    let kill!: () => void;
    const killed = new Promise<void>((r) => (kill = r));
    const inst: Instance = {
      node,
      incarnation: ++this.incarnations,
      svc: undefined as unknown as CacheService,
      alive: true,
      killed,
      kill: () => {
        inst.alive = false;
        kill();
      },
    };
    inst.svc = new CacheService({
      nodeId: node,
      ring: this.ring,
      link: new SimLink(this, inst),
      memory: new SimMemory(this, inst),
      capacity: CAPACITY,
      writePolicy: this.policy,
      leaseMs: LEASE_MS,
      metrics: {
        hit: () => void this.metrics.hits++,
        miss: () => void this.metrics.misses++,
        invalidation: () => void this.metrics.invalidations++,
        writeback: () => void this.metrics.writebacks++,
        revocation: () => void this.metrics.revocations++,
        message: () => undefined,
      },
      logger: createLogger({
        level: 'warn',
        nodeId: node,
        destination: {
          write: (text: string) => {
            const msg = (JSON.parse(text) as { msg?: string }).msg ?? text;
            this.events.set(msg, (this.events.get(msg) ?? 0) + 1);
          },
        },
      }),
    });
    this.current.set(node, inst);
    inst.svc.start();
    return inst;
  }

  /** SIGKILL and restart: the old incarnation vanishes mid-whatever, a fresh one takes its place. */
  restart(node: NodeId): Instance {
    const old = this.instance(node);
    old.kill();
    // Only to stop its lease timer: everything it would send or write is refused now that it is dead.
    void old.svc.stop().catch(() => undefined);
    return this.spawn(node);
  }

  async stopAll(): Promise<void> {
    await Promise.all(NODES.map((n) => this.instance(n).svc.stop()));
  }

  // ---- faults

  freeze(node: NodeId): void {
    if (this.frozen.has(node)) return;
    let thaw!: () => void;
    const thawed = new Promise<void>((r) => (thaw = r));
    this.frozen.set(node, { thawed, thaw });
  }

  thaw(node: NodeId): void {
    const f = this.frozen.get(node);
    this.frozen.delete(node);
    f?.thaw();
  }

  cut(node: NodeId, mode: Unreachable): void {
    this.unreachable.set(node, mode);
  }

  heal(node: NodeId): void {
    this.unreachable.delete(node);
  }

  clearFaults(): void {
    for (const n of NODES) {
      this.thaw(n);
      this.heal(n);
    }
    this.memoryFaults.clear();
  }

  /** Memory calls of `node` fail now and then, before reaching Redis or with the answer lost. */
  breakMemory(node: NodeId): void {
    this.memoryFaults.add(node);
  }

  fixMemory(node: NodeId): void {
    this.memoryFaults.delete(node);
  }

  /** Waits while `node` is frozen. */
  async unfrozen(node: NodeId): Promise<void> {
    for (let f = this.frozen.get(node); f !== undefined; f = this.frozen.get(node)) await f.thawed;
  }

  private cutBetween(a: NodeId, b: NodeId): Unreachable | null {
    return this.unreachable.get(a) ?? this.unreachable.get(b) ?? null;
  }

  /** A small random delay: the next turn of the event loop, or 1-3 ms. */
  delay(): Promise<void> {
    if (this.rng.chance(0.4)) return new Promise((r) => setImmediate(r));
    return sleep(this.rng.int(1, 3));
  }

  memoryDelay(): Promise<void> {
    if (this.rng.chance(this.slowMemory)) return sleep(this.rng.int(10, 40));
    return this.delay();
  }

  // ---- the network

  send<T>(
    from: Instance,
    to: NodeId,
    kind: CallKind,
    handler: (svc: CacheService) => Promise<T>,
    timeoutMs: number,
  ): Promise<T> {
    this.counters.messages++;
    // A dead process sends nothing (only its stop() still tries, and must not hang).
    if (!from.alive) return Promise.reject(refusedError(to));
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const settle = (deliver: () => void): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        // The caller sees the outcome once it runs again. A dead one gets an error, only so that
        // its leftover code unwinds: nothing it does reaches anyone any more.
        if (!from.alive) reject(refusedError(to));
        else
          void this.unfrozen(from.node).then(() => {
            if (from.alive) deliver();
            else reject(refusedError(to));
          });
      };
      const timer = setTimeout(() => {
        this.counters.timeouts++;
        settle(() => reject(new SimTimeout(to, timeoutMs)));
      }, timeoutMs);

      void (async () => {
        await this.unfrozen(from.node); // a frozen node sends nothing
        const cut = this.cutBetween(from.node, to);
        if (cut === 'refused') {
          this.counters.refused++;
          await this.delay();
          settle(() => reject(refusedError(to)));
          return;
        }
        if (
          (kind === 'lease' && this.loseLeasesOf === from.node) ||
          (kind === 'snoop' && this.loseSnoopsTo === to)
        ) {
          this.counters.lost++;
          return; // the caller times out
        }
        let replyLost = false;
        if (cut === 'unknown') {
          this.counters.lost++;
          if (this.rng.chance(0.5)) return; // the request is lost; the caller times out
          replyLost = true; // it arrives, the answer does not
        }
        let reset = cut === 'flaky' && this.rng.chance(1 / 3);
        const r = this.resetNextRequest;
        if (kind === 'request' && r !== null && r.from === from.node && r.to === to) {
          this.resetNextRequest = null;
          reset = true;
        }
        if (reset) this.counters.resets++;
        await this.delay();
        await this.unfrozen(to); // handlers of a frozen node do not run
        if (!replyLost && this.cutBetween(from.node, to) === 'unknown') return; // lost on the way
        if (this.cutBetween(from.node, to) === 'refused') {
          settle(() => reject(refusedError(to))); // never arrived
          return;
        }
        const target = this.instance(to);
        let outcome: { ok: true; value: T } | { ok: false; error: DssError };
        try {
          outcome = { ok: true, value: structuredClone(await handler(target.svc)) };
        } catch (e) {
          outcome = { ok: false, error: wireError(to, e) };
        }
        if (reset) {
          settle(() =>
            reject(Object.assign(new Error('socket hang up (simulated)'), { code: 'ECONNRESET' })),
          );
          return;
        }
        await this.unfrozen(to);
        if (!target.alive) return; // the process that was answering died
        await this.delay();
        const cutNow = this.cutBetween(from.node, to);
        if (replyLost || cutNow === 'unknown' || cutNow === 'refused') return; // the answer is lost
        settle(() => (outcome.ok ? resolve(outcome.value) : reject(outcome.error)));
      })();
    });
  }

  /** One memory call of `inst`: waits while its node is frozen; a dead process reaches nothing. */
  async memory<T>(inst: Instance, fn: () => T): Promise<T> {
    if (!inst.alive) throw new Error('simulated: this process is dead');
    await this.unfrozen(inst.node);
    if (!inst.alive) throw new Error('simulated: this process is dead');
    const faulty = this.memoryFaults.has(inst.node);
    if (faulty && this.rng.chance(0.25)) {
      this.counters.memoryErrors++;
      throw memoryError('connection refused');
    }
    await this.memoryDelay();
    const result = fn();
    await this.memoryDelay();
    if (faulty && this.rng.chance(0.25)) {
      this.counters.memoryErrors++;
      throw memoryError('connection reset: the command ran, its answer is lost');
    }
    return result;
  }
}

/** What CacheMemory makes of a Redis failure (toDssError). */
function memoryError(what: string): DssError {
  return new DssError('unavailable', `Redis unavailable: simulated ${what}`);
}

class SimLink implements CacheLink {
  constructor(
    private readonly sim: Sim,
    private readonly self: Instance,
  ) {}

  request(home: NodeId, body: HomeRequestWire, timeoutMs: number): Promise<HomeGrantWire> {
    const msg = structuredClone(body);
    return this.sim.send(this.self, home, 'request', (svc) => svc.handleRequest(msg), timeoutMs);
  }

  snoop(node: NodeId, kind: SnoopKind, body: SnoopWire, timeoutMs: number): Promise<SnoopReplyWire> {
    if (this.sim.dropInvalidations && kind === 'invalidate') return Promise.resolve({ held: false });
    const msg = structuredClone(body);
    return this.sim.send(this.self, node, 'snoop', (svc) => svc.handleSnoop(kind, msg), timeoutMs);
  }

  lease(home: NodeId, body: LeaseWire, timeoutMs: number): Promise<LeaseReplyWire> {
    const msg = structuredClone(body);
    return this.sim.send(this.self, home, 'lease', (svc) => Promise.resolve(svc.handleLease(msg)), timeoutMs);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

type MemoryOp = 'read' | 'write' | 'readAndFence' | 'fence' | 'nextEpoch';

/**
 * Directed tests: what happens to one memory call of `node`: held until `hold` resolves, and/or
 * failed before it reaches memory ('before') or after it was applied, its answer lost ('after').
 */
type MemoryHook = (
  node: NodeId,
  op: MemoryOp,
  key: string,
) => { hold?: Promise<void>; fail?: 'before' | 'after'; refuse?: true } | null;

class SimMemory implements MainMemory {
  constructor(
    private readonly sim: Sim,
    private readonly self: Instance,
  ) {}

  private async run<T>(op: MemoryOp, key: string, fn: () => T): Promise<T> {
    const hook = this.sim.memoryHook?.(this.self.node, op, key) ?? null;
    if (hook?.hold !== undefined) await hook.hold;
    if (hook?.fail === 'before') throw memoryError('connection refused');
    // A write refused as if fenced out (nothing stored), whatever the fence really is.
    if (hook?.refuse === true) return (await this.sim.memory(this.self, () => false)) as T;
    const result = await this.sim.memory(this.self, fn);
    if (hook?.fail === 'after') throw memoryError('connection reset: the command ran, its answer is lost');
    return result;
  }

  read(key: string): Promise<Data> {
    return this.run('read', key, () => this.sim.store.read(key));
  }

  write(key: string, token: Token, data: Data): Promise<boolean> {
    const t: Token = [token[0], token[1]];
    const text = data.present ? JSON.stringify(data.value ?? null) : undefined;
    return this.run('write', key, () => this.sim.store.apply(key, t, data.present ? 'set' : 'del', text));
  }

  readAndFence(key: string, token: Token): Promise<Data> {
    const t: Token = [token[0], token[1]];
    return this.run('readAndFence', key, () => this.sim.store.readAndFence(key, t));
  }

  async fence(key: string, token: Token): Promise<void> {
    const t: Token = [token[0], token[1]];
    await this.run('fence', key, () => this.sim.store.apply(key, t, 'fence'));
  }

  nextEpoch(nodeId: string): Promise<number> {
    return this.run('nextEpoch', '', () => this.sim.store.nextEpoch(nodeId));
  }
}

// ------------------------------------------------------------------ clients and their history

class History {
  readonly ops: Operation[] = [];
  readonly stats = {
    reads: 0,
    writes: 0,
    pending: 0,
    failed: new Map<string, number>(),
    sources: { l1: 0, peer: 0, memory: 0 },
  };
  /** Errors that are not DssErrors: the service should never let one out. */
  readonly unexpected: string[] = [];

  summary(): string {
    const failed = [...this.stats.failed].map(([c, n]) => `${c}=${n}`).join(' ');
    const s = this.stats;
    return (
      `reads ${s.reads} (l1 ${s.sources.l1}, peer ${s.sources.peer}, memory ${s.sources.memory}), ` +
      `writes ${s.writes}, pending ${s.pending}, failed: ${failed || 'none'}`
    );
  }
}

type Outcome =
  | { t: 'ok'; value: Json | null | undefined; source?: 'l1' | 'peer' | 'memory' }
  | { t: 'err'; e: unknown }
  | { t: 'killed' };

async function runClient(
  sim: Sim,
  hist: History,
  name: string,
  node: NodeId,
  keys: readonly string[],
  rng: Rng,
  opts: { maxOps: number; until: number },
): Promise<void> {
  for (let i = 0; i < opts.maxOps && performance.now() < opts.until; i++) {
    await sim.unfrozen(node); // a client of a frozen node just waits
    const inst = sim.instance(node);
    const key = rng.pick(keys);
    const dice = rng.next();
    const kind: Operation['kind'] = dice < 0.5 ? 'read' : dice < 0.85 ? 'write' : 'delete';
    const value = `${name}#${i}`;
    const invokedAt = performance.now();
    const call: Promise<Outcome> =
      kind === 'read'
        ? inst.svc.get(key).then(
            (g) => ({ t: 'ok', value: g.data.present ? (g.data.value ?? null) : null, source: g.source }),
            (e: unknown) => ({ t: 'err', e }),
          )
        : inst.svc.put(key, kind === 'write' ? { present: true, value } : { present: false }).then(
            () => ({ t: 'ok', value: undefined }),
            (e: unknown) => ({ t: 'err', e }),
          );
    // A call on a process that gets killed never answers its client.
    const out = await Promise.race([call, inst.killed.then((): Outcome => ({ t: 'killed' }))]);
    const returnedAt = performance.now();
    const base = { client: name, key, kind, invokedAt, ...(kind === 'write' ? { value } : {}) };
    if (out.t === 'ok') {
      if (kind === 'read') {
        hist.ops.push({ ...base, value: out.value ?? null, returnedAt });
        hist.stats.reads++;
        hist.stats.sources[out.source!]++;
      } else {
        hist.ops.push({ ...base, returnedAt });
        hist.stats.writes++;
      }
    } else if (out.t === 'killed') {
      if (kind !== 'read') hist.ops.push({ ...base, returnedAt: null });
      hist.stats.pending++;
    } else if (isDssError(out.e)) {
      if (out.e.details?.outcome === 'unknown') {
        if (kind !== 'read') hist.ops.push({ ...base, returnedAt: null });
        hist.stats.pending++;
      } else {
        // Known outcome: a failed write had no effect, a failed read says nothing.
        hist.stats.failed.set(out.e.code, (hist.stats.failed.get(out.e.code) ?? 0) + 1);
      }
    } else {
      hist.unexpected.push(`${kind} of ${key} on ${node}: ${String(out.e)}`);
      if (kind !== 'read') hist.ops.push({ ...base, returnedAt: null });
    }
    if (rng.chance(0.5)) await sim.delay();
  }
}

/** Keys with `perHome` of them homed at each node. */
function pickKeys(ring: HashRing, perHome: number): string[] {
  const count = new Map<string, number>();
  const out: string[] = [];
  for (let i = 0; out.length < perHome * NODES.length; i++) {
    const key = `key${i}`;
    const home = ring.owner(key);
    if ((count.get(home) ?? 0) < perHome) {
      count.set(home, (count.get(home) ?? 0) + 1);
      out.push(key);
    }
  }
  return out;
}

// ------------------------------------------------------------------ invariants at quiet points

/**
 * With no call in flight and no fault active: among the lines the L1s may serve (right home epoch,
 * membership generation and lease), at most one node in M or E per key, never beside an S copy; every
 * clean line (E and S, and M under write-through) equals memory; every such line is listed by its
 * home in its role; no L1 holds more than its capacity.
 */
function checkInvariants(sim: Sim, keys: readonly string[]): string[] {
  const problems: string[] = [];
  const held = new Map<string, Array<{ node: NodeId; line: LineRec }>>();
  for (const node of NODES) {
    const l1 = internals(sim.instance(node).svc);
    if (l1.l1.size > CAPACITY) problems.push(`${node} holds ${l1.l1.size} lines, capacity ${CAPACITY}`);
    for (const [key, line] of l1.l1.entries()) {
      if (!l1.servable(line)) continue;
      let list = held.get(key);
      if (list === undefined) held.set(key, (list = []));
      list.push({ node, line });
    }
  }
  for (const key of keys) {
    const lines = held.get(key) ?? [];
    const states = lines.map((l) => `${l.node}:${l.line.state}`).join(' ');
    const exclusive = lines.filter((l) => l.line.state !== 'S');
    if (exclusive.length > 1) problems.push(`${key}: more than one exclusive copy (${states})`);
    if (exclusive.length === 1 && lines.length > 1) problems.push(`${key}: M/E beside S (${states})`);
    const mem = canonicalJson(sim.store.read(key).value ?? null);
    for (const { node, line } of lines) {
      const v = canonicalJson(line.data.present ? (line.data.value ?? null) : null);
      const mayDiffer = line.state === 'M' && sim.policy === 'write-back';
      if (!mayDiffer && v !== mem) {
        problems.push(`${key}: ${node} holds ${line.state} ${v} but memory has ${mem}`);
      }
      const home = sim.ring.owner(key);
      const entry = sim
        .instance(home)
        .svc.home.directory()
        .find((e) => e.key === key);
      const listed = line.state === 'S' ? entry?.sharers.includes(node) === true : entry?.exclusive === node;
      if (!listed) {
        problems.push(
          `${key}: ${node} holds ${line.state} but home ${home} lists ` +
            `${entry === undefined ? 'nobody' : JSON.stringify(entry)}`,
        );
      }
    }
  }
  return problems;
}

// ------------------------------------------------------------------ scenarios

interface ScenarioOptions {
  name: string;
  seed: number;
  policy: CacheWritePolicy;
  maxOpsPerClient: number;
  durationMs: number;
  faults?: boolean;
  /** With `faults`: also periods in which a node's memory calls fail. */
  memoryFaults?: boolean;
  /**
   * With `faults`: freezes and cuts stay well under a lease (write-back promises nothing lost and a
   * linearizable history under those; longer ones may cost a cut-off node its dirty lines).
   */
  shortFaults?: boolean;
  restarts?: number;
  dropInvalidations?: boolean;
  /** Share of memory calls that take 10-40 ms. */
  slowMemory?: number;
}

interface ScenarioResult {
  lin: CheckResult;
  problems: string[];
  hist: History;
  faults: string[];
  sim: Sim;
}

async function faultDriver(
  sim: Sim,
  rng: Rng,
  until: number,
  log: string[],
  memoryFaults: boolean,
  shortFaults: boolean,
): Promise<void> {
  const t0 = performance.now();
  const at = (): string => `+${Math.round(performance.now() - t0)}ms`;
  while (performance.now() < until - 150) {
    await sleep(rng.int(50, 250));
    const node = rng.pick(NODES);
    const dice = rng.next();
    if (memoryFaults && rng.chance(0.4)) {
      const ms = rng.int(50, 2 * LEASE_MS);
      log.push(`${at()} memory errors at ${node} ${ms}ms`);
      sim.breakMemory(node);
      await sleep(ms);
      sim.fixMemory(node);
    } else if (dice < 0.4) {
      // Frozen shorter than the lease half of the time, longer (the home gives up on it) otherwise.
      const ms = shortFaults
        ? rng.int(10, Math.round(0.4 * LEASE_MS))
        : dice < 0.2
          ? rng.int(20, LEASE_MS - 30)
          : rng.int(LEASE_MS + 50, 4 * LEASE_MS);
      log.push(`${at()} freeze ${node} ${ms}ms`);
      sim.freeze(node);
      await sleep(ms);
      sim.thaw(node);
    } else {
      const mode: Unreachable = dice < 0.6 ? 'unknown' : dice < 0.8 ? 'refused' : 'flaky';
      const ms = shortFaults ? rng.int(10, Math.round(0.3 * LEASE_MS)) : rng.int(LEASE_MS / 2, 4 * LEASE_MS);
      log.push(`${at()} cut ${node} (${mode}) ${ms}ms`);
      sim.cut(node, mode);
      await sleep(ms);
      sim.heal(node);
    }
  }
}

async function restartDriver(
  sim: Sim,
  rng: Rng,
  count: number,
  durationMs: number,
  log: string[],
): Promise<void> {
  const order = [...NODES].sort(() => rng.next() - 0.5);
  for (let i = 0; i < count; i++) {
    await sleep(durationMs / (count + 1));
    const node = order[i % order.length]!;
    log.push(`restart ${node}`);
    sim.restart(node);
  }
}

async function runScenario(o: ScenarioOptions): Promise<ScenarioResult> {
  const rng = new Rng(o.seed);
  const sim = new Sim(rng.fork(), o.policy, o.slowMemory ?? 0);
  sim.dropInvalidations = o.dropInvalidations ?? false;
  await sim.start();
  const keys = pickKeys(sim.ring, KEYS_PER_HOME);
  const hist = new History();
  const log: string[] = [];
  const until = performance.now() + o.durationMs;
  const tasks: Promise<void>[] = [];
  for (const node of NODES) {
    for (let c = 0; c < CLIENTS_PER_NODE; c++) {
      tasks.push(
        runClient(sim, hist, `${node}.c${c}`, node, keys, rng.fork(), { maxOps: o.maxOpsPerClient, until }),
      );
    }
  }
  if (o.faults === true) {
    tasks.push(faultDriver(sim, rng.fork(), until, log, o.memoryFaults ?? false, o.shortFaults ?? false));
  }
  if (o.restarts !== undefined) tasks.push(restartDriver(sim, rng.fork(), o.restarts, o.durationMs, log));
  await Promise.all(tasks);
  sim.clearFaults();
  // Let eviction notices, rejoins and renewals finish, and the homes of restarted nodes get ready.
  await sleep(4 * LEASE_MS);
  await sim.waitReady(5_000);
  await sleep(2 * LEASE_MS);
  const problems = checkInvariants(sim, keys);
  await sim.stopAll();
  const lin = checkLinearizable(hist.ops, { timeoutMs: 8_000 });
  return { lin, problems, hist, faults: log, sim };
}

function explain(o: ScenarioOptions, r: ScenarioResult): string {
  const lin =
    r.lin.ok === true
      ? 'linearizable'
      : r.lin.ok === 'unknown'
        ? `checker timed out on ${r.lin.key}`
        : `NOT linearizable on ${r.lin.key}: ${r.lin.reason}\nwitness:\n${r.lin.witness
            .map((op) => `  ${JSON.stringify(op)}`)
            .join('\n')}`;
  const m = r.sim.metrics;
  const c = r.sim.counters;
  const events = [...r.sim.events].map(([msg, n]) => `${msg} x${n}`).join('; ');
  return [
    `${o.name}: seed ${o.seed} (CACHE_SIM_SEED to replay the choices)`,
    r.hist.summary(),
    `faults: ${r.faults.join(', ') || 'none'}`,
    `messages ${c.messages} (lost ${c.lost}, refused ${c.refused}, reset ${c.resets}, ` +
      `timed out ${c.timeouts}), memory errors ${c.memoryErrors}; ` +
      `hits ${m.hits}, misses ${m.misses}, invalidations ${m.invalidations}, ` +
      `write-backs ${m.writebacks}, revocations ${m.revocations}`,
    `logged: ${events || 'nothing'}`,
    lin,
    ...r.problems.map((p) => `invariant: ${p}`),
    ...r.hist.unexpected.map((u) => `unexpected error: ${u}`),
  ].join('\n');
}

async function scenario(t: TestContext, o: ScenarioOptions): Promise<void> {
  const r = await runScenario(o);
  const text = explain(o, r);
  t.diagnostic(text.split('\n').slice(0, 5).join(' | '));
  assert.equal(r.lin.ok, true, text);
  assert.deepEqual(r.problems, [], text);
  assert.deepEqual(r.hist.unexpected, [], text);
  assert.ok(r.hist.stats.reads > 50 && r.hist.stats.writes > 50, `too little got done\n${text}`);
}

/** A write-back cluster where X (not k's home) holds k in M with 'v1', memory never written; R is the third node. */
async function writtenBackLater(
  seed: number,
): Promise<{ sim: Sim; keys: string[]; k: string; x: NodeId; r: NodeId }> {
  const sim = new Sim(new Rng(seed), 'write-back');
  await sim.start();
  const keys = pickKeys(sim.ring, KEYS_PER_HOME);
  const k = keys[0]!;
  const h = sim.ring.owner(k);
  const x = NODES.find((n) => n !== h)!;
  const r = NODES.find((n) => n !== h && n !== x)!;
  await sim.instance(x).svc.put(k, { present: true, value: 'v1' });
  return { sim, keys, k, x, r };
}

/** What a read returns of `data`, as the checker sees values. */
const valueOf = (data: Data): Json | null => (data.present ? (data.value ?? null) : null);

/** One key's history in a directed test: each call on it, recorded with its interval. */
class KeyHistory {
  readonly ops: Operation[] = [];

  constructor(
    private readonly sim: Sim,
    readonly key: string,
  ) {}

  async read(client: NodeId): Promise<void> {
    const invokedAt = performance.now();
    const g = await this.sim.instance(client).svc.get(this.key);
    this.push(client, 'read', valueOf(g.data), invokedAt, performance.now());
  }

  /**
   * A PUT. A failure is returned, not thrown: a known outcome (no effect) is left out of the
   * history, any other is recorded as pending (it may take effect at any time after the call).
   */
  async write(client: NodeId, value: string): Promise<unknown> {
    const invokedAt = performance.now();
    try {
      await this.sim.instance(client).svc.put(this.key, { present: true, value });
    } catch (e) {
      if (!isDssError(e) || e.details?.outcome === 'unknown')
        this.push(client, 'write', value, invokedAt, null);
      return e;
    }
    this.push(client, 'write', value, invokedAt, performance.now());
    return null;
  }

  /** A GET that `client` answers from its L1 alone, right now (a hit is recorded, a miss is not). */
  hit(client: NodeId): void {
    const invokedAt = performance.now();
    const hit = this.sim.instance(client).svc.hitNow(this.key);
    if (hit !== null) this.push(client, 'read', valueOf(hit.data), invokedAt, performance.now());
  }

  /** Lets notices and renewals settle; then the history, the invariants, and the nodes stopped. */
  async check(keys: readonly string[], roles: string, settleMs = 2 * LEASE_MS): Promise<void> {
    await sleep(settleMs);
    const problems = checkInvariants(this.sim, keys);
    await this.sim.stopAll();
    const lin = checkLinearizable(this.ops);
    const story = `${roles}\n${this.ops.map((op) => JSON.stringify(op)).join('\n')}`;
    assert.equal(lin.ok, true, `${lin.ok === false ? lin.reason : ''}\n${story}`);
    assert.deepEqual(problems, [], story);
  }

  private push(
    client: NodeId,
    kind: 'read' | 'write',
    value: Json | null,
    invokedAt: number,
    returnedAt: number | null,
  ): void {
    this.ops.push({ client, key: this.key, kind, value, invokedAt, returnedAt });
  }
}

/**
 * A started cluster for a directed test: key k, its home h, another key k2 of the same home, the
 * two other nodes in id order (a < b: a is the sharer a read-miss plan asks first), and k's history.
 */
async function directed(
  seed: number,
  policy: CacheWritePolicy,
): Promise<{
  sim: Sim;
  keys: string[];
  k: string;
  k2: string;
  h: NodeId;
  a: NodeId;
  b: NodeId;
  hist: KeyHistory;
}> {
  const sim = new Sim(new Rng(seed), policy);
  await sim.start();
  const keys = pickKeys(sim.ring, KEYS_PER_HOME);
  const k = keys[0]!;
  const h = sim.ring.owner(k);
  const k2 = keys.find((key) => key !== k && sim.ring.owner(key) === h)!;
  const [a, b] = NODES.filter((n) => n !== h).sort() as [NodeId, NodeId];
  return { sim, keys, k, k2, h, a, b, hist: new KeyHistory(sim, k) };
}

/** A known outcome: the call failed without effect. */
function assertKnown(err: unknown): void {
  assert.ok(err === null || (isDssError(err) && err.details?.outcome !== 'unknown'), String(err));
}

/** Lets notices and renewals settle, checks the invariants, stops the nodes. */
async function quietThenCheck(sim: Sim, keys: readonly string[]): Promise<void> {
  await sleep(2 * LEASE_MS);
  const problems = checkInvariants(sim, keys);
  await sim.stopAll();
  assert.deepEqual(problems, []);
}

describe('cache protocol simulation (3 nodes in process)', () => {
  it('1. no faults, write-back', { timeout: 30_000 }, async (t) => {
    await scenario(t, {
      name: 'no faults, write-back',
      seed: seedFor(1),
      policy: 'write-back',
      maxOpsPerClient: 60,
      durationMs: 10_000,
    });
  });

  it('2. no faults, write-through', { timeout: 30_000 }, async (t) => {
    await scenario(t, {
      name: 'no faults, write-through',
      seed: seedFor(2),
      policy: 'write-through',
      maxOpsPerClient: 60,
      durationMs: 10_000,
    });
  });

  it('3. write-through with freezes and partitions', { timeout: 40_000 }, async (t) => {
    await scenario(t, {
      name: 'faults, write-through',
      seed: seedFor(3),
      policy: 'write-through',
      maxOpsPerClient: 400,
      durationMs: 4_000,
      faults: true,
      slowMemory: 0.1,
    });
  });

  it('3b. write-through with freezes, partitions and memory errors', { timeout: 40_000 }, async (t) => {
    await scenario(t, {
      name: 'faults and memory errors, write-through',
      seed: seedFor(8),
      policy: 'write-through',
      maxOpsPerClient: 400,
      durationMs: 4_000,
      faults: true,
      memoryFaults: true,
      slowMemory: 0.1,
    });
  });

  it('3c. write-back with short freezes and cuts, and memory errors', { timeout: 40_000 }, async (t) => {
    await scenario(t, {
      name: 'short faults and memory errors, write-back',
      seed: seedFor(18),
      policy: 'write-back',
      maxOpsPerClient: 400,
      durationMs: 4_000,
      faults: true,
      memoryFaults: true,
      shortFaults: true,
      slowMemory: 0.1,
    });
  });

  it('4. write-through with home restarts', { timeout: 40_000 }, async (t) => {
    await scenario(t, {
      name: 'restarts, write-through',
      seed: seedFor(4),
      policy: 'write-through',
      maxOpsPerClient: 400,
      durationMs: 3_000,
      restarts: 2,
      slowMemory: 0.1,
    });
  });

  it('a link that drops invalidations is caught', { timeout: 30_000 }, async (t) => {
    // The same run as scenario 1, but invalidations never arrive: stale copies survive writes.
    const o: ScenarioOptions = {
      name: 'broken link (invalidations dropped), write-back',
      seed: seedFor(5),
      policy: 'write-back',
      maxOpsPerClient: 60,
      durationMs: 10_000,
      dropInvalidations: true,
    };
    const r = await runScenario(o);
    const text = explain(o, r);
    t.diagnostic(text.split('\n').slice(0, 6).join(' | '));
    assert.ok(r.lin.ok === false || r.problems.length > 0, `the broken link went unnoticed\n${text}`);
  });

  it('a write-through PUT whose memory write races a rejoin of its node', { timeout: 30_000 }, async () => {
    // X holds the grant of a PUT of k and its memory write is on the way (held here); a request of X
    // to k's home H then loses its answer (connection reset), so X rejoins H under a new generation
    // and H no longer counts X's grant. R reads k from H meanwhile; then X's write arrives. Either
    // the write lands and R sees it, or it is refused and the PUT fails: R must never keep serving
    // the value from before a PUT that succeeded.
    const { sim, keys, k, k2, h, a: x, b: r, hist } = await directed(seedFor(6), 'write-through');
    // Known outcomes only here (no fault leaves one open): a failed call had no effect.
    const read = (client: NodeId): Promise<void> =>
      hist.read(client).catch((e: unknown) => assertKnown(e ?? new Error('no error')));

    let release!: () => void;
    let signalHeld!: () => void;
    const held = new Promise<void>((resolve) => (signalHeld = resolve));
    sim.memoryHook = (node, op, key) => {
      if (node !== x || op !== 'write' || key !== k) return null;
      signalHeld();
      return { hold: new Promise<void>((resolve) => (release = resolve)) };
    };
    const put = hist.write(x, 'v1');
    await held;
    sim.memoryHook = null;
    sim.resetNextRequest = { from: x, to: h };
    await sim
      .instance(x)
      .svc.get(k2)
      .then(
        () => assert.fail('the reset request should have failed'),
        () => undefined,
      );
    const link = internals(sim.instance(x).svc).links.get(h)!;
    for (let i = 0; !link.joined; i++) {
      assert.ok(i < 200, `${x} did not rejoin ${h}`);
      await sleep(5);
    }
    await read(r);
    release();
    assertKnown(await put);
    await read(r);
    await hist.check(keys, `writer ${x}, home ${h}, reader ${r}`);
  });

  it(
    'a write-through PUT on an E line whose memory write lands but its answer is lost',
    { timeout: 30_000 },
    async () => {
      // X holds k in E and PUTs v1; memory applies the write, but the answer is lost, so the PUT fails
      // with outcome unknown (it may have taken effect). Once anyone has read v1, nobody may read the
      // older value again. R reads k (X supplies its line: X and R both in S), then the home H reads k
      // while the sharer it asks for data is cut off: H gives up on that one and reads memory (v1);
      // the other sharer still serves its copy.
      const { sim, keys, k, h, a: x, b: r, hist } = await directed(seedFor(7), 'write-through');
      const supplier = x; // the plan asks the sharer with the smallest id
      const other = r;

      await hist.read(x); // E at x
      sim.memoryHook = (node, op, key) => {
        if (node !== x || op !== 'write' || key !== k) return null;
        sim.memoryHook = null;
        return { fail: 'after' };
      };
      const err = await hist.write(x, 'v1');
      assert.ok(
        isDssError(err) && err.details?.outcome === 'unknown',
        `expected an unknown outcome: ${String(err)}`,
      );
      await hist.read(x);
      await hist.read(r); // x and r in S
      sim.cut(supplier, 'refused');
      await hist.read(h);
      await hist.read(other);
      sim.heal(supplier);
      await hist.check(keys, `holder ${x}, reader ${r}, home ${h}`);
    },
  );

  it('a write-through PUT from an S copy whose memory write fails', { timeout: 30_000 }, async () => {
    // X and R share k in S. X PUTs v1: the home invalidates R and grants X the line in M, but the
    // memory write fails before reaching memory (outcome unknown to X), so X hands the grant back.
    // Then the home H writes v2. A later read at X must not return the value from before v2.
    const { sim, keys, k, h, a: x, b: r, hist } = await directed(seedFor(9), 'write-through');

    await hist.read(x);
    await hist.read(r); // x and r in S
    sim.memoryHook = (node, op, key) => {
      if (node !== x || op !== 'write' || key !== k) return null;
      sim.memoryHook = null;
      return { fail: 'before' };
    };
    const err = await hist.write(x, 'v1');
    assert.ok(
      isDssError(err) && err.details?.outcome === 'unknown',
      `expected an unknown outcome: ${String(err)}`,
    );
    await sleep(20); // the grant handed back reaches the home
    assertKnown(await hist.write(h, 'v2'));
    await hist.read(x);
    await hist.check(keys, `writer ${x}, sharer ${r}, home ${h}`);
  });

  it(
    'a holder paused longer than a snoop timeout but within its lease keeps its dirty line',
    { timeout: 30_000 },
    async () => {
      // Write-back: X holds k in M with a value memory has never seen. X then stalls (a GC pause, a
      // busy CPU) for longer than the home's snoop timeout but well within its lease, just as R reads
      // k. Giving X up would fence its write-back out and lose an acknowledged write; the home must
      // ask again until X's lease has run out, and X answers once it runs again.
      const { sim, keys, k, x, r } = await writtenBackLater(seedFor(9));
      assert.equal(sim.store.read(k).present, false, "the value is only in X's L1");
      // The snoop timeout is half the lease (CacheService): pause for 1.2 snoop timeouts.
      const pauseMs = Math.round(0.6 * LEASE_MS);
      sim.freeze(x);
      const thawed = sleep(pauseMs).then(() => sim.thaw(x));
      const got = await sim.instance(r).svc.get(k);
      await thawed;
      assert.deepEqual(got.data, { present: true, value: 'v1' });
      assert.equal(sim.metrics.revocations, 0, 'no holder was given up on');
      assert.deepEqual(sim.store.read(k), { present: true, value: 'v1' }, 'written back by the snoop');
      await quietThenCheck(sim, keys);
    },
  );

  it(
    'a holder that renews while its snoops are lost gets one more lease before it is given up on',
    { timeout: 30_000 },
    async () => {
      // Write-back: X holds k in M with a value memory has never seen. The home's snoops to X are
      // lost for 1.5 leases while X's renewals go through (a path that healed with a try still on
      // its way into it looks the same to the home). Giving X up once its lease had run out since
      // the first lost snoop would fence its write-back out and lose an acknowledged write; X has
      // renewed since, so the home asks again for one more lease, and X answers.
      const { sim, keys, h, a: x, b: r, hist } = await directed(seedFor(13), 'write-back');
      assertKnown(await hist.write(x, 'v1')); // M at x, memory never written
      sim.loseSnoopsTo = x;
      const read = hist.read(r);
      await sleep(1.5 * LEASE_MS);
      sim.loseSnoopsTo = null;
      await read;
      assert.equal(sim.metrics.revocations, 0, `${h} gave ${x} up`);
      await hist.check(keys, `holder ${x}, reader ${r}, home ${h}`);
    },
  );

  it(
    'a dirty line dropped for a request that then fails is delisted at its home',
    { timeout: 30_000 },
    async () => {
      // Write-back. X holds k in M and its lease lapses (its renewals are lost), so a GET at X writes
      // the line back, drops it and asks the home H for k again; that request fails at H (its memory
      // read fails). H still lists X under the dropped grant, as it must until it knows the copy is
      // gone: X has to tell it, as for an eviction, or H keeps asking X about a line it does not have
      // (and waits out X's lease whenever X is unreachable).
      const { sim, keys, k, h, a: x, hist } = await directed(seedFor(14), 'write-back');
      assertKnown(await hist.write(x, 'v1')); // M at x
      const xl1 = internals(sim.instance(x).svc);
      sim.loseLeasesOf = x;
      for (let i = 0; xl1.servable(xl1.l1.peek(k)!); i++) {
        assert.ok(i < 400, `${x}'s lease did not run out`);
        await sleep(5);
      }
      sim.memoryHook = (node, op, key) => {
        if (node !== h || op !== 'readAndFence' || key !== k) return null;
        sim.memoryHook = null;
        return { fail: 'before' };
      };
      const err = await sim
        .instance(x)
        .svc.get(k)
        .then(
          () => null,
          (e: unknown) => e,
        );
      assert.ok(isDssError(err), `expected the home's failure: ${String(err)}`);
      sim.loseLeasesOf = null;
      const listsX = (): boolean => {
        const entry = sim
          .instance(h)
          .svc.home.directory()
          .find((e) => e.key === k);
        return entry !== undefined && (entry.exclusive === x || entry.sharers.includes(x));
      };
      for (let i = 0; listsX(); i++) {
        assert.ok(i < 200, `${h} still lists ${x} for ${k}, which ${x} dropped`);
        await sleep(5);
      }
      await hist.read(x); // the written-back value
      await hist.check(keys, `holder ${x}, home ${h}`);
    },
  );

  it(
    'a repeated invalidation after the holder applied it does not wait for its newer request',
    { timeout: 30_000 },
    async () => {
      // X holds k. X stalls, so the home's invalidation (for R's write) times out, though X applies
      // it as soon as it runs again; X at once reads k again, and that request queues at the home
      // behind R's write. The home asks X again: X must answer that the line is gone, not wait for
      // its own request (the home would time out and give X up).
      const { sim, keys, k, x, r } = await writtenBackLater(seedFor(10));
      const xl1 = internals(sim.instance(x).svc).l1;
      // Just past the snoop timeout (half the lease), far within the lease.
      sim.freeze(x);
      const write = sim.instance(r).svc.put(k, { present: true, value: 'v2' });
      await sleep(Math.round(0.53 * LEASE_MS));
      sim.thaw(x);
      while (xl1.peek(k) !== undefined) await new Promise((resolve) => setImmediate(resolve));
      const read = sim.instance(x).svc.get(k);
      await write;
      const got = await read;
      assert.deepEqual(got.data, { present: true, value: 'v2' });
      assert.equal(sim.metrics.revocations, 0, 'no holder was given up on');
      await quietThenCheck(sim, keys);
    },
  );

  it(
    'a sharer given up on by another transaction stays listed until its lease has run out',
    { timeout: 30_000 },
    async () => {
      // Write-back. X and S share k (S, the smaller id, is the one the home asks for data); X also
      // holds k2 dirty. The home H reads k and asks S, which is stalled for a moment. Meanwhile H
      // writes k2: X's write-back of k2 is refused, an answer that makes H give X up at once, while X's
      // lease still runs. H's read of k then completes: if it dropped X's listing of k (X being
      // given up on), S's write of k right after would not invalidate X, and X would serve the old
      // value as a hit until its lease ran out. X must not serve it once S's write has returned.
      // (X's write-back is refused as fenced out: an answer the home takes as final. One that merely
      // fails is asked again until the lease bound.)
      const { sim, keys, k2, h, a: s, b: x, hist } = await directed(seedFor(11), 'write-back');

      assertKnown(await hist.write(x, 'v1')); // M at x
      await hist.read(s); // x writes back; x and s in S
      await sim.instance(x).svc.put(k2, { present: true, value: 'w1' }); // k2 dirty at x
      // From here x's lease is neither renewed nor refused: it runs out in its own time.
      sim.loseLeasesOf = x;
      sim.freeze(s);
      const homeRead = hist.read(h); // H asks s for k's data and waits
      sim.memoryHook = (node, op, key) => {
        if (node !== x || op !== 'write' || key !== k2) return null;
        sim.memoryHook = null;
        return { refuse: true };
      };
      const k2Write = sim.instance(h).svc.put(k2, { present: true, value: 'w2' });
      for (let i = 0; sim.metrics.revocations === 0; i++) {
        assert.ok(i < 2_000, `${h} did not give ${x} up`);
        await new Promise((resolve) => setImmediate(resolve));
      }
      sim.thaw(s);
      await homeRead;
      assertKnown(await hist.write(s, 'v2'));
      hist.hit(x); // a GET at x now
      sim.loseLeasesOf = null;
      await k2Write;
      await hist.check(keys, `home ${h}, given up on ${x}, supplier ${s}`, 4 * LEASE_MS);
    },
  );

  it(
    'a PUT from an S copy whose transaction runs past its deadline at the home',
    { timeout: 30_000 },
    async () => {
      // Write-through. X and R share k in S. X PUTs v1; the home H gives up on R (stalled), waits
      // out its lease and raises k's fence, and that memory call is slow (Redis stalls), so the
      // transaction runs past its deadline and fails: X's PUT had no effect. X stalls just before
      // H's answer reaches it (its S copy still servable: its lease runs). H then writes v2. If the
      // failed transaction had dropped X's listing, that write would not invalidate X, and a GET
      // that X handles before the late answer would serve the old value after v2 was acknowledged.
      // Nor may a read at X after the answer return it.
      const { sim, keys, k, h, a: x, b: r, hist } = await directed(seedFor(12), 'write-through');
      const homeLocks = (sim.instance(h).svc.home as unknown as { waiting: Map<string, unknown> }).waiting;

      assertKnown(await hist.write(h, 'v0'));
      await hist.read(x);
      await hist.read(r); // x and r in S
      sim.freeze(r);
      let release!: () => void;
      let signalHeld!: () => void;
      const held = new Promise<void>((resolve) => (signalHeld = resolve));
      sim.memoryHook = (node, op, key) => {
        if (node !== h || op !== 'fence' || key !== k) return null;
        sim.memoryHook = null;
        signalHeld();
        return { hold: new Promise<void>((resolve) => (release = resolve)) };
      };
      const put = hist.write(x, 'v1');
      await held;
      // Past the transaction's deadline (CacheL1.deadlineMs with this lease): then let it fail.
      await sleep(2 * LEASE_MS + 4 * (LEASE_MS / 2) + 1_000 + 50);
      sim.freeze(x);
      release();
      while (homeLocks.has(k)) await new Promise((resolve) => setImmediate(resolve));
      sim.thaw(r);
      assertKnown(await hist.write(h, 'v2'));
      hist.hit(x); // a GET that x handles before the answer to its PUT
      sim.thaw(x);
      const err = await put;
      // A known outcome: the PUT had no effect, so it is left out of the history.
      assert.ok(isDssError(err) && err.code === 'timeout', `expected the home's timeout: ${String(err)}`);
      await hist.read(x);
      await hist.check(keys, `writer ${x}, sharer ${r}, home ${h}`, 4 * LEASE_MS);
    },
  );

  it(
    'a holder whose memory fails for a lease while it is snooped keeps its dirty line',
    { timeout: 30_000 },
    async () => {
      // Write-back: X holds k in M with a value memory has never seen. R reads k, so the home snoops
      // X, whose write-back fails: its Redis is away for a lease. X answers 503; the home must ask
      // again (as it does for silence) rather than give X up, which would cost it the line and give
      // R the value from before X's acknowledged write.
      const { sim, keys, k, x, r } = await writtenBackLater(seedFor(16));
      assert.equal(sim.store.read(k).present, false, "the value is only in X's L1");
      const failUntil = performance.now() + LEASE_MS;
      let failed = 0;
      sim.memoryHook = (node, op, key) => {
        if (node !== x || op !== 'write' || key !== k || performance.now() >= failUntil) return null;
        failed++;
        return { fail: 'before' };
      };
      const got = await sim.instance(r).svc.get(k);
      sim.memoryHook = null;
      assert.ok(failed > 0, 'the write-back failed at least once');
      assert.deepEqual(got.data, { present: true, value: 'v1' });
      assert.equal(sim.metrics.revocations, 0, 'no holder was given up on');
      assert.deepEqual(sim.store.read(k), { present: true, value: 'v1' });
      await quietThenCheck(sim, keys);
    },
  );

  it(
    'a graceful stop writes back every dirty line though memory fails some writes',
    { timeout: 30_000 },
    async () => {
      // Write-back: X holds three keys in M that memory has never seen. X stops gracefully while its
      // memory fails the first write-back of each key once: every value must still reach memory.
      const sim = new Sim(new Rng(seedFor(17)), 'write-back');
      await sim.start();
      const keys = pickKeys(sim.ring, KEYS_PER_HOME).slice(0, 3);
      const x = NODES[0]!;
      for (const [i, k] of keys.entries())
        await sim.instance(x).svc.put(k, { present: true, value: `v${i}` });
      for (const k of keys) assert.equal(sim.store.read(k).present, false);
      const failedOnce = new Set<string>();
      sim.memoryHook = (node, op, key) => {
        if (node !== x || op !== 'write' || failedOnce.has(key)) return null;
        failedOnce.add(key);
        return { fail: 'before' };
      };
      await sim.instance(x).svc.stop();
      sim.memoryHook = null;
      assert.equal(failedOnce.size, 3);
      for (const [i, k] of keys.entries())
        assert.deepEqual(sim.store.read(k), { present: true, value: `v${i}` });
      await sim.stopAll();
    },
  );
});
