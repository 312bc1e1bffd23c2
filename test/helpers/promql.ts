// Metric names used by PromQL expressions (a Grafana dashboard's panel queries) and metric names a
// Prometheus exposition offers, so a test can tell whether a dashboard asks for series that exist.
// A tokenizer, not a parser: it only needs to tell metric names from functions, keywords, label
// names, strings, numbers, durations and Grafana variables.

type Token =
  | { kind: 'ident'; text: string }
  | { kind: 'string'; text: string }
  | { kind: 'number' }
  | { kind: 'variable' }
  | { kind: 'punct'; text: string };

/** Words that are never metric names where they stand (PromQL keywords are case-insensitive). */
const KEYWORDS = new Set([
  'and',
  'or',
  'unless',
  'atan2',
  'bool',
  'offset',
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'inf',
  'nan',
]);

/** Aggregation operators: followed by `(` or by a grouping clause (`sum by (job) (x)`). */
const AGGREGATIONS = new Set([
  'sum',
  'min',
  'max',
  'avg',
  'group',
  'stddev',
  'stdvar',
  'count',
  'count_values',
  'bottomk',
  'topk',
  'quantile',
  'limitk',
  'limit_ratio',
]);

/** Keywords followed by a parenthesized list of label names. */
const LABEL_LIST_KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right']);

const IDENT_START = /[A-Za-z_:]/;
const IDENT_PART = /[A-Za-z0-9_:]/;
const PUNCT = [
  '=~',
  '!~',
  '!=',
  '==',
  '>=',
  '<=',
  '{',
  '}',
  '(',
  ')',
  '[',
  ']',
  ',',
  '=',
  '>',
  '<',
  '+',
  '-',
  '*',
  '/',
  '%',
  '^',
  '@',
  ':',
];

function tokenize(expr: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < expr.length) {
    const c = expr[i]!;
    if (/\s/.test(c)) {
      i++;
    } else if (c === '#') {
      // A comment runs to the end of the line.
      while (i < expr.length && expr[i] !== '\n') i++;
    } else if (c === '"' || c === "'" || c === '`') {
      let text = '';
      i++;
      while (i < expr.length && expr[i] !== c) {
        if (expr[i] === '\\' && c !== '`') i++;
        text += expr[i] ?? '';
        i++;
      }
      if (i >= expr.length) throw new Error(`unterminated string in ${JSON.stringify(expr)}`);
      i++;
      out.push({ kind: 'string', text });
    } else if (c === '$') {
      // Grafana variables: $name, ${name}, ${name:format}.
      i++;
      if (expr[i] === '{') {
        const end = expr.indexOf('}', i);
        if (end < 0) throw new Error(`unterminated \${ in ${JSON.stringify(expr)}`);
        i = end + 1;
      } else {
        while (i < expr.length && /[A-Za-z0-9_]/.test(expr[i]!)) i++;
      }
      out.push({ kind: 'variable' });
    } else if (expr.startsWith('[[', i)) {
      // Grafana's old variable syntax [[name]] (a range selector never starts with two brackets).
      const end = expr.indexOf(']]', i);
      if (end < 0) throw new Error(`unterminated [[ in ${JSON.stringify(expr)}`);
      i = end + 2;
      out.push({ kind: 'variable' });
    } else if (/[0-9]/.test(c) || (c === '.' && /[0-9]/.test(expr[i + 1] ?? ''))) {
      // Numbers, hex, exponents and durations (5m, 1h30m, 250ms) all end at the first other character.
      while (i < expr.length && /[0-9A-Za-z_.]/.test(expr[i]!)) {
        if (/[eE]/.test(expr[i]!) && /[+-]/.test(expr[i + 1] ?? '')) i++;
        i++;
      }
      out.push({ kind: 'number' });
    } else if (IDENT_START.test(c) && !(c === ':' && !IDENT_START.test(expr[i + 1] ?? ''))) {
      const start = i;
      while (i < expr.length && IDENT_PART.test(expr[i]!)) i++;
      out.push({ kind: 'ident', text: expr.slice(start, i) });
    } else {
      const p = PUNCT.find((q) => expr.startsWith(q, i));
      if (p === undefined) throw new Error(`unexpected ${JSON.stringify(c)} in ${JSON.stringify(expr)}`);
      i += p.length;
      out.push({ kind: 'punct', text: p });
    }
  }
  return out;
}

const isPunct = (t: Token | undefined, text: string): boolean => t?.kind === 'punct' && t.text === text;

const CLOSING: Record<string, string> = { ')': '(', ']': '[', '}': '{' };

function checkBrackets(tokens: Token[], expr: string): void {
  const open: string[] = [];
  for (const t of tokens) {
    if (t.kind !== 'punct') continue;
    if (t.text === '(' || t.text === '[' || t.text === '{') open.push(t.text);
    else if (t.text in CLOSING && open.pop() !== CLOSING[t.text])
      throw new Error(`unbalanced ${t.text} in ${JSON.stringify(expr)}`);
  }
  if (open.length > 0) throw new Error(`unbalanced ${open.at(-1)!} in ${JSON.stringify(expr)}`);
}

/** Index just past the bracket that closes the one at `open`. */
function skipBalanced(tokens: Token[], open: number, left: string, right: string): number {
  let depth = 0;
  for (let i = open; i < tokens.length; i++) {
    if (isPunct(tokens[i], left)) depth++;
    else if (isPunct(tokens[i], right) && --depth === 0) return i + 1;
  }
  throw new Error(`unbalanced ${left}${right}`);
}

