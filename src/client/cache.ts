// Cache methods of the SDK (SPEC 6). Any cache node serves any key: the node asked keeps the line in
// its L1 and the cluster keeps the copies coherent, so calls simply stick to a working node.
//
// Retries follow the client: a 503 is retried for every call (the node did nothing), and so is a
// connection failure before sending. A timeout is retried for get, put and delete, which are
// idempotent: a put writes the whole value, so applying it twice leaves the same value. The usual
// caveat of retried writes holds: a put that timed out may still land after a later put by someone
// else. flush (a POST) is not retried after a timeout.
import type {
  CacheDeleteReply,
  CacheFlushReply,
  CacheGetReply,
  CacheLinesReply,
  CachePutReply,
} from '../api/schemas/cache.js';
import type { Json } from '../raft/types.js';
import type { DssClient, RequestOptions } from './client.js';
import { DssHttpError } from './errors.js';

export type CacheEntry = CacheGetReply;
export type CachePutResult = CachePutReply;
export type CacheDeleteResult = CacheDeleteReply;
export type CacheLines = CacheLinesReply;
export type CacheFlushResult = CacheFlushReply;
export type CacheLineState = CacheGetReply['state'];

/** SPEC 3: a cache key is 1-256 characters of [A-Za-z0-9._:/-]. */
const KEY = /^[A-Za-z0-9._:/-]{1,256}$/;

export function isCacheKey(key: string): boolean {
  return KEY.test(key);
}

/**
 * The path of a key: each `/`-separated segment percent-encoded, the slashes kept (the route is
 * `/cache/*`, so `a/b` is the key `a/b`). Throws RangeError for a key that is not an identifier,
 * so that no request is sent for it (an empty key would name GET /cache, the line list).
 */
export function cachePath(key: string): string {
  if (!isCacheKey(key))
    throw new RangeError(`invalid cache key ${JSON.stringify(key)}: 1-256 characters of [A-Za-z0-9._:/-]`);
  return '/cache/' + key.split('/').map(encodeURIComponent).join('/');
}

export class CacheClient {
  constructor(private readonly client: DssClient) {}

  /** The key's value with the line's MESI state and where the data came from; null when absent (404). */
  async get<T extends Json = Json>(
    key: string,
    req: RequestOptions = {},
  ): Promise<(CacheEntry & { value: T }) | null> {
    const path = cachePath(key);
    try {
      return await this.client.request<CacheEntry & { value: T }>('GET', path, undefined, req);
    } catch (e) {
      if (e instanceof DssHttpError && e.status === 404 && e.code === 'not_found') return null;
      throw e;
    }
  }

  /** Writes the whole value (any JSON); the answering node then holds the line in M. */
  async put(key: string, value: Json, req: RequestOptions = {}): Promise<CachePutResult> {
    const path = cachePath(key);
    return this.client.request<CachePutResult>('PUT', path, { value }, req);
  }

  /** Deletes the key: afterwards a get on any node resolves null. */
  async delete(key: string, req: RequestOptions = {}): Promise<CacheDeleteResult> {
    const path = cachePath(key);
    return this.client.request<CacheDeleteResult>('DELETE', path, undefined, req);
  }

  /** The answering node's L1: capacity, size and every line with its state. Pin a node with `req.url`. */
  lines(req: RequestOptions = {}): Promise<CacheLines> {
    return this.client.request<CacheLines>('GET', '/cache', undefined, req);
  }

  /** Writes the answering node's M lines back to Redis; pin a node with `req.url`. */
  flush(req: RequestOptions = {}): Promise<CacheFlushResult> {
    return this.client.request<CacheFlushResult>('POST', '/cache/flush', undefined, req);
  }
}
