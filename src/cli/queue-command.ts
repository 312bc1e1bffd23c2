// `dss queue push|pop|ack|nack|stats`: thin wrappers over the SDK. Output is one readable line per
// result, or JSON with --json. Exit code 0 on success (an empty queue included), 1 on any error,
// which is one line on stderr (with --json the error body also goes to stdout).
// The formatting is pure (functions returning CliOutput) so that it is unit-tested without a cluster.
import { Command, InvalidArgumentError } from 'commander';
import { MAX_BATCH, MAX_POP_WAIT_MS, MAX_VISIBILITY_MS } from '../queue/limits.js';
import type { Json } from '../raft/types.js';
import {
  DssClient,
  DssHttpError,
  type NackResult,
  type QueueDelivery,
  type QueueStats,
} from '../client/index.js';

interface GlobalOptions {
  url: string;
  token?: string;
}

/** What a command prints and how it exits. */
export interface CliOutput {
  stdout: string;
  stderr: string;
  exitCode: number;
}

const ok = (stdout: string): CliOutput => ({ stdout, stderr: '', exitCode: 0 });
const pretty = (v: unknown): string => JSON.stringify(v, null, 2) + '\n';

/** Messages to push, from the command-line argument (or stdin's text when the argument was `-`). */
export type PushInput = { message: Json } | { messages: Json[] };

/**
 * `text` is JSON (any value; with `batch`, an array whose items are pushed as one batch), or with
 * `asText` a plain string pushed as a JSON string. Throws an Error with a one-line reason.
 */
export function parsePushInput(text: string, opts: { batch?: boolean; asText?: boolean } = {}): PushInput {
  if (opts.asText) {
    if (opts.batch) throw new Error('--text and --batch cannot be combined');
    return { message: text };
  }
  let value: Json;
  try {
    value = JSON.parse(text) as Json;
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    throw new Error(`message is not JSON (${why}); quote a string as '"text"' or use --text`);
  }
  if (!opts.batch) return { message: value };
  if (!Array.isArray(value)) throw new Error('--batch needs a JSON array of messages');
  if (value.length === 0) throw new Error('--batch needs at least one message');
  if (value.length > MAX_BATCH) throw new Error(`--batch takes at most ${MAX_BATCH} messages`);
  return { messages: value };
}

export function formatPush(
  reply: { queue: string; id: string } | { queue: string; ids: string[] },
  json: boolean,
): CliOutput {
  if (json) return ok(pretty(reply));
  if ('id' in reply) return ok(`pushed message ${reply.id} to ${reply.queue}\n`);
  const n = reply.ids.length;
  return ok(`pushed ${n} message${n === 1 ? '' : 's'} to ${reply.queue}: ${reply.ids.join(' ')}\n`);
}

/** One line per delivery; an empty queue (null) is a success that says so. */
export function formatPop(queue: string, got: QueueDelivery[] | null, json: boolean): CliOutput {
  const list = got ?? [];
  if (json) return ok(pretty(list));
  if (list.length === 0) return ok(`queue ${queue} empty\n`);
  return ok(
    list
      .map((d) => `message ${d.id} (delivery ${d.delivery_count}): ${JSON.stringify(d.message)}\n`)
      .join(''),
  );
}

/** Exit 1 when some ids were not pending (unknown, already acked, or redelivered after their deadline). */
export function formatAck(queue: string, requested: number, acked: number, json: boolean): CliOutput {
  const out = json ? pretty({ acked }) : `acked ${acked} of ${requested} in ${queue}\n`;
  if (acked >= requested) return ok(out);
  const missing = requested - acked;
  return {
    stdout: out,
    stderr: `dss: ${missing} of ${requested} message${requested === 1 ? ' was' : 's were'} not pending (unknown, already acked, or redelivered)\n`,
    exitCode: 1,
  };
}

export function formatNack(reply: NackResult, json: boolean): CliOutput {
  if (json) return ok(pretty(reply));
  return ok(
    reply.state === 'dead'
      ? `message ${reply.id} of ${reply.queue} used up its deliveries: dead-lettered\n`
      : `message ${reply.id} of ${reply.queue} is ready again\n`,
  );
}

export function formatStats(s: QueueStats, json: boolean): CliOutput {
  if (json) return ok(pretty(s));
  return ok(`queue ${s.queue} (owner ${s.owner}): ready ${s.ready}, pending ${s.pending}, dead ${s.dead}\n`);
}

/** One line on stderr; with --json, an HTTP error's body also on stdout. */
export function formatError(e: unknown, json: boolean): CliOutput {
  const line = `dss: ${e instanceof Error ? e.message : String(e)}\n`;
  const body = json && e instanceof DssHttpError && e.body !== undefined ? pretty(e.body) : '';
  return { stdout: body, stderr: line, exitCode: 1 };
}

