// Raft crash consistency on real node processes (issue 7):
//  1. kill -9 at random moments under heavy concurrent proposals, restart on the same DATA_DIR, and
//     check that no acknowledged entry is lost or moved and nothing is invented or duplicated;
//  2. damage injected into the WAL files of a stopped node: a torn tail is cut off safely, a corrupt
//     record in the middle stops the node with one clear line and leaves the files untouched;
//  3. a full disk (a small tmpfs): proposals get 503, the node stays up and recovers with space.
//
// One node per cluster: it is its own majority, so an entry it acknowledged was fsynced by this very
// process, and its restart shows exactly what its disk kept. SIGKILL leaves the page cache alone, so
// the kill loop tests what the process does (partial batches, snapshots cut short); what a power cut
// does to unsynced bytes is what part 2 injects. DSS_CRASH_SEED=n replays a run's random choices.
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
  writeSync,
  appendFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { crc32 } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import { TestCluster } from '../helpers/cluster.js';
import { DSS_ENTRY } from '../helpers/entry.js';
import { waitFor } from '../helpers/wait.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const SEED = Number(process.env.DSS_CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31));
const NODE = 'node1';

/** mulberry32: a small seeded generator, so a failing run can be replayed with its seed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** What the debug state machine applied: ids[n] at log index indexes[n]. */
interface DebugState {
  count: number;
  ids: string[];
  indexes: number[];
}

interface Proposal {
  id: string;
  /**
   * acked: answered 200 with its index; failed: any other answer or none (outcome unknown); absent:
   * unanswered and found in no log after a restart, so it must never appear.
   */
  outcome: 'pending' | 'acked' | 'failed' | 'absent';
  index?: number;
  status?: number;
}

async function propose(url: string, id: string): Promise<{ status: number; index?: number }> {
  const res = await fetch(`${url}/debug/raft/propose`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ command: { id } }),
    signal: AbortSignal.timeout(10_000),
  });
  const body = (await res.json()) as { index?: number };
  return res.ok && typeof body.index === 'number'
    ? { status: res.status, index: body.index }
    : { status: res.status };
}

/** The applied state, read linearizably once the restarted node leads and has applied its log. */
async function readState(url: string): Promise<DebugState> {
  return waitFor(
    'a linearizable read of the debug state',
    async () => {
      const res = await fetch(`${url}/debug/raft/read`, { signal: AbortSignal.timeout(5000) });
      return res.ok ? ((await res.json()) as DebugState) : undefined;
    },
    { timeoutMs: 20_000 },
  );
}

async function raftStatus(url: string): Promise<{ term: number; last_applied: number }> {
  const res = await fetch(`${url}/status`, { signal: AbortSignal.timeout(2000) });
  return ((await res.json()) as { raft: { term: number; last_applied: number } }).raft;
}

/**
 * The invariants after a restart. `before` is what the node had applied before this round's load
 * (all of it committed), `proposals` every proposal ever sent to it with what it answered.
 */
function checkState(
  st: DebugState,
  proposals: Map<string, Proposal>,
  before: DebugState,
  term: number,
): void {
  assert.equal(st.ids.length, st.indexes.length, 'one index per applied id');
  // Nothing invented, nothing applied twice: every proposal is sent once and never retried, and the
  // API never re-proposes on its own, so each id may appear at most once.
  const seen = new Set<string>();
  for (const [n, id] of st.ids.entries()) {
    assert.ok(proposals.has(id), `applied id ${id} was never proposed (index ${st.indexes[n]})`);
    assert.notEqual(proposals.get(id)!.outcome, 'absent', `${id} appeared after a restart had not found it`);
    assert.ok(!seen.has(id), `id ${id} applied twice`);
    seen.add(id);
  }
  // Indices grow by one, except where entries the debug machine does not see sit: the no-op every
  // new leader appends, and the lock service's extend_all command a new leader proposes once (a
  // 1-node cluster has one leader per term, so at most two such entries per term).
  let gaps = 0;
  for (let n = 0; n < st.indexes.length; n++) {
    const prev = n === 0 ? 0 : st.indexes[n - 1]!;
    const cur = st.indexes[n]!;
    assert.ok(cur > prev, `indexes not increasing at position ${n}: ${prev} then ${cur}`);
    gaps += cur - prev - 1;
  }
  assert.ok(gaps <= 2 * term, `${gaps} log indexes hold no debug entry, more than two per term (${term})`);
  // Nothing lost: every acknowledged proposal is there, at the index it was acknowledged with...
  const at = new Map(st.ids.map((id, n) => [id, st.indexes[n]!]));
  for (const [id, p] of proposals) {
    if (p.outcome !== 'acked') continue;
    assert.equal(
      at.get(id),
      p.index,
      `acknowledged ${id} at index ${p.index} is ${at.has(id) ? 'moved' : 'lost'}`,
    );
  }
  // ...and so is everything that was committed before, acknowledged or not: a prefix never changes.
  assert.deepEqual(st.ids.slice(0, before.ids.length), before.ids, 'the committed prefix changed');
  assert.deepEqual(st.indexes.slice(0, before.indexes.length), before.indexes, 'committed indexes changed');
}

