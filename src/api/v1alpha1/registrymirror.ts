/**
 * The `RegistryMirror` custom resource, `strata.dev/v1alpha1`: a pull-through registry mirror run in the cluster
 * (`strata mirror serve` in a Deployment behind a Service) and the node configuration that points the selected
 * nodes' container runtimes at it (written by the per-node agents). Schema and types from one source.
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
  DATA_KEY_PATTERN,
  DNS_SUBDOMAIN_PATTERN,
  duration,
  localObjectRef,
  nodeSelector,
  NODE_PATH_PATTERN,
  observedGeneration,
  quantity,
  resources,
  secretKeyRef,
  type ObjectMeta,
} from './common.js';
import { kindNames, type API_VERSION } from './common.js';

/** A RegistryMirror's names (see {@link kindNames}); kubectl's short name is `rmirror` (`rm` reads "remove"). */
export const REGISTRYMIRROR_NAMES = kindNames('RegistryMirror', ['rmirror']);
/** `kind` of a RegistryMirror, its plural and singular resource names, and kubectl's short names. */
export const {
  kind: REGISTRYMIRROR_KIND,
  plural: REGISTRYMIRROR_PLURAL,
  singular: REGISTRYMIRROR_SINGULAR,
  shortNames: REGISTRYMIRROR_SHORT_NAMES,
} = REGISTRYMIRROR_NAMES;

/** An upstream's name: the registry host clients name (docker.io, quay.io, registry.example.com:5000). */
export const UPSTREAM_NAME_PATTERN = '^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$';

const configMapKeyRef = object(
  {
    name: string({ description: 'Name of the ConfigMap.', pattern: DNS_SUBDOMAIN_PATTERN, maxLength: 253 }),
    key: string({
      description: 'The key holding PEM certificates (default ca.crt).',
      pattern: DATA_KEY_PATTERN,
      maxLength: 253,
      default: 'ca.crt',
    }),
  },
  { description: 'A ConfigMap key.' },
);

const caRef = object(
  {
    configMap: optional(configMapKeyRef),
    secret: optional(secretKeyRef('A Secret key holding PEM certificates.', 'ca.crt')),
  },
  {
    description:
      "CA certificates (PEM) the upstream's TLS certificate is checked against, in addition to the system's: " +
      'exactly one of configMap or secret.',
    exactlyOneOf: ['configMap', 'secret'],
  },
);

const upstream = object(
  {
    name: string({
      description:
        'The registry host clients ask for (docker.io, quay.io, registry.example.com:5000); nodes send pulls of ' +
        'images on this host through the mirror.',
      pattern: UPSTREAM_NAME_PATTERN,
      maxLength: 253,
    }),
    url: string({
      description:
        'Where the mirror fetches from: http:// or https://, e.g. https://registry-1.docker.io for docker.io.',
      pattern: '^https?://[^\\s/?#]+(/[^\\s?#]*)?$',
      maxLength: 2048,
    }),
    credentialsSecretRef: optional(
      localObjectRef(
        'Secret',
        'A kubernetes.io/dockerconfigjson Secret with credentials for the upstream (mounted into the mirror, ' +
          're-read when it changes; never sent to clients).',
      ),
    ),
    ca: optional(caRef),
    insecureSkipTLSVerify: boolean({
      description: "Do not verify the upstream's TLS certificate (test registries only).",
      default: false,
    }),
    timeouts: optional(
      object(
        {
          connect: optional(duration('Longest wait for a TCP (and TLS) connection.')),
          responseHeaders: optional(duration("Longest wait for a response's headers.")),
          idle: optional(duration('Longest pause while reading a body.')),
        },
        { description: "Network timeouts towards the upstream (the mirror's defaults when absent)." },
      ),
    ),
  },
  {
    description: 'A registry the mirror caches.',
    rules: [
      celRule<{ url: string; ca?: unknown; insecureSkipTLSVerify: boolean }>(
        "!has(self.ca) || self.url.startsWith('https://')",
        'ca applies only to an https:// url',
        { fieldPath: '.ca', local: (s) => s.ca === undefined || s.url.startsWith('https://') },
      ),
    ],
  },
);

