// `dss lock acquire|release|renew|status`: thin wrappers over the SDK that print the JSON answer.
// Exit code 0 on success, 1 when the lock service refused (409) or could not be reached.
import { Command, InvalidArgumentError, Option } from 'commander';
import { DssClient, DssHttpError } from '../client/index.js';

interface GlobalOptions {
  url: string;
  token?: string;
}

function ms(name: string): (v: string) => number {
  return (v) => {
    if (!/^\d+$/.test(v)) throw new InvalidArgumentError(`${name} must be a whole number of milliseconds`);
    return Number(v);
  };
}

async function run(cmd: Command, call: (c: DssClient) => Promise<unknown>): Promise<void> {
  const g = cmd.optsWithGlobals<GlobalOptions>();
  const client = new DssClient({ urls: [g.url], ...(g.token ? { token: g.token } : {}) });
  try {
    const out = await call(client);
    process.stdout.write(JSON.stringify(out, null, 2) + '\n');
  } catch (e) {
    if (e instanceof DssHttpError) {
      process.stdout.write(JSON.stringify(e.body, null, 2) + '\n');
      process.stderr.write(`dss: ${e.status} ${e.code}\n`);
    } else {
      process.stderr.write(`dss: ${e instanceof Error ? e.message : String(e)}\n`);
    }
    process.exitCode = 1;
  } finally {
    await client.close();
  }
}

export function lockCommand(): Command {
  const lock = new Command('lock').description('distributed locks (Raft-replicated)');
  lock
    .command('acquire <resource>')
    .description('take a lock; prints the grant with its fencing token')
    .requiredOption('--client <id>', 'client_id of the holder')
    .addOption(new Option('--mode <mode>', 'lock mode').choices(['exclusive', 'shared']).default('exclusive'))
    .option('--ttl <ms>', 'hold lifetime in ms (default: LOCK_DEFAULT_TTL of the cluster)', ms('--ttl'))
    .option('--wait <ms>', 'block up to this long for the grant', ms('--wait'), 0)
    .action(
      async (
        resource: string,
        o: { client: string; mode: 'exclusive' | 'shared'; ttl?: number; wait: number },
        cmd: Command,
      ) =>
        run(cmd, (c) =>
          c.lock.acquire(resource, o.client, {
            mode: o.mode,
            waitMs: o.wait,
            ...(o.ttl !== undefined ? { ttlMs: o.ttl } : {}),
          }),
        ),
    );
  lock
    .command('release <resource>')
    .description('release a lock held by --client')
    .requiredOption('--client <id>', 'client_id of the holder')
    .action(async (resource: string, o: { client: string }, cmd: Command) =>
      run(cmd, (c) => c.lock.release(resource, o.client)),
    );
  lock
    .command('renew <resource>')
    .description('extend a hold of --client by --ttl ms from now')
    .requiredOption('--client <id>', 'client_id of the holder')
    .option('--ttl <ms>', 'new lifetime in ms', ms('--ttl'))
    .action(async (resource: string, o: { client: string; ttl?: number }, cmd: Command) =>
      run(cmd, (c) => c.lock.renew(resource, o.client, o.ttl)),
    );
  lock
    .command('status [resource]')
    .description('the lock table (linearizable read through the leader)')
    .action(async (resource: string | undefined, _o: unknown, cmd: Command) =>
      run(cmd, (c) => c.lock.status(resource)),
    );
  return lock;
}
