/**
 * The `StrataNode` custom resource, `strata.dev/v1alpha1`, cluster-scoped, one per node and named after it: the
 * hand-off between the controller and that node's agent (ADR 0028). The controller writes `spec` — what the node
 * should do for every RegistryMirror and LayerCache that selects it, with tags already resolved to digests — and the
 * agent writes `status` — what it did. An agent watches only its own object (field selector `metadata.name`), so a
 * 1,000-node cluster has 1,000 small watches of one object each and no two writers of one status; the controller
 * aggregates the statuses into the RegistryMirror and LayerCache objects. Its ownerReference is the Node: a node that
 * leaves takes its StrataNode with it (the garbage collector). Users do not write these objects.
 */
import {
  array,
  boolean,
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
  DNS_SUBDOMAIN_PATTERN,
  IMAGE_REFERENCE_PATTERN,
  kindNames,
  NODE_PATH_PATTERN,
  observedGeneration,
  PLATFORM_PATTERN,
  quantity,
  type API_VERSION,
  type ObjectMeta,
} from './common.js';
import { UPSTREAM_NAME_PATTERN } from './registrymirror.js';

/** A StrataNode's names (see {@link kindNames}); kubectl's short name is `snode`. */
export const STRATANODE_NAMES = kindNames('StrataNode', ['snode']);
/** `kind` of a StrataNode, its plural and singular resource names, and kubectl's short names. */
export const {
  kind: STRATANODE_KIND,
  plural: STRATANODE_PLURAL,
  singular: STRATANODE_SINGULAR,
  shortNames: STRATANODE_SHORT_NAMES,
} = STRATANODE_NAMES;

/** `namespace/name` of the RegistryMirror or LayerCache an entry carries out. */
export const OBJECT_KEY_PATTERN = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$';

const objectKey = string({
  description: 'namespace/name of the RegistryMirror or LayerCache this entry carries out.',
  pattern: OBJECT_KEY_PATTERN,
  maxLength: 317,
});
const generation = integer({
  description: "The source object's metadata.generation this entry was computed from.",
  minimum: 0,
});
const platform = string({
  description: 'A platform os/arch[/variant].',
  pattern: PLATFORM_PATTERN,
  maxLength: 64,
});
const secretNames = array(
  string({ description: 'A Secret name.', pattern: DNS_SUBDOMAIN_PATTERN, maxLength: 253 }),
  {
    description: "kubernetes.io/dockerconfigjson Secrets in the source object's namespace, tried in order.",
    maxItems: 16,
    listType: 'atomic',
  },
);
const reason = string({
  description: 'A CamelCase reason (PullFailed, BudgetExceeded, Unauthorized, PlatformNotFound, …).',
  pattern: '^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$',
  maxLength: 128,
});
const message = string({ description: 'What went wrong, for a person.', maxLength: 1024 });

const mirrorRegistry = object(
  {
    name: string({
      description: 'The registry host the node pulls from (docker.io, quay.io, host:5000).',
      pattern: UPSTREAM_NAME_PATTERN,
      maxLength: 253,
    }),
    server: optional(
      string({
        description:
          "The registry's own URL, tried after the mirrors (containerd's default for the host when absent).",
        pattern: '^https?://[^\\s/?#]+(/[^\\s?#]*)?$',
        maxLength: 2048,
      }),
    ),
  },
  { description: 'A registry whose pulls go through the mirror.' },
);

const mirrorEntry = object({
  name: objectKey,
  generation,
  endpoint: string({
    description: "The cluster mirror's address as the node reaches it (http://<service IP>:<port>).",
    pattern: '^https?://[^\\s/?#]+$',
    maxLength: 512,
  }),
  registries: array(mirrorRegistry, {
    description: 'The registries pointed at the mirror.',
    minItems: 1,
    maxItems: 32,
    listType: 'map',
    mapKeys: ['name'],
  }),
  credentialsSecret: optional(
    string({
      description:
        "A dockerconfigjson Secret (in the RegistryMirror's namespace) with the credentials the node gives the mirror.",
      pattern: DNS_SUBDOMAIN_PATTERN,
      maxLength: 253,
    }),
  ),
  containerd: optional(
    object(
      {
        configPath: string({
          description: "containerd's registry config_path on the node.",
          pattern: NODE_PATH_PATTERN,
          maxLength: 1024,
        }),
      },
      { description: 'Write hosts.toml files here (absent: containerd is not configured).' },
    ),
  ),
  docker: optional(
    object(
      {
        daemonJsonPath: string({
          description: "Docker's daemon.json.",
          pattern: NODE_PATH_PATTERN,
          maxLength: 1024,
        }),
      },
      {
        description:
          'Add the mirror to registry-mirrors in this daemon.json (absent: docker is not configured).',
      },
    ),
  ),
});

const cacheImage = object({
  image: string({
    description: 'The image as the LayerCache (or a workload) names it.',
    pattern: IMAGE_REFERENCE_PATTERN,
    maxLength: 512,
  }),
  digest: string({
    description:
      'What the controller resolved it to (the index or manifest digest); the agent pulls by digest.',
    pattern: DIGEST_PATTERN,
    maxLength: 139,
  }),
});

