// Logger factory. Synchronous writes: a SIGKILLed or crashing node loses no line it already logged,
// which matters more here than the throughput of asynchronous logging.
import { pino, type DestinationStream, type Logger } from 'pino';
import type { LogLevel } from './config/index.js';

export type { Logger } from 'pino';

export interface LoggerOptions {
  level: LogLevel;
  nodeId: string;
  /** Defaults to synchronous stdout; tests pass their own stream. */
  destination?: DestinationStream;
}

export function createLogger(opts: LoggerOptions): Logger {
  const destination = opts.destination ?? pino.destination({ dest: 1, sync: true });
  return pino(
    {
      level: opts.level,
      base: { node_id: opts.nodeId },
      timestamp: pino.stdTimeFunctions.isoTime,
      // Never log bearer secrets that fastify's request serializer might otherwise pick up.
      redact: { paths: ['req.headers.authorization', 'headers.authorization'], censor: '[redacted]' },
    },
    destination,
  );
}
