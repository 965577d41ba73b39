/**
 * The CustomResourceDefinitions (`apiextensions.k8s.io/v1`) of ImageBuild, RegistryMirror and LayerCache, built
 * from the same schema constants as the TypeScript types. `scripts/gen-crds.mjs` writes them to `crds/`; a test
 * keeps those files in sync.
 */
import { stringify } from 'yaml';
import type { Field, JsonSchema } from '../schema.js';
import { validate, type Issue } from '../validate.js';
import {
  AGE_COLUMN,
  API_VERSION,
  CATEGORY,
  GROUP,
  READY_COLUMN,
  REASON_COLUMN,
  VERSION,
  type KindNames,
} from './common.js';
import { IMAGEBUILD_NAMES, imageBuildSpecField, imageBuildStatusField } from './imagebuild.js';
import { LAYERCACHE_NAMES, layerCacheSpecField, layerCacheStatusField } from './layercache.js';
import { STRATANODE_NAMES, strataNodeSpecField, strataNodeStatusField } from './stratanode.js';
import {
  REGISTRYMIRROR_NAMES,
  registryMirrorSpecField,
  registryMirrorStatusField,
} from './registrymirror.js';

/** A printer column (`kubectl get`). */
export interface PrinterColumn {
  readonly name: string;
  readonly type: 'string' | 'integer' | 'number' | 'boolean' | 'date';
  readonly jsonPath: string;
  readonly description?: string;
  readonly priority?: number;
}

/** Everything a kind's CRD is made of. */
export interface KindDefinition extends KindNames {
  /** The object's description (`kubectl explain KIND`). */
  readonly description: string;
  readonly spec: { readonly field: Field<unknown>; readonly description: string };
  readonly status: { readonly field: Field<unknown>; readonly description: string };
  readonly columns: readonly PrinterColumn[];
  /** `Namespaced` unless said otherwise. */
  readonly scope?: 'Namespaced' | 'Cluster';
  /** `spec` may be absent (an object the controller has not filled yet). */
  readonly specOptional?: boolean;
}

/** The ImageBuild kind. */
export const IMAGEBUILD: KindDefinition = {
  ...IMAGEBUILD_NAMES,
  description:
    'ImageBuild builds a container image from a Dockerfile and a build context in a Job on a node, and may ' +
    'push it. Its status carries the digest and Ready, Progressing and Failed conditions.',
  spec: {
    field: imageBuildSpecField,
    description: 'What to build, where the image goes, and the build pod.',
  },
  status: { field: imageBuildStatusField, description: 'What the controller observed of the build.' },
  columns: [
    { name: 'Image', type: 'string', jsonPath: '.spec.output.images[0]' },
    READY_COLUMN,
    { name: 'Digest', type: 'string', jsonPath: '.status.digest' },
    AGE_COLUMN,
    { name: 'Phase', type: 'string', jsonPath: '.status.phase', priority: 1 },
    REASON_COLUMN,
  ],
};

/** The RegistryMirror kind. */
export const REGISTRYMIRROR: KindDefinition = {
  ...REGISTRYMIRROR_NAMES,
  description:
    'RegistryMirror runs a pull-through registry mirror in the cluster (a Deployment and a Service) and points ' +
    "the selected nodes' container runtimes at it; deleting it restores every node's configuration.",
  spec: {
    field: registryMirrorSpecField,
    description: 'The upstreams, the mirror pods and storage, and which nodes use it.',
  },
  status: { field: registryMirrorStatusField, description: 'The mirror and node configuration as observed.' },
  columns: [
    READY_COLUMN,
    { name: 'Endpoint', type: 'string', jsonPath: '.status.endpoint' },
    { name: 'Replicas', type: 'integer', jsonPath: '.status.readyReplicas' },
    { name: 'Nodes', type: 'integer', jsonPath: '.status.nodesConfigured', description: 'Nodes configured' },
    { name: 'Of', type: 'integer', jsonPath: '.status.nodesTotal', description: 'Nodes selected' },
    AGE_COLUMN,
    REASON_COLUMN,
  ],
};

/** The LayerCache kind. */
export const LAYERCACHE: KindDefinition = {
  ...LAYERCACHE_NAMES,
  description:
    "LayerCache keeps chosen images' layers in the selected nodes' stores ahead of need, within a size budget, " +
    'served to the node runtime as its first mirror.',
  spec: { field: layerCacheSpecField, description: 'Which images, on which nodes, within what budget.' },
  status: { field: layerCacheStatusField, description: 'Resolved digests and warming progress per image.' },
  columns: [
    READY_COLUMN,
    {
      name: 'Nodes',
      type: 'integer',
      jsonPath: '.status.nodesReady',
      description: 'Nodes holding every image',
    },
    { name: 'Of', type: 'integer', jsonPath: '.status.nodesTotal', description: 'Nodes selected' },
    { name: 'Budget', type: 'string', jsonPath: '.spec.sizeBudget' },
    AGE_COLUMN,
    REASON_COLUMN,
  ],
};

