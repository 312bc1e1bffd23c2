// Reading the files of deploy/ for the deploy tests: YAML (compose merge keys resolved), the
// Dockerfile's instructions, and the compose services that are DSS nodes.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, parseAllDocuments } from 'yaml';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const DEPLOY = join(ROOT, 'deploy');

export function readText(rel: string): string {
  return readFileSync(join(ROOT, rel), 'utf8');
}

/** One YAML document, with `<<: *anchor` merge keys applied as docker-compose does. */
export function readYaml<T = unknown>(rel: string): T {
  return parse(readText(rel), { merge: true }) as T;
}

/** Every document of a multi-document YAML file; throws on a syntax error in any of them. */
export function readYamlDocuments(rel: string): unknown[] {
  return parseAllDocuments(readText(rel)).map((doc, i) => {
    if (doc.errors.length > 0) throw new Error(`${rel} document ${i + 1}: ${doc.errors[0]!.message}`);
    return doc.toJS() as unknown;
  });
}

export interface DockerInstruction {
  /** Upper-case instruction name: FROM, RUN, COPY, ... */
  op: string;
  args: string;
  /** 0-based index of the build stage (FROM starts a new one). */
  stage: number;
}

/** The Dockerfile's instructions: comments dropped, `\` continuations joined. */
export function parseDockerfile(text: string): DockerInstruction[] {
  const out: DockerInstruction[] = [];
  let stage = -1;
  let pending = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (pending === '' && (line === '' || line.startsWith('#'))) continue;
    if (line.startsWith('#')) continue; // a comment inside a continued instruction
    if (line.endsWith('\\')) {
      pending += line.slice(0, -1) + ' ';
      continue;
    }
    const full = (pending + line).trim();
    pending = '';
    if (full === '') continue;
    const m = /^(\S+)\s*(.*)$/.exec(full)!;
    const op = m[1]!.toUpperCase();
    if (op === 'FROM') stage++;
    out.push({ op, args: m[2]!.replace(/\s+/g, ' ').trim(), stage });
  }
  return out;
}

/** The exec-form (JSON array) command at the end of CMD/ENTRYPOINT/HEALTHCHECK arguments. */
export function execForm(args: string): string[] {
  const m = /(\[.*\])\s*$/.exec(args);
  if (!m) throw new Error(`not an exec-form command: ${args}`);
  return JSON.parse(m[1]!) as string[];
}

export interface ComposeService {
  image?: string;
  build?: unknown;
  command?: string | string[];
  environment?: Record<string, string | number | null>;
  ports?: string[];
  volumes?: string[];
  healthcheck?: { test?: string[] | string; interval?: string };
  depends_on?: string[] | Record<string, { condition?: string }>;
  profiles?: string[];
}

export interface ComposeFile {
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
}

/** The services of a compose file that run a DSS node (those with NODE_ID in their environment). */
export function nodeServices(compose: ComposeFile): [string, ComposeService][] {
  return Object.entries(compose.services).filter(([, s]) => s.environment?.NODE_ID !== undefined);
}

/** A compose environment as plain strings, `${VAR:?...}` / `${VAR:-default}` resolved from `vars`. */
export function resolveEnv(
  env: Record<string, string | number | null> | undefined,
  vars: Record<string, string>,
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env ?? {})) {
    out[k] = String(v ?? '').replace(
      /\$\{(\w+)(?::([?-])([^}]*))?\}/g,
      (_all, name: string, kind: string | undefined, rest: string | undefined) => {
        const val = vars[name];
        if (val !== undefined && val !== '') return val;
        if (kind === '-') return rest ?? '';
        throw new Error(`${k}: \${${name}} is required (${rest ?? ''})`);
      },
    );
  }
  return out;
}
