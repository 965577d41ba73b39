/**
 * Bad objects of each kind and what must be said about them: by the local validator (`local`: formatted
 * `path: message` issues) and by the real kube-apiserver (`apiserver`: substrings of its error). For a CEL rule
 * with a TypeScript twin both say the same `path: message`. Shared by the unit test and the real-apiserver test,
 * so each twin and its rule are checked against the same inputs.
 */
import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import {
  IMAGEBUILD,
  KINDS,
  LAYERCACHE,
  REGISTRYMIRROR,
  type KindDefinition,
} from '../../src/api/v1alpha1/crd.js';
import { NODE_PATH_PATTERN } from '../../src/api/v1alpha1/common.js';
import { clusterContextIssues, type BuildContextSpec } from '../../src/api/v1alpha1/imagebuild.js';

/** The repository root, with a trailing slash. */
export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** One Strata object of `examples/`. */
export interface Example {
  readonly file: string;
  readonly def: KindDefinition;
  readonly object: { kind: string; metadata: { name: string; namespace?: string } };
  /** An ImageBuild for `strata build --spec` only (a `dir` context): the apiserver refuses it. */
  readonly localOnly: boolean;
}

/** Every `strata.dev` object in `examples/*.yaml` (other kinds in those files are left out). */
export async function strataExamples(): Promise<Example[]> {
  const out: Example[] = [];
  for (const file of (await readdir(`${ROOT}examples`)).filter((f) => f.endsWith('.yaml')).sort())
    for (const doc of parseAllDocuments(await readFile(`${ROOT}examples/${file}`, 'utf8'))) {
      const object = doc.toJS() as Example['object'] & { apiVersion?: string };
      const def = KINDS.find((k) => k.kind === object?.kind);
      if (def && object.apiVersion?.startsWith('strata.dev/')) {
        const context = (object as { spec?: { context?: BuildContextSpec } }).spec?.context;
        const localOnly = def === IMAGEBUILD && !!context && clusterContextIssues(context).length > 0;
        out.push({ file, def, object, localOnly });
      }
    }
  return out;
}

/** One bad object. */
export interface BadCase {
  readonly name: string;
  readonly kind: KindDefinition;
  readonly object: Record<string, unknown>;
  /** Issues the local validator reports (all of them, formatted `path: message`); absent: apiserver-only. */
  readonly local?: readonly string[];
  /** Substrings the apiserver's error contains. */
  readonly apiserver: readonly string[];
}

const V = 'strata.dev/v1alpha1';

function ib(name: string, spec: Record<string, unknown>): Record<string, unknown> {
  return {
    apiVersion: V,
    kind: 'ImageBuild',
    metadata: { name },
    spec: { context: { git: { url: 'https://example.com/a.git' } }, ...spec },
  };
}

function rm(name: string, spec: Record<string, unknown>): Record<string, unknown> {
  return {
    apiVersion: V,
    kind: 'RegistryMirror',
    metadata: { name },
    spec: { upstreams: [{ name: 'docker.io', url: 'https://registry-1.docker.io' }], ...spec },
  };
}

function lc(name: string, spec: Record<string, unknown>): Record<string, unknown> {
  return { apiVersion: V, kind: 'LayerCache', metadata: { name }, spec };
}

const PUSH_HOST = 'with push: true every image must name a registry host (e.g. registry.example.com/app:v1)';

