// Benchmark runner: `npm run bench [-- raft-failover raft-throughput ...]`. Prints results and
// rewrites this run's sections of docs/BENCHMARKS.md (machine and command included).
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
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
