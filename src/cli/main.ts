// The `dss` command line (bin/dss.js runs the compiled form of this file).
import { Command, InvalidArgumentError, Option } from 'commander';
import { VERSION } from '../version.js';
import { runStatus } from './status-command.js';
import { lockCommand } from './lock-command.js';
import { queueCommand } from './queue-command.js';
import { cacheCommand } from './cache-command.js';

function integer(name: string, min: number, max: number): (v: string) => number {
  return (v) => {
    if (!/^\d+$/.test(v)) throw new InvalidArgumentError(`${name} must be an integer`);
    const n = Number(v);
    if (n < min || n > max) throw new InvalidArgumentError(`${name} must be between ${min} and ${max}`);
    return n;
  };
}

interface GlobalOptions {
  url: string;
  token?: string;
}

const program = new Command('dss')
  .description('DSS: distributed locks (Raft), queues and a coherent cache over HTTP')
  .version(VERSION)
  .addOption(new Option('--url <url>', 'node to talk to').env('DSS_URL').default('http://127.0.0.1:8001'))
  .addOption(new Option('--token <token>', 'bearer token for API_TOKENS').env('DSS_TOKEN'));

program
  .command('node')
  .description('run one node configured from the environment (NODE_ID, CLUSTER_ADDRS, ...)')
  .action(async () => {
    // Loaded here: the server's modules (fastify, ioredis, the Raft core) would otherwise add most
    // of a second to every client command's start.
    const { runNode } = await import('./node-command.js');
    await runNode(process.env);
  });

const cluster = program.command('cluster').description('local clusters');
cluster
  .command('up')
  .description('start a local cluster in the foreground (Ctrl-C stops it)')
  .option('--nodes <n>', 'nodes (per role with --topology split)', integer('--nodes', 1, 99), 3)
  .option(
    '--base-port <port>',
    'port of the first node; the others follow',
    integer('--base-port', 1, 65535),
    8001,
  )
  .addOption(
    new Option('--topology <kind>', 'every node runs every role, or one role per node')
      .choices(['combined', 'split'])
      .default('combined'),
  )
  .option('--redis <url>', 'use this Redis instead of starting a local redis-server')
  .option('--data-dir <dir>', 'where nodes (and the local Redis) keep their data', './data')
  .option('--fast', 'short Raft timeouts (election 0.15-0.3 s, heartbeat 0.05 s)', false)
  .action(
    async (o: {
      nodes: number;
      basePort: number;
      topology: 'combined' | 'split';
      redis?: string;
      dataDir: string;
      fast: boolean;
    }) => {
      const { clusterUp } = await import('./cluster-up.js');
      await clusterUp({
        nodes: o.nodes,
        basePort: o.basePort,
        topology: o.topology,
        dataDir: o.dataDir,
        fast: o.fast,
        ...(o.redis !== undefined ? { redis: o.redis } : {}),
      });
    },
  );

program
  .command('status')
  .description('show every node: roles, Raft state, term, leader, commit index, reachability')
  .option('--json', 'print JSON instead of a table', false)
  .action(async (o: { json: boolean }, cmd: Command) => {
    const g = cmd.optsWithGlobals<GlobalOptions & { json: boolean }>();
    process.exitCode = await runStatus({ url: g.url, json: o.json, ...(g.token ? { token: g.token } : {}) });
  });

program.addCommand(lockCommand());
program.addCommand(queueCommand());
program.addCommand(cacheCommand());

await program.parseAsync(process.argv);
