export { loadConfig, parseClusterAddrs, DEFAULT_CLUSTER_ADDRS } from './load.js';
export {
  ALL_ROLES,
  ConfigError,
  LOG_LEVELS,
  type CacheWritePolicy,
  type ClusterMember,
  type Config,
  type HostPort,
  type LogLevel,
  type NodeRole,
  type RedisConfig,
} from './types.js';
