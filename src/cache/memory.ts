// Main memory of the cache (SPEC 6): Redis, the value of key K at `dss:mem:K` as its JSON text.
//
// Every write is fenced: it carries the token of the grant under which its writer held the line
// (the home's epoch and grant counter), and a Lua script (scripts/write.lua) applies it only if no
// newer token has written. A holder the home gave up on (unreachable, lease run out) may still have
// a write-back in flight; the fence keeps that late write from overwriting what the key's next owner
// wrote. The fence key is `dss:fence:{dss:mem:K}`: its hash tag is the value key's whole name, so
// both land in one Redis Cluster slot (keys cannot contain braces, SPEC 3).
import { existsSync, readFileSync } from 'node:fs';
import { toDssError, type RedisClient } from '../queue/store.js';
import type { Data, Token } from './types.js';

export const memKey = (key: string): string => `dss:mem:${key}`;
export const fenceKey = (key: string): string => `dss:fence:{dss:mem:${key}}`;
const epochKey = (nodeId: string): string => `dss:cache:epoch:${nodeId}`;

type WriteCommand = (keys: readonly string[], args: readonly (string | number)[]) => Promise<unknown>;

function loadWriteScript(): string {
  const candidates = [
    new URL('./scripts/write.lua', import.meta.url),
    new URL('../../src/cache/scripts/write.lua', import.meta.url),
  ];
  for (const file of candidates) if (existsSync(file)) return readFileSync(file, 'utf8');
  throw new Error(`cache Lua script not found in ${candidates.map((u) => u.pathname).join(' or ')}`);
}

let script: string | undefined;

/** What memory holds for a key whose text is not JSON (written by someone else): the raw string. */
function decode(text: string): Data {
  try {
    return { present: true, value: JSON.parse(text) as Data['value'] };
  } catch {
    return { present: true, value: text };
  }
}

export class CacheMemory {
  private readonly writeCmd: WriteCommand;

  constructor(private readonly redis: RedisClient) {
    script ??= loadWriteScript();
    const name = 'dssCacheWrite';
    const client = redis as unknown as Record<string, WriteCommand | undefined>;
    if (client[name] === undefined) redis.defineCommand(name, { numberOfKeys: 2, lua: script });
    this.writeCmd = (keys, args) => (redis as unknown as Record<string, WriteCommand>)[name]!(keys, args);
  }

  /** The key's value in memory. Throws DssError `unavailable` when Redis is. */
  async read(key: string): Promise<Data> {
    let text: string | null;
    try {
      text = await this.redis.get(memKey(key));
    } catch (e) {
      throw toDssError(e);
    }
    return text === null ? { present: false } : decode(text);
  }

  /** Writes (or deletes) the value under `token`; false when a newer token has already written. */
  async write(key: string, token: Token, data: Data): Promise<boolean> {
    const args: (string | number)[] = data.present
      ? [token[0], token[1], 'set', JSON.stringify(data.value ?? null)]
      : [token[0], token[1], 'del'];
    return this.run(key, args);
  }

  /** Raises the key's fence to `token` without touching the value. */
  async fence(key: string, token: Token): Promise<void> {
    await this.run(key, [token[0], token[1], 'fence']);
  }

  /** A new epoch for `nodeId` as a home: strictly greater than any it had before (INCR). */
  async nextEpoch(nodeId: string): Promise<number> {
    try {
      return await this.redis.incr(epochKey(nodeId));
    } catch (e) {
      throw toDssError(e);
    }
  }

  private async run(key: string, args: (string | number)[]): Promise<boolean> {
    let reply: unknown;
    try {
      reply = await this.writeCmd([memKey(key), fenceKey(key)], args);
    } catch (e) {
      throw toDssError(e);
    }
    return reply === 1;
  }
}