/**
 * The metric names an expression selects, sorted and without duplicates: identifiers that are not
 * functions (followed by `(`), aggregations, keywords, label names in `{...}` or in by/without/on/
 * ignoring/group_left/group_right lists, and not inside ranges `[5m]`, strings or Grafana variables.
 * A `{__name__="x"}` matcher names x too.
 */
export function metricNamesInExpr(expr: string): string[] {
  const tokens = tokenize(expr);
  checkBrackets(tokens, expr);
  const names = new Set<string>();
  let i = 0;
  while (i < tokens.length) {
    const t = tokens[i]!;
    if (isPunct(t, '{')) {
      const end = skipBalanced(tokens, i, '{', '}');
      for (let j = i + 1; j + 2 < end; j++) {
        const [label, op, value] = [tokens[j], tokens[j + 1], tokens[j + 2]];
        if (
          label?.kind === 'ident' &&
          label.text === '__name__' &&
          isPunct(op, '=') &&
          value?.kind === 'string'
        )
          names.add(value.text);
      }
      i = end;
      continue;
    }
    if (isPunct(t, '[')) {
      i = skipBalanced(tokens, i, '[', ']');
      continue;
    }
    if (t.kind !== 'ident') {
      i++;
      continue;
    }
    const word = t.text.toLowerCase();
    const next = tokens[i + 1];
    if (LABEL_LIST_KEYWORDS.has(word)) {
      i = isPunct(next, '(') ? skipBalanced(tokens, i + 1, '(', ')') : i + 1;
      continue;
    }
    const isCall = isPunct(next, '(');
    const isGroupedAggregation =
      AGGREGATIONS.has(word) &&
      next?.kind === 'ident' &&
      (next.text.toLowerCase() === 'by' || next.text.toLowerCase() === 'without');
    if (!isCall && !isGroupedAggregation && !KEYWORDS.has(word)) names.add(t.text);
    i++;
  }
  return [...names].sort();
}

/** Every string under an `expr` key anywhere in a JSON document (panels, nested rows, targets). */
export function exprsInDashboard(doc: unknown): string[] {
  const out: string[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) {
      for (const x of v) walk(x);
    } else if (v !== null && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        if (k === 'expr' && typeof x === 'string') out.push(x);
        else walk(x);
      }
    }
  };
  walk(doc);
  return out;
}

/**
 * PromQL in a dashboard's variables: `label_values(<selector>, <label>)` and `query_result(<expr>)`
 * queries of templating.list (a string, or an object with a `query` string).
 */
export function exprsInTemplating(doc: unknown): string[] {
  const list = (doc as { templating?: { list?: unknown } } | null)?.templating?.list;
  if (!Array.isArray(list)) return [];
  const out: string[] = [];
  for (const v of list as { query?: unknown }[]) {
    const q = typeof v.query === 'string' ? v.query : (v.query as { query?: unknown } | undefined)?.query;
    if (typeof q !== 'string') continue;
    const m =
      /^\s*label_values\(\s*(.+)\s*,\s*[A-Za-z_]\w*\s*\)\s*$/s.exec(q) ??
      /^\s*query_result\(\s*(.+)\s*\)\s*$/s.exec(q);
    if (m) out.push(m[1]!);
  }
  return out;
}

/** Series Prometheus adds to every target itself; they never appear in an exposition. */
export const SYNTHETIC_METRICS = [
  'up',
  'scrape_duration_seconds',
  'scrape_samples_scraped',
  'scrape_samples_post_metric_relabeling',
  'scrape_series_added',
];

/**
 * Names a query can select from an exposition: each family in a `# TYPE` line, plus the series a
 * histogram (_bucket, _count, _sum) or a summary (_count, _sum) is exposed as.
 */
export function exposedMetricNames(exposition: string): Set<string> {
  const names = new Set<string>();
  for (const line of exposition.split('\n')) {
    const m = /^# TYPE (\S+) (\S+)/.exec(line);
    if (!m) continue;
    const name = m[1]!;
    const type = m[2]!;
    names.add(name);
    if (type === 'histogram') for (const s of ['_bucket', '_count', '_sum']) names.add(name + s);
    if (type === 'summary') for (const s of ['_count', '_sum']) names.add(name + s);
  }
  return names;
}

/**
 * A Grafana panel query made runnable against Prometheus directly: Grafana's interval variables
 * become fixed durations, any other variable (a dashboard's own, e.g. a node picker) becomes `.*`,
 * which is what "All" means inside a `=~"$node"` matcher.
 */
export function grafanaToPromql(expr: string, interval = '5s'): string {
  const fixed: Record<string, string> = {
    __rate_interval: interval,
    __interval: interval,
    __range: '1m',
    __interval_ms: '5000',
    __range_ms: '60000',
    __range_s: '60',
  };
  // $1 and the like are regex back-references (label_replace), not variables.
  const variable = /\$\{([A-Za-z_]\w*)(?::[^}]*)?\}|\$([A-Za-z_]\w*)|\[\[([A-Za-z_]\w*)\]\]/g;
  return expr.replace(
    variable,
    (_m: string, a: string | undefined, b: string | undefined, c: string | undefined) =>
      fixed[a ?? b ?? c ?? ''] ?? '.*',
  );
}

/** The metrics SPEC 8 requires (every one on a node that runs all roles). */
export const SPEC_METRICS: readonly string[] = [
  'raft_is_leader',
  'raft_term',
  'raft_commit_index',
  'raft_elections_total',
  'lock_held',
  'lock_waiters',
  'lock_acquire_total',
  'lock_deadlocks_total',
  'queue_messages_total',
  'queue_depth',
  'queue_redeliveries_total',
  'cache_hits_total',
  'cache_misses_total',
  'cache_invalidations_total',
  'cache_writebacks_total',
  'http_request_duration_seconds',
];
