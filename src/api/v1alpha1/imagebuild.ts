/**
 * The `ImageBuild` custom resource, `strata.dev/v1alpha1`: its OpenAPI v3 schema and its TypeScript types, both
 * derived from the one set of schema constants below (see ../schema.ts). Field names follow the Kubernetes API
 * conventions: camelCase, optional fields omitted rather than null, lists of named things keyed by `name`.
 */
import {
  array,
  boolean,
  enumOf,
  integer,
  intOrString,
  map,
  object,
  optional,
  string,
  type Field,
  type TypeOf,
} from '../schema.js';

/** The API group of Strata's custom resources. */
export const GROUP = 'strata.dev';
/** This API version. */
export const VERSION = 'v1alpha1';
/** `apiVersion` of an ImageBuild. */
export const API_VERSION = `${GROUP}/${VERSION}`;
/** `kind` of an ImageBuild. */
export const KIND = 'ImageBuild';
/** The resource's plural name (its URL path segment and part of the CRD name). */
export const PLURAL = 'imagebuilds';
/** The resource's singular name. */
export const SINGULAR = 'imagebuild';
/** Short names for kubectl. */
export const SHORT_NAMES = ['ib'] as const;

// --- patterns (anchored; the validator and the apiserver both use them as written) -----------------------------

const DOMAIN_PART = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const DOMAIN = `(?:${DOMAIN_PART}(?:\\.${DOMAIN_PART})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?`;
const PATH_PART = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const NAME = `(?:${DOMAIN}/)?${PATH_PART}(?:/${PATH_PART})*`;
const TAG = ':[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127}';
const DIGEST = '(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})';

/** A repository name with an optional tag and no digest (something one can push to). */
export const TAGGED_REFERENCE_PATTERN = `^${NAME}(?:${TAG})?$`;
/** A repository name without tag or digest. */
export const REPOSITORY_PATTERN = `^${NAME}$`;
/** A content digest. */
export const DIGEST_PATTERN = `^${DIGEST}$`;
/** `repository@digest` (a tag in between is allowed, as docker prints it). */
export const PINNED_REFERENCE_PATTERN = `^${NAME}(?:${TAG})?@${DIGEST}$`;
/** A Kubernetes object name (DNS-1123 subdomain). */
export const DNS_SUBDOMAIN_PATTERN = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$';
/** RFC 3339 date-time, as Kubernetes writes times. */
export const RFC3339_PATTERN =
  '[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})';
/** A resource quantity (`500m`, `2Gi`, `1e3`), as Kubernetes' `resource.Quantity` accepts it. */
export const QUANTITY_PATTERN =
  '^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))))?$';

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

const gitContext = object({
  url: string({
    description:
      'Repository URL: https://, http://, ssh://, git://, file:// or scp-like user@host:path. Credentials are never logged.',
    pattern: '^((https?|ssh|git|file)://[^\\s]+|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\\s]+)$',
    maxLength: 2048,
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
      description: 'Directory inside the repository used as the context root; it must stay inside the clone.',
      minLength: 1,
      maxLength: 4096,
    }),
  ),
});

const configMapContext = object({
  name: string({
    description: 'Name of the ConfigMap in the ImageBuild namespace.',
    pattern: DNS_SUBDOMAIN_PATTERN,
    maxLength: 253,
  }),
  key: optional(
    string({
      description: 'Key holding a tarball of the context; without it each key is a file at the context root.',
      pattern: '^[-._a-zA-Z0-9]+$',
      maxLength: 253,
    }),
  ),
});