/** Runs `clients` proposers against `url` until stop() is called; each id is sent exactly once. */
function load(
  url: string,
  clients: number,
  tag: string,
  proposals: Map<string, Proposal>,
): { acked: () => number; stop: () => Promise<void> } {
  let stopped = false;
  let acked = 0;
  const loops = Array.from({ length: clients }, async (_, k) => {
    for (let n = 0; !stopped; n++) {
      const id = `${tag}-c${k}-${n}`;
      const p: Proposal = { id, outcome: 'pending' };
      proposals.set(id, p);
      try {
        const r = await propose(url, id);
        p.status = r.status;
        if (r.index !== undefined) {
          p.outcome = 'acked';
          p.index = r.index;
          acked++;
        } else p.outcome = 'failed';
      } catch {
        p.outcome = 'failed';
      }
    }
  });
  return {
    acked: () => acked,
    stop: async () => {
      stopped = true;
      await Promise.all(loops);
    },
  };
}

interface LoopStats {
  acked: number;
  unanswered: number;
  applied: number;
  restartMs: number[];
}

/**
 * `iterations` rounds on one node: 32 clients propose, a SIGKILL lands after a random number of
 * acknowledgements, the node restarts on its data dir, and its state is checked against every answer.
 */
async function crashLoop(c: TestCluster, iterations: number, seed: number, tag: string): Promise<LoopStats> {
  const random = rng(seed);
  const url = c.node(NODE).url;
  await c.leader();
  const proposals = new Map<string, Proposal>();
  let before: DebugState = await readState(url);
  const stats: LoopStats = { acked: 0, unanswered: 0, applied: 0, restartMs: [] };
  for (let it = 0; it < iterations; it++) {
    const run = load(url, 32, `${tag}-${it}`, proposals);
    // The kill lands after a random number of acknowledgements (1..300): with 32 proposals in
    // flight that is any point of a group commit, an apply, a snapshot or a compaction.
    const killAfter = 1 + Math.floor(random() * 300);
    try {
      await waitFor(`${killAfter} acknowledgements`, () => run.acked() >= killAfter, {
        timeoutMs: 30_000,
        intervalMs: 1,
      });
    } finally {
      // The clients stop sending once the node is gone; what was in flight stays unanswered.
      const stopped = run.stop();
      await c.kill(NODE);
      await stopped;
    }
    stats.acked += run.acked();
    const t0 = performance.now();
    await c.restart(NODE);
    await c.leader();
    const st = await readState(url);
    stats.restartMs.push(performance.now() - t0);
    const { term } = await raftStatus(url);
    try {
      checkState(st, proposals, before, term);
    } catch (e) {
      process.stderr.write(`${tag} round ${it} (seed ${seed}):\n${c.logTail(NODE, 30)}\n`);
      throw e;
    }
    // An unanswered proposal is committed now if it was applied; if not, it is in no log and must
    // never show up later.
    const applied = new Set(st.ids);
    for (const p of proposals.values()) {
      if (p.outcome !== 'failed') continue;
      stats.unanswered++;
      p.outcome = applied.has(p.id) ? 'pending' : 'absent';
    }
    before = st;
  }
  stats.applied = before.ids.length;
  return stats;
}

