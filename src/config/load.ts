// Configuration from the environment (SPEC section 7). Pure: reads only the object it is given.
import { MAX_CACHE_LEASE_MS } from '../cache/types.js';
import { isValidHost, parseHostPort, parseList, parseNumber, parseRoles, parseSecondsAsMs } from './parse.js';
import {
  ALL_ROLES,
  ConfigError,
  LOG_LEVELS,
  type CacheWritePolicy,
  type ClusterMember,
  type Config,
  type LogLevel,
  type NodeRole,
  type RedisConfig,
} from './types.js';

export const DEFAULT_CLUSTER_ADDRS = 'localhost:8001,localhost:8002,localhost:8003';

const NODE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/**
 * Reads every variable of SPEC section 7. Empty values count as unset, so `VAR=` in a compose file
 * means "default". Throws ConfigError (one line naming the variable) on the first bad value.
 */
export function loadConfig(env: NodeJS.ProcessEnv): Config {
  const get = (name: string): string | undefined => {
    const v = env[name];
    return v === undefined || v.trim() === '' ? undefined : v;
  };

  const nodeId = (get('NODE_ID') ?? 'node1').trim();
  if (!NODE_ID.test(nodeId)) {
    throw new ConfigError('NODE_ID', `"${nodeId}" is not a valid node id (1-64 of A-Z a-z 0-9 . _ -)`);
  }

  const host = (get('NODE_HOST') ?? '0.0.0.0').trim();
  // A bind address may also be a bare IPv6 address such as `::`.
  if (!isValidHost(host) && !/^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*$/.test(host)) {
    throw new ConfigError('NODE_HOST', `"${host}" is not a valid host`);
  }

  const tls = loadTls(get);
  const scheme = tls ? 'https' : 'http';
  const explicitRoles = get('NODE_ROLES');
  const ownRoles =
    explicitRoles === undefined ? undefined : parseRoles('NODE_ROLES', explicitRoles, /[,+\s]+/);

  const cluster = parseClusterAddrs(get('CLUSTER_ADDRS') ?? DEFAULT_CLUSTER_ADDRS, scheme);
  const selfIndex = cluster.members.findIndex((m) => m.id === nodeId);
  if (selfIndex < 0) {
    throw new ConfigError(
      'CLUSTER_ADDRS',
      `own node id "${nodeId}" is not listed (ids: ${cluster.members.map((m) => m.id).join(', ')})`,
    );
  }
  const listed = cluster.members[selfIndex]!;
  let roles: NodeRole[];
  if (ownRoles === undefined) {
    roles = listed.roles;
  } else {
    if (cluster.explicitRoles.has(nodeId) && listed.roles.join('+') !== ownRoles.join('+')) {
      throw new ConfigError(
        'NODE_ROLES',
        `"${ownRoles.join(',')}" differs from this node's roles in CLUSTER_ADDRS ("${listed.roles.join('+')}")`,
      );
    }
    roles = ownRoles;
  }
  const self: ClusterMember = { ...listed, roles };
  cluster.members[selfIndex] = self;

  // Default bind port: the port this node is listed with, so NODE_ID=node2 alone works with the
  // default CLUSTER_ADDRS (for node1 that is SPEC's default, 8001).
  const port = parseNumber('NODE_PORT', get('NODE_PORT'), self.port, { integer: true, min: 0, max: 65535 });

  const electionTimeoutMinMs = parseSecondsAsMs(
    'RAFT_ELECTION_TIMEOUT_MIN',
    get('RAFT_ELECTION_TIMEOUT_MIN'),
    3,
  );
  const electionTimeoutMaxMs = parseSecondsAsMs(
    'RAFT_ELECTION_TIMEOUT_MAX',
    get('RAFT_ELECTION_TIMEOUT_MAX'),
    5,
  );
  const heartbeatIntervalMs = parseSecondsAsMs('RAFT_HEARTBEAT_INTERVAL', get('RAFT_HEARTBEAT_INTERVAL'), 1);
  if (electionTimeoutMinMs > electionTimeoutMaxMs) {
    throw new ConfigError(
      'RAFT_ELECTION_TIMEOUT_MIN',
      `${electionTimeoutMinMs / 1000} s is greater than RAFT_ELECTION_TIMEOUT_MAX (${electionTimeoutMaxMs / 1000} s)`,
    );
  }
  if (heartbeatIntervalMs >= electionTimeoutMinMs) {
    throw new ConfigError(
      'RAFT_HEARTBEAT_INTERVAL',
      `${heartbeatIntervalMs / 1000} s must be less than RAFT_ELECTION_TIMEOUT_MIN (${electionTimeoutMinMs / 1000} s)`,
    );
  }

  const writePolicyRaw = (get('CACHE_WRITE_POLICY') ?? 'write-back').trim().toLowerCase();
  if (writePolicyRaw !== 'write-back' && writePolicyRaw !== 'write-through') {
    throw new ConfigError('CACHE_WRITE_POLICY', `"${writePolicyRaw}" is not write-back or write-through`);
  }
  const writePolicy: CacheWritePolicy = writePolicyRaw;

  const logLevelRaw = (get('LOG_LEVEL') ?? 'info').trim().toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(logLevelRaw)) {
    throw new ConfigError('LOG_LEVEL', `"${logLevelRaw}" is not one of ${LOG_LEVELS.join(', ')}`);
  }

  const apiTokens = parseList(get('API_TOKENS'));
  if (apiTokens !== undefined && apiTokens.length === 0) {
    throw new ConfigError('API_TOKENS', 'is set but lists no token');
  }

  const { redis, explicit: redisExplicit } = loadRedis(get);

  return {
    nodeId,
    host,
    port,
    roles,
    cluster: cluster.members,
    self,
    redis,
    redisExplicit,
    raft: {
      electionTimeoutMinMs,
      electionTimeoutMaxMs,
      heartbeatIntervalMs,
      snapshotEvery: parseNumber('RAFT_SNAPSHOT_EVERY', get('RAFT_SNAPSHOT_EVERY'), 10_000, {
        integer: true,
        min: 1,
      }),
      snapshotRetain: parseNumber('RAFT_SNAPSHOT_RETAIN', get('RAFT_SNAPSHOT_RETAIN'), 10_000, {
        integer: true,
      }),
    },
    lock: { defaultTtlMs: parseSecondsAsMs('LOCK_DEFAULT_TTL', get('LOCK_DEFAULT_TTL'), 300) },
    queue: {
      ackTimeoutMs: parseSecondsAsMs('QUEUE_ACK_TIMEOUT', get('QUEUE_ACK_TIMEOUT'), 30),
      maxDeliveries: parseNumber('QUEUE_MAX_DELIVERIES', get('QUEUE_MAX_DELIVERIES'), 10, { integer: true }),
      vnodes: parseNumber('QUEUE_VNODES', get('QUEUE_VNODES'), 150, { integer: true, min: 1, max: 10000 }),
    },
    cache: {
      maxSize: parseNumber('CACHE_MAX_SIZE', get('CACHE_MAX_SIZE'), 1000, { integer: true, min: 1 }),
      writePolicy,
      leaseMs: parseNumber('CACHE_LEASE_MS', get('CACHE_LEASE_MS'), 2000, {
        integer: true,
        min: 20,
        max: MAX_CACHE_LEASE_MS,
      }),
    },
    limits: {
      requestTimeoutMs: parseNumber('HTTP_REQUEST_TIMEOUT_MS', get('HTTP_REQUEST_TIMEOUT_MS'), 30_000, {
        integer: true,
        min: 100,
        max: 3_600_000,
      }),
      ratePerConnection: parseNumber('RATE_LIMIT_PER_CONNECTION', get('RATE_LIMIT_PER_CONNECTION'), 5_000, {
        integer: true,
        min: 0,
        max: 1_000_000,
      }),
      cacheMaxValueBytes: parseNumber('CACHE_MAX_VALUE_BYTES', get('CACHE_MAX_VALUE_BYTES'), 256 * 1024, {
        integer: true,
        min: 1,
        max: 1024 * 1024,
      }),
      queueMaxMessageBytes: parseNumber(
        'QUEUE_MAX_MESSAGE_BYTES',
        get('QUEUE_MAX_MESSAGE_BYTES'),
        256 * 1024,
        {
          integer: true,
          min: 1,
          max: 1024 * 1024,
        },
      ),
      queueMaxLength: parseNumber('QUEUE_MAX_LENGTH', get('QUEUE_MAX_LENGTH'), 1_000_000, {
        integer: true,
        min: 0,
        max: 1_000_000_000,
      }),
      lockMaxWaiters: parseNumber('LOCK_MAX_WAITERS', get('LOCK_MAX_WAITERS'), 1_000, {
        integer: true,
        min: 1,
        max: 1_000_000,
      }),
      lockMaxHoldsPerClient: parseNumber(
        'LOCK_MAX_HOLDS_PER_CLIENT',
        get('LOCK_MAX_HOLDS_PER_CLIENT'),
        10_000,
        { integer: true, min: 1, max: 10_000_000 },
      ),
    },
    metrics: {
      maxQueues: parseNumber('METRICS_MAX_QUEUES', get('METRICS_MAX_QUEUES'), 50, {
        integer: true,
        min: 0,
        max: 10_000,
      }),
    },
    dataDir: get('DATA_DIR')?.trim() ?? `./data/${nodeId}`,
    clusterSecret: get('CLUSTER_SECRET')?.trim() ?? null,
    apiTokens: apiTokens ?? [],
    opsRoutesOpen:
      get('OPS_ROUTES_OPEN') === undefined ? true : parseFlag('OPS_ROUTES_OPEN', get('OPS_ROUTES_OPEN')),
    tls,
    logLevel: logLevelRaw as LogLevel,
    testHooks: parseFlag('DSS_TEST_HOOKS', get('DSS_TEST_HOOKS')),
  };
}

