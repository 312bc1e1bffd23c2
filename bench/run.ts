// Benchmark runner: `npm run bench [-- raft-failover raft-throughput lock lock-memory queue cache cache-wrk ...]`. Prints results and
// rewrites this run's sections of docs/BENCHMARKS.md (machine and command included).
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
import {
  DIRECT_DSS,
  WARM_UP_MS,
  lockComparison,
  lockMarkdown,
  lockMemory,
  lockMemoryMarkdown,
  lockTargets,
  revision,
  type MemoryResult,
} from './lock.js';
import { fmt } from './stats.js';
import { closeBench, failover, failoverMarkdown, throughput, throughputMarkdown } from './raft.js';

const DOC = fileURLToPath(new URL('../docs/BENCHMARKS.md', import.meta.url));

function machine(): string {
  const cpu = cpus()[0]?.model ?? 'unknown cpu';
  return `${cpus().length} × ${cpu}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
}

/** Replace (or append) the section between markers `<!-- bench:name -->` and `<!-- /bench:name -->`. */
function writeSection(name: string, body: string): void {
  const doc = existsSync(DOC) ? readFileSync(DOC, 'utf8') : '# Benchmarks\n';
  const start = `<!-- bench:${name} -->`;
  const end = `<!-- /bench:${name} -->`;
  const block = `${start}\n${body.trim()}\n${end}`;
  const i = doc.indexOf(start);
  const j = doc.indexOf(end);
  const next =
    i >= 0 && j > i ? doc.slice(0, i) + block + doc.slice(j + end.length) : `${doc.trimEnd()}\n\n${block}\n`;
  writeFileSync(DOC, next);
}

/** What the lock-memory table shows, with its numbers. */
function memoryNotes(r: MemoryResult): string {
  const pairPoints = r.points.filter((p) => p.rate !== undefined);
  const mib = (b: number): string => fmt(b / 2 ** 20, 0);
  const range = (xs: number[]): string => `${mib(Math.min(...xs))}–${mib(Math.max(...xs))}`;
  const leaderRss = pairPoints.map((p) => p.rss[0] ?? NaN);
  const rssAll = pairPoints.flatMap((p) => p.rss);
  const dirs = pairPoints.flatMap((p) => p.disk.map((d) => d.total));
  const last = r.points.at(-1);
  if (!last || pairPoints.length === 0) return '';
  return (
    `- Over the ${r.pairs.toLocaleString('en-US')} pairs (${last.commitIndex.toLocaleString('en-US')} ` +
    `entries committed in all), each node's Raft dir stayed within ${range(dirs)} MiB: snapshots ` +
    `let compaction delete whole WAL segments, but segments are 64 MiB and ` +
    `the active one is never deleted, so the dir saw-tooths between the snapshots alone and about one ` +
    `full segment plus the snapshots (two kept) rather than staying flat; it does not grow with the log.\n` +
    `- RSS of the nodes during the pairs: ${range(rssAll)} MiB, against ${range(r.points[1]?.rss ?? [])} ` +
    `MiB right after the ${r.held.toLocaleString('en-US')} locks were taken. The leader's went from ` +
    `${mib(leaderRss[0] ?? NaN)} MiB at the first point to ${mib(leaderRss.at(-1) ?? NaN)} MiB at the ` +
    `last, moving by up to ${mib(Math.max(...leaderRss.slice(1).map((x, i) => Math.abs(x - leaderRss[i]!))))} ` +
    `MiB between points (garbage collection). Whether any rise is V8 heap sizing or a slow leak, this ` +
    `table cannot tell: that needs a heap snapshot or a longer run.\n` +
    `- Pairs/s went from ${fmt(pairPoints[0]!.rate!, 0)} at the first point to ` +
    `${fmt(pairPoints.at(-1)!.rate!, 0)} at the last; the leader's CPU per pair from ` +
    `${fmt(pairPoints[0]!.leaderCpuPerPairUs ?? NaN, 0)} to ${fmt(pairPoints.at(-1)!.leaderCpuPerPairUs ?? NaN, 0)} µs; ` +
    `the CPU yardstick from ${fmt(pairPoints[0]!.yardstickMs, 1)} to ${fmt(pairPoints.at(-1)!.yardstickMs, 1)} ms ` +
    `(range ${fmt(Math.min(...r.points.map((p) => p.yardstickMs)), 1)}–` +
    `${fmt(Math.max(...r.points.map((p) => p.yardstickMs)), 1)} ms).\n`
  );
}