// Restarts dominate (a node from source starts in 1-4 s), so the 30 kills run as 3 loops of 10 on 3
// independent nodes at once.
describe('raft crash consistency: kill -9 under load', { timeout: 420_000 }, () => {
  const loops = 3;
  const clusters: TestCluster[] = [];

  before(async () => {
    // Frequent snapshots and compactions, so kills also land in the middle of those.
    const env = { RAFT_SNAPSHOT_EVERY: '400', RAFT_SNAPSHOT_RETAIN: '50' };
    const started = await Promise.allSettled(
      Array.from({ length: loops }, () => TestCluster.start({ nodes: 1, env })),
    );
    for (const r of started) if (r.status === 'fulfilled') clusters.push(r.value);
    for (const r of started) if (r.status === 'rejected') throw r.reason;
  });

  after(async () => {
    await Promise.all(clusters.map((c) => c.stop()));
  });

  it('loses no acknowledged entry and invents none over 30 random kills', async (t) => {
    const iterations = Number(process.env.DSS_CRASH_ITERATIONS ?? 30);
    t.diagnostic(`seed ${SEED} (DSS_CRASH_SEED replays it)`);
    const per = Math.ceil(iterations / loops);
    const all = await Promise.all(clusters.map((c, k) => crashLoop(c, per, SEED + k, `n${k}`)));
    const restartMs = all.flatMap((s) => s.restartMs);
    const sum = (f: (s: LoopStats) => number): number => all.reduce((a, s) => a + f(s), 0);
    t.diagnostic(
      `${restartMs.length} kills, ${sum((s) => s.acked)} acknowledged, ${sum((s) => s.unanswered)} unanswered, ` +
        `${sum((s) => s.applied)} applied; restart to first read ` +
        `${Math.round(restartMs.reduce((a, b) => a + b, 0) / restartMs.length)} ms on average`,
    );
  });
});

// ------------------------------------------------------------------- WAL files of a stopped node

interface Frame {
  offset: number;
  /** Bytes including the 8-byte header. */
  size: number;
  record: { k: string; i?: number; e?: unknown[] };
}

/** The WAL's records, parsed the way the storage writes them (u32 length, u32 crc32, JSON). */
function frames(buf: Buffer): Frame[] {
  const out: Frame[] = [];
  let offset = 0;
  while (offset + 8 <= buf.length) {
    const length = buf.readUInt32LE(offset);
    const payload = buf.subarray(offset + 8, offset + 8 + length);
    if (length === 0 || payload.length < length || crc32(payload) !== buf.readUInt32LE(offset + 4)) break;
    out.push({ offset, size: 8 + length, record: JSON.parse(payload.toString('utf8')) as Frame['record'] });
    offset += 8 + length;
  }
  return out;
}

/** Every byte of the segment belongs to a whole record (call it while the node is idle). */
function assertWalWhole(file: string): void {
  const buf = readFileSync(file);
  const last = frames(buf).at(-1)!;
  assert.equal(last.offset + last.size, buf.length, `${file} holds bytes after its last whole record`);
}

function walDir(c: TestCluster): string {
  return join(c.node(NODE).dataDir, 'raft');
}

function lastSegment(dir: string): string {
  const segs = readdirSync(dir)
    .filter((n) => /^wal-\d{16}\.log$/.test(n))
    .sort();
  assert.ok(segs.length > 0, `no WAL segment in ${dir}`);
  return join(dir, segs.at(-1)!);
}

function hashFiles(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const name of readdirSync(dir).sort()) {
    out.set(
      name,
      createHash('sha256')
        .update(readFileSync(join(dir, name)))
        .digest('hex'),
    );
  }
  return out;
}

