/** A RegistryMirror's ConfigMap, Deployment, Service and PVC; its status from Deployment, Service and StrataNodes. */
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { isSubset } from '../../../src/controllers/registrymirror/apply.js';
import {
  CONFIG_CHECKSUM_ANNOTATION,
  desiredClaim,
  desiredConfigMap,
  desiredDeployment,
  desiredService,
  mirrorChildName,
  quantityBytes,
} from '../../../src/controllers/registrymirror/desired.js';
import { mirrorStatus, nodesStillConfigured } from '../../../src/controllers/registrymirror/status.js';
import { mirror, node, strataNode } from '../stratanode/fixtures.js';

const full = mirror('hub', {
  upstreams: [
    {
      name: 'docker.io',
      url: 'https://registry-1.docker.io',
      credentialsSecretRef: { name: 'hub-creds' },
      insecureSkipTLSVerify: false,
      timeouts: { connect: '10s', responseHeaders: '1m30s' },
    },
    {
      name: 'internal:5000',
      url: 'https://internal:5000',
      ca: { configMap: { name: 'ca', key: 'root.pem' } },
      insecureSkipTLSVerify: false,
    },
  ],
  defaultUpstream: 'docker.io',
  maxSize: '40Gi',
  tagTTL: '10m',
  clientAuth: { htpasswdSecretRef: { name: 'mirror-users', key: 'htpasswd' } },
  storage: { size: '50Gi', accessMode: 'ReadWriteOnce', storageClassName: 'fast' },
  service: { type: 'NodePort', port: 5005, nodePort: 30500 },
  resources: { requests: { cpu: '100m', memory: '128Mi' } },
});

describe('the mirror config file', () => {
  it('is what strata mirror serve --config reads: mounted credential and CA paths, durations and sizes converted', () => {
    expect(parse(desiredConfigMap(full).data!['config.yaml']!)).toEqual({
      metricsListen: '0.0.0.0:9102',
      defaultUpstream: 'docker.io',
      tagTtl: '600000ms',
      maxSize: String(40 * 2 ** 30),
      htpasswd: '/etc/strata/htpasswd/htpasswd',
      upstreams: [
        {
          name: 'docker.io',
          url: 'https://registry-1.docker.io',
          credentials: '/etc/strata/upstreams/0/.dockerconfigjson',
          timeouts: { connect: '10000ms', responseHeaders: '90000ms' },
        },
        { name: 'internal:5000', url: 'https://internal:5000', certsDir: '/etc/strata/certs/1' },
      ],
    });
  });

  it.each([
    ['40Gi', 40 * 2 ** 30],
    ['500M', 5e8],
    ['1e9', 1e9],
    ['1.5Ki', 1536],
    ['123', 123],
  ])('quantity %s is %d bytes', (q, n) => expect(quantityBytes(q)).toBe(n));
});

describe('the Deployment', () => {
  const d = desiredDeployment(full, { image: 'strata:test' });
  const pod = d.spec!.template.spec!;
  const c = pod.containers[0]!;

  it('runs strata mirror serve non-root with a read-only root filesystem and probes on the ops port', () => {
    expect(d.metadata!.name).toBe('strata-mirror-hub');
    expect(c.command).toEqual(['strata']);
    expect(c.args).toEqual([
      'mirror',
      'serve',
      '--config',
      '/etc/strata/mirror/config.yaml',
      '--listen',
      '0.0.0.0:5000',
      '--store',
      '/var/lib/strata',
    ]);
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 65532, fsGroup: 65532 });
    expect(c.securityContext).toMatchObject({
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
    });
    expect(c.readinessProbe!.httpGet).toEqual({ path: '/readyz', port: 'ops' });
    expect(c.livenessProbe!.httpGet).toEqual({ path: '/healthz', port: 'ops' });
    expect(c.resources).toEqual({ requests: { cpu: '100m', memory: '128Mi' } });
    expect(d.metadata!.ownerReferences).toEqual([
      {
        apiVersion: 'strata.dev/v1alpha1',
        kind: 'RegistryMirror',
        name: 'hub',
        uid: 'uid-hub',
        controller: true,
        blockOwnerDeletion: true,
      },
    ]);
    // One ReadWriteOnce claim cannot be mounted by an old and a new pod at once.
    expect(d.spec!.strategy).toEqual({ type: 'Recreate' });
  });

  it('mounts the config, the claim, the credentials, the CA as certs.d/<host>/ca.crt and the htpasswd', () => {
    const mounts = Object.fromEntries(c.volumeMounts!.map((m) => [m.name, m.mountPath]));
    expect(mounts).toEqual({
      config: '/etc/strata/mirror',
      store: '/var/lib/strata',
      tmp: '/tmp',
      'upstream-0-credentials': '/etc/strata/upstreams/0',
      'upstream-1-ca': '/etc/strata/certs/1',
      htpasswd: '/etc/strata/htpasswd',
    });
    const vol = Object.fromEntries(pod.volumes!.map((v) => [v.name, v]));
    expect(vol.store!.persistentVolumeClaim).toEqual({ claimName: 'strata-mirror-hub' });
    expect(vol['upstream-1-ca']!.configMap).toEqual({
      name: 'ca',
      items: [{ key: 'root.pem', path: 'internal:5000/ca.crt' }],
    });
    expect(vol['upstream-0-credentials']!.secret!.secretName).toBe('hub-creds');
  });

  it('an emptyDir store without spec.storage; a config change changes the checksum (the pods roll)', () => {
    const plain = desiredDeployment(mirror('hub'), { image: 'i' });
    expect(plain.spec!.template.spec!.volumes!.find((v) => v.name === 'store')).toEqual({
      name: 'store',
      emptyDir: {},
    });
    const sum = (m: typeof full) =>
      desiredDeployment(m, { image: 'i' }).spec!.template.metadata!.annotations![CONFIG_CHECKSUM_ANNOTATION];
    expect(sum(mirror('hub'))).toBe(sum(mirror('hub')));
    expect(sum(mirror('hub', { tagTTL: '1m' }))).not.toBe(sum(mirror('hub')));
    expect(desiredClaim(mirror('hub'))).toBeUndefined();
  });
});