function integer(name: string, min: number, max: number): (v: string) => number {
  return (v) => {
    if (!/^\d+$/.test(v)) throw new InvalidArgumentError(`${name} must be a whole number`);
    const n = Number(v);
    if (n < min || n > max) throw new InvalidArgumentError(`${name} must be between ${min} and ${max}`);
    return n;
  };
}

export async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Runs one command against the node at --url and prints its output (shared by `dss cache`). */
export async function run(
  cmd: Command,
  json: boolean,
  call: (c: DssClient) => Promise<CliOutput>,
  onError: (e: unknown, json: boolean) => CliOutput = formatError,
): Promise<void> {
  const g = cmd.optsWithGlobals<GlobalOptions>();
  const client = new DssClient({ urls: [g.url], ...(g.token ? { token: g.token } : {}) });
  let out: CliOutput;
  try {
    out = await call(client);
  } catch (e) {
    out = onError(e, json);
  } finally {
    await client.close();
  }
  if (out.stdout !== '') process.stdout.write(out.stdout);
  if (out.stderr !== '') process.stderr.write(out.stderr);
  if (out.exitCode !== 0) process.exitCode = out.exitCode;
}

export function queueCommand(): Command {
  const queue = new Command('queue').description('distributed queues (at-least-once, on Redis)');
  queue
    .command('push <queue> <message>')
    .description("push a JSON message ('-' reads it from stdin); prints the id")
    .option('--batch', 'the message is a JSON array whose items are pushed as one atomic batch', false)
    .option('--text', 'push the argument as a plain string instead of parsing JSON', false)
    .option('--json', 'print JSON', false)
    .action(
      async (name: string, text: string, o: { batch: boolean; text: boolean; json: boolean }, cmd: Command) =>
        run(cmd, o.json, async (c) => {
          const raw = text === '-' ? (await readStdin()).replace(/\r?\n$/, '') : text;
          const input = parsePushInput(raw, { batch: o.batch, asText: o.text });
          const reply =
            'message' in input
              ? await c.queue.push(name, input.message)
              : await c.queue.pushBatch(name, input.messages);
          return formatPush(reply, o.json);
        }),
    );
  queue
    .command('pop <queue>')
    .description('take messages; unacked, they come back after their visibility deadline')
    .option('--max <n>', 'most messages to take', integer('--max', 1, MAX_BATCH), 1)
    .option('--wait <ms>', 'long-poll up to this long when empty', integer('--wait', 0, MAX_POP_WAIT_MS), 0)
    .option(
      '--visibility <ms>',
      'redeliver if not acked within this long (default: QUEUE_ACK_TIMEOUT of the cluster)',
      integer('--visibility', 1, MAX_VISIBILITY_MS),
    )
    .option('--consumer <id>', 'consumer_id to report')
    .option('--ack', 'ack what was taken at once (a destructive read)', false)
    .option('--json', 'print a JSON array of {id, message, delivery_count}', false)
    .action(
      async (
        name: string,
        o: { max: number; wait: number; visibility?: number; consumer?: string; ack: boolean; json: boolean },
        cmd: Command,
      ) =>
        run(cmd, o.json, async (c) => {
          const got = await c.queue.pop(name, {
            max: o.max,
            waitMs: o.wait,
            ...(o.visibility !== undefined ? { visibilityMs: o.visibility } : {}),
            ...(o.consumer !== undefined ? { consumerId: o.consumer } : {}),
          });
          const out = formatPop(name, got, o.json);
          if (!o.ack || got === null) return out;
          const { acked } = await c.queue.ackBatch(
            name,
            got.map((d) => d.id),
          );
          const acks = formatAck(name, got.length, acked, false);
          return {
            stdout: out.stdout + (o.json ? '' : acks.stdout),
            stderr: acks.stderr,
            exitCode: acks.exitCode,
          };
        }),
    );
  queue
    .command('ack <queue> <ids...>')
    .description('acknowledge delivered messages (deletes them)')
    .option('--json', 'print JSON', false)
    .action(async (name: string, ids: string[], o: { json: boolean }, cmd: Command) =>
      run(cmd, o.json, async (c) => {
        const { acked } =
          ids.length === 1 ? await c.queue.ack(name, ids[0]!) : await c.queue.ackBatch(name, ids);
        return formatAck(name, ids.length, acked, o.json);
      }),
    );
  queue
    .command('nack <queue> <id>')
    .description('give a delivered message back: ready again at once')
    .option('--json', 'print JSON', false)
    .action(async (name: string, id: string, o: { json: boolean }, cmd: Command) =>
      run(cmd, o.json, async (c) => formatNack(await c.queue.nack(name, id), o.json)),
    );
  queue
    .command('stats <queue>')
    .description('ready, pending and dead counts, and the owning node')
    .option('--json', 'print JSON', false)
    .action(async (name: string, o: { json: boolean }, cmd: Command) =>
      run(cmd, o.json, async (c) => formatStats(await c.queue.stats(name), o.json)),
    );
  return queue;
}