function parseFlag(name: string, raw: string | undefined): boolean {
  if (raw === undefined) return false;
  const v = raw.trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(v)) return true;
  if (['0', 'false', 'no', 'off'].includes(v)) return false;
  throw new ConfigError(name, `"${raw}" is not a boolean (1/0, true/false)`);
}

interface ParsedCluster {
  members: ClusterMember[];
  /** Ids whose entry carried `#roles`. */
  explicitRoles: Set<string>;
}

/**
 * `host:port` entries are node1..nodeN by position; `id=host:port` names the node; either may end in
 * `#lock+queue` (all roles when absent) and may start with `http://` or `https://`.
 */
export function parseClusterAddrs(raw: string, defaultScheme: 'http' | 'https'): ParsedCluster {
  const NAME = 'CLUSTER_ADDRS';
  const entries = parseList(raw) ?? [];
  if (entries.length === 0) throw new ConfigError(NAME, 'lists no node');
  const members: ClusterMember[] = [];
  const explicitRoles = new Set<string>();
  const seenIds = new Set<string>();
  const seenAddrs = new Set<string>();
  entries.forEach((entry, i) => {
    let rest = entry;
    let id = `node${i + 1}`;
    const eq = rest.indexOf('=');
    if (eq >= 0) {
      id = rest.slice(0, eq).trim();
      rest = rest.slice(eq + 1).trim();
      if (!NODE_ID.test(id)) throw new ConfigError(NAME, `"${id}" is not a valid node id in "${entry}"`);
    }
    let roles: NodeRole[] = [...ALL_ROLES];
    const hash = rest.indexOf('#');
    if (hash >= 0) {
      roles = parseRoles(NAME, rest.slice(hash + 1), /[+|]/);
      rest = rest.slice(0, hash);
      explicitRoles.add(id);
    }
    let scheme = defaultScheme;
    const schemeMatch = /^(https?):\/\//i.exec(rest);
    if (schemeMatch) {
      scheme = schemeMatch[1]!.toLowerCase() as 'http' | 'https';
      rest = rest.slice(schemeMatch[0].length).replace(/\/+$/, '');
    }
    const { host, port } = parseHostPort(NAME, rest);
    const addr = `${host.toLowerCase()}:${port}`;
    if (seenIds.has(id)) throw new ConfigError(NAME, `duplicate node id "${id}"`);
    if (seenAddrs.has(addr)) throw new ConfigError(NAME, `duplicate address "${addr}"`);
    seenIds.add(id);
    seenAddrs.add(addr);
    members.push({ id, host, port, url: `${scheme}://${host}:${port}`, roles });
  });
  return { members, explicitRoles };
}