describe('the Service and the claim', () => {
  it('type, port and nodePort from the spec', () => {
    expect(desiredService(full).spec).toEqual({
      type: 'NodePort',
      selector: { 'strata.dev/registrymirror': 'hub', 'app.kubernetes.io/name': 'strata-mirror' },
      ports: [{ name: 'registry', port: 5005, targetPort: 'registry', protocol: 'TCP', nodePort: 30500 }],
    });
    expect(desiredClaim(full)!.spec).toEqual({
      accessModes: ['ReadWriteOnce'],
      resources: { requests: { storage: '50Gi' } },
      storageClassName: 'fast',
    });
  });

  it('names fit 63 characters', () => {
    expect(mirrorChildName('a'.repeat(100))).toHaveLength(63);
    expect(mirrorChildName('a.b')).toBe('strata-mirror-a-b');
  });
});

describe('create-or-patch on a difference', () => {
  it('fields the server adds do not count; a changed or missing one does', () => {
    expect(isSubset({ a: 1, b: [{ c: 2 }] }, { a: 1, z: 0, b: [{ c: 2, d: 3 }] })).toBe(true);
    expect(isSubset({ a: 1 }, { a: 2 })).toBe(false);
    expect(isSubset({ b: [{ c: 2 }] }, { b: [{ c: 2 }, { c: 3 }] })).toBe(false);
    expect(isSubset({ a: {} }, {})).toBe(false);
  });
});

describe('mirror status', () => {
  const nodes = [node('a', { pool: 'web' }), node('b', { pool: 'web' }), node('c', { pool: 'db' })];
  const m = mirror('hub', { nodeSelector: { pool: 'web' } });
  const service = { spec: { clusterIP: '10.96.0.7', ports: [{ port: 5000 }] } };
  const deployment = { status: { replicas: 1, readyReplicas: 1, updatedReplicas: 1 } };
  const configured = (gen: number) => ({
    mirrors: [{ name: 'infra/hub', generation: gen, configured: true }],
  });
  const cond = (s: ReturnType<typeof mirrorStatus>, t: string) => s.conditions!.find((c) => c.type === t);

  it('counts the selected nodes configured at the current generation; Ready when all are and the pods are', () => {
    const sns: Record<string, ReturnType<typeof strataNode>> = {
      a: strataNode('a', configured(2)),
      b: strataNode('b', configured(1)),
    };
    let s = mirrorStatus(m, { service, deployment, nodes, strataNode: (n) => sns[n], nowMs: 0 });
    expect(s).toMatchObject({
      endpoint: 'http://10.96.0.7:5000',
      replicas: 1,
      readyReplicas: 1,
      nodesConfigured: 1,
      nodesTotal: 2,
    });
    expect(cond(s, 'Progressing')).toMatchObject({
      status: 'True',
      reason: 'ConfiguringNodes',
      message: '1/2 nodes configured',
    });
    sns.b = strataNode('b', configured(2));
    s = mirrorStatus(m, { service, deployment, nodes, strataNode: (n) => sns[n], nowMs: 0 });
    expect(cond(s, 'Ready')).toMatchObject({ status: 'True', reason: 'MirrorReady' });
  });

  it('Progressing while the pods roll out or the Service has no IP; Failed when a child is refused', () => {
    const none = () => undefined;
    expect(cond(mirrorStatus(m, { nodes, strataNode: none, nowMs: 0 }), 'Progressing')!.reason).toBe(
      'ServicePending',
    );
    expect(
      cond(
        mirrorStatus(m, {
          service,
          deployment: { status: { replicas: 1 } },
          nodes,
          strataNode: none,
          nowMs: 0,
        }),
        'Progressing',
      )!.reason,
    ).toBe('RollingOut');
    const failed = mirrorStatus(m, {
      service,
      nodes,
      strataNode: none,
      refused: { reason: 'ServiceRejected', message: 'port taken' },
      nowMs: 0,
    });
    expect(cond(failed, 'Failed')).toMatchObject({
      status: 'True',
      reason: 'ServiceRejected',
      message: 'port taken',
    });
  });

  it('deletion waits for nodes whose spec or status still carries the mirror', () => {
    const sns = [
      { ...strataNode('a', configured(2)), spec: {} },
      {
        ...strataNode('b'),
        spec: {
          mirrors: [
            { name: 'infra/hub', generation: 2, endpoint: 'http://x:1', registries: [{ name: 'docker.io' }] },
          ],
        },
      },
      {
        ...strataNode('c', { mirrors: [{ name: 'infra/hub', generation: 2, configured: false }] }),
        spec: {},
      },
    ];
    expect(nodesStillConfigured('infra/hub', sns)).toEqual(['a', 'b']);
  });
});
