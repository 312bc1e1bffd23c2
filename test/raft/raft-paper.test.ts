// RaftCore against the Raft paper (Ongaro & Ousterhout, "In Search of an Understandable Consensus
// Algorithm", 2014), section by section, plus the extensions of the thesis the core implements
// (PreVote, CheckQuorum, ReadIndex, leadership transfer, pipelining). Each scenario drives a few
// cores by hand through test/raft/sim/tiny-net.ts.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RaftCore } from '../../src/raft/core.js';
import type {
  AppendRequest,
  AppendResponse,
  Message,
  NodeId,
  Snapshot,
  VoteRequest,
  VoteResponse,
} from '../../src/raft/types.js';
import {
  type ConfigOverrides,
  DEFAULT_CONFIG,
  ofType,
  persistedLog,
  TinyNet,
  type TinyNetOptions,
} from './sim/tiny-net.js';

const createCore = (...args: ConstructorParameters<typeof RaftCore>): RaftCore => new RaftCore(...args);
const net = (opts: TinyNetOptions = {}): TinyNet => new TinyNet(createCore, opts);

function append(from: NodeId, to: NodeId, term: number, fields: Partial<AppendRequest> = {}): AppendRequest {
  return {
    type: 'append',
    from,
    to,
    term,
    prevLogIndex: 0,
    prevLogTerm: 0,
    entries: [],
    commit: 0,
    ctx: 0,
    ...fields,
  };
}

function vote(from: NodeId, to: NodeId, term: number, fields: Partial<VoteRequest> = {}): VoteRequest {
  return { type: 'vote', from, to, term, preVote: false, lastLogIndex: 0, lastLogTerm: 0, ...fields };
}

function appendResp(from: NodeId, to: NodeId, term: number, fields: Partial<AppendResponse>): AppendResponse {
  return {
    type: 'append_resp',
    from,
    to,
    term,
    success: true,
    index: 0,
    hintIndex: 0,
    hintTerm: 0,
    ctx: 0,
    ...fields,
  };
}

const to = (id: NodeId) => (m: Message) => m.to === id;
const notInvolving =
  (...ids: NodeId[]) =>
  (m: Message) =>
    !ids.includes(m.to) && !ids.includes(m.from);

/** Ticks until `id` is no longer in `role`, at most `limit`; returns the count (or limit+1). */
function ticksUntilNot(n: TinyNet, id: NodeId, role: string, limit: number): number {
  for (let t = 1; t <= limit; t++) {
    n.tick(id);
    if (n.core(id).status().role !== role) return t;
  }
  return limit + 1;
}

describe('§5.1 terms', () => {
  for (const role of ['follower', 'candidate', 'leader'] as const) {
    test(`a ${role} that sees a higher term adopts it and becomes follower`, () => {
      const n = net();
      if (role === 'candidate') n.core('n1').campaign();
      if (role === 'leader') n.elect('n1');
      const term = n.core('n1').status().term;
      assert.equal(n.core('n1').status().role, role);

      n.core('n1').step(append('n2', 'n1', term + 1, { prevLogIndex: 0, prevLogTerm: 0 }));
      const st = n.core('n1').status();
      assert.equal(st.role, 'follower');
      assert.equal(st.term, term + 1);
      assert.equal(st.leaderId, 'n2', 'an AppendEntries names the new leader');
      assert.equal(n.drain('n1').length > 0, true);
      assert.equal(n.store('n1').hardState.term, term + 1, 'the new term is persisted');
    });
  }

  test('a vote request with a higher term also moves a node to that term, without a leader', () => {
    const n = net();
    n.elect('n1');
    n.core('n2').step(vote('n3', 'n2', 5, { lastLogIndex: 0, lastLogTerm: 0 }));
    const st = n.core('n2').status();
    assert.equal(st.term, 5);
    assert.equal(st.role, 'follower');
    assert.equal(st.leaderId, null);
  });

  test('stale-term requests are rejected and the sender learns the current term', () => {
    const n = net({ persisted: { n1: persistedLog([1, 2], { term: 3 }) } });
    const before = n.describeLog('n1');
    n.core('n1').step(
      append('n2', 'n1', 2, {
        prevLogIndex: 2,
        prevLogTerm: 2,
        entries: [{ index: 3, term: 2, kind: 'command', command: 'stale' }],
        commit: 3,
      }),
    );
    n.core('n1').step(vote('n3', 'n1', 2, { lastLogIndex: 9, lastLogTerm: 2 }));
    const out = n.drain('n1');
    assert.deepEqual(n.describeLog('n1'), before, 'log untouched');
    assert.equal(n.core('n1').status().term, 3);
    assert.equal(n.core('n1').status().commitIndex, 0);
    const resp = ofType(out, 'append_resp');
    assert.equal(resp.length, 1);
    assert.equal(resp[0]!.success, false);
    assert.equal(resp[0]!.term, 3, 'the stale leader is told the newer term');
    assert.equal(
      ofType(out, 'vote_resp').filter((v) => v.granted).length,
      0,
      'no vote for a stale candidate',
    );
    assert.equal(n.store('n1').hardState.vote, null);
  });

  test('a leader that gets a response carrying a higher term steps down', () => {
    const n = net();
    const term = n.elect('n1');
    n.core('n1').step(appendResp('n2', 'n1', term + 2, { success: false }));
    assert.equal(n.core('n1').status().role, 'follower');
    assert.equal(n.core('n1').status().term, term + 2);
  });
});

