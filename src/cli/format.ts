// Terminal output helpers for the CLI.

/** Left-aligned text table with a header row. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

const HIDDEN_LOG_KEYS = new Set(['level', 'time', 'pid', 'hostname', 'node_id', 'msg']);
const LEVEL_NAMES: Record<number, string> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO',
  40: 'WARN',
  50: 'ERROR',
  60: 'FATAL',
};

/** A pino JSON line made readable (`INFO raft state role=leader term=2`); other lines as they are. */
export function humanizeLogLine(line: string): string {
  if (!line.startsWith('{')) return line;
  let rec: unknown;
  try {
    rec = JSON.parse(line);
  } catch {
    return line;
  }
  if (typeof rec !== 'object' || rec === null || Array.isArray(rec)) return line;
  const r = rec as Record<string, unknown>;
  const level = typeof r.level === 'number' ? (LEVEL_NAMES[r.level] ?? String(r.level)) : 'LOG';
  const extras = Object.entries(r)
    .filter(([k]) => !HIDDEN_LOG_KEYS.has(k))
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
  return [level.padEnd(5), typeof r.msg === 'string' ? r.msg : '', ...extras].join(' ');
}
