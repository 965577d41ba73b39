/**
 * The `LayerCache` custom resource, `strata.dev/v1alpha1`: images whose layers the per-node agents keep in the
 * selected nodes' stores ahead of need (warming), within a size budget, served to the node's runtime as its first
 * mirror. Images are named in the spec and, optionally, taken from the pod templates of selected workloads.
 * Schema and types from one source.
 */
import {
  array,
  boolean,
  celRule,
  enumOf,
  integer,
  object,
  optional,
  string,
  type Field,
  type TypeOf,
} from '../schema.js';
import {
  conditions,
  DIGEST_PATTERN,
  duration,
  IMAGE_REFERENCE_PATTERN,
  labelSelector,
  localObjectRef,
  nodeSelector,
  observedGeneration,
  PLATFORM_PATTERN,
  quantity,
  tolerations,
  type ObjectMeta,
} from './common.js';
import { kindNames, type API_VERSION } from './common.js';

/** A LayerCache's names (see {@link kindNames}); kubectl's short name is `lc`. */
export const LAYERCACHE_NAMES = kindNames('LayerCache', ['lc']);
/** `kind` of a LayerCache, its plural and singular resource names, and kubectl's short names. */
export const {
  kind: LAYERCACHE_KIND,
  plural: LAYERCACHE_PLURAL,
  singular: LAYERCACHE_SINGULAR,
  shortNames: LAYERCACHE_SHORT_NAMES,
} = LAYERCACHE_NAMES;

/** Workload kinds whose pod templates can be warmed. */
export const WORKLOAD_KINDS = ['Deployment', 'StatefulSet', 'DaemonSet'] as const;

const platform = string({
  description: 'A platform os/arch[/variant], e.g. linux/amd64 or linux/arm/v7.',
  pattern: PLATFORM_PATTERN,
  maxLength: 64,
});

const workloads = object(
  {
    selector: labelSelector(
      'Labels of the Deployments, StatefulSets and DaemonSets (in this namespace) whose pod templates are ' +
        'warmed; {} selects all of them.',
    ),
    kinds: array(enumOf(WORKLOAD_KINDS, { description: 'A workload kind.' }), {
      description: 'Which workload kinds are read.',
      minItems: 1,
      maxItems: 3,
      listType: 'set',
      default: [...WORKLOAD_KINDS],
    }),
  },
  {
    description:
      "Warm the images of selected workloads' pod templates (containers and init containers) on the selected " +
      'nodes as soon as a template changes, before the rollout schedules its pods.',
  },
);

/** Schema of `spec`. */
export const layerCacheSpecField = object(
  {
    images: optional(
      array(
        string({
          description: 'An image by tag (re-resolved every refreshInterval) or by digest.',
          pattern: IMAGE_REFERENCE_PATTERN,
          maxLength: 512,
        }),
        {
          description: 'Images whose layers the selected nodes keep, e.g. docker.io/library/nginx:1.27.',
          maxItems: 256,
          listType: 'set',
        },
      ),
    ),
    workloads: optional(workloads),
    platforms: optional(
      array(platform, {
        description: "Platforms to warm of a multi-platform image (each node's own platform when absent).",
        minItems: 1,
        maxItems: 16,
        listType: 'set',
      }),
    ),
    pullSecrets: optional(
      array(
        localObjectRef('Secret', 'A kubernetes.io/dockerconfigjson Secret with credentials for pulling.'),
        {
          description: 'Credentials for private images, tried in order.',
          maxItems: 16,
          listType: 'map',
          mapKeys: ['name'],
        },
      ),
    ),
    nodeSelector: optional(nodeSelector('Labels of the nodes that warm the images (all nodes when absent).')),
    tolerations: optional(
      tolerations(
        'Taints the cache tolerates: a node with a NoSchedule or NoExecute taint is warmed only when tolerated, ' +
          'as a DaemonSet pod would be scheduled.',
      ),
    ),
    sizeBudget: optional(
      quantity(
        "The most this cache's content may take on a node (e.g. 20Gi); beyond it images are not warmed, " +
          'and unpinned content is evicted least recently used first.',
      ),
    ),
    pinned: boolean({
      description: "Never evict this cache's content to make room (pinned content still counts in budgets).",
      default: false,
    }),
    refreshInterval: duration('How often tags are resolved to digests again.', '1h'),
  },
  {
    rules: [
      celRule<{ images?: string[]; workloads?: unknown }>(
        '(has(self.images) && size(self.images) > 0) || has(self.workloads)',
        'set images, workloads or both',
        { local: (s) => (s.images?.length ?? 0) > 0 || s.workloads !== undefined },
      ),
    ],
  },
);