const cacheEntry = object({
  name: objectKey,
  generation,
  images: array(cacheImage, {
    description: 'Images to keep on the node, by digest.',
    maxItems: 1024,
    listType: 'map',
    mapKeys: ['image'],
  }),
  platforms: optional(
    array(platform, {
      description: "Platforms to warm (the node's own when absent).",
      maxItems: 16,
      listType: 'set',
    }),
  ),
  pullSecrets: optional(secretNames),
  sizeBudget: optional(quantity("The most this cache's content may take on the node.")),
  pinned: boolean({ description: "Never evict this cache's content.", default: false }),
});

/** Schema of `spec` (written by the controller only). */
export const strataNodeSpecField = object(
  {
    mirrors: optional(
      array(mirrorEntry, {
        description: 'RegistryMirrors that select the node: the runtime configuration the agent writes.',
        maxItems: 64,
        listType: 'map',
        mapKeys: ['name'],
      }),
    ),
    caches: optional(
      array(cacheEntry, {
        description: 'LayerCaches that select the node: the images the agent keeps in the node store.',
        maxItems: 256,
        listType: 'map',
        mapKeys: ['name'],
      }),
    ),
  },
  { description: "What the node's agent should do, computed by the controller." },
);

const mirrorState = object({
  name: objectKey,
  generation,
  configured: boolean({ description: "The node's runtime configuration points at the mirror." }),
  reason: optional(reason),
  message: optional(message),
});

const platformState = object({
  platform,
  digest: optional(
    string({ description: "The platform's manifest digest.", pattern: DIGEST_PATTERN, maxLength: 139 }),
  ),
  state: enumOf(['Pending', 'Pulling', 'Ready', 'Failed'] as const, {
    description: 'Ready: every layer is in the node store.',
  }),
  bytes: optional(integer({ description: 'Compressed size of the layers.', minimum: 0 })),
  reason: optional(reason),
  message: optional(message),
});

const imageState = object({
  image: string({ description: 'The image as the cache names it.', maxLength: 512 }),
  digest: string({ description: 'The digest the agent worked on.', pattern: DIGEST_PATTERN, maxLength: 139 }),
  platforms: array(platformState, {
    description: 'Per platform.',
    maxItems: 16,
    listType: 'map',
    mapKeys: ['platform'],
  }),
});

const cacheState = object({
  name: objectKey,
  generation,
  bytes: optional(integer({ description: "Bytes of this cache's content on the node.", minimum: 0 })),
  images: optional(
    array(imageState, { description: 'Per image.', maxItems: 1024, listType: 'map', mapKeys: ['image'] }),
  ),
});

/** Schema of `status` (written by the node's agent only). */
export const strataNodeStatusField = object({
  observedGeneration: optional(observedGeneration),
  agentVersion: optional(string({ description: "The agent's version.", maxLength: 64 })),
  platform: optional(platform),
  endpoint: optional(
    string({ description: "The node-local mirror's address (http://127.0.0.1:<port>).", maxLength: 512 }),
  ),
  storeBytes: optional(integer({ description: 'Bytes of content in the node store.', minimum: 0 })),
  mirrors: optional(
    array(mirrorState, {
      description: 'Per RegistryMirror.',
      maxItems: 64,
      listType: 'map',
      mapKeys: ['name'],
    }),
  ),
  caches: optional(
    array(cacheState, { description: 'Per LayerCache.', maxItems: 256, listType: 'map', mapKeys: ['name'] }),
  ),
  conditions: optional(conditions('Ready (the agent carried out the current spec), Progressing, Failed.')),
});

/** `spec` of a StrataNode. */
export type StrataNodeSpec = TypeOf<typeof strataNodeSpecField>;
/** `status` of a StrataNode. */
export type StrataNodeStatus = TypeOf<typeof strataNodeStatusField>;
/** One of `spec.mirrors`. */
export type NodeMirrorEntry = TypeOf<typeof mirrorEntry>;
/** One of `spec.caches`. */
export type NodeCacheEntry = TypeOf<typeof cacheEntry>;
/** One of `status.mirrors`. */
export type NodeMirrorState = TypeOf<typeof mirrorState>;
/** One of `status.caches`. */
export type NodeCacheState = TypeOf<typeof cacheState>;
/** One of `status.caches[].images[].platforms`. */
export type NodePlatformState = TypeOf<typeof platformState>;

/** A StrataNode object. */
export interface StrataNode {
  apiVersion: typeof API_VERSION;
  kind: typeof STRATANODE_KIND;
  metadata: ObjectMeta;
  spec?: StrataNodeSpec;
  status?: StrataNodeStatus;
}

/** The field constants the CRD and the validator read. */
export const strataNodeFields: { spec: Field<StrataNodeSpec>; status: Field<StrataNodeStatus> } = {
  spec: strataNodeSpecField,
  status: strataNodeStatusField,
};
