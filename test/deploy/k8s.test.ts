// deploy/k8s: every document of every manifest validates against the Kubernetes OpenAPI schema of
// its kind (kubernetes-models), the validator does reject a broken manifest, and the objects refer
// to each other correctly: StatefulSet -> headless Service, selectors -> pod labels, PDB, probes,
// envFrom -> ConfigMap/Secret, CLUSTER_ADDRS -> the pods' stable DNS names, DATA_DIR -> the PVC.
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { loadConfig, parseClusterAddrs } from '../../src/config/index.js';
import { DEPLOY, readYamlDocuments } from '../helpers/deploy.js';

interface Meta {
  name: string;
  labels?: Record<string, string>;
}
interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: Meta;
  spec?: Record<string, unknown>;
  data?: Record<string, string>;
  stringData?: Record<string, string>;
}
interface Probe {
  httpGet?: { path: string; port: string | number };
}
interface Container {
  name: string;
  image: string;
  command?: string[];
  ports?: { name?: string; containerPort: number }[];
  env?: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
  envFrom?: { configMapRef?: { name: string }; secretRef?: { name: string } }[];
  volumeMounts?: { name: string; mountPath: string }[];
  readinessProbe?: Probe;
  livenessProbe?: Probe;
}
interface StatefulSetSpec {
  serviceName: string;
  replicas: number;
  podManagementPolicy?: string;
  selector: { matchLabels: Record<string, string> };
  template: {
    metadata: Meta;
    spec: { containers: Container[]; securityContext?: { fsGroup?: number; runAsNonRoot?: boolean } };
  };
  volumeClaimTemplates?: { metadata: Meta }[];
}
interface ServiceSpec {
  clusterIP?: string;
  publishNotReadyAddresses?: boolean;
  selector: Record<string, string>;
  ports: { port: number; targetPort?: string | number }[];
}

type Validatable = new (data: unknown) => { validate(): void };

/** The kubernetes-models class of an apiVersion/kind: `apps/v1` + `StatefulSet` -> kubernetes-models/apps/v1/StatefulSet. */
async function modelClass(apiVersion: string, kind: string): Promise<Validatable> {
  const mod = (await import(`kubernetes-models/${apiVersion}/${kind}`)) as Record<string, Validatable>;
  const cls = mod[kind];
  if (!cls) throw new Error(`kubernetes-models has no ${apiVersion} ${kind}`);
  return cls;
}

async function validate(obj: K8sObject): Promise<void> {
  const Cls = await modelClass(obj.apiVersion, obj.kind);
  new Cls(obj).validate();
}

const FILES = readdirSync(join(DEPLOY, 'k8s'))
  .filter((f) => /\.ya?ml$/.test(f))
  .sort();
const objects: (K8sObject & { file: string })[] = FILES.flatMap((f) =>
  readYamlDocuments(`deploy/k8s/${f}`)
    .filter((d) => d !== null)
    .map((d) => ({ ...(d as K8sObject), file: f })),
);
const byKind = (kind: string): K8sObject[] => objects.filter((o) => o.kind === kind);
const named = (kind: string, name: string): K8sObject => {
  const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
  assert.ok(o, `${kind} ${name} exists`);
  return o;
};
const matches = (selector: Record<string, string>, labels: Record<string, string> | undefined): boolean =>
  Object.entries(selector).every(([k, v]) => labels?.[k] === v);

