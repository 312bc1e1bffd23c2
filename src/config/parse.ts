// Small strict parsers for environment values. Each throws ConfigError naming the variable.
import { ALL_ROLES, ConfigError, type HostPort, type NodeRole } from './types.js';

// Plain decimal only: "1e3", "0x10", "Infinity" and "" are typos more often than intent.
const DECIMAL = /^[+-]?(\d+(\.\d*)?|\.\d+)$/;

export interface NumberRule {
  integer?: boolean;
  min?: number;
  max?: number;
  /** Strictly greater than zero. */
  positive?: boolean;
}

/** Parses a decimal number; `raw` undefined means "use the default". */
export function parseNumber(
  name: string,
  raw: string | undefined,
  fallback: number,
  rule: NumberRule,
): number {
  if (raw === undefined) return fallback;
  const text = raw.trim();
  if (!DECIMAL.test(text)) throw new ConfigError(name, `${JSON.stringify(raw)} is not a number`);
  const value = Number(text);
  if (value < 0) throw new ConfigError(name, `${text} must not be negative`);
  if (rule.integer && !Number.isInteger(value)) throw new ConfigError(name, `${text} must be an integer`);
  if (rule.positive && value <= 0) throw new ConfigError(name, `${text} must be greater than 0`);
  if (rule.min !== undefined && value < rule.min)
    throw new ConfigError(name, `${text} must be at least ${rule.min}`);
  if (rule.max !== undefined && value > rule.max)
    throw new ConfigError(name, `${text} must be at most ${rule.max}`);
  return value;
}

/** Seconds (fractions allowed) to whole milliseconds, at least 1 ms. */
export function parseSecondsAsMs(name: string, raw: string | undefined, fallbackSeconds: number): number {
  const seconds = parseNumber(name, raw, fallbackSeconds, { positive: true });
  const ms = Math.round(seconds * 1000);
  if (ms < 1) throw new ConfigError(name, `${seconds} s is below 1 ms`);
  return ms;
}

export function parseRoles(name: string, raw: string, separator: RegExp): NodeRole[] {
  const parts = raw
    .split(separator)
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s !== '');
  if (parts.length === 0)
    throw new ConfigError(name, `no role given (expected some of ${ALL_ROLES.join(', ')})`);
  const roles = new Set<NodeRole>();
  for (const p of parts) {
    if (!(ALL_ROLES as readonly string[]).includes(p)) {
      throw new ConfigError(name, `unknown role "${p}" (expected ${ALL_ROLES.join(', ')})`);
    }
    roles.add(p as NodeRole);
  }
  return ALL_ROLES.filter((r) => roles.has(r));
}

const HOSTNAME = /^[A-Za-z0-9_]([A-Za-z0-9._-]*[A-Za-z0-9_])?$/;
const IPV6 = /^\[[0-9A-Fa-f:.]+\]$/;

export function isValidHost(host: string): boolean {
  return HOSTNAME.test(host) || IPV6.test(host);
}

/** `host:port` (IPv6 as `[::1]:port`). */
export function parseHostPort(name: string, raw: string): HostPort {
  const text = raw.trim();
  const colon = text.lastIndexOf(':');
  if (colon <= 0) throw new ConfigError(name, `"${text}" is not host:port`);
  const host = text.slice(0, colon);
  const portText = text.slice(colon + 1);
  if (!isValidHost(host)) throw new ConfigError(name, `"${host}" is not a valid host in "${text}"`);
  if (!/^\d+$/.test(portText)) throw new ConfigError(name, `"${portText}" is not a port number in "${text}"`);
  const port = Number(portText);
  if (port < 1 || port > 65535)
    throw new ConfigError(name, `port ${port} is out of range 1-65535 in "${text}"`);
  return { host, port };
}

/** Comma-separated list with blanks dropped; undefined when the variable is unset. */
export function parseList(raw: string | undefined): string[] | undefined {
  if (raw === undefined) return undefined;
  return raw
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}