const suites: Record<string, () => Promise<void>> = {
  'raft-failover': async () => {
    const rounds = Number(process.env.BENCH_FAILOVER_ROUNDS ?? 20);
    const fast = await failover('150–300 ms / 50 ms', rounds, {
      electionMinMs: 150,
      electionMaxMs: 300,
      heartbeatMs: 50,
    });
    console.log(failoverMarkdown([fast]));
    const slow = await failover('3–5 s / 1 s (defaults)', rounds, {
      electionMinMs: 3000,
      electionMaxMs: 5000,
      heartbeatMs: 1000,
    });
    const table = failoverMarkdown([fast, slow]);
    console.log(table);
    writeSection(
      'raft-failover',
      `## Raft failover\n\n${new Date().toISOString().slice(0, 10)}, ${machine()}; \`npm run bench -- raft-failover\` ` +
        `(3 node processes on loopback, ${rounds} SIGKILLs of the leader per row).\n\n${table}\n`,
    );
  },
  'raft-throughput': async () => {
    const seconds = Number(process.env.BENCH_SECONDS ?? 10);
    const results = [];
    for (const c of [1, 64]) {
      const r = await throughput(c, seconds);
      console.log(throughputMarkdown([r]));
      results.push(r);
    }
    const table = throughputMarkdown(results);
    writeSection(
      'raft-throughput',
      `## Raft replication throughput\n\n${new Date().toISOString().slice(0, 10)}, ${machine()}; ` +
        `\`npm run bench -- raft-throughput\` (3 node processes, no-op commands POSTed to the leader's ` +
        `test hook, each answered after commit and apply on the leader; fsync = fdatasync of the WAL).\n\n${table}\n`,
    );
  },
  lock: async () => {
    const seconds = Number(process.env.BENCH_SECONDS ?? 10);
    const rev = revision();
    const results = await lockComparison(seconds);
    const table = lockMarkdown(results);
    // The like-for-like rows are the nodes with direct peer links, as etcd's members have; the
    // TestCluster rows (BENCH_LOCK_DIRECT=0 keeps only them) route Raft traffic through proxies that
    // run inside the load generator, on the same 2 cores.
    const hasDirect = results.some((r) => r.system === DIRECT_DSS);
    const targets = lockTargets(results, hasDirect ? DIRECT_DSS : undefined);
    const proxied = hasDirect ? lockTargets(results) : '';
    console.log(`${table}\n\n${targets}\n\n${proxied}`);
    writeSection(
      'lock',
      `## Lock service: DSS vs etcd vs Redis\n\n${new Date().toISOString().slice(0, 10)}, ${machine()}; ` +
        `\`npm run bench -- lock\` (${seconds} s measured per row after a ${Math.min(2, seconds / 5)} s warm-up; ` +
        `each system first gets ${WARM_UP_MS / 1000} s of unmeasured load (64 clients, distinct resources) ` +
        `once it is up, so that no row measures cold JavaScript; ` +
        `every system on loopback on this machine, started by the bench; for each scenario the systems ` +
        `run one after the other, never at once; ${rev}).\n\n` +
        `A pair is an exclusive acquire then a release by the same client; its latency runs from sending ` +
        `the acquire to the release's answer (for hot resources it includes the wait in the queue). ` +
        `What each system does per pair:\n\n` +
        `- **DSS**: 3 node processes (TestCluster: election 1–2 s, heartbeat 200 ms, LOG_LEVEL=warn); ` +
        `clients POST \`/lock/acquire\` and \`/lock/release\` to the leader (an undici Pool, keep-alive; etcd's gateway gets the same client). Two Raft ` +
        `commits per pair, each fdatasynced on a majority before the answer. Hot resources: \`wait_ms\` ` +
        `10000, so an acquire queues on the leader and is granted by the release before it. Raft traffic ` +
        `between the nodes goes through TestCluster's TCP proxies, which run inside the load generator.\n` +
        `- **DSS, peers direct**: the same three nodes and settings, started by the bench with ` +
        `\`CLUSTER_ADDRS\` naming each other, so Raft traffic skips the proxies as etcd's does ` +
        `(\`BENCH_LOCK_DIRECT=0\` leaves it out).\n` +
        `- **etcd**: 3 members (\`--log-level warn\`, default heartbeat 100 ms / election 1 s), its v3 ` +
        `lock service through the JSON gateway of the leader member; one lease (TTL 60 s) per client. ` +
        `Lock = a Txn putting \`name/<lease>\` with the lease (1 Raft commit, WAL fsync on a majority) ` +
        `plus a lease keep-alive, then a watch on earlier keys when contended; unlock = a delete (1 Raft ` +
        `commit).\n` +
        `- **Redis**: one \`redis-server\` (\`--save "" --appendonly no\`), ioredis with a connection ` +
        `per client. Acquire = \`SET key client NX PX 30000\`, retried every 1 ms while held (hot ` +
        `resources); release = a Lua compare-and-delete. No replication, no fsync: a ceiling, not a ` +
        `like-for-like system.\n\n` +
        `CPU is each process's utime+stime over the measured window, in % of one core (the machine has ` +
        `${cpus().length}); "bench" is the load generator (for the TestCluster rows it also runs the Raft ` +
        `proxies); "other" is the rest of the machine's busy time (kernel softirqs of loopback ` +
        `traffic, and other people's processes on this shared machine: each row waits first for ` +
        `under 25 % of a core of that).\n\n` +
        `${table}\n\nTargets from the issue (${hasDirect ? 'DSS with direct peer links, as etcd has' : 'DSS as TestCluster runs it'}, ` +
        `against etcd; not tuned, measured as is):\n\n${targets}\n` +
        (proxied
          ? `\nThe same targets for DSS as TestCluster runs it (its Raft traffic through TCP proxies in the ` +
            `load generator's process):\n\n${proxied}\n`
          : ''),
    );
  },
  'lock-memory': async () => {
    const pairs = Number(process.env.BENCH_PAIRS ?? 1_000_000);
    const held = Number(process.env.BENCH_HELD ?? 100_000);
    const rev = revision();
    const r = await lockMemory(held, pairs);
    const table = lockMemoryMarkdown(r);
    console.log(table);
    writeSection(
      'lock-memory',
      `## Lock service: memory and disk under sustained churn\n\n${new Date().toISOString().slice(0, 10)}, ` +
        `${machine()}; \`BENCH_PAIRS=${pairs} npm run bench -- lock-memory\` (a fresh 3-node DSS cluster, ` +
        `election 1–2 s, heartbeat 200 ms; a node snapshots after ${r.snapshotEvery} applied entries, or ` +
        `after half its state's records (resources, holds, waiters) times 1 to 1.5 at random when that is ` +
        `more; ${rev}).\n\n` +
        `First ${held.toLocaleString('en-US')} exclusive locks on distinct resources (64 concurrent ` +
        `clients, TTL one day) are taken and kept: ${fmt(r.heldSeconds, 1)} s, ${r.heldErrors} errors. ` +
        `Then ${pairs.toLocaleString('en-US')} acquire/release pairs by 64 clients, each on its own ` +
        `resource: ${fmt(r.pairsSeconds, 0)} s (${fmt(r.pairs / r.pairsSeconds, 0)} pairs/s), ` +
        `${r.pairErrors} failed` +
        (r.errorKinds.length ? ` (${r.errorKinds.map(([k, n]) => `${n} × ${k}`).join(', ')})` : '') +
        `. RSS is each node's \`process_resident_memory_bytes\`; a Raft dir is the ` +
        `total size of the files in the node's DATA_DIR (WAL segments and snapshots). The leader's CPU ` +
        `per pair is its utime+stime since the previous point divided by the pairs done meanwhile. The ` +
        `CPU yardstick is the CPU time the bench process spends on a fixed loop of plain JS at each point ` +
        `(least of three tries): if it grows while pairs/s falls, the machine's cores got slower, not ` +
        `our code.\n\n${table}\n\n` +
        memoryNotes(r),
    );
  },
  queue: async () => {
    // Loaded here, so that the other suites do not load BullMQ.
    const { queueComparison, queueMarkdown, queueSection, queueTargets } = await import('./queue.js');
    const seconds = Number(process.env.BENCH_QUEUE_SECONDS ?? process.env.BENCH_SECONDS ?? 10);
    const rev = revision();
    const rows = await queueComparison(seconds);
    console.log(`${queueMarkdown(rows)}\n\n${queueTargets(rows)}`);
    writeSection(
      'queue',
      queueSection(rows, {
        date: new Date().toISOString().slice(0, 10),
        machine: machine(),
        seconds,
        revision: rev,
      }),
    );
  },
  cache: async () => {
    // Loaded here, like the queue suite.
    const { cacheBench, cacheSection, hitMarkdown, hitTargets, opMarkdown, opTargets } =
      await import('./cache.js');
    const seconds = Number(process.env.BENCH_CACHE_SECONDS ?? process.env.BENCH_SECONDS ?? 10);
    const rev = revision();
    const r = await cacheBench(seconds);
    console.log(`${hitMarkdown(r)}\n\n${hitTargets(r)}\n\n${opMarkdown(r)}\n\n${opTargets(r)}`);
    writeSection(
      'cache',
      cacheSection(r, {
        date: new Date().toISOString().slice(0, 10),
        machine: machine(),
        seconds,
        revision: rev,
      }),
    );
  },
  'cache-wrk': async () => {
    const { cacheWrkBench, cacheWrkSection } = await import('./cache-wrk.js');
    const seconds = Number(process.env.BENCH_SECONDS ?? 3);
    const rev = revision();
    const rows = await cacheWrkBench(Number(process.env.BENCH_ROUNDS ?? 5), seconds);
    const body = cacheWrkSection(rows, {
      date: new Date().toISOString().slice(0, 10),
      machine: machine(),
      seconds,
      revision: rev,
    });
    console.log(body);
    writeSection('cache-wrk', body);
  },
};

const wanted = process.argv.slice(2);
const names = wanted.length ? wanted : Object.keys(suites);
try {
  for (const name of names) {
    const run = suites[name];
    if (!run) throw new Error(`unknown bench "${name}"; known: ${Object.keys(suites).join(', ')}`);
    console.log(`== ${name}`);
    await run();
  }
} finally {
  await closeBench();
}
// A client library's keep-alive socket or timer must not keep a finished run alive.
process.exit(process.exitCode ?? 0);
