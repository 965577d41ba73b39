/**
 * The `ImageBuild` custom resource, `strata.dev/v1alpha1`: its OpenAPI v3 schema and its TypeScript types, both
 * derived from the one set of schema constants below (see ../schema.ts and ./common.ts). Field names follow the Kubernetes API
 * conventions: camelCase, optional fields omitted rather than null, lists of named things keyed by `name`.
 */
import {
  array,
  boolean,
  celRule,
  enumOf,
  freeform,
  integer,
  intOrString,
  map,
  object,
  optional,
  string,
  type Field,
  type TypeOf,
  type ValidationRule,
} from '../schema.js';
import {
  API_VERSION,
  conditions,
  DIGEST_PATTERN,
  DNS_SUBDOMAIN_PATTERN,
  localObjectRef,
  nodeSelector,
  observedGeneration,
  PINNED_REFERENCE_PATTERN,
  PLATFORM_PATTERN,
  REPOSITORY_PATTERN,
  resources,
  RFC3339_PATTERN,
  TAGGED_REFERENCE_PATTERN,
  tolerations,
  type ObjectMeta,
} from './common.js';
import { kindNames } from './common.js';

export {
  API_VERSION,
  DIGEST_PATTERN,
  DNS_SUBDOMAIN_PATTERN,
  GROUP,
  PINNED_REFERENCE_PATTERN,
  QUANTITY_PATTERN,
  REPOSITORY_PATTERN,
  RFC3339_PATTERN,
  TAGGED_REFERENCE_PATTERN,
  VERSION,
  type Condition,
  type ObjectMeta,
} from './common.js';

/** An ImageBuild's names (see {@link kindNames}); kubectl's short name is `ib`. */
export const IMAGEBUILD_NAMES = kindNames('ImageBuild', ['ib']);
/** `kind` of an ImageBuild, its plural and singular resource names, and kubectl's short names. */
export const { kind: KIND, plural: PLURAL, singular: SINGULAR, shortNames: SHORT_NAMES } = IMAGEBUILD_NAMES;
/** The annotation whose every new value rebuilds the same generation. */
export const REBUILD_ANNOTATION = 'strata.dev/rebuild';

/** A reference names a registry host when its first component has a dot or a port, or is localhost. */
export const REGISTRY_HOST_PATTERN = '^(localhost|\\[[a-fA-F0-9:]+\\]|[^/]*[.:][^/]*)(:[0-9]+)?/';

// --- spec ---------------------------------------------------------------------------------------------------------

const dockerfile = object(
  {
    path: optional(
      string({
        description: 'Path of the Dockerfile relative to the context root; it must stay inside the context.',
        minLength: 1,
        maxLength: 4096,
      }),
    ),
    inline: optional(
      string({ description: 'The Dockerfile text itself.', minLength: 1, maxLength: 1048576 }),
    ),
  },
  {
    description: 'Where the Dockerfile is: exactly one of path or inline. Defaults to path "Dockerfile".',
    exactlyOneOf: ['path', 'inline'],
    default: { path: 'Dockerfile' },
  },
);

/**
 * Contexts that name the disk of whoever runs the build. Locally that is the user's own machine; in a cluster it is
 * the build pod's, where a path reaches the pod's ServiceAccount token and mounted credentials — so the CRD refuses
 * them (CEL rules without a local twin: `strata build --spec FILE` allows them) and a build pod refuses them again
 * ({@link clusterContextIssues}) in case the CRD in the cluster predates the rules.
 */
const CLUSTER_ONLY = {
  dir: {
    cel: 'false',
    message:
      'a dir context is a directory of the machine running strata build: in a cluster use git, a tarball URL or a configMap',
  },
  tarball: {
    cel: "self.startsWith('https://') || self.startsWith('http://')",
    message: 'in a cluster a tarball context must be an http(s) URL: a path would be read from the build pod',
  },
  gitUrl: {
    cel: "!self.startsWith('file://')",
    message:
      'in a cluster a git context must be a remote repository: file:// would be read from the build pod',
  },
} as const;

/** The cluster-only rule of a context field (kept on the field itself: one fieldPath rule per node, see structural.ts). */
function clusterOnly(rule: keyof typeof CLUSTER_ONLY): { rules: ValidationRule[] } {
  return { rules: [celRule(CLUSTER_ONLY[rule].cel, CLUSTER_ONLY[rule].message)] };
}

