// `dss lock ...` and `dss status` against a real 3-node cluster, run from source as a user would.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { TestCluster } from '../helpers/cluster.js';
import { dss } from '../helpers/dss-cli.js';
import { waitFor } from '../helpers/wait.js';

describe('dss lock (CLI, real cluster)', () => {
  let c: TestCluster;
  let url: string;

  before(async () => {
    c = await TestCluster.start({ nodes: 3 });
    await c.leader();
    url = c.nodes[1]!.url;
  });

  after(async () => {
    await c.stop();
  });

  it('acquire, status, conflict, renew and release', async () => {
    const a = await dss(['--url', url, 'lock', 'acquire', 'cli-r', '--client', 'alice', '--ttl', '60000']);
    assert.equal(a.code, 0, a.stderr);
    const grant = JSON.parse(a.stdout) as { granted: boolean; fencing_token: number };
    assert.equal(grant.granted, true);

    const b = await dss(['--url', url, 'lock', 'acquire', 'cli-r', '--client', 'bob']);
    assert.equal(b.code, 1);
    assert.match(b.stderr, /409 lock_conflict/);

    const s = await dss(['--url', url, 'lock', 'status', 'cli-r']);
    assert.equal(s.code, 0, s.stderr);
    const st = JSON.parse(s.stdout) as {
      locks: { holders: { client_id: string; fencing_token: number }[] }[];
    };
    assert.equal(st.locks[0]?.holders[0]?.client_id, 'alice');
    assert.equal(st.locks[0]?.holders[0]?.fencing_token, grant.fencing_token);

    const r = await dss(['--url', url, 'lock', 'renew', 'cli-r', '--client', 'alice', '--ttl', '90000']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok((JSON.parse(r.stdout) as { expires_at: number }).expires_at > Date.now() + 80_000);

    const rel = await dss(['--url', url, 'lock', 'release', 'cli-r', '--client', 'alice']);
    assert.equal(rel.code, 0, rel.stderr);
    assert.deepEqual(JSON.parse(rel.stdout), { released: true });
  });

  it('dss status shows every node with one agreed leader', async () => {
    // What is under test is the display; a re-election between two snapshots of the cluster
    // (possible on a loaded machine with 150 ms timeouts) is legitimate, so look until one is stable.
    let last = '';
    const ok = await waitFor(
      'a table with one agreed leader',
      async () => {
        const leader = await c.leader();
        const s = await dss(['--url', url, 'status']);
        assert.equal(s.code, 0, s.stderr);
        last = s.stdout;
        const lines = s.stdout.trim().split('\n');
        assert.equal(lines.length, 1 + c.nodes.length, s.stdout);
        assert.ok(
          lines.slice(1).every((l) => /^node\d\s+lock\s/.test(l)),
          s.stdout,
        );
        return (
          lines.filter((l) => / leader /.test(l)).length === 1 &&
          lines.slice(1).every((l) => l.includes(` ${leader.id} `))
        );
      },
      { timeoutMs: 30_000 },
    ).catch(() => false);
    assert.ok(ok, last);
  });
});
