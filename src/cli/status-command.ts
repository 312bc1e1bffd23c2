// `dss status`: one line per node of the cluster, as seen by each node itself.
import { DssClient, type ClusterNodeStatus } from '../client/index.js';
import { table } from './format.js';

function row(n: ClusterNodeStatus): string[] {
  const raft = n.status?.raft;
  return [
    n.id,
    n.roles.join('+'),
    raft ? raft.state : n.status ? '-' : '?',
    raft ? String(raft.term) : '-',
    raft ? (raft.leader_id ?? '(none)') : '-',
    raft ? String(raft.commit_index) : '-',
    n.reachable ? 'yes' : 'no',
    n.url,
  ];
}

export async function runStatus(opts: { url: string; token?: string; json?: boolean }): Promise<number> {
  const client = new DssClient({
    urls: [opts.url],
    timeoutMs: 3000,
    retries: 1,
    ...(opts.token ? { token: opts.token } : {}),
  });
  try {
    const cs = await client.clusterStatus();
    if (opts.json) {
      process.stdout.write(JSON.stringify(cs, null, 2) + '\n');
    } else {
      const header = ['ID', 'ROLES', 'STATE', 'TERM', 'LEADER', 'COMMIT', 'REACHABLE', 'URL'];
      process.stdout.write(table(header, cs.nodes.map(row)) + '\n');
    }
    return cs.nodes.every((n) => n.reachable) ? 0 : 1;
  } catch (e) {
    process.stderr.write(`dss: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  } finally {
    await client.close();
  }
}
