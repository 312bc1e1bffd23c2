// Known route patterns and their methods, recorded as routes are added, so that a request for an
// existing path with the wrong method gets 405 (fastify alone answers 404 for it).
import type { RouteOptions } from 'fastify';

interface Known {
  pattern: RegExp;
  methods: Set<string>;
}

function toRegExp(url: string): RegExp {
  // find-my-way syntax: `:param` matches one segment, `*` the rest of the path.
  const source = url
    .split(/(:[A-Za-z0-9_]+|\*)/)
    .map((part) => {
      if (part === '*') return '.*';
      if (part.startsWith(':')) return '[^/]+';
      return part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    })
    .join('');
  return new RegExp(`^${source}$`);
}

export class RouteTable {
  private readonly routes = new Map<string, Known>();

  /** Use as fastify's onRoute hook. */
  readonly onRoute = (route: RouteOptions): void => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    let known = this.routes.get(route.url);
    if (!known) {
      known = { pattern: toRegExp(route.url), methods: new Set() };
      this.routes.set(route.url, known);
    }
    for (const m of methods) known.methods.add(m.toUpperCase());
  };

  /** Methods allowed on `path` (no query string), empty when no route matches it. */
  allowedMethods(path: string): string[] {
    const allowed = new Set<string>();
    for (const known of this.routes.values()) {
      if (known.pattern.test(path)) for (const m of known.methods) allowed.add(m);
    }
    return [...allowed].sort();
  }
}
