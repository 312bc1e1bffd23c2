// `dss cache get|put|del|lines|flush`: thin wrappers over the SDK. Output is readable text, or JSON
// with --json. Exit code 0 on success, 1 on any error and for a get of a missing key, 2 for bad input
// caught before anything is sent (a value that is not JSON, a key that is not an identifier). Errors
// are one line on stderr (with --json an HTTP error's body also goes to stdout).
// The formatting is pure (functions returning CliOutput) so that it is unit-tested without a cluster.
import { Command } from 'commander';
import type { Json } from '../raft/types.js';
import {
  DssClient,
  isCacheKey,
  type CacheDeleteResult,
  type CacheEntry,
  type CacheFlushResult,
  type CacheLines,
  type CachePutResult,
} from '../client/index.js';
import { table } from './format.js';
import { formatError, readStdin, run as runWith, type CliOutput } from './queue-command.js';

/** Input the command refuses before sending anything: exit code 2. */
export class BadInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BadInputError';
  }
}

const ok = (stdout: string): CliOutput => ({ stdout, stderr: '', exitCode: 0 });
const pretty = (v: unknown): string => JSON.stringify(v, null, 2) + '\n';

export function checkKey(key: string): string {
  if (!isCacheKey(key))
    throw new BadInputError(
      `invalid cache key ${JSON.stringify(key)}: use 1-256 characters of [A-Za-z0-9._:/-]`,
    );
  return key;
}

/** The value of `put`: JSON text, or with `asText` the text itself as a JSON string. */
export function parseCacheValue(text: string, asText = false): Json {
  if (asText) return text;
  try {
    return JSON.parse(text) as Json;
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    throw new BadInputError(`value is not JSON (${why}); quote a string as '"text"' or use --text`);
  }
}

/** The value as one line of JSON (the whole reply with --json); a missing key exits 1. */
export function formatGet(key: string, entry: CacheEntry | null, json: boolean): CliOutput {
  if (entry === null)
    return { stdout: json ? 'null\n' : '', stderr: `dss: cache key ${key} not found\n`, exitCode: 1 };
  return ok(json ? pretty(entry) : JSON.stringify(entry.value) + '\n');
}

export function formatPut(reply: CachePutResult, json: boolean): CliOutput {
  return ok(json ? pretty(reply) : `stored ${reply.key} (state ${reply.state})\n`);
}

export function formatDelete(key: string, reply: CacheDeleteResult, json: boolean): CliOutput {
  return ok(json ? pretty(reply) : `deleted ${key}\n`);
}

/** A summary line, then a KEY/STATE table of the node's L1 lines (none: just the summary). */
export function formatLines(reply: CacheLines, json: boolean): CliOutput {
  if (json) return ok(pretty(reply));
  const policy = reply.write_policy ? ` (${reply.write_policy})` : '';
  const head = `${reply.node_id}: ${reply.size} of ${reply.capacity} lines${policy}\n`;
  if (reply.lines.length === 0) return ok(head);
  return ok(
    head +
      table(
        ['KEY', 'STATE'],
        reply.lines.map((l) => [l.key, l.state]),
      ) +
      '\n',
  );
}

export function formatFlush(reply: CacheFlushResult, json: boolean): CliOutput {
  if (json) return ok(pretty(reply));
  const n = reply.written_back;
  return ok(`wrote back ${n} modified line${n === 1 ? '' : 's'}\n`);
}

/** formatError, except that bad input exits 2. */
export function formatCacheError(e: unknown, json: boolean): CliOutput {
  const out = formatError(e, json);
  return e instanceof BadInputError ? { ...out, exitCode: 2 } : out;
}

const runCache = (cmd: Command, json: boolean, call: (c: DssClient) => Promise<CliOutput>): Promise<void> =>
  runWith(cmd, json, call, formatCacheError);

export function cacheCommand(): Command {
  const cache = new Command('cache').description(
    'distributed cache (MESI-coherent L1 per node, Redis behind)',
  );
  cache
    .command('get <key>')
    .description('print the value as JSON (exit 1 when the key is missing)')
    .option('--json', 'print {key, value, state, source}', false)
    .action(async (key: string, o: { json: boolean }, cmd: Command) =>
      runCache(cmd, o.json, async (c) => formatGet(key, await c.cache.get(checkKey(key)), o.json)),
    );
  cache
    .command('put <key> <value>')
    .description("store a JSON value ('-' reads it from stdin)")
    .option('--text', 'store the argument as a plain string instead of parsing JSON', false)
    .option('--json', 'print JSON', false)
    .action(async (key: string, text: string, o: { text: boolean; json: boolean }, cmd: Command) =>
      runCache(cmd, o.json, async (c) => {
        checkKey(key);
        const raw = text === '-' ? (await readStdin()).replace(/\r?\n$/, '') : text;
        return formatPut(await c.cache.put(key, parseCacheValue(raw, o.text)), o.json);
      }),
    );
  cache
    .command('del <key>')
    .alias('delete')
    .description('delete a key')
    .option('--json', 'print JSON', false)
    .action(async (key: string, o: { json: boolean }, cmd: Command) =>
      runCache(cmd, o.json, async (c) => formatDelete(key, await c.cache.delete(checkKey(key)), o.json)),
    );
  cache
    .command('lines')
    .description('the L1 lines of the node at --url and their MESI states')
    .option('--json', 'print JSON', false)
    .action(async (o: { json: boolean }, cmd: Command) =>
      runCache(cmd, o.json, async (c) => formatLines(await c.cache.lines(), o.json)),
    );
  cache
    .command('flush')
    .description('write the modified (M) lines of the node at --url back to Redis')
    .option('--json', 'print JSON', false)
    .action(async (o: { json: boolean }, cmd: Command) =>
      runCache(cmd, o.json, async (c) => formatFlush(await c.cache.flush(), o.json)),
    );
  return cache;
}
