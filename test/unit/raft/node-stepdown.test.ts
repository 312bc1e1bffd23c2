// RaftNode (the driver) in-process with an in-memory network: what a caller of propose() learns when
// the leader it proposed through loses leadership before the command commits. The answer must be
// definite whenever the log can tell: the committed result if the next leader committed the entry,
// a safe-to-retry refusal if another entry took its place; "outcome unknown" only on timeout.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import pino from 'pino';
import { DssError } from '../../../src/errors.js';
import { RaftNode } from '../../../src/raft/node.js';
import { NoopStateMachine } from '../../../src/raft/noop-state-machine.js';
import { MemoryStorage } from '../../../src/raft/storage/memory-storage.js';
import type { NodeId, RequestMessage, ResponseMessage } from '../../../src/raft/types.js';
import type { RaftEndpoint, Transport } from '../../../src/transport/transport.js';
import { waitFor } from '../../helpers/wait.js';

const IDS = ['n1', 'n2', 'n3'];

/** Links are cut per direction; a cut request fails, a cut reply is lost after the peer handled it. */
class Net {
  readonly nodes = new Map<NodeId, RaftNode>();
  private cutRequests = new Set<string>();
  private cutReplies = new Set<string>();

  transport(from: NodeId): Transport {
    return {
      send: async (to: NodeId, _e: RaftEndpoint, msgs: RequestMessage[]): Promise<ResponseMessage[]> => {
        await Promise.resolve();
        if (this.cutRequests.has(`${from}->${to}`)) throw new Error(`${from}->${to} is cut`);
        const peer = this.nodes.get(to);
        if (!peer) throw new Error(`no node ${to}`);
        const resps = await peer.handleRequests(msgs);
        if (this.cutReplies.has(`${to}->${from}`)) throw new Error(`replies ${to}->${from} are cut`);
        return resps;
      },
      close: () => Promise.resolve(),
    };
  }

  /** `id` still reaches the others, but never hears their answers. */
  deafen(id: NodeId): void {
    for (const p of IDS) if (p !== id) this.cutReplies.add(`${p}->${id}`);
  }

  isolate(id: NodeId): void {
    for (const p of IDS) {
      if (p === id) continue;
      this.cutRequests.add(`${id}->${p}`);
      this.cutRequests.add(`${p}->${id}`);
    }
  }

  heal(): void {
    this.cutRequests.clear();
    this.cutReplies.clear();
  }
}

let running: RaftNode[] = [];

afterEach(async () => {
  await Promise.all(running.map((n) => n.stop()));
  running = [];
});

async function cluster(
  proposalTimeoutMs = 10_000,
): Promise<{ net: Net; sms: Map<NodeId, NoopStateMachine> }> {
  const net = new Net();
  const sms = new Map<NodeId, NoopStateMachine>();
  for (const id of IDS) {
    const sm = new NoopStateMachine();
    sms.set(id, sm);
    const node = new RaftNode({
      id,
      voters: IDS,
      electionTimeoutMinMs: 100,
      electionTimeoutMaxMs: 200,
      heartbeatIntervalMs: 25,
      storage: new MemoryStorage(),
      transport: net.transport(id),
      stateMachine: sm,
      logger: pino({ level: 'silent' }),
      proposalTimeoutMs,
    });
    net.nodes.set(id, node);
    running.push(node);
  }
  await Promise.all([...net.nodes.values()].map((n) => n.start()));
  return { net, sms };
}

function leaderOf(net: Net, except?: NodeId): NodeId | undefined {
  for (const [id, n] of net.nodes) if (id !== except && n.status().role === 'leader') return id;
  return undefined;
}

function settled<T>(p: Promise<T>): () => { ok: T } | { err: unknown } | undefined {
  let out: { ok: T } | { err: unknown } | undefined;
  p.then(
    (ok) => (out = { ok }),
    (err: unknown) => (out = { err }),
  );
  return () => out;
}

describe('RaftNode: proposals across a leader change', () => {
  it('answers with the committed result when the next leader commits the entry', async () => {
    const { net, sms } = await cluster();
    const old = await waitFor('a leader', () => leaderOf(net));
    net.deafen(old);
    const answer = settled(net.nodes.get(old)!.propose({ id: 'x' }));
    // Both followers stored the entry; the old leader never learns it.
    await waitFor('followers hold the entry', () =>
      IDS.filter((id) => id !== old).every(
        (id) => net.nodes.get(id)!.status().lastIndex >= net.nodes.get(old)!.status().lastIndex,
      ),
    );
    net.isolate(old);
    const next = await waitFor('a new leader', () => leaderOf(net, old));
    await waitFor('the entry applied on the new leader', () => sms.get(next)!.view().ids.includes('x'));
    await waitFor('the old leader stepped down', () => net.nodes.get(old)!.status().role !== 'leader');
    assert.equal(answer(), undefined, 'answered before the log could tell');
    net.heal();
    const out = await waitFor('the proposal settled', answer);
    assert.ok('ok' in out, `expected the committed result, got ${String((out as { err: unknown }).err)}`);
    assert.deepEqual(sms.get(old)!.view().ids, ['x']);
  });

  it('refuses definitely (safe to retry) when another entry took the index', async () => {
    const { net, sms } = await cluster();
    const old = await waitFor('a leader', () => leaderOf(net));
    net.isolate(old);
    const answer = settled(net.nodes.get(old)!.propose({ id: 'lost' }));
    const next = await waitFor('a new leader', () => leaderOf(net, old));
    await net.nodes.get(next)!.propose({ id: 'winner' });
    net.heal();
    const out = await waitFor('the proposal settled', answer);
    assert.ok('err' in out, 'a command that never committed was reported as applied');
    const err = out.err as DssError;
    assert.ok(err instanceof DssError);
    assert.ok(err.code === 'not_leader' || err.code === 'no_leader', err.code);
    assert.equal(err.details?.outcome, undefined, 'a definite refusal must not claim an unknown outcome');
    await waitFor('the old leader caught up', () => sms.get(old)!.view().ids.includes('winner'));
    assert.ok(!sms.get(old)!.view().ids.includes('lost'));
  });

  it('says the outcome is unknown when nothing decides it in time', async () => {
    const { net } = await cluster(600);
    const old = await waitFor('a leader', () => leaderOf(net));
    net.isolate(old);
    const answer = settled(net.nodes.get(old)!.propose({ id: 'limbo' }));
    const out = await waitFor('the proposal timed out', answer, { timeoutMs: 5000 });
    assert.ok('err' in out);
    const err = out.err as DssError;
    assert.equal(err.code, 'unavailable');
    assert.equal(err.details?.outcome, 'unknown');
  });
});