const storage = object(
  {
    size: quantity('Size of the volume (a PersistentVolumeClaim), e.g. 50Gi.'),
    storageClassName: optional(
      string({
        description: "The claim's StorageClass (the cluster's default when absent). Cannot be changed later.",
        pattern: DNS_SUBDOMAIN_PATTERN,
        maxLength: 253,
      }),
    ),
    accessMode: enumOf(['ReadWriteOnce', 'ReadWriteMany'] as const, {
      description:
        'ReadWriteMany lets several replicas share one store (the mirror coordinates fills across processes); ' +
        'ReadWriteOnce needs replicas: 1. Cannot be changed later.',
      default: 'ReadWriteOnce',
      rules: [celRule('self == oldSelf', "accessMode is immutable (a claim's access modes cannot change)")],
    }),
  },
  {
    description:
      "A persistent volume for the mirror's store. Without it each replica caches in an emptyDir and starts cold " +
      'after a restart.',
    rules: [
      celRule(
        'has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)',
        "storageClassName is immutable (a claim's class cannot change)",
        { fieldPath: '.storageClassName' },
      ),
    ],
  },
);

const runtimes = object(
  {
    containerd: object(
      {
        enabled: boolean({ description: 'Write hosts.toml files for containerd.', default: true }),
        configPath: string({
          description: "containerd's registry config_path on the node (one directory per registry host).",
          pattern: NODE_PATH_PATTERN,
          maxLength: 1024,
          default: '/etc/containerd/certs.d',
        }),
      },
      {
        description: 'containerd: a certs.d/<registry>/hosts.toml per upstream, the mirror first.',
        default: { enabled: true, configPath: '/etc/containerd/certs.d' },
      },
    ),
    docker: object(
      {
        enabled: boolean({
          description: 'Add the mirror to registry-mirrors in daemon.json (Docker mirrors Docker Hub only).',
          default: false,
        }),
        daemonJsonPath: string({
          description: "The docker daemon's config file on the node.",
          pattern: NODE_PATH_PATTERN,
          maxLength: 1024,
          default: '/etc/docker/daemon.json',
        }),
      },
      {
        description: 'Docker Engine: registry-mirrors in daemon.json.',
        default: { enabled: false, daemonJsonPath: '/etc/docker/daemon.json' },
      },
    ),
  },
  {
    description:
      'Which container runtimes the agents configure on the selected nodes. What was there is backed up and ' +
      'restored when the RegistryMirror is deleted.',
    default: {
      containerd: { enabled: true, configPath: '/etc/containerd/certs.d' },
      docker: { enabled: false, daemonJsonPath: '/etc/docker/daemon.json' },
    },
  },
);

const service = object(
  {
    type: enumOf(['ClusterIP', 'NodePort', 'LoadBalancer'] as const, {
      description:
        "The Service's type. Node runtimes reach a ClusterIP through the node's network (kube-proxy).",
      default: 'ClusterIP',
    }),
    port: integer({
      description: "The Service's port.",
      minimum: 1,
      maximum: 65535,
      format: 'int32',
      default: 5000,
    }),
    nodePort: optional(
      integer({
        description: 'The node port (NodePort and LoadBalancer only); chosen by the cluster when absent.',
        minimum: 1,
        maximum: 65535,
        format: 'int32',
      }),
    ),
  },
  {
    description: 'How the mirror is exposed.',
    default: { type: 'ClusterIP', port: 5000 },
    rules: [
      celRule<{ type: string; nodePort?: number }>(
        "!has(self.nodePort) || self.type != 'ClusterIP'",
        'nodePort needs type NodePort or LoadBalancer',
        { fieldPath: '.nodePort', local: (s) => s.nodePort === undefined || s.type !== 'ClusterIP' },
      ),
    ],
  },
);

