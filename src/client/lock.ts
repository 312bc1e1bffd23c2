// Lock methods of the SDK (SPEC 4.3). Retries of 503 (no leader yet) are safe: acquire is idempotent
// for a client that already holds the lock, release and renew act only for the holder.
import type { AcquireReply, HoldWire, LockModeWire, LockStatusReply } from '../api/schemas/lock.js';
import type { DssClient, RequestOptions } from './client.js';
import { DssHttpError } from './errors.js';

export type LockMode = LockModeWire;
export type LockGrant = AcquireReply;
export type LockHolder = HoldWire;
export type LockStatus = LockStatusReply;

export interface AcquireOptions {
  mode?: LockMode;
  ttlMs?: number;
  /** Block up to this long for the grant (0: fail at once on conflict with 409 lock_conflict). */
  waitMs?: number;
}

export class LockClient {
  constructor(private readonly client: DssClient) {}

  /** Resolves with the grant; throws DssHttpError 409 (lock_conflict, wait_timeout, deadlock) otherwise. */
  acquire(
    resource: string,
    clientId: string,
    opts: AcquireOptions = {},
    req: RequestOptions = {},
  ): Promise<LockGrant> {
    const waitMs = opts.waitMs ?? 0;
    return this.client.request<LockGrant>(
      'POST',
      '/lock/acquire',
      {
        resource,
        client_id: clientId,
        ...(opts.mode !== undefined ? { mode: opts.mode } : {}),
        ...(opts.ttlMs !== undefined ? { ttl_ms: opts.ttlMs } : {}),
        wait_ms: waitMs,
      },
      // A blocking acquire legitimately takes up to waitMs.
      { ...req, timeoutMs: (req.timeoutMs ?? 10_000) + waitMs },
    );
  }

  /**
   * When an attempt failed with an unknown outcome (leader crash mid-commit) and the retry finds the
   * client no longer holding the lock, that earlier attempt is what released it: the call succeeds,
   * since its postcondition (this client does not hold the resource) holds either way.
   */
  async release(resource: string, clientId: string, req: RequestOptions = {}): Promise<{ released: true }> {
    try {
      return await this.client.request('POST', '/lock/release', { resource, client_id: clientId }, req);
    } catch (e) {
      if (e instanceof DssHttpError && e.code === 'not_holder' && e.afterUnknownOutcome)
        return { released: true };
      throw e;
    }
  }

  renew(
    resource: string,
    clientId: string,
    ttlMs?: number,
    req: RequestOptions = {},
  ): Promise<{ expires_at: number }> {
    return this.client.request(
      'POST',
      '/lock/renew',
      { resource, client_id: clientId, ...(ttlMs !== undefined ? { ttl_ms: ttlMs } : {}) },
      req,
    );
  }

  status(resource?: string, req: RequestOptions = {}): Promise<LockStatus> {
    return this.client.request<LockStatus>('GET', '/lock/status', undefined, {
      ...req,
      ...(resource !== undefined ? { query: { resource } } : {}),
    });
  }
}