describe('§5.2 leader election', () => {
  test('nodes start as followers with the persisted term and vote', () => {
    const n = net({ persisted: { n1: persistedLog([1, 1], { term: 4, vote: 'n2', commit: 1 }) } });
    const st = n.core('n1').status();
    assert.equal(st.role, 'follower');
    assert.equal(st.term, 4);
    assert.equal(st.commitIndex, 1);
    assert.equal(n.core('n2').status().term, 0);
  });

  test('a follower campaigns after its election timeout: term+1, votes for itself, asks everyone', () => {
    const n = net({ size: 5, config: { random: () => 0 } });
    n.tick('n1', DEFAULT_CONFIG.electionTicksMin - 1);
    assert.equal(n.core('n1').status().role, 'follower');
    n.tick('n1');
    const st = n.core('n1').status();
    assert.equal(st.role, 'candidate');
    assert.equal(st.term, 1);
    const out = n.drain('n1');
    assert.deepEqual(n.store('n1').hardState, { term: 1, vote: 'n1', commit: 0 }, 'self-vote persisted');
    const reqs = ofType(out, 'vote');
    assert.deepEqual(reqs.map((m) => m.to).sort(), ['n2', 'n3', 'n4', 'n5']);
    for (const r of reqs) {
      assert.equal(r.term, 1);
      assert.equal(r.preVote, false);
      assert.equal(r.lastLogIndex, 0);
      assert.equal(r.lastLogTerm, 0);
    }
  });

  test('a candidate wins with votes from a majority, not before, and appends a no-op of its term', () => {
    const n = net({ size: 5 });
    n.core('n1').campaign();
    const reqs = n.drain('n1');
    const grants = n.deliver(reqs).flatMap((m) => n.drain(m.to));
    assert.equal(ofType(grants, 'vote_resp').length, 4);
    assert.ok(grants.every((m) => m.type === 'vote_resp' && m.granted));
    n.deliver(grants.slice(0, 1));
    assert.equal(n.core('n1').status().role, 'candidate', '2 of 5 votes is not a majority');
    n.deliver(grants.slice(1, 2));
    assert.equal(n.core('n1').status().role, 'leader', '3 of 5 votes is');
    const entries = n.core('n1').logEntries();
    assert.equal(entries.length, 1);
    assert.equal(entries[0]!.kind, 'noop');
    assert.equal(entries[0]!.term, 1);
    const out = n.drain('n1');
    assert.deepEqual(
      ofType(out, 'append')
        .map((m) => m.to)
        .sort(),
      ['n2', 'n3', 'n4', 'n5'],
    );
  });

  test('a candidate rejected by a majority goes back to follower', () => {
    const n = net({
      persisted: { n2: persistedLog([1, 1], { term: 1 }), n3: persistedLog([1, 1], { term: 1 }) },
    });
    n.core('n1').campaign();
    n.settle();
    assert.equal(n.core('n1').status().role, 'follower');
    assert.equal(n.core('n1').status().term, 1);
  });

  test('a candidate that hears from a leader of its term (or newer) becomes its follower', () => {
    for (const delta of [0, 1]) {
      const n = net();
      n.core('n1').campaign();
      const term = n.core('n1').status().term;
      n.core('n1').step(append('n2', 'n1', term + delta));
      assert.equal(n.core('n1').status().role, 'follower');
      assert.equal(n.core('n1').status().leaderId, 'n2');
    }
    const n = net();
    n.core('n1').campaign();
    n.core('n1').campaign();
    n.core('n1').step(append('n2', 'n1', 1));
    assert.equal(n.core('n1').status().role, 'candidate', 'an append of an older term does not');
  });

  test('a split vote ends in a new election with a higher term after another timeout', () => {
    const n = net({ size: 4 });
    n.core('n1').campaign();
    n.core('n2').campaign();
    // n3 votes for n1, n4 for n2: nobody has 3 of 4.
    n.settle((m) => !(m.type === 'vote' && `${m.from}>${m.to}`.match(/^n1>n4|^n2>n3/)));
    assert.equal(n.core('n1').status().role, 'candidate');
    assert.equal(n.core('n2').status().role, 'candidate');
    let ticks = 0;
    while (n.core('n1').status().term === 1 && ticks < 100) {
      n.tick('n1');
      ticks++;
    }
    assert.ok(ticks >= 10 && ticks <= 20, `new election after ${ticks} ticks, within [10, 20]`);
    assert.equal(n.core('n1').status().term, 2);
    n.settle();
    assert.equal(n.core('n1').status().role, 'leader', 'the retry wins');
  });

  test('election timeouts are randomized within [min, max]', () => {
    const seen = new Set<number>();
    for (let seed = 0; seed < 40; seed++) {
      let x = seed * 7919 + 1;
      const random = (): number => {
        x = (x * 48271) % 2147483647;
        return x / 2147483647;
      };
      const n = net({ config: { electionTicksMin: 10, electionTicksMax: 20, random } });
      let ticks = 0;
      while (n.core('n1').status().role === 'follower' && ticks < 100) {
        n.tick('n1');
        ticks++;
      }
      assert.ok(ticks >= 10 && ticks <= 20, `timeout ${ticks} within [10, 20]`);
      seen.add(ticks);
    }
    assert.ok(seen.size >= 5, `timeouts vary: ${[...seen].sort((a, b) => a - b).join(',')}`);
  });

  test('a node votes at most once per term, first come first served, even across a restart', () => {
    const n = net();
    n.core('n1').step(vote('n2', 'n1', 1));
    n.core('n1').step(vote('n3', 'n1', 1));
    n.core('n1').step(vote('n2', 'n1', 1)); // a duplicate of the granted request
    const resps = ofType(n.drain('n1'), 'vote_resp');
    assert.deepEqual(
      resps.map((r) => [r.to, r.granted]),
      [
        ['n2', true],
        ['n3', false],
        ['n2', true],
      ],
    );
    assert.deepEqual(n.store('n1').hardState, { term: 1, vote: 'n2', commit: 0 });
    n.restart('n1');
    n.core('n1').step(vote('n3', 'n1', 1));
    const again = ofType(n.drain('n1'), 'vote_resp');
    assert.equal(again.length, 1);
    assert.equal(again[0]!.granted, false, 'the persisted vote survives the restart');
  });
});

