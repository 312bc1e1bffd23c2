// deploy/Dockerfile, .dockerignore, deploy/docker-compose.yml (combined) and
// deploy/docker-compose.split.yml (SPEC 1.1's 11 services), and the Prometheus configs they mount.
// `docker-compose config` validates the files (no Docker engine needed); the structure is checked
// from the YAML itself, and every node's environment is run through the node's own config loader.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { loadConfig, parseClusterAddrs } from '../../src/config/index.js';
import {
  execForm,
  nodeServices,
  parseDockerfile,
  readText,
  readYaml,
  resolveEnv,
  ROOT,
  type ComposeFile,
  type ComposeService,
} from '../helpers/deploy.js';

const run = promisify(execFile);
const SECRET = 'compose-test-secret';

describe('deploy/Dockerfile', () => {
  const steps = parseDockerfile(readText('deploy/Dockerfile'));
  const pkg = JSON.parse(readText('package.json')) as {
    bin: Record<string, string>;
    scripts: Record<string, string>;
  };
  const stage = (n: number): typeof steps => steps.filter((s) => s.stage === n);
  const find = (n: number, op: string): string[] =>
    stage(n)
      .filter((s) => s.op === op)
      .map((s) => s.args);

  it('has a build stage and a runtime stage, both on node:24-slim', () => {
    const froms = steps.filter((s) => s.op === 'FROM').map((s) => s.args);
    assert.equal(froms.length, 2);
    assert.match(froms[0]!, /^node:24-slim AS build$/i);
    assert.match(froms[1]!, /^node:24-slim\b/);
  });

  it('builds with npm ci + npm run build; the build script puts the Lua scripts into dist/', () => {
    const runs = find(0, 'RUN');
    assert.ok(runs.some((r) => /\bnpm ci\b/.test(r)));
    assert.ok(runs.some((r) => /\bnpm run build\b/.test(r)));
    assert.match(pkg.scripts.build!, /cp -r src\/queue\/scripts dist\/queue\//);
    assert.match(pkg.scripts.build!, /cp -r src\/cache\/scripts dist\/cache\//);
    for (const d of ['src/queue/scripts', 'src/cache/scripts'])
      assert.ok(
        readdirSync(join(ROOT, d)).some((f) => f.endsWith('.lua')),
        d,
      );
  });

  it('runtime: production deps only, dist/ from the build stage, bin/, non-root, DATA_DIR volume, 8001', () => {
    assert.ok(find(1, 'RUN').some((r) => /npm ci\b.*--omit=dev/.test(r) && /--ignore-scripts/.test(r)));
    const copies = find(1, 'COPY');
    assert.ok(
      copies.some((c) => /^--from=build \/app\/dist \.\/dist$/.test(c)),
      copies.join(' | '),
    );
    assert.ok(
      copies.some((c) => /^bin \.\/bin$/.test(c)),
      copies.join(' | '),
    );
    const users = find(1, 'USER');
    assert.ok(users.length > 0 && !/^(root|0)(:|$)/.test(users.at(-1)!), 'runs as a non-root user');
    const dataDir = /DATA_DIR=(\S+)/.exec(find(1, 'ENV').join(' '))?.[1];
    assert.equal(dataDir, '/data');
    assert.ok(find(1, 'VOLUME').some((v) => v.includes(`"${dataDir}"`) || v.split(' ').includes(dataDir)));
    assert.deepEqual(find(1, 'EXPOSE'), ['8001']);
  });

  it('CMD runs `dss node` through the package bin; HEALTHCHECK asks /health with node', () => {
    const cmd = execForm(find(1, 'CMD').at(-1)!);
    assert.deepEqual(cmd, ['node', pkg.bin.dss, 'node']);
    assert.ok(existsSync(join(ROOT, pkg.bin.dss!)));
    const hc = execForm(find(1, 'HEALTHCHECK').at(-1)!);
    assert.equal(hc[0], 'node');
    assert.match(hc.join(' '), /\/health/);
  });

  it('every COPY source exists and is let through by .dockerignore, which excludes everything else', () => {
    const ignore = readText('.dockerignore')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    assert.equal(ignore[0], '*', '.dockerignore starts by excluding everything');
    const allowed = new Set(ignore.filter((l) => l.startsWith('!')).map((l) => l.slice(1)));
    for (const c of steps.filter((s) => s.op === 'COPY' && !s.args.startsWith('--from'))) {
      const sources = c.args.split(' ').slice(0, -1);
      for (const src of sources) {
        assert.ok(existsSync(join(ROOT, src)), `${src} exists`);
        assert.ok(allowed.has(src), `${src} is in the build context (.dockerignore)`);
      }
    }
  });
});

interface Topology {
  file: string;
  prometheus: string;
  redis: string;
  services: string[];
  nodes: Record<string, string>;
}

const COMBINED: Topology = {
  file: 'deploy/docker-compose.yml',
  prometheus: 'deploy/prometheus/prometheus.yml',
  redis: 'redis',
  // haproxy: the optional `https` profile.
  services: ['node1', 'node2', 'node3', 'redis', 'prometheus', 'grafana', 'haproxy'],
  nodes: { node1: 'lock,queue,cache', node2: 'lock,queue,cache', node3: 'lock,queue,cache' },
};
const SPLIT_NODES = ['lock', 'queue', 'cache'].flatMap((role) =>
  [1, 2, 3].map((i) => [`node_${role}_${i}`, role] as const),
);
const SPLIT: Topology = {
  file: 'deploy/docker-compose.split.yml',
  prometheus: 'deploy/prometheus/prometheus.split.yml',
  redis: 'redis_state',
  // SPEC 1.1: exactly these 11 services.
  services: [...SPLIT_NODES.map(([n]) => n), 'redis_state', 'prometheus', 'grafana'],
  nodes: Object.fromEntries(SPLIT_NODES),
};

function hostPorts(s: ComposeService): string[] {
  return (s.ports ?? []).map((p) => String(p).split(':').slice(0, -1).join(':'));
}

function mount(s: ComposeService, target: string): string | undefined {
  return (s.volumes ?? []).map((v) => v.split(':')).find((parts) => parts[1] === target)?.[0];
}

for (const topo of [COMBINED, SPLIT]) {
  describe(topo.file, () => {
    const compose = readYaml<ComposeFile>(topo.file);
    const nodes = nodeServices(compose);
    const envOf = (s: ComposeService): Record<string, string> =>
      resolveEnv(s.environment, { CLUSTER_SECRET: SECRET });

    it('passes `docker-compose config -q`; without CLUSTER_SECRET it refuses, naming it', async () => {
      const env: NodeJS.ProcessEnv = { ...process.env, CLUSTER_SECRET: SECRET };
      await run('docker-compose', ['-f', topo.file, 'config', '-q'], { cwd: ROOT, env });
      delete env.CLUSTER_SECRET;
      await assert.rejects(
        run('docker-compose', ['-f', topo.file, 'config', '-q'], { cwd: ROOT, env }),
        (e) => {
          assert.match(String((e as { stderr?: string }).stderr), /CLUSTER_SECRET/);
          return true;
        },
      );
    });

    it('has exactly the expected services', () => {
      assert.deepEqual(Object.keys(compose.services).sort(), [...topo.services].sort());
      assert.deepEqual(nodes.map(([n]) => n).sort(), Object.keys(topo.nodes).sort());
    });

    it("each node: NODE_ID is its name, NODE_ROLES match its name, the node's config loader accepts it", () => {
      for (const [name, s] of nodes) {
        const env = envOf(s);
        assert.equal(env.NODE_ID, name);
        assert.equal(env.NODE_ROLES, topo.nodes[name]);
        const cfg = loadConfig(env);
        assert.equal(cfg.nodeId, name);
        assert.deepEqual(cfg.roles.join(','), topo.nodes[name]);
        assert.equal(cfg.port, Number(env.NODE_PORT));
        assert.equal(cfg.clusterSecret, SECRET);
        assert.equal(cfg.dataDir, '/data');
        assert.equal(cfg.host, '0.0.0.0');
        if (cfg.roles.some((r) => r !== 'lock'))
          assert.deepEqual(cfg.redis, { mode: 'standalone', url: `redis://${topo.redis}:6379` });
      }
    });

    it('every CLUSTER_ADDRS lists every node by its service name and port, with its roles', () => {
      for (const [name, s] of nodes) {
        const { members, explicitRoles } = parseClusterAddrs(envOf(s).CLUSTER_ADDRS!, 'http');
        assert.deepEqual(members.map((m) => m.id).sort(), Object.keys(topo.nodes).sort(), name);
        for (const m of members) {
          const peer = compose.services[m.id]!;
          assert.equal(m.host, m.id, `${name}: ${m.id} is reached by its service name`);
          assert.equal(m.port, Number(envOf(peer).NODE_PORT), `${name}: ${m.id}'s port`);
          assert.equal(m.roles.join(','), topo.nodes[m.id], `${name}: ${m.id}'s roles`);
          assert.ok(explicitRoles.has(m.id), `${name}: ${m.id} lists its roles`);
        }
      }
    });

    it('CLUSTER_SECRET must be given (${CLUSTER_SECRET:?...}); no secret is baked in', () => {
      for (const [, s] of nodes)
        assert.match(String(s.environment!.CLUSTER_SECRET), /^\$\{CLUSTER_SECRET:\?.+\}$/);
    });

    it('published ports are unique; each node publishes its NODE_PORT', () => {
      const all = Object.values(compose.services).flatMap(hostPorts);
      assert.equal(new Set(all).size, all.length, all.join(' '));
      for (const [, s] of nodes) {
        const p = envOf(s).NODE_PORT!;
        assert.deepEqual(s.ports, [`${p}:${p}`]);
      }
    });

    it('every node (and Redis) has a healthcheck; every node keeps DATA_DIR on its own named volume', () => {
      const volumes = new Set<string>();
      for (const [name, s] of [...nodes, [topo.redis, compose.services[topo.redis]!] as const]) {
        const test = s.healthcheck?.test;
        assert.ok(Array.isArray(test) && test[0] === 'CMD' && test.length > 1, `${name} healthcheck`);
      }
      for (const [name, s] of nodes) {
        const vol = mount(s, envOf(s).DATA_DIR!);
        assert.ok(vol && !vol.startsWith('.') && !vol.startsWith('/'), `${name}: DATA_DIR on a named volume`);
        assert.ok(compose.volumes && vol in compose.volumes, `${name}: volume ${vol} declared`);
        assert.ok(!volumes.has(vol), `${name}: volume ${vol} not shared`);
        volumes.add(vol);
      }
    });

    it('Redis: AOF with appendfsync always on a volume; nodes that use it wait until it is healthy', () => {
      const redis = compose.services[topo.redis]!;
      const cmd = ([] as string[]).concat(redis.command ?? []).join(' ');
      assert.match(cmd, /--appendonly yes/);
      assert.match(cmd, /--appendfsync always/);
      assert.ok(mount(redis, '/data'));
      let users = 0;
      for (const [name, s] of nodes) {
        if (topo.nodes[name] === 'lock') continue;
        users++;
        assert.equal(envOf(s).REDIS_HOST, topo.redis, name);
        const dep = (s.depends_on as Record<string, { condition?: string }>)?.[topo.redis];
        assert.equal(dep?.condition, 'service_healthy', `${name} depends on ${topo.redis} being healthy`);
      }
      assert.ok(users >= 3);
    });

    it('Prometheus scrapes exactly the node services of this file', () => {
      const prom = compose.services.prometheus!;
      const src = mount(prom, '/etc/prometheus/prometheus.yml');
      assert.equal(join('deploy', src!), topo.prometheus);
      const cfg = readYaml<{
        scrape_configs: { metrics_path?: string; static_configs: { targets: string[] }[] }[];
      }>(topo.prometheus);
      const targets = cfg.scrape_configs.flatMap((j) => {
        assert.equal(j.metrics_path ?? '/metrics', '/metrics');
        return j.static_configs.flatMap((c) => c.targets);
      });
      assert.equal(new Set(targets).size, targets.length, 'no duplicate target');
      assert.deepEqual(targets.sort(), nodes.map(([name, s]) => `${name}:${envOf(s).NODE_PORT}`).sort());
    });

    it('promtool accepts the Prometheus config', async () => {
      const r = await run('promtool', ['check', 'config', topo.prometheus], { cwd: ROOT });
      assert.match(r.stdout + r.stderr, /SUCCESS/);
    });

    it('Grafana mounts the provisioning and the dashboards where the provider looks', () => {
      const g = compose.services.grafana!;
      assert.equal(mount(g, '/etc/grafana/provisioning'), './grafana/provisioning');
      const dashboards = (g.volumes ?? [])
        .map((v) => v.split(':'))
        .find((p) => p[0] === './grafana/dashboards');
      assert.ok(dashboards, 'dashboards mounted');
      const provider = readYaml<{ providers: { options: { path: string } }[] }>(
        'deploy/grafana/provisioning/dashboards/dss.yml',
      );
      assert.equal(provider.providers[0]!.options.path, dashboards[1]);
      assert.ok(existsSync(join(ROOT, 'deploy/grafana/dashboards/dss.json')));
    });
  });
}
