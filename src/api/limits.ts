// Request limits that protect a node from one client (issue 7): JSON nesting depth and a request
// rate per connection. Body size is fastify's bodyLimit; identifier length and charset are in the
// schemas; per-service limits (waiters, holds, queue length, value sizes) live in their services.
import type { Socket } from 'node:net';
import { DssError } from '../errors.js';

/**
 * Deepest JSON nesting a public body may have. Real lock, queue and cache payloads are shallow; a
 * deeply nested value would make every later recursive walk (validation, JSON.stringify on the way
 * to Redis, the dashboard) cost stack, and at some depth throw RangeError.
 */
export const MAX_JSON_DEPTH = 64;

/**
 * True when `text` (JSON) nests arrays/objects deeper than `max`. A linear scan that skips string
 * contents, so it costs one pass over the body and never recurses.
 */
export function jsonDepthExceeds(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c /* \ */) i++;
      else if (c === 0x22 /* " */) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x5b /* [ */ || c === 0x7b /* { */) {
      if (++depth > max) return true;
    } else if (c === 0x5d /* ] */ || c === 0x7d /* } */) {
      depth--;
    }
  }
  return false;
}

interface Bucket {
  tokens: number;
  at: number;
}

/**
 * A token bucket per connection: `rate` requests a second, bursts up to one second's worth. Kept
 * on the socket (a WeakMap), so it dies with the connection and costs nothing to clean up. A client
 * that needs more opens more connections, each of which the server can see and bound.
 */
export class ConnectionRateLimiter {
  private readonly buckets = new WeakMap<Socket, Bucket>();

  constructor(
    private readonly rate: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Takes one token for a request on `socket`, or throws 429 rate_limited with Retry-After. */
  take(socket: Socket): void {
    const now = this.now();
    let b = this.buckets.get(socket);
    if (b === undefined) {
      b = { tokens: this.rate, at: now };
      this.buckets.set(socket, b);
    } else {
      b.tokens = Math.min(this.rate, b.tokens + ((now - b.at) * this.rate) / 1000);
      b.at = now;
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return;
    }
    const waitS = (1 - b.tokens) / this.rate;
    throw new DssError(
      'rate_limited',
      `more than ${this.rate} requests per second on this connection (RATE_LIMIT_PER_CONNECTION)`,
      { retryAfter: Math.max(1, Math.ceil(waitS)) },
    );
  }
}