const gitContext = object(
  {
    url: string({
      description:
        'Repository URL: https://, http://, ssh://, git://, file:// or scp-like user@host:path. Credentials are never logged.',
      pattern: '^((https?|ssh|git|file)://[^\\s]+|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\\s]+)$',
      maxLength: 2048,
      ...clusterOnly('gitUrl'),
    }),
    ref: optional(
      string({
        description:
          'Branch, tag or full commit SHA to check out. Empty means the remote default branch. A full SHA is fetched by commit.',
        pattern: '^[A-Za-z0-9_][A-Za-z0-9._/+-]*$',
        maxLength: 255,
      }),
    ),
    subPath: optional(
      string({
        description:
          'Directory inside the repository used as the context root; it must stay inside the clone.',
        minLength: 1,
        maxLength: 4096,
      }),
    ),
  },
  { description: 'A git repository: cloned (shallow where the ref allows) in the build pod.' },
);

const configMapContext = object(
  {
    name: string({
      description: 'Name of the ConfigMap in the ImageBuild namespace.',
      pattern: DNS_SUBDOMAIN_PATTERN,
      maxLength: 253,
    }),
    key: optional(
      string({
        description:
          'Key holding a tarball of the context; without it each key is a file at the context root.',
        pattern: '^[-._a-zA-Z0-9]+$',
        maxLength: 253,
      }),
    ),
  },
  {
    description:
      'A ConfigMap in the namespace holding the context: files as keys, or a tarball under one key.',
  },
);

/**
 * What is wrong with `spec.context` for a build in a cluster (a build pod's `--spec env:`), as the CRD's CEL rules
 * say it: `context.dir`, a local `tarball` path and a `file://` git URL are refused. Empty when it may run there.
 */