describe('deploy/k8s manifests', () => {
  it('has the expected objects', () => {
    assert.ok(FILES.length > 0);
    const kinds = objects.map((o) => `${o.kind}/${o.metadata.name}`).sort();
    for (const want of [
      'ConfigMap/dss-config',
      'PodDisruptionBudget/dss',
      'Secret/dss-secret',
      'Service/dss',
      'Service/dss-headless',
      'Service/dss-redis',
      'StatefulSet/dss',
      'StatefulSet/dss-redis',
    ])
      assert.ok(kinds.includes(want), `${want} in ${kinds.join(', ')}`);
  });

  it('every document validates against the Kubernetes schema of its kind', async () => {
    for (const o of objects) {
      const { file, ...obj } = o;
      await assert.doesNotReject(validate(obj), `${file}: ${o.kind} ${o.metadata.name}`);
    }
  });

  it('the validator rejects broken manifests (so the check above can fail)', async () => {
    const sts = structuredClone(named('StatefulSet', 'dss'));
    (sts.spec as Record<string, unknown>).replicas = 'three';
    await assert.rejects(validate(sts), /replicas/);
    const noSelector = structuredClone(named('StatefulSet', 'dss'));
    delete (noSelector.spec as Record<string, unknown>).selector;
    await assert.rejects(validate(noSelector), /selector/);
    // Deep inside the pod template too.
    const badPort = structuredClone(named('StatefulSet', 'dss'));
    (badPort.spec as unknown as StatefulSetSpec).template.spec.containers[0]!.ports![0]!.containerPort =
      '8001' as unknown as number;
    await assert.rejects(validate(badPort), /containerPort/);
    const svc = structuredClone(named('Service', 'dss'));
    (svc.spec as unknown as ServiceSpec).ports[0]!.port = 'http' as unknown as number;
    await assert.rejects(validate(svc), /port/);
  });

  const sts = named('StatefulSet', 'dss');
  const spec = sts.spec as unknown as StatefulSetSpec;
  const podLabels = spec.template.metadata.labels;
  const container = spec.template.spec.containers[0]!;
  const redisPods = (named('StatefulSet', 'dss-redis').spec as unknown as StatefulSetSpec).template.metadata
    .labels;

  it('StatefulSet: 3 replicas, governed by a headless Service that publishes not-ready pods, started in parallel', () => {
    assert.equal(spec.replicas, 3);
    const headless = named('Service', spec.serviceName).spec as unknown as ServiceSpec;
    assert.equal(headless.clusterIP, 'None');
    // A node is ready only once Raft has a leader, which needs the peers to find each other first.
    assert.equal(headless.publishNotReadyAddresses, true);
    assert.equal(spec.podManagementPolicy, 'Parallel');
    assert.ok(matches(spec.selector.matchLabels, podLabels), 'selector matches the pod template');
  });

  it('Services and the PodDisruptionBudget select the DSS pods and not Redis; minAvailable 2', () => {
    for (const name of ['dss', spec.serviceName]) {
      const s = named('Service', name).spec as unknown as ServiceSpec;
      assert.ok(matches(s.selector, podLabels), `${name} selects the DSS pods`);
      assert.ok(!matches(s.selector, redisPods), `${name} does not select Redis`);
      const port = container.ports!.find((p) => p.name === s.ports[0]!.targetPort)!;
      assert.equal(port.containerPort, 8001, `${name} targets the node's port`);
    }
    const pdb = named('PodDisruptionBudget', 'dss').spec as {
      minAvailable: number;
      selector: { matchLabels: Record<string, string> };
    };
    assert.equal(pdb.minAvailable, 2);
    assert.ok(matches(pdb.selector.matchLabels, podLabels));
    assert.ok(!matches(pdb.selector.matchLabels, redisPods));
  });

  it('probes: readiness on /ready, liveness on /health, on the named container port', () => {
    assert.equal(container.readinessProbe?.httpGet?.path, '/ready');
    assert.equal(container.livenessProbe?.httpGet?.path, '/health');
    for (const probe of [container.readinessProbe, container.livenessProbe]) {
      const port = probe?.httpGet?.port;
      assert.ok(container.ports!.some((cp) => cp.name === port || cp.containerPort === port));
    }
  });

  it("NODE_ID is the pod name; with the ConfigMap and Secret each pod's config loads and lists every pod by its DNS name", () => {
    assert.deepEqual(container.command, ['node', 'bin/dss.js', 'node']);
    const nodeId = container.env!.find((e) => e.name === 'NODE_ID')!;
    assert.equal(nodeId.valueFrom?.fieldRef?.fieldPath, 'metadata.name');
    const env: Record<string, string> = {};
    for (const from of container.envFrom!) {
      if (from.configMapRef) Object.assign(env, named('ConfigMap', from.configMapRef.name).data);
      if (from.secretRef) Object.assign(env, named('Secret', from.secretRef.name).stringData);
    }
    assert.ok(env.CLUSTER_SECRET, 'CLUSTER_SECRET comes from the Secret');
    const pods = Array.from({ length: spec.replicas }, (_, i) => `${sts.metadata.name}-${i}`);
    const { members } = parseClusterAddrs(env.CLUSTER_ADDRS!, 'http');
    assert.deepEqual(
      members.map((m) => `${m.id}=${m.host}:${m.port}#${m.roles.join('+')}`),
      pods.map((p) => `${p}=${p}.${spec.serviceName}:8001#lock+queue+cache`),
    );
    for (const pod of pods) {
      const cfg = loadConfig({ ...env, NODE_ID: pod });
      assert.equal(cfg.nodeId, pod);
      assert.equal(cfg.port, 8001);
      assert.deepEqual(cfg.roles, ['lock', 'queue', 'cache']);
      assert.deepEqual(cfg.redis, { mode: 'standalone', url: 'redis://dss-redis:6379' });
    }
    // REDIS_HOST is the Redis Service, on its port.
    const redisSvc = named('Service', env.REDIS_HOST!).spec as unknown as ServiceSpec;
    assert.equal(redisSvc.ports[0]!.port, Number(env.REDIS_PORT));
    assert.ok(matches(redisSvc.selector, redisPods));
    // DATA_DIR is on the volume claim template, writable by the image's uid through fsGroup.
    const mountAt = container.volumeMounts!.find((m) => m.mountPath === env.DATA_DIR)!;
    assert.ok(spec.volumeClaimTemplates!.some((t) => t.metadata.name === mountAt.name));
    assert.equal(spec.template.spec.securityContext?.fsGroup, 1000);
  });

  it('Redis keeps an AOF with appendfsync always on a persistent volume', () => {
    const r = named('StatefulSet', 'dss-redis').spec as unknown as StatefulSetSpec;
    const c = r.template.spec.containers[0] as Container & { args?: string[] };
    const args = (c.args ?? []).join(' ');
    assert.match(args, /--appendonly yes/);
    assert.match(args, /--appendfsync always/);
    const data = c.volumeMounts!.find((m) => m.mountPath === '/data')!;
    assert.ok(r.volumeClaimTemplates!.some((t) => t.metadata.name === data.name));
  });

  it('every object carries the app label', () => {
    for (const o of byKind('Service').concat(byKind('StatefulSet'), byKind('ConfigMap'), byKind('Secret')))
      assert.equal(o.metadata.labels?.['app.kubernetes.io/name'], 'dss', `${o.kind} ${o.metadata.name}`);
  });
});