/** Objects that must be refused, schema rules and CEL rules both. */
export const BAD_CASES: readonly BadCase[] = [
  {
    name: 'push to a reference without a registry host (CEL, with fieldPath)',
    kind: IMAGEBUILD,
    object: ib('push-no-host', { output: { images: ['localhost:5000/a:1', 'app:v1'], push: true } }),
    local: [`spec.output.images: ${PUSH_HOST}`],
    apiserver: [`spec.output.images: Invalid value: "object": ${PUSH_HOST}`],
  },
  {
    name: 'pushSecret without push (CEL)',
    kind: IMAGEBUILD,
    object: ib('secret-no-push', { output: { images: ['reg.example/a:1'], pushSecret: { name: 'creds' } } }),
    local: ['spec.output: pushSecret is only used with push: true'],
    apiserver: ['spec.output: Invalid value: "object": pushSecret is only used with push: true'],
  },
  {
    name: 'a negative history limit and an unknown network (schema)',
    kind: IMAGEBUILD,
    object: ib('bad-limits', {
      output: { images: ['reg.example/a:1'] },
      failedJobsHistoryLimit: -1,
      network: 'bridge',
    }),
    local: [
      'spec.network: must be one of host, none (got "bridge")',
      'spec.failedJobsHistoryLimit: must be at least 0',
    ],
    apiserver: [
      'spec.failedJobsHistoryLimit: Invalid value: -1: spec.failedJobsHistoryLimit in body should be greater than or equal to 0',
      'spec.network: Unsupported value: "bridge"',
    ],
  },
  {
    name: 'a misspelt field (unknown fields: errors locally, refused by kubectl --validate=strict)',
    kind: IMAGEBUILD,
    object: ib('typo', { output: { images: ['reg.example/a:1'] }, sucessfulJobsHistoryLimit: 5 }),
    local: ['spec.sucessfulJobsHistoryLimit: unknown field'],
    apiserver: ['unknown field "spec.sucessfulJobsHistoryLimit"'],
  },
  {
    name: 'two contexts at once (exactly-one-of, a CEL rule)',
    kind: IMAGEBUILD,
    object: ib('two-contexts', {
      context: { git: { url: 'https://example.com/a.git' }, tarball: 'https://example.com/a.tar' },
      output: { images: ['reg.example/a:1'] },
    }),
    local: ['spec.context: exactly one of dir, tarball, git, configMap must be set'],
    apiserver: [
      'spec.context: Invalid value: "object": exactly one of dir, tarball, git, configMap must be set',
    ],
  },
  {
    name: 'contexts that would read the build pod’s own disk (CEL without a twin: allowed by strata build --spec)',
    kind: IMAGEBUILD,
    object: ib('pod-disk-dir', {
      context: { dir: '/var/run/secrets/kubernetes.io/serviceaccount' },
      output: { images: ['reg.example/a:1'] },
    }),
    local: [],
    apiserver: [
      'spec.context.dir: Invalid value: "string": a dir context is a directory of the machine running strata build',
    ],
  },
  {
    name: 'a tarball path (CEL without a twin)',
    kind: IMAGEBUILD,
    object: ib('pod-disk-tarball', {
      context: { tarball: '/var/run/strata/docker/config.json' },
      output: { images: ['reg.example/a:1'] },
    }),
    local: [],
    apiserver: [
      'spec.context.tarball: Invalid value: "string": in a cluster a tarball context must be an http(s) URL',
    ],
  },
  {
    name: 'a file:// repository (CEL without a twin)',
    kind: IMAGEBUILD,
    object: ib('pod-disk-git', {
      context: { git: { url: 'file:///var/run/strata/docker' } },
      output: { images: ['reg.example/a:1'] },
    }),
    local: [],
    apiserver: [
      'spec.context.git.url: Invalid value: "string": in a cluster a git context must be a remote repository',
    ],
  },
  {
    name: 'defaultUpstream naming no upstream, a shared ReadWriteOnce volume, ca on http (CEL)',
    kind: REGISTRYMIRROR,
    object: rm('bad-mirror', {
      upstreams: [
        { name: 'docker.io', url: 'https://registry-1.docker.io' },
        { name: 'quay.io', url: 'http://quay.io', ca: { configMap: { name: 'cas' } } },
      ],
      defaultUpstream: 'ghcr.io',
      replicas: 2,
      storage: { size: '10Gi' },
    }),
    local: [
      'spec.upstreams[1].ca: ca applies only to an https:// url',
      'spec: replicas > 1 with storage needs storage.accessMode ReadWriteMany (or no storage: an emptyDir per replica)',
      'spec.defaultUpstream: defaultUpstream must be the name of one of upstreams',
    ],
    apiserver: [
      'spec.defaultUpstream: Invalid value: "object": defaultUpstream must be the name of one of upstreams',
      'spec: Invalid value: "object": replicas > 1 with storage needs storage.accessMode ReadWriteMany',
      'spec.upstreams[1].ca: Invalid value: "object": ca applies only to an https:// url',
    ],
  },
  {
    name: 'nodePort on a ClusterIP Service (CEL), a bad tag TTL and a duplicate upstream (schema)',
    kind: REGISTRYMIRROR,
    object: rm('bad-service', {
      upstreams: [
        { name: 'docker.io', url: 'https://registry-1.docker.io' },
        { name: 'docker.io', url: 'https://mirror.gcr.io' },
      ],
      service: { nodePort: 30500 },
      tagTTL: '5 minutes',
    }),
    local: [
      'spec.upstreams[1]: duplicate entry with name "docker.io"',
      'spec.tagTTL: "5 minutes" is not valid (must match ^([0-9]+(h|m|s|ms))+$)',
      'spec.service.nodePort: nodePort needs type NodePort or LoadBalancer',
    ],
    apiserver: [
      'spec.upstreams[1]: Duplicate value: map[string]interface {}{"name":"docker.io"}',
      'spec.tagTTL: Invalid value: "5 minutes"',
    ],
  },
  {
    name: 'node paths with dot segments',
    kind: REGISTRYMIRROR,
    object: rm('bad-paths', {
      upstreams: [{ name: 'docker.io', url: 'https://registry-1.docker.io' }],
      runtimes: {
        containerd: { configPath: '/etc/containerd/../../root/.ssh' },
        docker: { daemonJsonPath: '/etc/docker/./daemon.json' },
      },
    }),
    local: [
      `spec.runtimes.containerd.configPath: "/etc/containerd/../../root/.ssh" is not valid (must match ${NODE_PATH_PATTERN})`,
      `spec.runtimes.docker.daemonJsonPath: "/etc/docker/./daemon.json" is not valid (must match ${NODE_PATH_PATTERN})`,
    ],
    apiserver: [
      'spec.runtimes.containerd.configPath: Invalid value: "/etc/containerd/../../root/.ssh"',
      'spec.runtimes.docker.daemonJsonPath: Invalid value: "/etc/docker/./daemon.json"',
    ],
  },
  {
    name: 'neither images nor workloads (CEL on spec)',
    kind: LAYERCACHE,
    object: lc('empty', { images: [] }),
    local: ['spec: set images, workloads or both'],
    apiserver: ['spec: Invalid value: "object": set images, workloads or both'],
  },
  {
    name: 'an In requirement without values (CEL in a shared piece), a bad platform, a bad budget (schema)',
    kind: LAYERCACHE,
    object: lc('bad-selector', {
      images: ['docker.io/library/nginx:1.27'],
      workloads: { selector: { matchExpressions: [{ key: 'tier', operator: 'In' }] } },
      platforms: ['amd64'],
      sizeBudget: 'lots',
    }),
    local: [
      'spec.workloads.selector.matchExpressions[0].values: values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist',
      'spec.platforms[0]: "amd64" is not valid (must match ^[a-z0-9_]+/[a-z0-9_]+(/[a-z0-9_.]+)?$)',
      'spec.sizeBudget: "lots" is not valid',
    ],
    apiserver: [
      'spec.workloads.selector.matchExpressions[0].values: Invalid value: "object": values must be non-empty for In and NotIn',
      'spec.platforms[0]: Invalid value: "amd64"',
      'spec.sizeBudget: Invalid value: "lots"',
    ],
  },
];