function loadTls(get: (name: string) => string | undefined): Config['tls'] {
  const certFile = get('TLS_CERT')?.trim();
  const keyFile = get('TLS_KEY')?.trim();
  const caFile = get('TLS_CA')?.trim() ?? null;
  if (certFile !== undefined && keyFile === undefined)
    throw new ConfigError('TLS_CERT', 'is set but TLS_KEY is not');
  if (keyFile !== undefined && certFile === undefined)
    throw new ConfigError('TLS_KEY', 'is set but TLS_CERT is not');
  if (certFile === undefined || keyFile === undefined) {
    if (caFile !== null) throw new ConfigError('TLS_CA', 'is set but TLS_CERT/TLS_KEY are not');
    return null;
  }
  return { certFile, keyFile, caFile };
}

function loadRedis(get: (name: string) => string | undefined): { redis: RedisConfig; explicit: boolean } {
  const url = get('REDIS_URL')?.trim();
  const clusterNodes = parseList(get('REDIS_CLUSTER_NODES'));
  const sentinels = parseList(get('REDIS_SENTINELS'));
  if (clusterNodes !== undefined && sentinels !== undefined) {
    throw new ConfigError('REDIS_CLUSTER_NODES', 'cannot be combined with REDIS_SENTINELS');
  }
  if (url !== undefined && (clusterNodes !== undefined || sentinels !== undefined)) {
    throw new ConfigError(
      'REDIS_URL',
      `cannot be combined with ${clusterNodes ? 'REDIS_CLUSTER_NODES' : 'REDIS_SENTINELS'}`,
    );
  }
  if (clusterNodes !== undefined) {
    if (clusterNodes.length === 0) throw new ConfigError('REDIS_CLUSTER_NODES', 'lists no node');
    return {
      redis: { mode: 'cluster', nodes: clusterNodes.map((n) => parseHostPort('REDIS_CLUSTER_NODES', n)) },
      explicit: true,
    };
  }
  if (sentinels !== undefined) {
    if (sentinels.length === 0) throw new ConfigError('REDIS_SENTINELS', 'lists no sentinel');
    return {
      redis: {
        mode: 'sentinel',
        sentinels: sentinels.map((n) => parseHostPort('REDIS_SENTINELS', n)),
        name: get('REDIS_SENTINEL_NAME')?.trim() ?? 'mymaster',
      },
      explicit: true,
    };
  }
  if (url !== undefined) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new ConfigError('REDIS_URL', `"${url}" is not a URL`);
    }
    if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') {
      throw new ConfigError('REDIS_URL', `"${parsed.protocol}" is not redis: or rediss:`);
    }
    return { redis: { mode: 'standalone', url }, explicit: true };
  }
  const hostRaw = get('REDIS_HOST');
  const host = (hostRaw ?? 'localhost').trim();
  if (!isValidHost(host)) throw new ConfigError('REDIS_HOST', `"${host}" is not a valid host`);
  const port = parseNumber('REDIS_PORT', get('REDIS_PORT'), 6379, { integer: true, min: 1, max: 65535 });
  return { redis: { mode: 'standalone', url: `redis://${host}:${port}` }, explicit: hostRaw !== undefined };
}
