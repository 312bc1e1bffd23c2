import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Value } from 'typebox/value';
import { HomeRequestBody } from '../../src/api/schemas/cache.js';
import { homeDeadlineMs, MAX_CACHE_LEASE_MS, MAX_CACHE_MESSAGE_TIMEOUT_MS } from '../../src/cache/types.js';
import { ConfigError, loadConfig } from '../../src/config/index.js';

/** Asserts loadConfig(env) throws a ConfigError naming `variable`, with a one-line message. */
function rejects(env: NodeJS.ProcessEnv, variable: string, fragment?: RegExp): void {
  assert.throws(
    () => loadConfig(env),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError, `expected ConfigError, got ${String(e)}`);
      assert.equal(e.variable, variable);
      assert.ok(e.message.startsWith(`${variable}: `), e.message);
      assert.ok(!e.message.includes('\n'), 'one line');
      if (fragment) assert.match(e.message, fragment);
      return true;
    },
  );
}

describe('loadConfig', () => {
  it('has the SPEC defaults', () => {
    const c = loadConfig({});
    assert.equal(c.nodeId, 'node1');
    assert.equal(c.host, '0.0.0.0');
    assert.equal(c.port, 8001);
    assert.deepEqual(c.roles, ['lock', 'queue', 'cache']);
    assert.deepEqual(
      c.cluster.map((m) => [m.id, m.url]),
      [
        ['node1', 'http://localhost:8001'],
        ['node2', 'http://localhost:8002'],
        ['node3', 'http://localhost:8003'],
      ],
    );
    assert.equal(c.self.id, 'node1');
    assert.deepEqual(c.redis, { mode: 'standalone', url: 'redis://localhost:6379' });
    assert.equal(c.redisExplicit, false);
    assert.equal(c.raft.electionTimeoutMinMs, 3000);
    assert.equal(c.raft.electionTimeoutMaxMs, 5000);
    assert.equal(c.raft.heartbeatIntervalMs, 1000);
    assert.equal(c.cache.maxSize, 1000);
    assert.equal(c.cache.writePolicy, 'write-back');
    assert.equal(c.lock.defaultTtlMs, 300_000);
    assert.equal(c.queue.ackTimeoutMs, 30_000);
    assert.equal(c.queue.maxDeliveries, 10);
    assert.equal(c.queue.vnodes, 150);
    assert.equal(c.dataDir, './data/node1');
    assert.equal(c.clusterSecret, null);
    assert.deepEqual(c.apiTokens, []);
    assert.equal(c.tls, null);
    assert.equal(c.logLevel, 'info');
    assert.equal(c.testHooks, false);
  });

  it('defaults NODE_PORT to the port this node is listed with, and DATA_DIR to its id', () => {
    const c = loadConfig({ NODE_ID: 'node2' });
    assert.equal(c.port, 8002);
    assert.equal(c.dataDir, './data/node2');
    assert.equal(loadConfig({ NODE_ID: 'node2', NODE_PORT: '9000' }).port, 9000);
  });

  it('parses fractional seconds into milliseconds', () => {
    const c = loadConfig({
      RAFT_ELECTION_TIMEOUT_MIN: '0.15',
      RAFT_ELECTION_TIMEOUT_MAX: '0.3',
      RAFT_HEARTBEAT_INTERVAL: '0.05',
      LOCK_DEFAULT_TTL: '1.5',
      QUEUE_ACK_TIMEOUT: '2',
    });
    assert.equal(c.raft.electionTimeoutMinMs, 150);
    assert.equal(c.raft.electionTimeoutMaxMs, 300);
    assert.equal(c.raft.heartbeatIntervalMs, 50);
    assert.equal(c.lock.defaultTtlMs, 1500);
    assert.equal(c.queue.ackTimeoutMs, 2000);
  });

  it('accepts id=host:port#roles entries and derives own roles from them', () => {
    const c = loadConfig({
      NODE_ID: 'q1',
      CLUSTER_ADDRS: 'l1=10.0.0.1:8001#lock, q1=10.0.0.2:8001#queue+cache ,c1=[::1]:9000',
    });
    assert.deepEqual(c.roles, ['queue', 'cache']);
    assert.deepEqual(
      c.cluster.map((m) => [m.id, m.host, m.port, m.url, m.roles.join('+')]),
      [
        ['l1', '10.0.0.1', 8001, 'http://10.0.0.1:8001', 'lock'],
        ['q1', '10.0.0.2', 8001, 'http://10.0.0.2:8001', 'queue+cache'],
        ['c1', '[::1]', 9000, 'http://[::1]:9000', 'lock+queue+cache'],
      ],
    );
    assert.equal(c.port, 8001);
  });

  it('NODE_ROLES sets own roles (normalized order) when CLUSTER_ADDRS does not', () => {
    const c = loadConfig({ NODE_ROLES: 'cache, lock' });
    assert.deepEqual(c.roles, ['lock', 'cache']);
    assert.deepEqual(c.self.roles, ['lock', 'cache']);
  });

  it('uses https URLs with TLS and honours explicit schemes', () => {
    const c = loadConfig({ TLS_CERT: '/c.pem', TLS_KEY: '/k.pem', CLUSTER_ADDRS: 'a:1,http://b:2' });
    assert.deepEqual(c.tls, { certFile: '/c.pem', keyFile: '/k.pem', caFile: null });
    assert.deepEqual(
      c.cluster.map((m) => m.url),
      ['https://a:1', 'http://b:2'],
    );
  });

  it('reads Redis variants', () => {
    assert.deepEqual(loadConfig({ REDIS_HOST: 'r', REDIS_PORT: '7000' }).redis, {
      mode: 'standalone',
      url: 'redis://r:7000',
    });
    assert.deepEqual(loadConfig({ REDIS_HOST: 'r', REDIS_URL: 'redis://u:1/2' }).redis, {
      mode: 'standalone',
      url: 'redis://u:1/2',
    });
    assert.deepEqual(loadConfig({ REDIS_CLUSTER_NODES: 'a:7000,b:7001' }).redis, {
      mode: 'cluster',
      nodes: [
        { host: 'a', port: 7000 },
        { host: 'b', port: 7001 },
      ],
    });
    assert.deepEqual(loadConfig({ REDIS_SENTINELS: 's:26379', REDIS_SENTINEL_NAME: 'm' }).redis, {
      mode: 'sentinel',
      sentinels: [{ host: 's', port: 26379 }],
      name: 'm',
    });
    assert.equal(loadConfig({ REDIS_URL: 'redis://x:1' }).redisExplicit, true);
  });

  it('reads secrets, tokens, policies and levels', () => {
    const c = loadConfig({
      CLUSTER_SECRET: ' s3cret ',
      API_TOKENS: 'a, b,,c',
      CACHE_WRITE_POLICY: 'write-through',
      LOG_LEVEL: 'DEBUG',
      QUEUE_MAX_DELIVERIES: '0',
      QUEUE_VNODES: '10',
      CACHE_MAX_SIZE: '5',
      DATA_DIR: '/var/lib/dss',
      DSS_TEST_HOOKS: '1',
    });
    assert.equal(c.clusterSecret, 's3cret');
    assert.deepEqual(c.apiTokens, ['a', 'b', 'c']);
    assert.equal(c.cache.writePolicy, 'write-through');
    assert.equal(c.logLevel, 'debug');
    assert.equal(c.queue.maxDeliveries, 0);
    assert.equal(c.queue.vnodes, 10);
    assert.equal(c.cache.maxSize, 5);
    assert.equal(c.dataDir, '/var/lib/dss');
    assert.equal(c.testHooks, true);
  });

  it('accepts host names, IPv4 and IPv6 bind addresses', () => {
    for (const h of ['127.0.0.1', '::', '::1', 'dss-node-1.internal'])
      assert.equal(loadConfig({ NODE_HOST: h }).host, h);
    rejects({ NODE_HOST: 'bad host' }, 'NODE_HOST');
  });

  it('treats empty values as unset', () => {
    const c = loadConfig({ NODE_PORT: '', CLUSTER_SECRET: '  ', LOG_LEVEL: '' });
    assert.equal(c.port, 8001);
    assert.equal(c.clusterSecret, null);
    assert.equal(c.logLevel, 'info');
  });

  it('METRICS_MAX_QUEUES: 50 by default, 0 allowed (every queue summed), integers up to 10000', () => {
    assert.equal(loadConfig({}).metrics.maxQueues, 50);
    assert.equal(loadConfig({ METRICS_MAX_QUEUES: '0' }).metrics.maxQueues, 0);
    assert.equal(loadConfig({ METRICS_MAX_QUEUES: '10000' }).metrics.maxQueues, 10_000);
    rejects({ METRICS_MAX_QUEUES: '-1' }, 'METRICS_MAX_QUEUES', /negative/);
    rejects({ METRICS_MAX_QUEUES: '2.5' }, 'METRICS_MAX_QUEUES', /integer/);
    rejects({ METRICS_MAX_QUEUES: '10001' }, 'METRICS_MAX_QUEUES', /at most 10000/);
    rejects({ METRICS_MAX_QUEUES: 'many' }, 'METRICS_MAX_QUEUES', /not a number/);
  });

  describe('rejects with one line naming the variable', () => {
    it('non-numbers', () => {
      rejects({ NODE_PORT: 'abc' }, 'NODE_PORT', /not a number/);
      rejects({ RAFT_ELECTION_TIMEOUT_MIN: 'fast' }, 'RAFT_ELECTION_TIMEOUT_MIN', /not a number/);
      rejects({ CACHE_MAX_SIZE: '1e3' }, 'CACHE_MAX_SIZE', /not a number/);
      rejects({ LOCK_DEFAULT_TTL: 'Infinity' }, 'LOCK_DEFAULT_TTL');
      rejects({ QUEUE_VNODES: '1.5' }, 'QUEUE_VNODES', /integer/);
    });

    it('negative and zero values', () => {
      rejects({ QUEUE_ACK_TIMEOUT: '-1' }, 'QUEUE_ACK_TIMEOUT', /negative/);
      rejects({ QUEUE_MAX_DELIVERIES: '-3' }, 'QUEUE_MAX_DELIVERIES', /negative/);
      rejects({ RAFT_HEARTBEAT_INTERVAL: '0' }, 'RAFT_HEARTBEAT_INTERVAL', /greater than 0/);
      rejects({ CACHE_MAX_SIZE: '0' }, 'CACHE_MAX_SIZE');
      rejects({ NODE_PORT: '70000' }, 'NODE_PORT');
    });

    it('MIN > MAX and heartbeat >= election min', () => {
      rejects({ RAFT_ELECTION_TIMEOUT_MIN: '6' }, 'RAFT_ELECTION_TIMEOUT_MIN', /RAFT_ELECTION_TIMEOUT_MAX/);
      rejects({ RAFT_HEARTBEAT_INTERVAL: '3' }, 'RAFT_HEARTBEAT_INTERVAL', /RAFT_ELECTION_TIMEOUT_MIN/);
      assert.doesNotThrow(() =>
        loadConfig({ RAFT_ELECTION_TIMEOUT_MIN: '4', RAFT_ELECTION_TIMEOUT_MAX: '4' }),
      );
    });

    it('unknown roles', () => {
      rejects({ NODE_ROLES: 'lock,dns' }, 'NODE_ROLES', /unknown role "dns"/);
      rejects({ NODE_ROLES: ' , ' + ',' }, 'NODE_ROLES');
      rejects({ CLUSTER_ADDRS: 'node1=a:1#lock+web' }, 'CLUSTER_ADDRS', /unknown role "web"/);
    });

    it('NODE_ROLES that contradicts CLUSTER_ADDRS', () => {
      rejects({ NODE_ROLES: 'queue', CLUSTER_ADDRS: 'node1=a:1#lock' }, 'NODE_ROLES', /differs/);
    });

    it('duplicate ids and addresses', () => {
      rejects({ CLUSTER_ADDRS: 'node1=a:1,node1=b:2' }, 'CLUSTER_ADDRS', /duplicate node id "node1"/);
      rejects({ CLUSTER_ADDRS: 'a:1,A:1' }, 'CLUSTER_ADDRS', /duplicate address/);
    });

    it('own id missing from CLUSTER_ADDRS', () => {
      rejects({ NODE_ID: 'node4' }, 'CLUSTER_ADDRS', /"node4" is not listed/);
    });

    it('malformed addresses and ids', () => {
      rejects({ CLUSTER_ADDRS: 'localhost' }, 'CLUSTER_ADDRS', /host:port/);
      rejects({ CLUSTER_ADDRS: 'a:port' }, 'CLUSTER_ADDRS', /port/);
      rejects({ CLUSTER_ADDRS: 'a:0' }, 'CLUSTER_ADDRS', /out of range/);
      rejects({ CLUSTER_ADDRS: 'bad id=a:1' }, 'CLUSTER_ADDRS');
      rejects({ CLUSTER_ADDRS: ',' }, 'CLUSTER_ADDRS', /no node/);
      rejects({ NODE_ID: 'no/slash' }, 'NODE_ID');
    });

    it('bad log level, write policy and flags', () => {
      rejects({ LOG_LEVEL: 'verbose' }, 'LOG_LEVEL', /verbose/);
      rejects({ CACHE_WRITE_POLICY: 'lazy' }, 'CACHE_WRITE_POLICY');
      rejects({ DSS_TEST_HOOKS: 'maybe' }, 'DSS_TEST_HOOKS');
    });

    it('TLS_CERT without TLS_KEY and vice versa', () => {
      rejects({ TLS_CERT: '/c.pem' }, 'TLS_CERT', /TLS_KEY/);
      rejects({ TLS_KEY: '/k.pem' }, 'TLS_KEY', /TLS_CERT/);
    });

    it('conflicting or malformed Redis settings', () => {
      rejects({ REDIS_CLUSTER_NODES: 'a:1', REDIS_SENTINELS: 'b:2' }, 'REDIS_CLUSTER_NODES');
      rejects({ REDIS_URL: 'redis://a:1', REDIS_SENTINELS: 'b:2' }, 'REDIS_URL');
      rejects({ REDIS_URL: 'http://a:1' }, 'REDIS_URL');
      rejects({ REDIS_URL: 'not a url' }, 'REDIS_URL');
      rejects({ REDIS_PORT: 'x' }, 'REDIS_PORT');
      rejects({ REDIS_CLUSTER_NODES: 'a' }, 'REDIS_CLUSTER_NODES');
    });

    it('API_TOKENS without a token', () => {
      rejects({ API_TOKENS: ' , ' }, 'API_TOKENS');
    });
  });
});

describe('CACHE_LEASE_MS and the internal cache API', () => {
  it('the longest lease the configuration accepts gives home requests the API accepts', () => {
    const c = loadConfig({ NODE_ID: 'node1', CLUSTER_ADDRS: 'localhost:8001', CACHE_LEASE_MS: '600000' });
    assert.equal(c.cache.leaseMs, MAX_CACHE_LEASE_MS);
    assert.throws(
      () => loadConfig({ NODE_ID: 'node1', CLUSTER_ADDRS: 'localhost:8001', CACHE_LEASE_MS: '600001' }),
      ConfigError,
    );
    const request = {
      from: 'node2',
      gen: 1,
      epoch: 1,
      kind: 'read_miss',
      key: 'k',
      deadline_ms: homeDeadlineMs(c.cache.leaseMs, MAX_CACHE_MESSAGE_TIMEOUT_MS),
    };
    assert.ok(
      Value.Check(HomeRequestBody, request),
      JSON.stringify([...Value.Errors(HomeRequestBody, request)]),
    );
  });
});