export function clusterContextIssues(context: BuildContextSpec): string[] {
  const c = context as { dir?: string; tarball?: string; git?: { url: string } };
  const issues: string[] = [];
  if (c.dir !== undefined) issues.push(`spec.context.dir: ${CLUSTER_ONLY.dir.message}`);
  if (c.tarball !== undefined && !/^https?:\/\//.test(c.tarball))
    issues.push(`spec.context.tarball: ${CLUSTER_ONLY.tarball.message}`);
  if (c.git !== undefined && c.git.url.startsWith('file://'))
    issues.push(`spec.context.git.url: ${CLUSTER_ONLY.gitUrl.message}`);
  return issues;
}

const buildContext = object(
  {
    dir: optional(
      string({
        description:
          'A local directory, for `strata build --spec` only (a cluster refuses it); relative paths are relative to the YAML file.',
        minLength: 1,
        maxLength: 4096,
        ...clusterOnly('dir'),
      }),
    ),
    tarball: optional(
      string({
        description:
          'A tar archive (plain, gzip or zstd): an http(s) URL, or for `strata build --spec` only a local path (relative to the YAML file).',
        minLength: 1,
        maxLength: 4096,
        ...clusterOnly('tarball'),
      }),
    ),
    git: optional(gitContext),
    configMap: optional(configMapContext),
  },
  {
    description: 'The build context: exactly one of dir, tarball, git or configMap.',
    exactlyOneOf: ['dir', 'tarball', 'git', 'configMap'],
  },
);

const buildArg = object({
  name: string({ description: 'The ARG name.', pattern: '^[A-Za-z_][A-Za-z0-9_]*$', maxLength: 256 }),
  value: string({ description: 'The value (may be empty).', maxLength: 65536 }),
});

const secretReference = localObjectRef(
  'Secret',
  'A Secret of type kubernetes.io/dockerconfigjson with credentials for pushing (mounted in the build pod as a docker config).',
);

const hostRegex = new RegExp(REGISTRY_HOST_PATTERN);

const output = object(
  {
    images: array(
      string({
        description: 'An image reference to tag (and push).',
        pattern: TAGGED_REFERENCE_PATTERN,
        maxLength: 512,
      }),
      {
        description:
          'References the built image gets; the first is the primary one (its digest goes into the status). ' +
          'A missing tag means "latest".',
        minItems: 1,
        maxItems: 32,
        listType: 'set',
      },
    ),
    push: boolean({
      description:
        'Push the image to every reference after the build. Every reference must then name its registry host ' +
        '(registry.example.com/app, localhost:5000/app): nothing is pushed to Docker Hub by omission.',
      default: false,
    }),
    pushSecret: optional(secretReference),
  },
  {
    description: 'The references the built image gets, and whether it is pushed.',
    rules: [
      celRule<{ push: boolean; images: string[] }>(
        `!self.push || self.images.all(i, i.matches('${REGISTRY_HOST_PATTERN.replaceAll('\\', '\\\\')}'))`,
        'with push: true every image must name a registry host (e.g. registry.example.com/app:v1)',
        { fieldPath: '.images', local: (s) => !s.push || s.images.every((i) => hostRegex.test(i)) },
      ),
      celRule<{ push: boolean; pushSecret?: unknown }>(
        '!has(self.pushSecret) || self.push',
        'pushSecret is only used with push: true',
        { local: (s) => s.pushSecret === undefined || s.push },
      ),
    ],
  },
);

const cache = object(
  {
    repository: optional(
      string({
        description: 'A repository where build-cache layers are exported and imported (no tag).',
        pattern: REPOSITORY_PATTERN,
        maxLength: 512,
      }),
    ),
    disabled: boolean({ description: 'Build without reading or writing any cache.', default: false }),
  },
  { description: 'The build cache: the node store always; a registry repository too when set.' },
);

// A full schema of core/v1 Affinity (node, pod and anti-affinity terms, label selectors, topology keys) would be
// most of a pod spec's schema again; its three parts are kept as written and the build pod's apiserver
// validation checks them when the Job is created (a bad one is reported Failed with the apiserver's message).
const affinity = object(
  {
    nodeAffinity: optional(
      freeform({
        description: 'core/v1 NodeAffinity: node selector terms the build pod requires or prefers.',
      }),
    ),
    podAffinity: optional(
      freeform({ description: 'core/v1 PodAffinity: pods the build pod wants to run near.' }),
    ),
    podAntiAffinity: optional(
      freeform({ description: 'core/v1 PodAntiAffinity: pods the build pod wants to run away from.' }),
    ),
  },
  {
    description:
      "The build pod's affinity (core/v1 Affinity). Its terms are not checked by this schema but by the " +
      'apiserver when the build Job is created.',
  },
);

/** Schema of `spec`. */
export const imageBuildSpecField = object({
  dockerfile,
  context: buildContext,
  buildArgs: optional(
    array(buildArg, {
      description: 'Values for ARG instructions, by name.',
      maxItems: 256,
      listType: 'map',
      mapKeys: ['name'],
    }),
  ),
  target: optional(
    string({
      description: 'The stage to build; defaults to the last stage.',
      pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*$',
      maxLength: 128,
    }),
  ),
  platform: optional(
    string({
      description: "The target platform os/arch[/variant], e.g. linux/amd64; defaults to the node's.",
      pattern: PLATFORM_PATTERN,
      maxLength: 64,
    }),
  ),
  output,
  cache: optional(cache),
  network: enumOf(['host', 'none'] as const, {
    description:
      "Network of RUN steps: host (the build pod's network, like docker build) or none. A Dockerfile's " +
      'RUN --network cannot widen it (RUN --network=host under none fails the build). It applies to RUN ' +
      "steps only: the context, FROM pulls and ADD URLs always use the build pod's network.",
    default: 'host',
  }),
  timestamp: optional(
    intOrString({
      description:
        'SOURCE_DATE_EPOCH for reproducible images: integer seconds since the epoch, or an RFC 3339 date-time. ' +
        'Sets the created time of the config and history and clamps file mtimes of new layers.',
      pattern: `^([0-9]+|${RFC3339_PATTERN})$`,
      minimum: 0,
    }),
  ),
  labels: optional(
    map(string({ maxLength: 65536 }), {
      description: 'Image labels (LABEL), added to the config.',
      maxProperties: 256,
    }),
  ),
  nodeSelector: optional(nodeSelector('Node labels the build pod must match.')),
  tolerations: optional(tolerations('Taints the build pod tolerates.')),
  affinity: optional(affinity),
  resources: optional(resources('CPU, memory and ephemeral-storage for the build pod.')),
  serviceAccountName: optional(
    string({
      description:
        "The ServiceAccount the build pod runs as (the namespace's default one when absent). It needs no API " +
        'access: the pod reads its context and credentials from mounted files.',
      pattern: DNS_SUBDOMAIN_PATTERN,
      maxLength: 253,
    }),
  ),
  activeDeadlineSeconds: optional(
    integer({
      description:
        "The longest a build may run, in seconds, before it is stopped and reported Failed (the Job's " +
        'activeDeadlineSeconds). No limit when absent.',
      minimum: 1,
      maximum: 604800,
    }),
  ),
  backoffLimit: integer({
    description:
      "Retries of a failed build pod (the Job's backoffLimit). Default 0: a failing build is reported Failed at " +
      `once, and built again on a spec change or a new ${REBUILD_ANNOTATION} annotation value.`,
    minimum: 0,
    maximum: 10,
    default: 0,
  }),
  successfulJobsHistoryLimit: integer({
    description:
      'How many finished successful build Jobs (and their pods and logs) are kept, as in a CronJob.',
    minimum: 0,
    maximum: 10,
    default: 3,
  }),
  failedJobsHistoryLimit: integer({
    description: 'How many finished failed build Jobs (and their pods and logs) are kept, as in a CronJob.',
    minimum: 0,
    maximum: 10,
    default: 1,
  }),
});

// --- status -------------------------------------------------------------------------------------------------------

/** Schema of `status`. */
export const imageBuildStatusField = object({
  phase: optional(
    enumOf(['Pending', 'Running', 'Succeeded', 'Failed'] as const, {
      description: 'Where the build is, in one word (the conditions say more).',
    }),
  ),
  digest: optional(string({ description: 'Digest of the built manifest.', pattern: DIGEST_PATTERN })),
  image: optional(
    string({
      description: 'The primary reference pinned to the digest (repo@digest).',
      pattern: PINNED_REFERENCE_PATTERN,
      maxLength: 1024,
    }),
  ),
  conditions: optional(
    conditions(
      'Ready (the image of the current generation exists), Progressing (a build is running) and Failed (the ' +
        'last build of this generation failed), each with observedGeneration.',
    ),
  ),
  jobName: optional(
    string({
      description: 'The Job running (or that ran) the build of this generation.',
      pattern: DNS_SUBDOMAIN_PATTERN,
      maxLength: 63,
    }),
  ),
  observedRebuild: optional(
    string({
      description: `The ${REBUILD_ANNOTATION} annotation value the last build answered.`,
      maxLength: 256,
    }),
  ),
  startedAt: optional(string({ description: 'When the build started.', format: 'date-time' })),
  finishedAt: optional(string({ description: 'When the build finished.', format: 'date-time' })),
  cacheHits: optional(integer({ description: 'Steps answered from the build cache.', minimum: 0 })),
  steps: optional(integer({ description: 'Steps the build ran or took from the cache.', minimum: 0 })),
  observedGeneration: optional(observedGeneration),
});

// --- types --------------------------------------------------------------------------------------------------------

/** `spec` of an ImageBuild, after defaults. */
export type ImageBuildSpec = TypeOf<typeof imageBuildSpecField>;
/** `status` of an ImageBuild. */
export type ImageBuildStatus = TypeOf<typeof imageBuildStatusField>;
/** One of `spec.context`'s kinds. */
export type BuildContextSpec = ImageBuildSpec['context'];
/** `spec.context.git`. */
export type GitContextSpec = TypeOf<typeof gitContext>;
/** `spec.dockerfile`. */
export type DockerfileSpec = ImageBuildSpec['dockerfile'];
/** `status.phase`. */
export type ImageBuildPhase = NonNullable<ImageBuildStatus['phase']>;

/** An ImageBuild object. */
export interface ImageBuild {
  apiVersion: typeof API_VERSION;
  kind: typeof KIND;
  metadata: ObjectMeta;
  spec: ImageBuildSpec;
  status?: ImageBuildStatus;
}

/** The one place the field constants are gathered, so the CRD and the validator read the same objects. */
export const imageBuildFields: { spec: Field<ImageBuildSpec>; status: Field<ImageBuildStatus> } = {
  spec: imageBuildSpecField,
  status: imageBuildStatusField,
};

/**
 * `spec.timestamp` as SOURCE_DATE_EPOCH seconds: an integer (or a string of digits) as is, an RFC 3339 date-time
 * converted (sub-seconds dropped). Undefined when absent; throws RangeError for an impossible date.
 */
export function sourceDateEpoch(timestamp: number | string | undefined): number | undefined {
  if (timestamp === undefined) return undefined;
  if (typeof timestamp === 'number') return timestamp;
  if (/^[0-9]+$/.test(timestamp)) return Number(timestamp);
  const ms = Date.parse(timestamp);
  // Date.parse rolls over impossible dates on some inputs (2023-02-30): check the fields survive the round trip.
  const m = /^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})/.exec(timestamp);
  if (
    Number.isNaN(ms) ||
    !m ||
    Number(m[2]) > 12 ||
    Number(m[3]) > 31 ||
    Number(m[4]) > 23 ||
    Number(m[5]) > 59
  ) {
    throw new RangeError(`${JSON.stringify(timestamp)} is not a valid RFC 3339 date-time`);
  }
  const day = new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])));
  if (day.getUTCDate() !== Number(m[3]))
    throw new RangeError(`${JSON.stringify(timestamp)} names a day that does not exist`);
  return Math.floor(ms / 1000);
}
