// Main memory of the cache (SPEC 6): Redis, the value of key K at `dss:mem:K` as its JSON text.
//
// Every write is fenced: it carries the token of the grant under which its writer held the line
// (the home's epoch and grant counter), and a Lua script (scripts/write.lua) applies it only if no
// newer token has written. A holder the home gave up on (unreachable, lease run out) may still have
// a write-back in flight; the fence keeps that late write from overwriting what the key's next owner
// wrote. The fence key is `dss:fence:{dss:mem:K}`: its hash tag is the value key's whole name, so
// both land in one Redis Cluster slot (keys cannot contain braces, SPEC 3).
import { existsSync, readFileSync } from 'node:fs';
import { withCommandDeadline } from '../queue/redis.js';
import { toDssError, type RedisClient } from '../queue/store.js';
import type { Data, Token } from './types.js';

export const memKey = (key: string): string => `dss:mem:${key}`;
export const fenceKey = (key: string): string => `dss:fence:{dss:mem:${key}}`;
const epochKey = (nodeId: string): string => `dss:cache:epoch:${nodeId}`;

type ScriptCommand = (keys: readonly string[], args: readonly (string | number)[]) => Promise<unknown>;

function loadScript(name: string): string {
  const candidates = [
    new URL(`./scripts/${name}.lua`, import.meta.url),
    new URL(`../../src/cache/scripts/${name}.lua`, import.meta.url),
  ];
  for (const file of candidates) if (existsSync(file)) return readFileSync(file, 'utf8');
  throw new Error(`cache Lua script ${name} not found in ${candidates.map((u) => u.pathname).join(' or ')}`);
}

let scripts: { write: string; read: string } | undefined;

/** What memory holds for a key whose text is not JSON (written by someone else): the raw string. */
function decode(text: string): Data {
  try {
    return { present: true, value: JSON.parse(text) as Data['value'] };
  } catch {
    return { present: true, value: text };
  }
}

/** What the cache needs of main memory; tests substitute an in-process one. */
export interface MainMemory {
  write(key: string, token: Token, data: Data): Promise<boolean>;
  /** Raises the key's fence to `token` (never lowers it) and reads the value, atomically. */
  readAndFence(key: string, token: Token): Promise<Data>;
  fence(key: string, token: Token): Promise<void>;
  nextEpoch(nodeId: string): Promise<number>;
}

export class CacheMemory implements MainMemory {
  private readonly writeCmd: ScriptCommand;
  private readonly readCmd: ScriptCommand;

  constructor(private readonly redis: RedisClient) {
    scripts ??= { write: loadScript('write'), read: loadScript('read') };
    const client = redis as unknown as Record<string, ScriptCommand | undefined>;
    if (client.dssCacheWrite === undefined) {
      redis.defineCommand('dssCacheWrite', { numberOfKeys: 2, lua: scripts.write });
      redis.defineCommand('dssCacheRead', { numberOfKeys: 2, lua: scripts.read });
    }
    const cmds = redis as unknown as Record<'dssCacheWrite' | 'dssCacheRead', ScriptCommand>;
    this.writeCmd = (keys, args) => cmds.dssCacheWrite(keys, args);
    this.readCmd = (keys, args) => cmds.dssCacheRead(keys, args);
  }

  async readAndFence(key: string, token: Token): Promise<Data> {
    let text: unknown;
    try {
      text = await withCommandDeadline(this.readCmd([memKey(key), fenceKey(key)], [token[0], token[1]]));
    } catch (e) {
      throw toDssError(e);
    }
    return typeof text === 'string' ? decode(text) : { present: false };
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
      return await withCommandDeadline(this.redis.incr(epochKey(nodeId)));
    } catch (e) {
      throw toDssError(e);
    }
  }

  private async run(key: string, args: (string | number)[]): Promise<boolean> {
    let reply: unknown;
    try {
      reply = await withCommandDeadline(this.writeCmd([memKey(key), fenceKey(key)], args));
    } catch (e) {
      throw toDssError(e);
    }
    return reply === 1;
  }
}
