// CPU accounting shared by the benchmarks: per-process utime+stime from /proc, the machine's idle
// time, and waiting for a quiet machine before a measurement.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { setTimeout as delay } from 'node:timers/promises';
import { fmt } from './stats.js';

export const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** utime + stime of a process, in clock ticks (NaN once it is gone). */
export function cpuTicks(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return NaN;
  }
}

/** Idle and total jiffies of the whole machine, from /proc/stat. */
export function machineTicks(): { idle: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { idle, total: v.reduce((a, b) => a + b, 0) };
}

export interface CpuSample {
  at: number;
  procs: { label: string; pid: number; ticks: number }[];
  machine: { idle: number; total: number };
}

export function sampleCpu(procs: { label: string; pid: number }[]): CpuSample {
  return {
    at: performance.now(),
    procs: procs.map((p) => ({ ...p, ticks: cpuTicks(p.pid) })),
    machine: machineTicks(),
  };
}

/**
 * Percent of one core per process between two samples; "other": everything else that kept the
 * machine busy (other processes on it, and kernel time not charged to a process, such as softirqs
 * of loopback traffic); "idle": the machine's idle percent (of all its cores).
 */
export function cpuBetween(a: CpuSample, b: CpuSample): { label: string; pct: number }[] {
  const secs = (b.at - a.at) / 1000;
  const all = a.procs.map((p, i) => ({
    label: p.label,
    pct: ((b.procs[i]!.ticks - p.ticks) / CLK_TCK / secs) * 100,
  }));
  const total = b.machine.total - a.machine.total;
  const idle = total > 0 ? (b.machine.idle - a.machine.idle) / total : NaN;
  const busy = (1 - idle) * cpus().length * 100;
  const ours = all.reduce((sum, p) => sum + (Number.isFinite(p.pct) ? p.pct : 0), 0);
  const out = all.filter((p) => p.label !== 'idle system');
  out.push({ label: 'other', pct: Math.max(0, busy - ours) }, { label: 'idle', pct: idle * 100 });
  return out;
}

/**
 * Others share this machine (test runs of concurrent work): before a measurement, wait until
 * processes other than ours used under BENCH_QUIET_PCT (default 25) % of a core over a second,
 * for at most BENCH_QUIET_WAIT_S (default 180) s. Returns the seconds waited.
 */
export async function waitQuiet(ours: { label: string; pid: number }[]): Promise<number> {
  const limit = Number(process.env.BENCH_QUIET_PCT ?? 25);
  const maxWait = Number(process.env.BENCH_QUIET_WAIT_S ?? 180) * 1000;
  const t0 = performance.now();
  let warned = false;
  for (;;) {
    const a = sampleCpu(ours);
    await delay(1000);
    const other = cpuBetween(a, sampleCpu(ours)).find((c) => c.label === 'other')?.pct ?? 0;
    const waited = performance.now() - t0;
    if (other < limit) return waited / 1000;
    if (waited > maxWait) {
      console.log(`  machine still busy (${fmt(other, 0)} % of a core outside the bench); measuring anyway`);
      return waited / 1000;
    }
    if (!warned)
      console.log(`  waiting for a quiet machine (${fmt(other, 0)} % of a core outside the bench)`);
    warned = true;
  }
}

/**
 * Runs a measurement, and again (up to twice more) while more than twice BENCH_QUIET_PCT % of a core
 * was used outside the bench during it: others share this machine.
 */
export async function measureUndisturbed<R extends { cpu: { label: string; pct: number }[] }>(
  label: string,
  run: () => Promise<R>,
): Promise<R> {
  const limit = 2 * Number(process.env.BENCH_QUIET_PCT ?? 25);
  let r = await run();
  for (let attempt = 2; attempt <= 3; attempt++) {
    const other = r.cpu.find((c) => c.label === 'other')?.pct ?? 0;
    if (other <= limit) break;
    console.log(`  ${fmt(other, 0)} % of a core outside the bench during ${label}: measuring again`);
    r = await run();
  }
  return r;
}

/**
 * CPU time (ms) this process spends on a fixed piece of plain JS work, the least of three tries: a
 * yardstick of the cores' speed. When a long run slows down, a yardstick that slows down with it
 * points at the machine (other tenants of the host, clock speed), one that does not at our code.
 */
export function cpuYardstickMs(): number {
  let best = Number.POSITIVE_INFINITY;
  let x = 0;
  for (let t = 0; t < 3; t++) {
    const start = process.cpuUsage();
    for (let i = 0; i < 20_000_000; i++) x = (Math.imul(x, 31) + i) | 0;
    const d = process.cpuUsage(start);
    best = Math.min(best, (d.user + d.system) / 1000);
  }
  // Using x keeps the loop from being optimized away.
  return x === 0.5 ? NaN : best;
}

/**
 * A formatter of a suite's CPU shares: "leader 61 · followers 31+32 · bench 22 · other 8 · machine
 * idle 20%", each labelled process's share in the order given as [label, shown as]; several
 * processes with one label are joined by +.
 */
export function cpuTextFor(
  order: ReadonlyArray<readonly [label: string, shown: string]>,
): (cpu: { label: string; pct: number }[]) => string {
  return (cpu) => {
    const by = (label: string): string =>
      cpu
        .filter((c) => c.label === label)
        .map((c) => fmt(c.pct, 0))
        .join('+');
    const parts: string[] = [];
    for (const [label, shown] of order) {
      const v = by(label);
      if (v) parts.push(`${shown} ${v}`);
    }
    return `${parts.join(' · ')} · machine idle ${by('idle')}%`;
  };
}