const buildContext = object(
  {
    dir: optional(
      string({
        description: 'A local directory (for local runs); relative paths are relative to the YAML file.',
        minLength: 1,
        maxLength: 4096,
      }),
    ),
    tarball: optional(
      string({
        description:
          'A tar archive (plain, gzip or zstd): a local path (relative to the YAML file) or an http(s) URL.',
        minLength: 1,
        maxLength: 4096,
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

const secretReference = object(
  { name: string({ description: 'Name of the Secret.', pattern: DNS_SUBDOMAIN_PATTERN, maxLength: 253 }) },
  { description: 'A Secret of type kubernetes.io/dockerconfigjson with credentials for pushing.' },
);

const output = object({
  images: array(
    string({
      description: 'An image reference to tag (and push).',
      pattern: TAGGED_REFERENCE_PATTERN,
      maxLength: 512,
    }),
    {
      description:
        'References the built image gets; the first is the primary one. A missing tag means "latest".',
      minItems: 1,
      maxItems: 32,
      listType: 'set',
    },
  ),
  push: boolean({ description: 'Push the image to every reference after the build.', default: false }),
  pushSecret: optional(secretReference),
});

const cache = object({
  repository: optional(
    string({
      description: 'A repository where build-cache layers are exported and imported (no tag).',
      pattern: REPOSITORY_PATTERN,
      maxLength: 512,
    }),
  ),
  disabled: boolean({ description: 'Build without reading or writing any cache.', default: false }),
});

const toleration = object({
  key: optional(string({ description: 'The taint key; empty with operator Exists matches all taints.' })),
  operator: optional(enumOf(['Exists', 'Equal'] as const, { description: 'Defaults to Equal.' })),
  value: optional(string({ description: 'The taint value (with operator Equal).' })),
  effect: optional(
    enumOf(['NoSchedule', 'PreferNoSchedule', 'NoExecute'] as const, {
      description: 'The taint effect to match; empty matches all effects.',
    }),
  ),
  tolerationSeconds: optional(
    integer({ description: 'How long a NoExecute taint is tolerated before eviction.' }),
  ),
});

const quantity = string({ description: 'A resource quantity (e.g. 500m, 2Gi).', pattern: QUANTITY_PATTERN });

const resources = object({
  requests: optional(map(quantity, { description: 'Minimum resources (cpu, memory, ephemeral-storage).' })),
  limits: optional(map(quantity, { description: 'Maximum resources (cpu, memory, ephemeral-storage).' })),
});

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
      pattern: '^[a-z0-9_]+/[a-z0-9_]+(/[a-z0-9_.]+)?$',
      maxLength: 64,
    }),
  ),
  output,
  cache: optional(cache),
  network: enumOf(['host', 'none'] as const, {
    description: "Network of RUN steps: host (the build pod's network, like docker build) or none.",
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
  nodeSelector: optional(
    map(string({ maxLength: 63 }), { description: 'Node labels the build pod must match.' }),
  ),
  tolerations: optional(
    array(toleration, { description: 'Taints the build pod tolerates.', maxItems: 64, listType: 'atomic' }),
  ),
  resources: optional(resources),
});

// --- status -------------------------------------------------------------------------------------------------------

/** metav1.Condition, with the validation Kubernetes' own CRDs use. */
const condition = object({
  type: string({
    description: 'Type of condition in CamelCase, e.g. Succeeded or Ready.',
    pattern:
      '^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$',
    maxLength: 316,
  }),
  status: enumOf(['True', 'False', 'Unknown'] as const, { description: 'Status of the condition.' }),
  observedGeneration: optional(
    integer({ description: 'The .metadata.generation the condition was set for.', minimum: 0 }),
  ),
  lastTransitionTime: string({
    description: 'When the condition last changed status.',
    format: 'date-time',
  }),
  reason: string({
    description: 'A CamelCase reason for the last transition.',
    pattern: '^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$',
    minLength: 1,
    maxLength: 1024,
  }),
  message: string({ description: 'A human-readable message about the transition.', maxLength: 32768 }),
});

/** Schema of `status`. */
export const imageBuildStatusField = object({
  phase: optional(
    enumOf(['Pending', 'Running', 'Succeeded', 'Failed'] as const, { description: 'Where the build is.' }),
  ),
  digest: optional(string({ description: 'Digest of the built manifest.', pattern: DIGEST_PATTERN })),
  image: optional(
    string({
      description: 'The primary reference pinned to the digest (repo@digest).',
      pattern: PINNED_REFERENCE_PATTERN,
    }),
  ),
  conditions: optional(
    array(condition, {
      description: 'Succeeded and Ready, with reasons.',
      maxItems: 16,
      listType: 'map',
      mapKeys: ['type'],
    }),
  ),
  startedAt: optional(string({ description: 'When the build started.', format: 'date-time' })),
  finishedAt: optional(string({ description: 'When the build finished.', format: 'date-time' })),
  cacheHits: optional(integer({ description: 'Steps answered from the build cache.', minimum: 0 })),
  steps: optional(integer({ description: 'Steps the build ran or took from the cache.', minimum: 0 })),
  observedGeneration: optional(
    integer({ description: 'The .metadata.generation this status describes.', minimum: 0 }),
  ),
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
/** A metav1.Condition. */
export type Condition = TypeOf<typeof condition>;
/** `status.phase`. */
export type ImageBuildPhase = NonNullable<ImageBuildStatus['phase']>;

/** The ObjectMeta fields an ImageBuild file may carry. */
export interface ObjectMeta {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  generation?: number;
  uid?: string;
  resourceVersion?: string;
}

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
