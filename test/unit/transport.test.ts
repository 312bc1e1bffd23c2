import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { DssApp, RaftApi } from '../../src/api/context.js';
import { buildServer } from '../../src/api/server.js';
import { parseClusterAddrs } from '../../src/config/index.js';
import { createMetrics } from '../../src/metrics/index.js';
import type { RaftStatus, RequestMessage, ResponseMessage, VoteRequest } from '../../src/raft/types.js';
import { deadline } from '../../src/transport/deadline.js';
import { HttpTransport, parseResponses, TransportError } from '../../src/transport/http.js';

const status: RaftStatus = {
  id: 'node2',
  role: 'follower',
  term: 1,
  leaderId: null,
  commitIndex: 0,
  lastApplied: 0,
  lastIndex: 0,
  firstIndex: 1,
  snapshotIndex: 0,
};

const voteFrom1: VoteRequest = {
  type: 'vote',
  from: 'node1',
  to: 'node2',
  term: 2,
  preVote: false,
  lastLogIndex: 0,
  lastLogTerm: 0,
};

describe('HttpTransport', () => {
  let app: DssApp;
  let url: string;
  let delayMs = 0;
  const received: RequestMessage[][] = [];

  before(async () => {
    const raft: RaftApi = {
      status: () => status,
      reachablePeers: () => new Set(['node2']),
      handleRequests: async (msgs) => {
        received.push(msgs);
        if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
        return msgs.map((m): ResponseMessage => ({
          type: 'vote_resp',
          from: 'node2',
          to: m.from,
          term: m.term,
          preVote: m.type === 'vote' && m.preVote,
          granted: true,
        }));
      },
    };
    app = await buildServer({
      nodeId: 'node2',
      roles: ['lock'],
      cluster: parseClusterAddrs('node1=127.0.0.1:1,node2=127.0.0.1:2', 'http').members,
      raft,
      metrics: createMetrics({ nodeId: 'node2', defaultMetrics: false }),
      clusterSecret: 'shh',
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  });

  after(async () => {
    await app.close();
  });

  it('POSTs a batch to the endpoint and returns the responses', async () => {
    const t = new HttpTransport({ peers: [{ id: 'node2', url }], clusterSecret: 'shh' });
    const resps = await t.send(
      'node2',
      'request_vote',
      [voteFrom1, { ...voteFrom1, preVote: true, term: 3 }],
      2000,
    );
    assert.deepEqual(
      resps.map((r) => [r.type, r.term]),
      [
        ['vote_resp', 2],
        ['vote_resp', 3],
      ],
    );
    assert.deepEqual(received.at(-1), [voteFrom1, { ...voteFrom1, preVote: true, term: 3 }]);
    await t.close();
  });

  it('fails with the status when the secret is wrong', async () => {
    const t = new HttpTransport({ peers: [{ id: 'node2', url }], clusterSecret: 'nope' });
    await assert.rejects(t.send('node2', 'request_vote', [voteFrom1], 2000), (e: unknown) => {
      assert.ok(e instanceof TransportError);
      assert.equal(e.status, 401);
      return true;
    });
    await t.close();
  });

  it('times out', async () => {
    const t = new HttpTransport({ peers: [{ id: 'node2', url }], clusterSecret: 'shh' });
    delayMs = 500;
    try {
      await assert.rejects(t.send('node2', 'request_vote', [voteFrom1], 50));
    } finally {
      delayMs = 0;
    }
    await t.close();
  });

  it('rejects unknown peers and use after close', async () => {
    const t = new HttpTransport({ peers: [{ id: 'node2', url }], clusterSecret: 'shh' });
    await assert.rejects(
      t.send('node9', 'request_vote', [{ ...voteFrom1, to: 'node9' }], 100),
      TransportError,
    );
    await t.close();
    await assert.rejects(t.send('node2', 'request_vote', [voteFrom1], 100), TransportError);
  });

  it('keeps only well-formed responses addressed to us from the peer', () => {
    const good = {
      type: 'append_resp',
      from: 'node2',
      to: 'node1',
      term: 1,
      success: true,
      index: 3,
      hintIndex: 0,
      hintTerm: 0,
      ctx: 1,
    };
    const text = JSON.stringify({
      messages: [
        good,
        { ...good, from: 'node3' },
        { ...good, to: 'node3' },
        { ...good, type: 'vote_resp' },
        { ...good, index: '3' },
        { ...good, term: 1e300 },
        null,
        'x',
      ],
    });
    assert.deepEqual(parseResponses(text, { from: 'node1', to: 'node2', endpoint: 'append_entries' }), [
      good,
    ]);
    assert.throws(
      () => parseResponses('nope', { from: 'node1', to: 'node2', endpoint: 'append_entries' }),
      TransportError,
    );
    assert.throws(
      () => parseResponses('{}', { from: 'node1', to: 'node2', endpoint: 'append_entries' }),
      TransportError,
    );
  });
});

describe('deadline', () => {
  it('aborts with a TimeoutError once the limit has passed', async () => {
    const limit = deadline(20);
    await new Promise<void>((resolve) => limit.signal.addEventListener('abort', () => resolve()));
    const reason: unknown = limit.signal.reason;
    assert.ok(reason instanceof DOMException);
    assert.equal(reason.name, 'TimeoutError');
  });

  it('never aborts once cleared', async () => {
    const limit = deadline(20);
    limit.clear();
    // A later limit that fires proves the cleared one's time has passed too.
    const later = deadline(60);
    await new Promise<void>((resolve) => later.signal.addEventListener('abort', () => resolve()));
    assert.equal(limit.signal.aborted, false);
  });

  it('aborts with the reason given', async () => {
    const limit = deadline(5, () => new TransportError('late', 'node9'));
    await new Promise<void>((resolve) => limit.signal.addEventListener('abort', () => resolve()));
    assert.ok(limit.signal.reason instanceof TransportError);
  });
});
