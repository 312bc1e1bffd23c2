export {
  buildServer,
  INTERNAL_BODY_LIMIT,
  PUBLIC_BODY_LIMIT,
  type BuildServerOptions,
  type ServicePlugin,
} from './server.js';
export type {
  ApiContext,
  CheckResult,
  DssApp,
  PeerReachability,
  RaftApi,
  ReadinessCheck,
  StatusSections,
} from './context.js';
export { errorBody, fail, mapError } from './errors.js';
export { assertRole, nodesServing, requireRole, roleNotServed } from './roles.js';
export { isInternalPath } from './auth.js';
export { raftLeaderCheck } from './routes/ops.js';
export { Identifier, JsonValue, Count, ErrorResponse } from './schemas/common.js';