/** The StrataNode kind (cluster-scoped, one per node: the controller's spec, the agent's status; ADR 0028). */
export const STRATANODE: KindDefinition = {
  ...STRATANODE_NAMES,
  description:
    "StrataNode is the hand-off between the Strata controller and one node's agent, named after the node: spec " +
    'says what the node should do for the RegistryMirrors and LayerCaches that select it, status what the agent ' +
    'did. Written by Strata, not by users.',
  spec: { field: strataNodeSpecField, description: "What the node's agent should do (the controller's)." },
  status: { field: strataNodeStatusField, description: "What the agent did (the agent's)." },
  scope: 'Cluster',
  specOptional: true,
  columns: [
    READY_COLUMN,
    { name: 'Platform', type: 'string', jsonPath: '.status.platform' },
    { name: 'Endpoint', type: 'string', jsonPath: '.status.endpoint' },
    { name: 'Agent', type: 'string', jsonPath: '.status.agentVersion', priority: 1 },
    AGE_COLUMN,
    REASON_COLUMN,
  ],
};

/** Every kind, in the order the CRD files are written. */
export const KINDS: readonly KindDefinition[] = [IMAGEBUILD, REGISTRYMIRROR, LAYERCACHE, STRATANODE];

/** The CRD's name: `<plural>.strata.dev`. */
export function crdName(def: KindDefinition): string {
  return `${def.plural}.${GROUP}`;
}

/** Where a kind's generated CRD lives, relative to the repository root. */
export function crdFile(def: KindDefinition): string {
  return `crds/${crdName(def)}.yaml`;
}

/**
 * The chart's copy of a kind's CRD (`charts/strata/crds/`, helm's CRD directory: installed before the templates,
 * never upgraded or deleted by helm), byte for byte the file of {@link crdFile}.
 */
export function chartCrdFile(def: KindDefinition): string {
  return `charts/strata/${crdFile(def)}`;
}

/** Where the generated ImageBuild CRD lives, relative to the repository root. */
export const IMAGEBUILD_CRD_FILE = crdFile(IMAGEBUILD);

/** The top-level OpenAPI schema of a kind's objects. */
export function kindSchema(def: KindDefinition): JsonSchema {
  return {
    type: 'object',
    description: def.description,
    properties: {
      apiVersion: { type: 'string', description: 'APIVersion defines the versioned schema of this object.' },
      kind: { type: 'string', description: 'Kind is the REST resource this object represents.' },
      // Structural schemas may only say `type: object` here: the apiserver validates metadata itself.
      metadata: { type: 'object' },
      spec: { ...def.spec.field.schema, description: def.spec.description },
      status: { ...def.status.field.schema, description: def.status.description },
    },
    ...(def.specOptional ? {} : { required: ['spec'] }),
  };
}

/** The top-level OpenAPI schema of an ImageBuild object. */
export function imageBuildSchema(): JsonSchema {
  return kindSchema(IMAGEBUILD);
}

/** A kind's full CustomResourceDefinition object. */
export function crdOf(def: KindDefinition): Record<string, unknown> {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: crdName(def) },
    spec: {
      group: GROUP,
      names: {
        kind: def.kind,
        listKind: `${def.kind}List`,
        plural: def.plural,
        singular: def.singular,
        shortNames: [...def.shortNames],
        categories: [CATEGORY],
      },
      scope: def.scope ?? 'Namespaced',
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: def.columns.map((c) => ({ ...c })),
          schema: { openAPIV3Schema: kindSchema(def) },
        },
      ],
    },
  };
}

/** The ImageBuild CRD. */
export function imageBuildCrd(): Record<string, unknown> {
  return crdOf(IMAGEBUILD);
}

/** The generated file's first lines. */
export function generatedHeader(def: KindDefinition): string {
  return `# Generated by scripts/gen-crds.mjs from src/api/v1alpha1/${def.singular}.ts: do not edit; run \`npm run gen:crds\`.\n`;
}

/** A kind's CRD as YAML text (before prettier; the script and the sync test both format it the same way). */
export function renderCrdYaml(def: KindDefinition): string {
  return generatedHeader(def) + stringify(crdOf(def), { lineWidth: 0, aliasDuplicateObjects: false });
}

/**
 * Validates and defaults a whole object of a kind locally: apiVersion, kind, metadata.name, then `spec` (and
 * `status` when present) against the CRD's own schema, with the CEL rules that have TypeScript twins. Answers the
 * defaulted object and the issues, each at its field path. Transition rules (immutable fields) need the old
 * object and are the apiserver's alone.
 */
export function validateObject(
  def: KindDefinition,
  obj: unknown,
): { value: Record<string, unknown>; issues: Issue[] } {
  const issues: Issue[] = [];
  const o = (typeof obj === 'object' && obj !== null && !Array.isArray(obj) ? obj : {}) as Record<
    string,
    unknown
  >;
  if (o.apiVersion !== API_VERSION) issues.push({ path: ['apiVersion'], message: `must be ${API_VERSION}` });
  if (o.kind !== def.kind) issues.push({ path: ['kind'], message: `must be ${def.kind}` });
  const name = (o.metadata as { name?: unknown } | undefined)?.name;
  if (typeof name !== 'string' || name === '')
    issues.push({ path: ['metadata', 'name'], message: 'required' });
  const value: Record<string, unknown> = { ...o };
  for (const part of ['spec', 'status'] as const) {
    if (o[part] === undefined) {
      if (part === 'spec') issues.push({ path: ['spec'], message: 'required' });
      continue;
    }
    const r = validate(def[part].field.schema, o[part], [part]);
    value[part] = r.value;
    issues.push(...r.issues);
  }
  return { value, issues };
}
