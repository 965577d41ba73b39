/**
 * A RegistryMirror's children, pure: the ConfigMap with the `strata mirror serve --config` file, the Deployment
 * running it, the Service in front, and a PersistentVolumeClaim when `spec.storage` asks for one. Names are
 * `strata-mirror-<name>` (shortened with a hash past 63 characters); every child carries {@link mirrorLabels} and is
 * controlled by the RegistryMirror (the garbage collector deletes them with it).
 */
import { createHash } from 'node:crypto';
import { stringify } from 'yaml';
import type {
  V1ConfigMap,
  V1Deployment,
  V1PersistentVolumeClaim,
  V1Service,
  V1Volume,
  V1VolumeMount,
} from '@kubernetes/client-node';
import { durationMs } from '../../api/v1alpha1/common.js';
import type { RegistryMirror } from '../../api/v1alpha1/registrymirror.js';

/** Options of the mirror pods: the image (`strata controller --mirror-image`) and its pull policy. */
export interface MirrorPodOptions {
  readonly image: string;
  readonly imagePullPolicy?: 'Always' | 'IfNotPresent' | 'Never';
}

/** The port the mirror listens on in its pod. */
export const MIRROR_PORT = 5000;
/** The ops port (`/healthz`, `/readyz`, `/metrics`). */
export const MIRROR_OPS_PORT = 9102;
/** Label naming the owning RegistryMirror on every child (and the pods' selector). */
export const LABEL_MIRROR = 'strata.dev/registrymirror';
/** Annotation on the pod template: the config's checksum, so a config change rolls the pods. */
export const CONFIG_CHECKSUM_ANNOTATION = 'strata.dev/config-checksum';
/** Where things are mounted in the mirror pod. */
export const PATHS = {
  config: '/etc/strata/mirror',
  configFile: '/etc/strata/mirror/config.yaml',
  store: '/var/lib/strata',
  upstreamCredentials: (i: number) => `/etc/strata/upstreams/${i}`,
  upstreamCerts: (i: number) => `/etc/strata/certs/${i}`,
  htpasswd: '/etc/strata/htpasswd',
  tmp: '/tmp',
} as const;

/** The children's name for mirror `name`: a DNS-1035 label of at most 63 characters. */
export function mirrorChildName(name: string): string {
  const full = `strata-mirror-${name}`.replace(/\./g, '-');
  if (full.length <= 63) return full;
  const hash = createHash('sha256').update(name).digest('hex').slice(0, 8);
  return `${full.slice(0, 54).replace(/-+$/, '')}-${hash}`;
}

/** The labels of every child (and the pods). */
export function mirrorLabels(m: RegistryMirror): Record<string, string> {
  const name = m.metadata.name ?? '';
  return {
    'app.kubernetes.io/name': 'strata-mirror',
    'app.kubernetes.io/instance': name.length <= 63 ? name : mirrorChildName(name),
    'app.kubernetes.io/component': 'mirror',
    'app.kubernetes.io/managed-by': 'strata',
    [LABEL_MIRROR]: name.length <= 63 ? name : mirrorChildName(name),
  };
}

function ownerRef(m: RegistryMirror): Record<string, unknown> {
  return {
    apiVersion: m.apiVersion,
    kind: m.kind,
    name: m.metadata.name,
    uid: m.metadata.uid,
    controller: true,
    blockOwnerDeletion: true,
  };
}

function meta(
  m: RegistryMirror,
  name: string,
): { name: string; namespace: string; labels: Record<string, string>; ownerReferences: never[] } {
  return {
    name,
    namespace: m.metadata.namespace ?? '',
    labels: mirrorLabels(m),
    ownerReferences: [ownerRef(m) as never],
  };
}

/** The host (`host[:port]`) of an upstream URL, as the engine's certs.d lookup names its directory. */
function urlHost(url: string): string {
  return new URL(url).host;
}

/**
 * A resource quantity (`40Gi`, `500M`, `1e9`) in bytes, for the mirror's `maxSize` (which takes a plain byte
 * count). Fractions of a byte round down.
 */
export function quantityBytes(q: string): number {
  const m = /^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$/.exec(q.trim());
  if (!m) throw new RangeError(`${JSON.stringify(q)} is not a byte quantity`);
  const suffix = m[2] ?? '';
  const bin: Record<string, number> = {
    Ki: 2 ** 10,
    Mi: 2 ** 20,
    Gi: 2 ** 30,
    Ti: 2 ** 40,
    Pi: 2 ** 50,
    Ei: 2 ** 60,
  };
  const dec: Record<string, number> = { k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18 };
  const scale = bin[suffix] ?? dec[suffix] ?? (suffix ? 10 ** Number(suffix.slice(1)) : 1);
  return Math.floor(Number(m[1]) * scale);
}