/** Schema of `spec`. */
export const registryMirrorSpecField = object(
  {
    upstreams: array(upstream, {
      description: 'The registries the mirror caches, by name.',
      minItems: 1,
      maxItems: 32,
      listType: 'map',
      mapKeys: ['name'],
    }),
    defaultUpstream: optional(
      string({
        description:
          'The upstream for requests that name none (a plain docker-style client talking to the mirror directly).',
        pattern: UPSTREAM_NAME_PATTERN,
        maxLength: 253,
      }),
    ),
    replicas: integer({
      description: 'Mirror pods behind the Service.',
      minimum: 0,
      maximum: 100,
      format: 'int32',
      default: 1,
    }),
    storage: optional(storage),
    tagTTL: duration('How long a cached tag is served before it is checked upstream again.', '5m'),
    maxSize: optional(
      quantity(
        'Cached content beyond this is evicted, least recently used first (e.g. 40Gi); no limit when absent.',
      ),
    ),
    clientAuth: optional(
      object(
        {
          htpasswdSecretRef: secretKeyRef(
            'A Secret holding an htpasswd file (bcrypt entries, htpasswd -B): every client must send HTTP Basic ' +
              'credentials from it.',
            'htpasswd',
          ),
          nodeCredentialsSecretRef: optional(
            localObjectRef(
              'Secret',
              'A kubernetes.io/dockerconfigjson Secret with the credentials the agents give the node runtimes ' +
                'for this mirror. Without it nodes are not given credentials and their pulls through the mirror ' +
                'fail over to the upstream.',
            ),
          ),
        },
        { description: 'Client authentication (none when absent: anyone who reaches the Service may pull).' },
      ),
    ),
    service,
    nodeSelector: optional(
      nodeSelector(
        "Labels of the nodes whose runtimes are pointed at this mirror (all nodes when absent; {} too). The mirror's own pods are not affected.",
      ),
    ),
    configureNodes: boolean({
      description:
        'Point the selected nodes at the mirror (through the agents). False runs the mirror without touching any node.',
      default: true,
    }),
    runtimes,
    resources: optional(resources("CPU and memory of each mirror pod's container.")),
  },
  {
    rules: [
      celRule<{ defaultUpstream?: string; upstreams: { name: string }[] }>(
        '!has(self.defaultUpstream) || self.upstreams.exists(u, u.name == self.defaultUpstream)',
        'defaultUpstream must be the name of one of upstreams',
        {
          fieldPath: '.defaultUpstream',
          local: (s) =>
            s.defaultUpstream === undefined || s.upstreams.some((u) => u.name === s.defaultUpstream),
        },
      ),
      celRule<{ replicas: number; storage?: { accessMode: string } }>(
        "self.replicas <= 1 || !has(self.storage) || self.storage.accessMode == 'ReadWriteMany'",
        'replicas > 1 with storage needs storage.accessMode ReadWriteMany (or no storage: an emptyDir per replica)',
        {
          local: (s) =>
            s.replicas <= 1 || s.storage === undefined || s.storage.accessMode === 'ReadWriteMany',
        },
      ),
    ],
  },
);

/** Schema of `status`. */
export const registryMirrorStatusField = object({
  endpoint: optional(
    string({
      description: "The mirror's address as nodes use it (http://<service cluster IP>:<port>).",
      maxLength: 512,
    }),
  ),
  replicas: optional(integer({ description: 'Mirror pods that exist.', minimum: 0, format: 'int32' })),
  readyReplicas: optional(
    integer({ description: 'Mirror pods that are ready.', minimum: 0, format: 'int32' }),
  ),
  nodesConfigured: optional(
    integer({
      description: 'Selected nodes whose runtimes point at the mirror.',
      minimum: 0,
      format: 'int32',
    }),
  ),
  nodesTotal: optional(
    integer({ description: 'Nodes the nodeSelector selects.', minimum: 0, format: 'int32' }),
  ),
  conditions: optional(
    conditions(
      'Ready (the mirror serves and every selected node is configured), Progressing (a rollout or node ' +
        'configuration is under way) and Failed (it cannot be carried out, with the reason).',
    ),
  ),
  observedGeneration: optional(observedGeneration),
});

/** `spec` of a RegistryMirror, after defaults. */
export type RegistryMirrorSpec = TypeOf<typeof registryMirrorSpecField>;
/** `status` of a RegistryMirror. */
export type RegistryMirrorStatus = TypeOf<typeof registryMirrorStatusField>;
/** One of `spec.upstreams`. */
export type UpstreamSpec = RegistryMirrorSpec['upstreams'][number];

/** A RegistryMirror object. */
export interface RegistryMirror {
  apiVersion: typeof API_VERSION;
  kind: typeof REGISTRYMIRROR_KIND;
  metadata: ObjectMeta;
  spec: RegistryMirrorSpec;
  status?: RegistryMirrorStatus;
}

/** The field constants the CRD and the validator read. */
export const registryMirrorFields: {
  spec: Field<RegistryMirrorSpec>;
  status: Field<RegistryMirrorStatus>;
} = { spec: registryMirrorSpecField, status: registryMirrorStatusField };