describe('§5.3 log replication', () => {
  test('the leader appends a proposal, replicates it, and commits once a majority stored it', () => {
    const n = net({ size: 5 });
    const term = n.elect('n1');
    const placed = n.propose('n1', 'x');
    assert.deepEqual(placed, [{ index: 2, term }]);
    const appends = ofType(n.drain('n1'), 'append');
    assert.deepEqual(appends.map((m) => m.to).sort(), ['n2', 'n3', 'n4', 'n5']);
    for (const m of appends) {
      assert.equal(m.prevLogIndex, 1);
      assert.equal(m.prevLogTerm, term);
      assert.deepEqual(
        m.entries.map((e) => [e.index, e.term, e.command]),
        [[2, term, 'x']],
      );
    }
    assert.equal(n.store('n1').lastIndex(), 2, 'the leader persisted it before sending');
    const ack = (id: NodeId): void => {
      n.deliver(appends.filter(to(id)));
      n.deliver(n.drain(id));
    };
    ack('n2');
    assert.equal(n.core('n1').status().commitIndex, 1, 'leader + 1 follower is not a majority of 5');
    ack('n3');
    assert.equal(n.core('n1').status().commitIndex, 2);
    n.drain('n1');
    assert.deepEqual(n.commandsApplied('n1'), ['x']);
    assert.deepEqual(n.commandsApplied('n2'), [], 'followers apply once they learn the commit index');
    n.tick('n1');
    n.settle();
    for (const id of n.ids) assert.deepEqual(n.commandsApplied(id), ['x'], id);
  });

  test('commits of earlier terms happen indirectly, with the first entry of the new term', () => {
    const n = net({
      persisted: {
        n1: persistedLog([1, 1, 1], { term: 1 }),
        n2: persistedLog([1], { term: 1 }),
        n3: persistedLog([1], { term: 1 }),
      },
    });
    const term = n.elect('n1');
    n.tick('n1');
    n.settle();
    assert.equal(term, 2);
    for (const id of n.ids) {
      assert.deepEqual(n.terms(id), [1, 1, 1, 2], id);
      assert.equal(n.core(id).status().commitIndex, 4, id);
      assert.deepEqual(
        n.applied.get(id)!.map((e) => e.index),
        [1, 2, 3, 4],
      );
    }
  });

  test('a follower commits min(leaderCommit, last entry verified by this append), never its stale tail', () => {
    // Follower: 1/1 2/1 3/1, where 2/1 and 3/1 are stale; the leader of term 2 has 1/1 2/2 3/2.
    const n = net({ persisted: { n1: persistedLog([1, 1, 1], { term: 2 }) } });
    n.core('n1').step(append('n2', 'n1', 2, { prevLogIndex: 1, prevLogTerm: 1, commit: 3 }));
    assert.equal(
      n.core('n1').status().commitIndex,
      1,
      'a heartbeat only vouches for entries up to prevLogIndex',
    );
    n.core('n1').step(
      append('n2', 'n1', 2, {
        prevLogIndex: 1,
        prevLogTerm: 1,
        entries: [{ index: 2, term: 2, kind: 'command', command: 'x' }],
        commit: 3,
      }),
    );
    assert.equal(n.core('n1').status().commitIndex, 2);
    assert.deepEqual(n.terms('n1'), [1, 2]);
    n.drain('n1');
    assert.deepEqual(
      n.applied.get('n1')!.map((e) => `${e.index}/${e.term}`),
      ['1/1', '2/2'],
    );
  });

  test('a follower rejects an append whose previous entry does not match, with back-off hints', () => {
    // Follower log terms: 1 1 2 2 2 (indexes 1..5).
    const n = net({ persisted: { n1: persistedLog([1, 1, 2, 2, 2], { term: 3 }) } });
    const ask = (prevLogIndex: number, prevLogTerm: number): AppendResponse => {
      n.core('n1').step(append('n2', 'n1', 3, { prevLogIndex, prevLogTerm }));
      const r = ofType(n.drain('n1'), 'append_resp');
      assert.equal(r.length, 1);
      return r[0]!;
    };
    const conflict = ask(5, 3);
    assert.equal(conflict.success, false);
    assert.equal(conflict.index, 5, 'names the rejected prevLogIndex');
    assert.equal(conflict.hintTerm, 2, 'the conflicting term');
    assert.equal(conflict.hintIndex, 3, 'its first index, so the leader can skip the whole term');
    const short = ask(8, 3);
    assert.equal(short.success, false);
    assert.equal(short.index, 8);
    assert.equal(short.hintIndex, 6, 'lastIndex+1 when the follower is short');
    const ok = ask(2, 1);
    assert.equal(ok.success, true);
    assert.equal(ok.index, 2);
    assert.deepEqual(n.terms('n1'), [1, 1, 2, 2, 2], 'a matching empty append removes nothing');
  });

  test('a follower appends new entries and replaces a conflicting suffix', () => {
    const cases: { prev: [number, number]; ents: [number, number][]; log: number[]; persisted: number[] }[] =
      [
        { prev: [2, 2], ents: [[3, 3]], log: [1, 2, 3], persisted: [3] },
        {
          prev: [1, 1],
          ents: [
            [2, 3],
            [3, 4],
          ],
          log: [1, 3, 4],
          persisted: [2, 3],
        },
        { prev: [0, 0], ents: [[1, 1]], log: [1, 2], persisted: [] },
        { prev: [0, 0], ents: [[1, 3]], log: [3], persisted: [1] },
      ];
    for (const c of cases) {
      const n = net({ persisted: { n1: persistedLog([1, 2], { term: 4 }) } });
      const entries = c.ents.map(([index, term]) => ({
        index,
        term,
        kind: 'command' as const,
        command: `t${term}i${index}`,
      }));
      n.core('n1').step(append('n2', 'n1', 4, { prevLogIndex: c.prev[0], prevLogTerm: c.prev[1], entries }));
      const rd = n.handleReady('n1')!;
      assert.deepEqual(n.terms('n1'), c.log, JSON.stringify(c));
      assert.deepEqual(
        rd.entries.map((e) => e.index),
        c.persisted,
        `persisted suffix for ${JSON.stringify(c)}`,
      );
      assert.deepEqual(
        n.store('n1').entries.map((e) => e.term),
        c.log,
        'the disk holds the same log',
      );
      const resp = ofType(rd.messages, 'append_resp')[0]!;
      assert.equal(resp.success, true);
      assert.equal(resp.index, c.prev[0] + c.ents.length);
    }
  });

  // Figure 7: the leader's log and followers (a)-(f) that are missing entries, have extra
  // uncommitted entries, or both. The leader (term 8) must bring each of them in line.
  const LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
  const FOLLOWERS: Record<string, number[]> = {
    a: [1, 1, 1, 4, 4, 5, 5, 6, 6],
    b: [1, 1, 1, 4],
    c: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    d: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    e: [1, 1, 1, 4, 4, 4, 4],
    f: [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
  };
  for (const [name, log] of Object.entries(FOLLOWERS)) {
    test(`Figure 7 (${name}): the leader forces the follower's log to match its own, skipping whole terms`, () => {
      const n = net({
        persisted: {
          n1: persistedLog(LEADER, { term: 7 }),
          n2: persistedLog(log, { term: 7 }),
          n3: persistedLog(LEADER, { term: 7 }),
        },
      });
      const term = n.elect('n1');
      assert.equal(term, 8);
      n.tick('n1');
      const traffic = n.settle();
      assert.deepEqual(n.terms('n2'), [...LEADER, 8]);
      assert.deepEqual(n.describeLog('n2'), n.describeLog('n1'));
      assert.equal(n.core('n2').status().commitIndex, 11);
      const rejections = ofType(traffic, 'append_resp').filter((m) => m.from === 'n2' && !m.success).length;
      // One rejection per conflicting term at most; entry-by-entry back-off would need up to 7 for (f).
      assert.ok(rejections <= 3, `${rejections} rejections`);
    });
  }
});

describe('§5.4 safety', () => {
  test('a voter grants its vote only to a candidate whose log is at least as up to date (5.4.1)', () => {
    // [voter log terms, candidate lastIndex, candidate lastTerm, granted]
    const cases: [number[], number, number, boolean][] = [
      [[1, 1], 2, 1, true],
      [[1, 1], 3, 1, true],
      [[1, 1], 1, 1, false],
      [[1, 1], 1, 2, true],
      [[1, 1], 0, 0, false],
      [[1, 2], 1, 1, false],
      [[1, 2], 3, 1, false],
      [[1, 2], 1, 2, false],
      [[1, 2], 2, 2, true],
      [[1, 2], 3, 2, true],
      [[1, 2], 1, 3, true],
      [[], 0, 0, true],
    ];
    for (const [log, lastLogIndex, lastLogTerm, granted] of cases) {
      const n = net({ persisted: { n1: persistedLog(log, { term: 2 }) } });
      n.core('n1').step(vote('n2', 'n1', 3, { lastLogIndex, lastLogTerm }));
      const r = ofType(n.drain('n1'), 'vote_resp');
      assert.equal(r.length, 1);
      assert.equal(
        r[0]!.granted,
        granted,
        `log ${JSON.stringify(log)} vs candidate ${lastLogIndex}/${lastLogTerm}`,
      );
      assert.equal(n.store('n1').hardState.vote, granted ? 'n2' : null);
    }
  });

  // Figure 8. S1 leads term 4 and replicates index 2 (term 2) to a majority, S1 S2 S3. Counting
  // replicas must not commit it: S5 (last entry 2/3) can still be elected with S2 S3 S4 and
  // overwrite index 2. Only once an entry of term 4 is on a majority are both committed.
  const figure8 = (): TinyNet => {
    const n = net({
      size: 5,
      config: { maxEntriesPerAppend: 1 },
      persisted: {
        n1: persistedLog([1, 2], { term: 3, commit: 1 }),
        n2: persistedLog([1], { term: 3, commit: 1 }),
        n3: persistedLog([1], { term: 3, commit: 1 }),
        n4: persistedLog([1], { term: 3, commit: 1 }),
        n5: persistedLog([1, 3], { term: 3, commit: 1 }),
      },
    });
    n.core('n1').campaign();
    // S1 wins term 4 with S2 S3 S4; S5 is more up to date and refuses.
    n.settle((m) => m.type === 'vote' || m.type === 'vote_resp');
    assert.equal(n.core('n1').status().role, 'leader');
    assert.equal(n.core('n1').status().term, 4);
    assert.deepEqual(n.terms('n1'), [1, 2, 4]);
    // S2 and S3 hear from S1, but only entry 2 gets through (one entry per append), never the no-op.
    const acked = new Set<NodeId>();
    n.tick('n1');
    n.settle((m) => {
      if (m.type === 'vote' || m.type === 'vote_resp') return false;
      const peer = m.from === 'n1' ? m.to : m.from;
      if (peer !== 'n2' && peer !== 'n3') return false;
      if (m.type === 'append') {
        return m.prevLogIndex > n.core(m.to).status().lastIndex || m.entries.every((e) => e.index <= 2);
      }
      if (m.type === 'append_resp' && m.success && m.index === 2) acked.add(m.from);
      return true;
    });
    assert.deepEqual([...acked].sort(), ['n2', 'n3'], 'S2 and S3 acknowledged index 2');
    assert.deepEqual(n.terms('n2'), [1, 2]);
    assert.deepEqual(n.terms('n3'), [1, 2]);
    return n;
  };

  test('Figure 8: an entry of an earlier term is not committed by counting replicas', () => {
    const n = figure8();
    // 2/2 is on S1 S2 S3 (a majority) yet must not be committed.
    assert.equal(n.core('n1').status().commitIndex, 1);
    n.drain('n1');
    assert.deepEqual(
      n.applied.get('n1')!.map((e) => e.index),
      [1],
      'nothing beyond the persisted commit was applied',
    );
    // Which is right: S5 can win term 5 and replace index 2.
    n.isolate('n1');
    n.core('n5').campaign();
    n.tick('n5');
    n.settle();
    assert.equal(n.core('n5').status().role, 'leader');
    n.tick('n5');
    n.settle();
    for (const id of ['n2', 'n3', 'n4', 'n5']) {
      assert.deepEqual(n.terms(id), [1, 3, 5], id);
      assert.equal(n.core(id).status().commitIndex, 3, id);
    }
  });

  test('Figure 8: once an entry of the current term is on a majority, it and the earlier ones commit', () => {
    const n = figure8();
    n.tick('n1');
    n.settle(notInvolving('n4', 'n5'));
    assert.deepEqual(n.terms('n3'), [1, 2, 4]);
    assert.equal(n.core('n1').status().commitIndex, 3);
    assert.deepEqual(
      n.applied.get('n1')!.map((e) => `${e.index}/${e.term}`),
      ['1/1', '2/2', '3/4'],
    );
  });
});

describe('§7 log compaction and InstallSnapshot', () => {
  const snapshotAt = (index: number, term: number): Snapshot => ({
    meta: { index, term, voters: ['n1', 'n2', 'n3'] },
    data: { index, term, hash: 1 },
  });

  test("a snapshot whose last entry conflicts with the follower's log replaces that log", () => {
    const n = net({ persisted: { n1: persistedLog([1, 1, 1], { term: 2 }) } });
    n.core('n1').step({ type: 'snapshot', from: 'n2', to: 'n1', term: 2, snapshot: snapshotAt(2, 2) });
    const rd = n.handleReady('n1')!;
    assert.equal(rd.snapshot?.meta.index, 2, 'the driver is told to restore it');
    assert.deepEqual(n.core('n1').logOffset(), { index: 2, term: 2 });
    assert.deepEqual(n.core('n1').logEntries(), [], 'the conflicting 3/1 is gone too');
    assert.equal(n.core('n1').status().commitIndex, 2);
    assert.deepEqual(ofType(rd.messages, 'snapshot_resp')[0]?.index, 2);
  });

  test("a snapshot whose last entry matches the follower's log only advances the commit index", () => {
    const n = net({ persisted: { n1: persistedLog([1, 1, 1], { term: 2 }) } });
    n.core('n1').step({ type: 'snapshot', from: 'n2', to: 'n1', term: 2, snapshot: snapshotAt(2, 1) });
    const rd = n.handleReady('n1')!;
    assert.equal(rd.snapshot, null);
    assert.deepEqual(n.terms('n1'), [1, 1, 1], 'entries after it are kept');
    assert.equal(n.core('n1').status().commitIndex, 2);
    assert.deepEqual(
      rd.committed.map((e) => e.index),
      [1, 2],
    );
  });

  const lagging = (config: ConfigOverrides = {}): TinyNet => {
    const n = net({ config });
    n.elect('n1');
    n.isolate('n3');
    for (let i = 0; i < 5; i++) n.propose('n1', `x${i}`);
    n.tick('n1');
    n.settle();
    assert.equal(n.core('n1').status().commitIndex, 6);
    assert.equal(n.core('n3').status().lastIndex, 1);
    n.compact('n1'); // everything up to 6, nothing retained
    assert.equal(n.core('n1').logOffset().index, 6);
    n.heal();
    return n;
  };

  test('a follower whose next entry was compacted away gets the snapshot, restores it, and catches up', () => {
    const n = lagging();
    n.propose('n1', 'after');
    n.tick('n1');
    const traffic = n.settle();
    const snaps = ofType(traffic, 'snapshot').filter((m) => m.to === 'n3');
    assert.ok(snaps.length >= 1, 'InstallSnapshot sent');
    assert.equal(snaps[0]!.snapshot.meta.index, 6);
    assert.equal(n.restored.get('n3')!.length, 1, 'restored through Ready.snapshot');
    assert.equal(n.store('n3').snapshot?.meta.index, 6, 'snapshot persisted');
    assert.deepEqual(n.machines.get('n3')!.state, {
      ...n.machines.get('n1')!.state,
    });
    assert.equal(n.core('n3').status().commitIndex, 7);
    assert.deepEqual(n.describeLog('n3'), n.describeLog('n1'));
    assert.deepEqual(n.commandsApplied('n3'), ['after'], 'only entries after the snapshot are applied');
  });

  test('a snapshot the follower already covers is acknowledged without restoring it', () => {
    const n = lagging();
    n.tick('n1');
    const traffic = n.settle();
    const snap = ofType(traffic, 'snapshot').find((m) => m.to === 'n3')!;
    n.core('n3').step(snap); // a duplicate
    const rd = n.handleReady('n3')!;
    assert.equal(rd.snapshot, null);
    const resp = ofType(rd.messages, 'snapshot_resp');
    assert.equal(resp.length, 1);
    assert.equal(resp[0]!.index, 6);
  });

  test('a restarted node resumes from its snapshot and stored log, re-applying only what follows', () => {
    const n = net();
    n.elect('n1');
    n.propose('n1', 'a', 'b', 'c');
    for (let i = 0; i < 2; i++) {
      n.tick('n1');
      n.settle();
    }
    n.compact('n2');
    n.propose('n1', 'd');
    n.tick('n1');
    n.settle();
    n.tick('n1'); // followers learn the new commit index with the next heartbeat
    n.settle();
    n.restart('n2');
    const st = n.core('n2').status();
    assert.equal(st.term, 1);
    assert.equal(st.commitIndex, 5);
    assert.equal(n.core('n2').logOffset().index, 4);
    n.drain('n2');
    assert.deepEqual(n.commandsApplied('n2'), ['d']);
    assert.deepEqual(n.machines.get('n2')!.state, n.machines.get('n1')!.state);
  });
});

describe('PreVote (thesis §9.6)', () => {
  const partitioned = (preVote: boolean): TinyNet => {
    const n = net({ config: { preVote } });
    n.elect('n1');
    n.isolate('n3');
    n.propose('n1', 'while-away');
    n.tick('n1');
    n.settle();
    for (let i = 0; i < 5 * DEFAULT_CONFIG.electionTicksMax; i++) {
      n.tick('n3');
      n.drain('n3');
    }
    return n;
  };

  test('a partitioned node does not bump its term, and rejoining does not disturb the leader', () => {
    const n = partitioned(true);
    assert.equal(n.core('n3').status().term, 1, 'PreVote failed, so the term never moved');
    n.heal();
    for (let i = 0; i < 3 * DEFAULT_CONFIG.electionTicksMax; i++) {
      n.tickAll();
      n.settle();
    }
    assert.equal(n.core('n1').status().role, 'leader');
    assert.equal(n.core('n1').status().term, 1);
    assert.equal(n.core('n3').status().leaderId, 'n1');
    assert.deepEqual(n.describeLog('n3'), n.describeLog('n1'));
  });

  test('without PreVote the same node comes back with a higher term and deposes the leader', () => {
    const n = partitioned(false);
    assert.ok(n.core('n3').status().term > 1);
    n.heal();
    for (let i = 0; i < 3 * DEFAULT_CONFIG.electionTicksMax; i++) {
      n.tickAll();
      n.settle();
    }
    assert.ok(n.core('n1').status().term > 1, 'the term moved on');
  });

  test('a pre-candidate refused by a majority at its own term steps back at once', () => {
    const n = net({ config: { preVote: true } });
    n.core('n1').campaign();
    assert.equal(n.core('n1').status().role, 'precandidate');
    n.drain('n1');
    const refuse = (from: NodeId): VoteResponse => ({
      type: 'vote_resp',
      from,
      to: 'n1',
      term: 0,
      preVote: true,
      granted: false,
    });
    n.core('n1').step(refuse('n2'));
    n.core('n1').step(refuse('n3'));
    assert.equal(n.core('n1').status().role, 'follower');
    assert.equal(n.core('n1').status().term, 0, 'a failed PreVote leaves the term alone');
  });

  test("a PreVote neither changes the voter's term nor records a vote", () => {
    const n = net({ config: { preVote: true } });
    n.core('n2').step(vote('n1', 'n2', 5, { preVote: true }));
    const out = n.drain('n2');
    const r = ofType(out, 'vote_resp');
    assert.equal(r.length, 1);
    assert.equal(r[0]!.preVote, true);
    assert.equal(r[0]!.granted, true);
    assert.equal(n.core('n2').status().term, 0);
    assert.equal(n.store('n2').hardState.vote, null);
  });
});

describe('CheckQuorum (thesis §6.2)', () => {
  test('a leader cut off from the majority steps down within an election timeout plus a heartbeat', () => {
    const cfg = { checkQuorum: true, electionTicksMin: 10, electionTicksMax: 20, heartbeatTicks: 2 };
    const n = net({ size: 5, config: cfg });
    n.elect('n1');
    for (let i = 0; i < 30; i++) {
      n.tick('n1');
      n.settle();
    }
    assert.equal(n.core('n1').status().role, 'leader', 'stays leader while it hears from a majority');
    n.isolate('n1');
    const ticks = ticksUntilNot(n, 'n1', 'leader', 100);
    assert.ok(ticks <= cfg.electionTicksMax + cfg.heartbeatTicks, `stepped down after ${ticks} ticks`);
    assert.equal(n.propose('n1', 'x'), null);
  });

  test('a leader that hears from a majority stays leader when a minority is cut off', () => {
    const n = net({ size: 5, config: { checkQuorum: true } });
    n.elect('n1');
    n.isolate('n4');
    n.isolate('n5');
    for (let i = 0; i < 100; i++) {
      n.tick('n1');
      n.settle();
    }
    assert.equal(n.core('n1').status().role, 'leader');
  });

  test('a follower that hears from its leader ignores a disruptive higher-term vote request', () => {
    const n = net({ config: { checkQuorum: true } });
    const term = n.elect('n1');
    n.core('n2').step(vote('n3', 'n2', term + 1, { lastLogIndex: 100, lastLogTerm: term }));
    assert.equal(n.core('n2').status().term, term);
    assert.equal(n.core('n2').status().leaderId, 'n1');
    assert.equal(ofType(n.drain('n2'), 'vote_resp').filter((r) => r.granted).length, 0);
  });
});

describe('ReadIndex (thesis §6.4)', () => {
  test('a read is confirmed only after a majority answered a heartbeat round sent after it', () => {
    const n = net({ size: 5 });
    n.elect('n1');
    const commit = n.core('n1').status().commitIndex;
    assert.equal(n.core('n1').readIndex(7), true);
    const round = ofType(n.drain('n1'), 'append');
    assert.deepEqual(round.map((m) => m.to).sort(), ['n2', 'n3', 'n4', 'n5']);
    assert.deepEqual(n.readStates.get('n1'), []);
    const answer = (id: NodeId): void => {
      n.deliver(round.filter(to(id)));
      n.deliver(n.drain(id));
      n.drain('n1');
    };
    answer('n2');
    assert.deepEqual(n.readStates.get('n1'), [], 'leader + 1 of 5 is not a majority');
    answer('n3');
    assert.deepEqual(n.readStates.get('n1'), [{ id: 7, index: commit }]);
  });

  test('answers to an older heartbeat round do not confirm a newer read', () => {
    const n = net({ size: 3 });
    n.elect('n1');
    n.tick('n1'); // a regular heartbeat round
    const old = ofType(n.drain('n1'), 'append');
    assert.equal(old.length, 2);
    assert.equal(n.core('n1').readIndex(1), true);
    const fresh = ofType(n.drain('n1'), 'append');
    n.deliver(old);
    n.deliver(n.drain('n2'));
    n.deliver(n.drain('n3'));
    n.drain('n1');
    assert.deepEqual(n.readStates.get('n1'), [], 'the old round proves nothing about the time of the read');
    n.deliver(fresh.filter(to('n2')));
    n.deliver(n.drain('n2'));
    n.drain('n1');
    assert.deepEqual(
      n.readStates.get('n1')!.map((r) => r.id),
      [1],
    );
  });

  test('a new leader confirms no read before it has committed an entry of its own term', () => {
    const log = (): ReturnType<typeof persistedLog> => persistedLog([1, 1], { term: 1 });
    const n = net({ size: 5, persisted: { n1: log(), n2: log(), n3: log(), n4: log(), n5: log() } });
    n.core('n1').campaign();
    n.settle((m) => m.type === 'vote' || m.type === 'vote_resp');
    assert.equal(n.core('n1').status().role, 'leader');
    assert.equal(n.core('n1').status().commitIndex, 0, 'its commit index may be behind the real one');
    assert.equal(n.core('n1').readIndex(3), true);
    // Only n2 hears from the leader: it answers everything, but the no-op is not on a majority.
    for (const id of ['n3', 'n4', 'n5']) n.cutLink('n1', id);
    for (let i = 0; i < 3; i++) {
      n.tick('n1');
      n.settle();
    }
    assert.equal(n.core('n1').status().commitIndex, 0);
    assert.deepEqual(n.readStates.get('n1'), []);
    n.heal();
    n.tick('n1');
    n.settle();
    assert.equal(n.core('n1').status().commitIndex, 3);
    assert.deepEqual(n.readStates.get('n1'), [{ id: 3, index: 3 }], 'the read index covers the no-op');
  });

  test('only the leader takes reads; a leader that steps down drops the pending ones', () => {
    const n = net();
    const term = n.elect('n1');
    assert.equal(n.core('n2').readIndex(1), false);
    assert.equal(n.core('n1').readIndex(2), true);
    n.drain('n1');
    n.core('n1').step(append('n2', 'n1', term + 1));
    n.drain('n1');
    assert.deepEqual(n.droppedReads.get('n1'), [2]);
    assert.deepEqual(n.readStates.get('n1'), []);
  });
});

describe('leadership transfer (thesis §3.10)', () => {
  test('to an up-to-date follower: TimeoutNow, it wins the next term; proposals pause meanwhile', () => {
    const n = net();
    const term = n.elect('n1');
    n.tick('n1');
    n.settle();
    assert.equal(n.core('n1').transferLeadership('n2'), true);
    assert.equal(n.propose('n1', 'x'), null, 'no proposals while transferring');
    const out = n.drain('n1');
    assert.deepEqual(
      ofType(out, 'timeout_now').map((m) => m.to),
      ['n2'],
    );
    n.deliver(out);
    n.settle();
    assert.equal(n.core('n2').status().role, 'leader');
    assert.equal(n.core('n2').status().term, term + 1);
    assert.equal(n.core('n1').status().role, 'follower');
    assert.equal(n.core('n1').status().leaderId, 'n2');
  });

  test('to a lagging follower: it is caught up first, then told to campaign', () => {
    const n = net();
    n.elect('n1');
    n.isolate('n2');
    n.propose('n1', 'a', 'b');
    n.tick('n1');
    n.settle();
    n.heal();
    assert.equal(n.core('n1').transferLeadership('n2'), true);
    let timeoutNowBeforeCaughtUp = false;
    for (let i = 0; i < 5 && n.core('n2').status().role !== 'leader'; i++) {
      n.tick('n1');
      n.settle((m) => {
        if (m.type === 'timeout_now') timeoutNowBeforeCaughtUp ||= n.core('n2').status().lastIndex < 3;
        return true;
      });
    }
    assert.equal(timeoutNowBeforeCaughtUp, false, 'not told to campaign before it has every entry');
    assert.equal(n.core('n2').status().role, 'leader');
    assert.deepEqual(n.commandsApplied('n2'), ['a', 'b']);
  });

  test('transfer requests to itself or to a non-member are refused', () => {
    const n = net();
    n.elect('n1');
    assert.equal(n.core('n1').transferLeadership('n1'), false);
    assert.equal(n.core('n1').transferLeadership('n9'), false);
    assert.equal(n.core('n2').transferLeadership('n3'), false, 'only a leader transfers');
  });
});

describe('pipelined replication', () => {
  const pipeline = (): TinyNet => {
    const n = net({ config: { maxInflight: 3, maxEntriesPerAppend: 1 } });
    n.elect('n1');
    n.tick('n1');
    n.settle(); // followers acknowledged: the leader now replicates optimistically
    return n;
  };

  test('several appends are in flight to a follower before any is acknowledged, up to maxInflight', () => {
    const n = pipeline();
    const sent: AppendRequest[] = [];
    for (const c of ['a', 'b', 'c', 'd']) {
      n.propose('n1', c);
      sent.push(...ofType(n.drain('n1'), 'append').filter((m) => m.to === 'n2'));
    }
    assert.deepEqual(
      sent.map((m) => [m.prevLogIndex, m.entries.map((e) => e.command)]),
      [
        [1, ['a']],
        [2, ['b']],
        [3, ['c']],
      ],
      'three appends in flight, the fourth waits',
    );
    n.deliver(sent.slice(0, 1));
    n.deliver(n.drain('n2'));
    const next = ofType(n.drain('n1'), 'append').filter((m) => m.to === 'n2');
    assert.deepEqual(
      next.map((m) => m.entries.map((e) => e.command)),
      [['d']],
      'an acknowledgement frees a slot',
    );
  });

  test('a lost append in the pipeline is detected and resent', () => {
    const n = pipeline();
    const sent: AppendRequest[] = [];
    for (const c of ['a', 'b', 'c']) {
      n.propose('n1', c);
      const out = n.drain('n1');
      sent.push(...ofType(out, 'append').filter((m) => m.to === 'n2'));
      n.deliver(out.filter(to('n3')));
    }
    n.deliver([sent[0]!, sent[2]!]); // the middle one is lost
    const answers = ofType(n.drain('n2'), 'append_resp');
    assert.deepEqual(
      answers.map((r) => r.success),
      [true, false],
      'the gap is noticed by the consistency check',
    );
    n.deliver(answers);
    for (let i = 0; i < 5; i++) {
      n.tick('n1');
      n.settle();
    }
    assert.deepEqual(n.describeLog('n2'), n.describeLog('n1'));
    for (const id of n.ids) assert.deepEqual(n.commandsApplied(id), ['a', 'b', 'c'], id);
  });

  test('a heartbeat sent while appends are in flight does not make the leader resend them', () => {
    const n = pipeline();
    const inflight: AppendRequest[] = [];
    for (const c of ['a', 'b']) {
      n.propose('n1', c);
      inflight.push(...ofType(n.drain('n1'), 'append').filter((m) => m.to === 'n2'));
    }
    n.tick('n1'); // a heartbeat follows the appends on the (ordered) link
    const hb = ofType(n.drain('n1'), 'append').filter((m) => m.to === 'n2');
    n.deliver([...inflight, ...hb]);
    n.deliver(n.drain('n2'));
    const resent = ofType(n.drain('n1'), 'append').filter((m) => m.to === 'n2' && m.entries.length > 0);
    assert.deepEqual(
      resent.map((m) => m.entries.map((e) => e.index)),
      [],
      'entries already in flight are not sent again',
    );
  });
});