/** A duration of the API (`1h30m`) as the mirror config takes it (one unit: milliseconds). */
const ms = (d: string): string => `${durationMs(d)}ms`;

/** The mirror config file (`strata mirror serve --config`), as YAML text. Paths are the pod's mounts. */
export function mirrorConfigYaml(m: RegistryMirror): string {
  const s = m.spec;
  const config: Record<string, unknown> = {
    metricsListen: `0.0.0.0:${MIRROR_OPS_PORT}`,
    ...(s.defaultUpstream ? { defaultUpstream: s.defaultUpstream } : {}),
    tagTtl: ms(s.tagTTL ?? '5m'),
    ...(s.maxSize ? { maxSize: String(quantityBytes(s.maxSize)) } : {}),
    ...(s.clientAuth
      ? { htpasswd: `${PATHS.htpasswd}/${s.clientAuth.htpasswdSecretRef.key ?? 'htpasswd'}` }
      : {}),
    upstreams: s.upstreams.map((u, i) => {
      const t = u.timeouts;
      const timeouts = t
        ? {
            ...(t.connect ? { connect: ms(t.connect) } : {}),
            ...(t.responseHeaders ? { responseHeaders: ms(t.responseHeaders) } : {}),
            ...(t.idle ? { idle: ms(t.idle) } : {}),
          }
        : undefined;
      return {
        name: u.name,
        url: u.url,
        ...(u.credentialsSecretRef
          ? { credentials: `${PATHS.upstreamCredentials(i)}/.dockerconfigjson` }
          : {}),
        ...(u.ca ? { certsDir: PATHS.upstreamCerts(i) } : {}),
        ...(u.insecureSkipTLSVerify ? { insecure: true } : {}),
        ...(timeouts && Object.keys(timeouts).length > 0 ? { timeouts } : {}),
      };
    }),
  };
  return stringify(config, { lineWidth: 0 });
}

/** The ConfigMap holding the config file (key `config.yaml`). */
export function desiredConfigMap(m: RegistryMirror): V1ConfigMap {
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: meta(m, mirrorChildName(m.metadata.name ?? '')),
    data: { 'config.yaml': mirrorConfigYaml(m) },
  };
}

/** The volumes and mounts of the mirror pod: config, store, /tmp, credentials, CAs, htpasswd. */
function volumes(m: RegistryMirror, name: string): { volumes: V1Volume[]; mounts: V1VolumeMount[] } {
  const s = m.spec;
  const volumes: V1Volume[] = [
    { name: 'config', configMap: { name } },
    s.storage
      ? { name: 'store', persistentVolumeClaim: { claimName: name } }
      : { name: 'store', emptyDir: {} },
    { name: 'tmp', emptyDir: {} },
  ];
  const mounts: V1VolumeMount[] = [
    { name: 'config', mountPath: PATHS.config, readOnly: true },
    { name: 'store', mountPath: PATHS.store },
    { name: 'tmp', mountPath: PATHS.tmp },
  ];
  s.upstreams.forEach((u, i) => {
    if (u.credentialsSecretRef) {
      volumes.push({
        name: `upstream-${i}-credentials`,
        secret: {
          secretName: u.credentialsSecretRef.name,
          items: [{ key: '.dockerconfigjson', path: '.dockerconfigjson' }],
        },
      });
      mounts.push({
        name: `upstream-${i}-credentials`,
        mountPath: PATHS.upstreamCredentials(i),
        readOnly: true,
      });
    }
    if (u.ca) {
      // certs.d layout: <dir>/<host[:port]>/ca.crt, as the engine's registry client reads it.
      const items = [
        { key: u.ca.configMap?.key ?? u.ca.secret?.key ?? 'ca.crt', path: `${urlHost(u.url)}/ca.crt` },
      ];
      volumes.push(
        u.ca.configMap
          ? { name: `upstream-${i}-ca`, configMap: { name: u.ca.configMap.name, items } }
          : { name: `upstream-${i}-ca`, secret: { secretName: u.ca.secret!.name, items } },
      );
      mounts.push({ name: `upstream-${i}-ca`, mountPath: PATHS.upstreamCerts(i), readOnly: true });
    }
  });
  if (s.clientAuth) {
    volumes.push({ name: 'htpasswd', secret: { secretName: s.clientAuth.htpasswdSecretRef.name } });
    mounts.push({ name: 'htpasswd', mountPath: PATHS.htpasswd, readOnly: true });
  }
  return { volumes, mounts };
}

