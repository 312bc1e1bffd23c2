// Composition root of one node: logger, metrics, Raft (lock-role nodes only) with file storage and
// the HTTP transport, peer probes, and the HTTP server.
import { mkdir, readFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import type { DssApp, ReadinessCheck, StatusSections } from '../api/context.js';
import { raftLeaderCheck } from '../api/routes/ops.js';
import { benchHookRoutes } from '../api/routes/bench-hooks.js';
import { debugRoutes } from '../api/routes/debug.js';
import { LeaderForwarder } from '../api/forward.js';
import { buildServer, type ServicePlugin } from '../api/server.js';
import { ConfigError, type Config } from '../config/index.js';
import { createLogger, type Logger } from '../log.js';
import { createMetrics, type Metrics, type RaftMetrics } from '../metrics/index.js';
import { NoopStateMachine } from '../raft/noop-state-machine.js';
import { lockRoutes } from '../api/routes/lock.js';
import { LockService } from '../lock/service.js';
import { LockTable } from '../lock/table.js';
import { debugCommand, NodeStateMachine } from './state-machine.js';
import { RaftNode } from '../raft/node.js';
import { FileStorage } from '../raft/storage/file-storage.js';
import type { Json, StateMachine } from '../raft/types.js';
import { HttpTransport } from '../transport/http.js';
import { PeerProber } from './peer-probe.js';
import { queueRoutes } from '../api/routes/queue.js';
import { createRedisClient, pingRedis } from '../queue/redis.js';
import { HashRing } from '../queue/ring.js';
import { QueueRouter } from '../queue/router.js';
import { QueueService } from '../queue/service.js';
import { QueueStore, type RedisClient } from '../queue/store.js';
import { cacheRoutes } from '../api/routes/cache.js';
import { roleNotServedRoutes } from '../api/roles.js';
import { HttpCacheLink } from '../cache/link.js';
import { CacheMemory } from '../cache/memory.js';
import { CacheService } from '../cache/service.js';
import { dashboardRoutes } from '../dashboard/routes.js';
import type { DashboardSources } from '../dashboard/snapshot.js';

export interface RunningNode {
  readonly config: Config;
  /** Where this node actually listens (resolves NODE_PORT=0). */
  readonly url: string;
  readonly app: DssApp;
  /** Null on nodes without the lock role. */
  readonly raft: RaftNode | null;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** Graceful stop: hand over leadership, close the server, stop Raft, close the transport. Idempotent. */
  stop(): Promise<void>;
}

export interface StartNodeOptions {
  logger?: Logger;
  /** Replicated state machine (the lock manager); a counting no-op until it exists. */
  stateMachine?: StateMachine;
  /** Route plugins of services (locks, queues, cache). */
  plugins?: ServicePlugin[];
  readinessChecks?: ReadinessCheck[];
  statusSections?: StatusSections;
  /** Raft storage failed: the node can no longer take part safely. Default: log only. */
  onFatal?: (err: Error) => void;
}

interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  ca: Buffer | undefined;
}

async function readTls(config: Config): Promise<TlsMaterial | null> {
  if (!config.tls) return null;
  const read = async (variable: string, file: string): Promise<Buffer> => {
    try {
      return await readFile(file);
    } catch (e) {
      throw new ConfigError(
        variable,
        `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`,
      );
    }
  };
  return {
    cert: await read('TLS_CERT', config.tls.certFile),
    key: await read('TLS_KEY', config.tls.keyFile),
    ca: config.tls.caFile === null ? undefined : await read('TLS_CA', config.tls.caFile),
  };
}

/** Counts snapshots installed from a leader: every restore after start is one. */
function countInstalls(sm: StateMachine, installed: () => void): StateMachine & { started: boolean } {
  const wrapped = {
    started: false,
    apply: (command: Json, index: number, term: number) => sm.apply(command, index, term),
    snapshot: () => sm.snapshot(),
    size: () => sm.size(),
    restore: (data: Json) => {
      sm.restore(data);
      if (wrapped.started) installed();
    },
  };
  return wrapped;
}

