// Raft benchmarks: failover time over repeated leader SIGKILLs, and raw replication throughput.
// Run through `npm run bench -- raft`; results go to docs/BENCHMARKS.md.
import { Agent, request } from 'undici';
import { deadline } from '../src/transport/deadline.js';
import { TestCluster } from '../test/helpers/cluster.js';
import { fmt, summarize } from './stats.js';

const agent = new Agent({ connections: 128, keepAliveTimeout: 10_000 });

async function propose(
  url: string,
  command: unknown,
  timeoutMs: number,
): Promise<{ status: number; ms: number }> {
  const t0 = performance.now();
  const limit = deadline(timeoutMs);
  try {
    const res = await request(`${url}/debug/raft/propose`, {
      method: 'POST',
      dispatcher: agent,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ command }),
      signal: limit.signal,
    });
    await res.body.text();
    return { status: res.statusCode, ms: performance.now() - t0 };
  } catch {
    return { status: 0, ms: performance.now() - t0 };
  } finally {
    limit.clear();
  }
}

async function metric(url: string, name: string): Promise<number> {
  const res = await request(`${url}/metrics`, { dispatcher: agent });
  const text = await res.body.text();
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+]+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

export interface FailoverResult {
  label: string;
  failoverMs: number[];
  inflightMaxMs: number;
  inflightHung: number;
  inflightCount: number;
}

/**
 * Kill the leader `rounds` times. Failover time: from the SIGKILL until a surviving node has
 * committed a new entry (proposals through any survivor, forwarded to whoever leads). Meanwhile
 * 4 clients keep proposals in flight through the followers; each one in flight at the kill must
 * get an answer (success or error status) within 1 s.
 */
export async function failover(
  label: string,
  rounds: number,
  timing: { electionMinMs: number; electionMaxMs: number; heartbeatMs: number },
): Promise<FailoverResult> {
  const c = await TestCluster.start({ nodes: 3, ...timing });
  const failoverMs: number[] = [];
  let inflightMaxMs = 0;
  let inflightHung = 0;
  let inflightCount = 0;
  try {
    for (let r = 0; r < rounds; r++) {
      const leader = await c.leader(undefined, 60_000);
      const survivors = c.nodes.filter((n) => n.id !== leader.id);
      // Requests in flight through followers at the moment of the kill.
      let killAt = 0;
      let stop = false;
      const inflight = survivors.map(async (n, i) => {
        while (!stop) {
          const sent = performance.now();
          const res = await propose(n.url, { id: `inflight-${r}-${i}` }, 10_000);
          const answered = performance.now();
          if (killAt > 0 && sent <= killAt && answered >= killAt) {
            inflightCount++;
            const wait = answered - killAt;
            inflightMaxMs = Math.max(inflightMaxMs, wait);
            if (wait > 1000 || res.status === 0) inflightHung++;
          }
          if (killAt > 0 && sent > killAt) return;
        }
      });
      await new Promise((r2) => setTimeout(r2, 50));
      const kill = c.kill(leader.id);
      killAt = performance.now();
      await kill;
      let done = false;
      while (!done) {
        for (const n of survivors) {
          const res = await propose(n.url, { id: `probe-${r}` }, 2000);
          if (res.status === 200) {
            failoverMs.push(performance.now() - killAt);
            done = true;
            break;
          }
        }
        if (!done) await new Promise((r2) => setTimeout(r2, 5));
      }
      stop = true;
      await Promise.all(inflight);
      await c.restart(leader.id);
      await c.leader(undefined, 60_000);
    }
  } finally {
    await c.stop();
  }
  return { label, failoverMs, inflightMaxMs, inflightHung, inflightCount };
}

export interface ThroughputResult {
  concurrency: number;
  seconds: number;
  committed: number;
  perSecond: number;
  p50: number;
  p99: number;
  fsyncsPer1000: number;
  errors: number;
}

/** `concurrency` clients propose no-op commands to the leader as fast as they are answered. */
export async function throughput(concurrency: number, seconds: number): Promise<ThroughputResult> {
  const c = await TestCluster.start({
    nodes: 3,
    electionMinMs: 1000,
    electionMaxMs: 2000,
    heartbeatMs: 200,
    env: { LOG_LEVEL: 'warn' },
  });
  try {
    const leader = await c.leader();
    const url = c.node(leader.id).url;
    // Warm up connections and JIT.
    await Promise.all(Array.from({ length: concurrency }, (_, i) => propose(url, { w: i }, 5000)));
    const fsync0 = await Promise.all(c.nodes.map((n) => metric(n.url, 'raft_fsync_total')));
    const lat: number[] = [];
    let errors = 0;
    const end = performance.now() + seconds * 1000;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (performance.now() < end) {
          const r = await propose(url, null, 5000);
          if (r.status === 200) lat.push(r.ms);
          else errors++;
        }
      }),
    );
    const elapsed = (performance.now() - t0) / 1000;
    const fsync1 = await Promise.all(c.nodes.map((n) => metric(n.url, 'raft_fsync_total')));
    const leaderIdx = c.nodes.findIndex((n) => n.id === leader.id);
    const fsyncs = fsync1[leaderIdx]! - fsync0[leaderIdx]!;
    const s = summarize(lat);
    return {
      concurrency,
      seconds: elapsed,
      committed: s.n,
      perSecond: s.n / elapsed,
      p50: s.p50,
      p99: s.p99,
      fsyncsPer1000: (fsyncs / Math.max(1, s.n)) * 1000,
      errors,
    };
  } finally {
    await c.stop();
  }
}

export function failoverMarkdown(rs: FailoverResult[]): string {
  const rows = rs.map((r) => {
    const s = summarize(r.failoverMs);
    return `| ${r.label} | ${s.n} | ${fmt(s.p50, 0)} | ${fmt(s.p99, 0)} | ${fmt(s.max, 0)} | ${r.inflightCount} | ${fmt(r.inflightMaxMs, 0)} | ${r.inflightHung} |`;
  });
  return [
    '| timeouts | kills | failover p50 (ms) | p99 (ms) | max (ms) | requests in flight at kill | slowest answer after kill (ms) | unanswered or > 1 s |',
    '|---|---|---|---|---|---|---|---|',
    ...rows,
  ].join('\n');
}

export function throughputMarkdown(rs: ThroughputResult[]): string {
  return [
    '| proposers | duration (s) | committed | entries/s | p50 commit (ms) | p99 commit (ms) | leader fsyncs per 1000 entries | errors |',
    '|---|---|---|---|---|---|---|---|',
    ...rs.map(
      (r) =>
        `| ${r.concurrency} | ${fmt(r.seconds)} | ${r.committed} | ${fmt(r.perSecond, 0)} | ${fmt(r.p50, 2)} | ${fmt(r.p99, 2)} | ${fmt(r.fsyncsPer1000, 1)} | ${r.errors} |`,
    ),
  ].join('\n');
}

export async function closeBench(): Promise<void> {
  await agent.close();
}