/** The Deployment running `strata mirror serve`: non-root, read-only root filesystem, probes on the ops port. */
export function desiredDeployment(m: RegistryMirror, o: MirrorPodOptions): V1Deployment {
  const name = mirrorChildName(m.metadata.name ?? '');
  const labels = mirrorLabels(m);
  const checksum = createHash('sha256').update(mirrorConfigYaml(m)).digest('hex');
  const { volumes: vols, mounts } = volumes(m, name);
  const probe = (path: string, periodSeconds: number) => ({
    httpGet: { path, port: 'ops' },
    periodSeconds,
    timeoutSeconds: 5,
    failureThreshold: 3,
  });
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: meta(m, name),
    spec: {
      replicas: m.spec.replicas ?? 1,
      selector: {
        matchLabels: { [LABEL_MIRROR]: labels[LABEL_MIRROR]!, 'app.kubernetes.io/name': 'strata-mirror' },
      },
      // One claim ReadWriteOnce cannot be mounted by old and new pod at once.
      strategy:
        m.spec.storage?.accessMode === 'ReadWriteOnce' ? { type: 'Recreate' } : { type: 'RollingUpdate' },
      template: {
        metadata: { labels, annotations: { [CONFIG_CHECKSUM_ANNOTATION]: checksum } },
        spec: {
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          securityContext: {
            runAsNonRoot: true,
            runAsUser: 65532,
            runAsGroup: 65532,
            fsGroup: 65532,
            seccompProfile: { type: 'RuntimeDefault' },
          },
          containers: [
            {
              name: 'mirror',
              image: o.image,
              ...(o.imagePullPolicy ? { imagePullPolicy: o.imagePullPolicy } : {}),
              command: ['strata'],
              args: [
                'mirror',
                'serve',
                '--config',
                PATHS.configFile,
                '--listen',
                `0.0.0.0:${MIRROR_PORT}`,
                '--store',
                PATHS.store,
              ],
              ports: [
                { name: 'registry', containerPort: MIRROR_PORT, protocol: 'TCP' },
                { name: 'ops', containerPort: MIRROR_OPS_PORT, protocol: 'TCP' },
              ],
              readinessProbe: probe('/readyz', 5),
              livenessProbe: probe('/healthz', 10),
              ...(m.spec.resources ? { resources: m.spec.resources } : {}),
              securityContext: {
                allowPrivilegeEscalation: false,
                readOnlyRootFilesystem: true,
                capabilities: { drop: ['ALL'] },
              },
              volumeMounts: mounts,
            },
          ],
          volumes: vols,
        },
      },
    },
  } as V1Deployment;
}

/** The Service in front of the mirror pods (type, port and nodePort from `spec.service`). */
export function desiredService(m: RegistryMirror): V1Service {
  const name = mirrorChildName(m.metadata.name ?? '');
  const svc = m.spec.service ?? { type: 'ClusterIP', port: 5000 };
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: meta(m, name),
    spec: {
      type: svc.type ?? 'ClusterIP',
      selector: { [LABEL_MIRROR]: mirrorLabels(m)[LABEL_MIRROR]!, 'app.kubernetes.io/name': 'strata-mirror' },
      ports: [
        {
          name: 'registry',
          port: svc.port ?? 5000,
          targetPort: 'registry',
          protocol: 'TCP',
          ...(svc.nodePort !== undefined && svc.type !== 'ClusterIP' ? { nodePort: svc.nodePort } : {}),
        },
      ],
    },
  } as V1Service;
}

/** The claim for the store, when `spec.storage` is set (its class and access mode never change). */
export function desiredClaim(m: RegistryMirror): V1PersistentVolumeClaim | undefined {
  const st = m.spec.storage;
  if (!st) return undefined;
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: meta(m, mirrorChildName(m.metadata.name ?? '')),
    spec: {
      accessModes: [st.accessMode ?? 'ReadWriteOnce'],
      resources: { requests: { storage: st.size } },
      ...(st.storageClassName ? { storageClassName: st.storageClassName } : {}),
    },
  };
}
