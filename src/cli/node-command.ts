// `dss node`: one node configured from the environment, stopped gracefully on SIGTERM/SIGINT.
import { ConfigError, loadConfig, type Config } from '../config/index.js';
import { startNode, type RunningNode } from '../node/start.js';

/** Longest a graceful stop may take before the process exits anyway. */
const STOP_DEADLINE_MS = 15_000;

function die(message: string, code: number): never {
  process.stderr.write(`dss: ${message}\n`);
  process.exit(code);
}

export async function runNode(env: NodeJS.ProcessEnv): Promise<void> {
  let config: Config;
  try {
    config = loadConfig(env);
  } catch (e) {
    if (e instanceof ConfigError) die(e.message, 2);
    throw e;
  }

  let node: RunningNode | null = null;
  let exiting = false;
  const shutdown = (code: number, why: string): void => {
    if (exiting) return;
    exiting = true;
    node?.logger.info({ why }, 'shutting down');
    setTimeout(() => {
      node?.logger.error('graceful stop took too long; exiting');
      process.exit(1);
    }, STOP_DEADLINE_MS).unref();
    void (node ? node.stop() : Promise.resolve()).then(
      () => process.exit(code),
      () => process.exit(1),
    );
  };

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      // A second signal means "now".
      if (exiting) process.exit(1);
      shutdown(0, signal);
    });
  }
  // Under `dss cluster up` the parent holds our stdin open: if it dies, even by SIGKILL, stdin ends
  // and we stop instead of lingering as an orphan.
  if (env.DSS_STOP_ON_STDIN_EOF === '1') {
    process.stdin.on('end', () => shutdown(0, 'parent gone (stdin closed)'));
    process.stdin.on('error', () => shutdown(0, 'parent gone (stdin error)'));
    process.stdin.resume();
  }

  try {
    node = await startNode(config, { onFatal: () => shutdown(1, 'raft storage failure') });
  } catch (e) {
    if (e instanceof ConfigError) die(e.message, 2);
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE')
      die(`cannot listen on ${config.host}:${config.port}: address already in use`, 1);
    if (code === 'EACCES') die(`cannot listen on ${config.host}:${config.port}: permission denied`, 1);
    die(`cannot start: ${e instanceof Error ? e.message : String(e)}`, 1);
  }
}