/** Starts the node's process by hand and waits (bounded) for it to exit; it is killed if it does not. */
async function runToExit(
  c: TestCluster,
  timeoutMs: number,
): Promise<{ code: number | null; stderr: string }> {
  const node = c.node(NODE);
  const proc = spawn(process.execPath, [...DSS_ENTRY, 'node'], {
    cwd: ROOT,
    env: { ...process.env, ...node.env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  let code: number | null | undefined;
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  const exited = new Promise<void>((resolve) =>
    proc.on('exit', (c) => {
      code = c;
      resolve();
    }),
  );
  try {
    await waitFor('the node to refuse to start', () => code !== undefined, { timeoutMs });
    return { code: code ?? null, stderr };
  } finally {
    if (code === undefined) {
      proc.kill('SIGKILL');
      await exited;
    }
  }
}

describe('raft crash consistency: damaged WAL files', { timeout: 180_000 }, () => {
  let c: TestCluster;
  const random = rng(SEED ^ 0x5eed);
  const proposals = new Map<string, Proposal>();

  before(async () => {
    // No snapshots here: every entry is in the WAL, so what a tear removes is known exactly.
    c = await TestCluster.start({ nodes: 1 });
    await c.leader();
  });

  after(async () => {
    await c.stop();
  });

  /** Proposes `n` entries, 16 at a time; all must be acknowledged. */
  async function write(tag: string, n: number): Promise<void> {
    const url = c.node(NODE).url;
    for (let i = 0; i < n; i += 16) {
      await Promise.all(
        Array.from({ length: Math.min(16, n - i) }, async (_, k) => {
          const id = `${tag}-${i + k}`;
          const r = await propose(url, id);
          assert.equal(r.status, 200, `proposal ${id} answered ${r.status}`);
          proposals.set(id, { id, outcome: 'acked', index: r.index! });
        }),
      );
    }
  }

  async function restartAndRead(): Promise<DebugState> {
    await c.restart(NODE);
    await c.leader();
    return readState(c.node(NODE).url);
  }

  it('cuts a torn last record and keeps every entry before it', async () => {
    await write('torn', 300);
    const full = await readState(c.node(NODE).url);
    await c.kill(NODE);
    const file = lastSegment(walDir(c));
    const buf = readFileSync(file);
    const fs = frames(buf);
    assert.equal(
      fs.at(-1)!.offset + fs.at(-1)!.size,
      buf.length,
      'the WAL parses to its end before the tear',
    );
    const last = fs.at(-1)!;
    assert.equal(last.record.k, 'ents', 'the last record holds entries');
    const cut = last.offset + 1 + Math.floor(random() * (last.size - 1));
    truncateSync(file, cut);
    const st = await restartAndRead();
    // Exactly the entries before the torn record survive (the no-op of the new term is invisible).
    const keep = full.indexes.filter((i) => i < last.record.i!).length;
    assert.deepEqual(st.ids, full.ids.slice(0, keep), `entries before the tear at byte ${cut} of ${file}`);
    assert.deepEqual(st.indexes, full.indexes.slice(0, keep));
    assert.ok(keep < full.ids.length, 'the torn record held at least one entry');
    // The node takes writes again, written where the tear was cut: the WAL parses to its end.
    await write('after-tear', 20);
    assertWalWhole(file);
    const after = await readState(c.node(NODE).url);
    for (const n of [...Array(20).keys()]) {
      assert.equal(
        after.indexes[after.ids.indexOf(`after-tear-${n}`)],
        proposals.get(`after-tear-${n}`)!.index,
      );
    }
  });

  it('drops garbage appended after the last record and keeps everything', async () => {
    const full = await readState(c.node(NODE).url);
    await c.kill(NODE);
    const file = lastSegment(walDir(c));
    const garbage = Buffer.from(
      Array.from({ length: 1 + Math.floor(random() * 200) }, () => Math.floor(random() * 256)),
    );
    appendFileSync(file, garbage);
    const st = await restartAndRead();
    assert.deepEqual(st.ids, full.ids);
    assert.deepEqual(st.indexes, full.indexes);
    await write('after-garbage', 20);
    assertWalWhole(file);
    const after = await readState(c.node(NODE).url);
    assert.ok(after.ids.includes('after-garbage-19'));
  });

  it('refuses to start on a corrupt record in the middle, naming file and offset, changing nothing', async () => {
    const full = await readState(c.node(NODE).url);
    await c.kill(NODE);
    const dir = walDir(c);
    const file = lastSegment(dir);
    const buf = readFileSync(file);
    const fs = frames(buf);
    assert.ok(fs.length >= 10, `enough records to pick one in the middle (${fs.length})`);
    // Not the segment header (record 0), not the last record (damage there is a torn tail).
    const victim = fs[1 + Math.floor(random() * (fs.length - 2))]!;
    const at = victim.offset + Math.floor(random() * victim.size);
    const original = buf[at]!;
    const flipped = Buffer.from(buf);
    flipped[at] = original ^ (1 << Math.floor(random() * 8));
    writeFileSync(file, flipped);
    const hashes = hashFiles(dir);

    const { code, stderr } = await runToExit(c, 45_000);
    assert.notEqual(code, 0, 'the node exits with an error');
    assert.ok(code !== null, 'the node exits by itself, not by a signal');
    const lines = stderr.split('\n').filter((l) => l.includes('WAL corrupt'));
    assert.equal(lines.length, 1, `one line about the corruption on stderr:\n${stderr}`);
    assert.ok(
      lines[0]!.includes(`${file} at byte ${victim.offset}`),
      `the line names ${file} and byte ${victim.offset} (flipped byte ${at}): ${lines[0]}`,
    );
    assert.deepEqual(hashFiles(dir), hashes, 'the refused start changed no file');

    // Undo the damage: the node starts with everything it had.
    flipped[at] = original;
    writeFileSync(file, flipped);
    const st = await restartAndRead();
    assert.deepEqual(st.ids, full.ids);
    assert.deepEqual(st.indexes, full.indexes);
  });
});

// ------------------------------------------------------------------- full disk

describe('raft crash consistency: full disk', { timeout: 120_000 }, () => {
  let mountDir: string | null = null;
  let c: TestCluster | null = null;
  let why = '';

  before(() => {
    const dir = mkdtempSync(join(tmpdir(), 'dss-fulldisk-'));
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', dir], { stdio: 'pipe' });
      mountDir = dir;
    } catch (e) {
      why = `cannot mount a small tmpfs here: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`;
      rmSync(dir, { recursive: true, force: true });
    }
  });

  after(async () => {
    await c?.stop();
    if (mountDir !== null) {
      execFileSync('umount', [mountDir]);
      rmSync(mountDir, { recursive: true, force: true });
    }
  });

  it('answers 503 while the disk is full, keeps serving, loses nothing and recovers', async (t) => {
    if (mountDir === null) {
      t.skip(why);
      return;
    }
    const dataDir = mountDir;
    c = await TestCluster.start({ nodes: 1, env: { DATA_DIR: dataDir } });
    await c.leader();
    const url = c.node(NODE).url;
    const proposals = new Map<string, Proposal>();
    const acked = async (id: string): Promise<number> => {
      const r = await propose(url, id);
      assert.equal(r.status, 200, `${id}: ${r.status}`);
      proposals.set(id, { id, outcome: 'acked', index: r.index! });
      return r.index!;
    };
    for (let i = 0; i < 50; i++) await acked(`pre-${i}`);

    // Fill the file system; the WAL's last page may still take a few small records.
    const filler = join(dataDir, 'filler');
    const fd = openSync(filler, 'w');
    try {
      const chunk = Buffer.alloc(64 * 1024, 1);
      for (let size = chunk.length; size >= 1;) {
        try {
          writeSync(fd, chunk, 0, size);
        } catch {
          size = Math.floor(size / 2);
        }
      }
    } finally {
      closeSync(fd);
    }

    let refused: { id: string; status: number } | null = null;
    for (let i = 0; i < 2000 && refused === null; i++) {
      const id = `full-${i}`;
      const r = await propose(url, id);
      if (r.status === 200) proposals.set(id, { id, outcome: 'acked', index: r.index! });
      else {
        proposals.set(id, { id, outcome: 'failed', status: r.status });
        refused = { id, status: r.status };
      }
    }
    assert.ok(refused !== null, 'a proposal is refused once the disk is full');
    assert.equal(refused.status, 503, 'a full disk answers 503');
    // Still refusing, still alive, still answering local reads with everything acknowledged.
    const again = await propose(url, 'full-again');
    proposals.set('full-again', { id: 'full-again', outcome: 'failed', status: again.status });
    assert.equal(again.status, 503);
    assert.ok(c.node(NODE).proc !== null, 'the node process is still running');
    const health = await fetch(`${url}/health`);
    assert.equal(health.status, 200);
    const local = (await (await fetch(`${url}/debug/raft/state`)).json()) as DebugState;
    for (const [id, p] of proposals) {
      if (p.outcome === 'acked') assert.equal(local.indexes[local.ids.indexOf(id)], p.index, id);
    }

    // Space comes back: writes resume by themselves.
    unlinkSync(filler);
    let attempt = 0;
    await waitFor(
      'a proposal to succeed after space is freed',
      async () => {
        const id = `back-${attempt++}`;
        proposals.set(id, { id, outcome: 'failed' });
        return (await propose(url, id)).status === 200;
      },
      { timeoutMs: 20_000 },
    );
    for (let i = 0; i < 20; i++) await acked(`post-${i}`);

    // And the disk holds all of it: a kill -9 and restart finds every acknowledged entry.
    await c.restart(NODE);
    await c.leader();
    const st = await readState(url);
    const { term } = await raftStatus(url);
    checkState(st, proposals, { count: 0, ids: [], indexes: [] }, term);
  });
});