const failure = object({
  node: string({ description: 'The node.', maxLength: 253 }),
  platform: optional(platform),
  reason: string({
    description: 'A CamelCase reason: PullFailed, BudgetExceeded, Unauthorized, PlatformNotFound, …',
    pattern: '^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$',
    maxLength: 128,
  }),
  message: optional(string({ description: 'What went wrong.', maxLength: 1024 })),
});

const platformStatus = object({
  platform,
  digest: optional(
    string({ description: "The platform's manifest digest.", pattern: DIGEST_PATTERN, maxLength: 139 }),
  ),
  nodesReady: integer({ description: 'Nodes holding every layer.', minimum: 0, format: 'int32' }),
  nodesTotal: integer({ description: 'Nodes that should.', minimum: 0, format: 'int32' }),
  bytes: optional(integer({ description: 'Compressed size of the layers (on each node).', minimum: 0 })),
});

const imageStatus = object({
  image: string({ description: 'The image as the spec (or a workload) names it.', maxLength: 512 }),
  digest: optional(
    string({
      description: 'What the reference resolved to (the index or manifest digest).',
      pattern: DIGEST_PATTERN,
      maxLength: 139,
    }),
  ),
  resolvedAt: optional(string({ description: 'When the tag was last resolved.', format: 'date-time' })),
  platforms: optional(
    array(platformStatus, {
      description: 'Per platform: nodes ready and total, and size.',
      maxItems: 16,
      listType: 'map',
      mapKeys: ['platform'],
    }),
  ),
  failures: optional(
    array(failure, {
      description:
        'Nodes that could not warm the image, with reasons (the first 10; failedNodes counts all).',
      maxItems: 10,
      listType: 'atomic',
    }),
  ),
  failedNodes: optional(
    integer({ description: 'Nodes that could not warm the image.', minimum: 0, format: 'int32' }),
  ),
});

/** Schema of `status`. */
export const layerCacheStatusField = object({
  images: optional(
    array(imageStatus, {
      description: 'Per image: resolved digest, per-platform node counts and bytes, failures.',
      maxItems: 1024,
      listType: 'map',
      mapKeys: ['image'],
    }),
  ),
  nodesReady: optional(
    integer({ description: 'Selected nodes holding every image.', minimum: 0, format: 'int32' }),
  ),
  nodesTotal: optional(integer({ description: 'Selected nodes.', minimum: 0, format: 'int32' })),
  conditions: optional(
    conditions(
      'Ready (every selected node holds every image), Progressing (warming or resolving) and Failed (some ' +
        'node cannot warm some image: see images[].failures).',
    ),
  ),
  observedGeneration: optional(observedGeneration),
});

/** `spec` of a LayerCache, after defaults. */
export type LayerCacheSpec = TypeOf<typeof layerCacheSpecField>;
/** `status` of a LayerCache. */
export type LayerCacheStatus = TypeOf<typeof layerCacheStatusField>;
/** One of `status.images`. */
export type LayerCacheImageStatus = TypeOf<typeof imageStatus>;

/** A LayerCache object. */
export interface LayerCache {
  apiVersion: typeof API_VERSION;
  kind: typeof LAYERCACHE_KIND;
  metadata: ObjectMeta;
  spec: LayerCacheSpec;
  status?: LayerCacheStatus;
}

/** The field constants the CRD and the validator read. */
export const layerCacheFields: { spec: Field<LayerCacheSpec>; status: Field<LayerCacheStatus> } = {
  spec: layerCacheSpecField,
  status: layerCacheStatusField,
};
