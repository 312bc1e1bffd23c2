export {
  DssClient,
  type ClusterNodeStatus,
  type ClusterStatus,
  type DssClientOptions,
  type DssResponse,
  type HttpMethod,
  type RequestOptions,
} from './client.js';
export { DssConnectionError, DssHttpError } from './errors.js';
export {
  CacheClient,
  cachePath,
  isCacheKey,
  type CacheDeleteResult,
  type CacheEntry,
  type CacheFlushResult,
  type CacheLineState,
  type CacheLines,
  type CachePutResult,
} from './cache.js';
export type { HealthReply, NodeStatus, PeerStatusWire, RaftSectionWire } from '../api/schemas/ops.js';
export {
  LockClient,
  type AcquireOptions,
  type LockGrant,
  type LockHolder,
  type LockMode,
  type LockStatus,
} from './lock.js';
export {
  QueueClient,
  type AckResult,
  type ConsumeErrorContext,
  type ConsumeOptions,
  type ConsumeStage,
  type Consumer,
  type MessageHandler,
  type NackResult,
  type PopOptions,
  type QueueDelivery,
  type QueueStats,
} from './queue.js';