export async function startNode(config: Config, opts: StartNodeOptions = {}): Promise<RunningNode> {
  const logger = opts.logger ?? createLogger({ level: config.logLevel, nodeId: config.nodeId });
  const tls = await readTls(config);
  const metrics = createMetrics({ nodeId: config.nodeId });
  const others = config.cluster.filter((m) => m.id !== config.nodeId);
  if (config.apiTokens.length > 0 && config.clusterSecret === null) {
    logger.warn('API_TOKENS is set but CLUSTER_SECRET is not: internal endpoints are unauthenticated');
  }

  const cleanups: (() => Promise<void>)[] = [];
  /** Run at stop before the server closes: answer requests parked in services. */
  const drains: (() => void)[] = [];
  const cleanup = async (): Promise<void> => {
    for (const c of cleanups.splice(0).reverse()) {
      try {
        await c();
      } catch (err) {
        logger.error({ err }, 'error during shutdown');
      }
    }
  };

  try {
    let raft: RaftNode | null = null;
    const plugins: ServicePlugin[] = [];
    const readinessChecks: ReadinessCheck[] = [];
    // What the dashboard reads, filled in by each role below.
    const dashboard: DashboardSources = {};

    if (config.roles.includes('lock')) {
      // Only lock-role nodes are Raft voters; the other roles need no consensus.
      const voters = config.cluster.filter((m) => m.roles.includes('lock'));
      const dataDir = resolve(config.dataDir);
      await mkdir(dataDir, { recursive: true });
      const transport = new HttpTransport({
        peers: voters.filter((m) => m.id !== config.nodeId).map((m) => ({ id: m.id, url: m.url })),
        clusterSecret: config.clusterSecret,
        ...(tls?.ca ? { ca: tls.ca } : {}),
      });
      cleanups.push(() => transport.close());

      const storage = new FileStorage(join(dataDir, 'raft'));
      const noop = new NoopStateMachine();
      const table = new LockTable();
      const lockService = opts.stateMachine
        ? null
        : new LockService({
            table,
            defaultTtlMs: config.lock.defaultTtlMs,
            electionTimeoutMaxMs: config.raft.electionTimeoutMaxMs,
            // At most a heartbeat, so a crashed client's lock is gone within TTL + one heartbeat.
            monitorIntervalMs: Math.min(config.raft.heartbeatIntervalMs, 100),
            metrics: metrics.bindLock({ held: () => table.heldCount(), waiters: () => table.waiterCount() }),
            logger: logger.child({ component: 'lock' }),
            maxWaiters: config.limits.lockMaxWaiters,
            maxHoldsPerClient: config.limits.lockMaxHoldsPerClient,
          });
      let raftMetrics: RaftMetrics | null = null;
      const stateMachine = countInstalls(
        opts.stateMachine ?? new NodeStateMachine(lockService!.stateMachine, noop),
        () => raftMetrics?.snapshotsInstalled.inc(),
      );
      const node = new RaftNode(
        {
          id: config.nodeId,
          voters: voters.map((m) => m.id),
          electionTimeoutMinMs: config.raft.electionTimeoutMinMs,
          electionTimeoutMaxMs: config.raft.electionTimeoutMaxMs,
          heartbeatIntervalMs: config.raft.heartbeatIntervalMs,
          snapshotEvery: config.raft.snapshotEvery,
          snapshotRetain: config.raft.snapshotRetain,
          storage,
          transport,
          stateMachine,
          logger: logger.child({ component: 'raft' }),
        },
        {
          onElection: () => raftMetrics?.elections.inc(),
          onSnapshot: (s) => raftMetrics?.snapshotSeconds.observe(s.seconds),
          onFatal: (err) => {
            logger.fatal({ err }, 'raft failed; this node no longer takes part in the lock group');
            opts.onFatal?.(err);
          },
        },
      );
      raftMetrics = metrics.bindRaft(
        () => node.status(),
        () => storage.fsyncCount,
      );
      try {
        await node.start();
      } catch (e) {
        // A node that failed to start does not close its storage on stop(); release it here.
        await storage.close().catch(() => undefined);
        throw e;
      }
      stateMachine.started = true;
      cleanups.push(() => node.stop());
      if (lockService) {
        lockService.attach(node);
        lockService.start();
        dashboard.locks = table;
        // Runs before node.stop() (cleanups unwind in reverse): blocked acquires get an answer.
        cleanups.push(() => Promise.resolve(lockService.stop()));
        drains.push(() => lockService.stop());
      }
      raft = node;
      readinessChecks.push(raftLeaderCheck(node));
      const forwarder = new LeaderForwarder({
        nodeId: config.nodeId,
        cluster: config.cluster,
        raft: node,
        clusterSecret: config.clusterSecret,
        ...(tls?.ca ? { ca: tls.ca } : {}),
      });
      cleanups.push(() => forwarder.close());
      if (lockService) {
        plugins.push(
          lockRoutes({
            service: lockService,
            forwarder,
            defaultTtlMs: config.lock.defaultTtlMs,
            relayMarginMs: config.raft.electionTimeoutMaxMs + 1000,
          }),
        );
      }
      if (config.testHooks && !opts.stateMachine) {
        plugins.push(
          debugRoutes({
            propose: (command) => node.propose(debugCommand(command)),
            state: () => noop.view(),
            readIndex: () => node.readIndex(),
            forwarder,
          }),
        );
      }
    }

    const prober = new PeerProber({
      peers: others.map((m) => ({ id: m.id, url: m.url })),
      ...(tls?.ca ? { ca: tls.ca } : {}),
    });
    prober.start();
    cleanups.push(() => prober.stop());

    const statusSections: StatusSections = { ...opts.statusSections };
    // One Redis connection for the queue and the cache (main memory).
    let redis: RedisClient | null = null;
    if (config.roles.includes('queue') || config.roles.includes('cache')) {
      const client = createRedisClient(config.redis);
      // Errors are reported per request (503); without a listener ioredis would print each one.
      client.on('error', (err: Error) => logger.debug({ err: err.message }, 'redis connection error'));
      cleanups.push(async () => {
        client.disconnect();
        await Promise.resolve();
      });
      redis = client;
      readinessChecks.push({
        name: 'redis',
        check: async () => {
          try {
            await pingRedis(client);
            return { ok: true };
          } catch (e) {
            return { ok: false, reason: `redis: ${e instanceof Error ? e.message : String(e)}` };
          }
        },
      });
    }
    if (config.roles.includes('queue') && redis !== null) {
      const queueNodes = config.cluster.filter((m) => m.roles.includes('queue'));
      const ring = new HashRing(
        queueNodes.map((m) => m.id),
        config.queue.vnodes,
      );
      const isUp = (id: string): boolean => id === config.nodeId || prober.isReachable(id);
      let service: QueueService | null = null;
      const queueMetrics = metrics.bindQueue(() => service?.depths() ?? Promise.resolve([]), {
        maxQueues: config.metrics.maxQueues,
      });
      service = new QueueService({
        nodeId: config.nodeId,
        store: new QueueStore(redis),
        redis,
        ring,
        isUp,
        ackTimeoutMs: config.queue.ackTimeoutMs,
        maxDeliveries: config.queue.maxDeliveries,
        maxLength: config.limits.queueMaxLength,
        maxMessageBytes: config.limits.queueMaxMessageBytes,
        monitorIntervalMs: 500,
        recheckIntervalMs: 1000,
        metrics: queueMetrics,
        logger: logger.child({ component: 'queue' }),
      });
      service.start();
      const queueService = service;
      cleanups.push(() => Promise.resolve(queueService.stop()));
      drains.push(() => queueService.stop());
      const router = new QueueRouter({
        nodeId: config.nodeId,
        ring,
        urls: new Map(queueNodes.map((m) => [m.id, m.url])),
        isUp,
        clusterSecret: config.clusterSecret,
        ...(tls?.ca ? { ca: tls.ca } : {}),
      });
      cleanups.push(() => router.close());
      plugins.push(queueRoutes({ service: queueService, router, relayMarginMs: 5_000 }));
      dashboard.queues = queueService;
      statusSections.queue = () => ({
        vnodes: ring.vnodes,
        nodes: ring.nodes(),
        parked_pops: queueService.parkedCount(),
      });
    }

    let cache: CacheService | null = null;
    let stopCache = (): Promise<void> => Promise.resolve();
    if (config.roles.includes('cache') && redis !== null) {
      const cacheNodes = config.cluster.filter((m) => m.roles.includes('cache'));
      const link = new HttpCacheLink({
        urls: new Map(cacheNodes.map((m) => [m.id, m.url])),
        clusterSecret: config.clusterSecret,
        ...(tls?.ca ? { ca: tls.ca } : {}),
      });
      cleanups.push(() => link.close());
      let service: CacheService | null = null;
      const cacheMetrics = metrics.bindCache(
        () => service?.l1.linesByState() ?? { M: 0, E: 0, S: 0 },
        config.cache.maxSize,
      );
      service = new CacheService({
        nodeId: config.nodeId,
        ring: new HashRing(
          cacheNodes.map((m) => m.id),
          config.queue.vnodes,
        ),
        link,
        memory: new CacheMemory(redis),
        capacity: config.cache.maxSize,
        writePolicy: config.cache.writePolicy,
        leaseMs: config.cache.leaseMs,
        metrics: cacheMetrics,
        logger: logger.child({ component: 'cache' }),
      });
      service.start();
      const cacheService = service;
      cache = cacheService;
      // Before the link and Redis close: every M line goes to memory first (SPEC 6). stop() also
      // runs this first of all, while the server still answers peers' snoops; this entry covers a
      // start that fails later on.
      let cacheStopped: Promise<void> | null = null;
      stopCache = () =>
        (cacheStopped ??= cacheService.stop().then((n) => {
          logger.info({ written_back: n }, 'cache stopped');
        }));
      cleanups.push(() => stopCache());
      readinessChecks.push({
        name: 'cache',
        check: () =>
          Promise.resolve(
            cacheService.ready()
              ? { ok: true }
              : { ok: false, reason: 'cache home starting (epoch from Redis, then one lease of grace)' },
          ),
      });
      statusSections.cache = () => cacheService.status();
    }
    plugins.push(cacheRoutes({ service: cache, maxValueBytes: config.limits.cacheMaxValueBytes }));
    // Every node serves the dashboard, whatever its roles.
    plugins.push(
      dashboardRoutes({
        sources: { ...dashboard, cache },
        clusterSecret: config.clusterSecret,
        ...(tls?.ca ? { ca: tls.ca } : {}),
      }),
    );
    // The cache routes answer 421 themselves; locks and queues register nothing without their role.
    if (!config.roles.includes('lock')) plugins.push(roleNotServedRoutes('lock', '/lock'));
    if (!config.roles.includes('queue')) plugins.push(roleNotServedRoutes('queue', '/queue'));
    // The cache benchmark's comparison routes (a constant, one Redis GET), on any node with Redis.
    if (config.testHooks && redis !== null) plugins.push(benchHookRoutes({ redis }));

    const app = await buildServer({
      nodeId: config.nodeId,
      roles: config.roles,
      cluster: config.cluster,
      raft,
      metrics,
      logger,
      clusterSecret: config.clusterSecret,
      apiTokens: config.apiTokens,
      opsRoutesOpen: config.opsRoutesOpen,
      readinessChecks: [...readinessChecks, ...(opts.readinessChecks ?? [])],
      peers: prober,
      statusSections,
      plugins: [...plugins, ...(opts.plugins ?? [])],
      tls: tls ? { cert: tls.cert, key: tls.key } : null,
      requestTimeoutMs: config.limits.requestTimeoutMs,
      ratePerConnection: config.limits.ratePerConnection,
    });
    cleanups.push(async () => {
      // In-flight requests get a few seconds; keep-alive connections that peers keep busy (lease
      // renewals, relays) would otherwise hold close() open indefinitely.
      const force = setTimeout(() => app.server.closeAllConnections(), 3_000);
      try {
        await app.close();
      } finally {
        clearTimeout(force);
      }
    });
    await app.listen({ host: config.host, port: config.port });
    const address = app.server.address() as AddressInfo;
    const wildcard = config.host === '0.0.0.0' || config.host === '::';
    const url = `${tls ? 'https' : 'http'}://${wildcard ? '127.0.0.1' : config.host}:${address.port}`;
    logger.info({ url, roles: config.roles, advertised: config.self.url }, 'node listening');

    let stopping: Promise<void> | null = null;
    const stop = (): Promise<void> => {
      stopping ??= (async () => {
        logger.info('node stopping');
        // Hand leadership over while peers can still reach us, so the group re-forms at once
        // instead of after an election timeout.
        try {
          if (raft?.status().role === 'leader') {
            const moved = await raft.transferLeadership();
            logger.info({ moved }, 'leadership transfer before shutdown');
          }
        } catch (err) {
          logger.warn({ err }, 'leadership transfer before shutdown failed');
        }
        // M lines to memory first, while peers can still reach us (idempotent; later no-op).
        await stopCache().catch((err: unknown) => logger.error({ err }, 'cache stop failed'));
        // Requests parked here (lock waiters, long-poll pops) get their answer now, while their
        // connections are open: a waiter 503 shutting_down (its retry elsewhere finds its queued
        // acquire, acquires are idempotent), a pop an empty reply. Else the server's forced close
        // would cut them off without an answer.
        for (const drain of drains.splice(0)) {
          try {
            drain();
          } catch (err) {
            logger.warn({ err }, 'drain before shutdown failed');
          }
        }
        // Cleanups run in reverse order of creation: server, probes, Raft, transport.
        await cleanup();
        logger.info('node stopped');
      })();
      return stopping;
    };
    return { config, url, app, raft, logger, metrics, stop };
  } catch (e) {
    await cleanup();
    throw e;
  }
}
