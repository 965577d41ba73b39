/**
 * What Strata's `strata.dev/v1alpha1` kinds share: the group and version, reference and name patterns, and the
 * schema pieces several kinds embed (metav1.Condition, tolerations, resources, object references, label
 * selectors, durations). Each kind's module builds on these so one rule is written once.
 */
import {
  array,
  celRule,
  enumOf,
  integer,
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
/** `apiVersion` of every kind in this version. */
export const API_VERSION = `${GROUP}/${VERSION}`;
/** The kubectl category of every Strata kind (`kubectl get strata`). */
export const CATEGORY = 'strata';

/**
 * A kind's names: `kind`, the resource's `plural` (its URL path segment and part of the CRD name) and `singular`,
 * and kubectl's `shortNames`.
 */
export interface KindNames<K extends string = string, S extends readonly string[] = readonly string[]> {
  readonly kind: K;
  readonly plural: `${Lowercase<K>}s`;
  readonly singular: Lowercase<K>;
  readonly shortNames: S;
}

/** The names of `kind`: the singular is its lower case, the plural that and an `s` (true of every Strata kind). */
export function kindNames<const K extends string, const S extends readonly string[]>(
  kind: K,
  shortNames: S,
): KindNames<K, S> {
  const singular = kind.toLowerCase() as Lowercase<K>;
  return { kind, plural: `${singular}s`, singular, shortNames };
}

// --- patterns (anchored; the validator and the apiserver both use them as written) -----------------------------

const DOMAIN_PART = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const DOMAIN = `(?:${DOMAIN_PART}(?:\\.${DOMAIN_PART})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?`;
const PATH_PART = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const NAME = `(?:${DOMAIN}/)?${PATH_PART}(?:/${PATH_PART})*`;
const TAG = ':[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127}';
const DIGEST = '(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})';

/** A repository name with an optional tag and no digest (something one can push to). */
export const TAGGED_REFERENCE_PATTERN = `^${NAME}(?:${TAG})?$`;
/** Any image reference: a repository with a tag, a digest, both or neither. */
export const IMAGE_REFERENCE_PATTERN = `^${NAME}(?:${TAG})?(?:@${DIGEST})?$`;
/** A repository name without tag or digest. */
export const REPOSITORY_PATTERN = `^${NAME}$`;
/** A content digest. */
export const DIGEST_PATTERN = `^${DIGEST}$`;
/** `repository@digest` (a tag in between is allowed, as docker prints it). */
export const PINNED_REFERENCE_PATTERN = `^${NAME}(?:${TAG})?@${DIGEST}$`;
/** A Kubernetes object name (DNS-1123 subdomain). */
export const DNS_SUBDOMAIN_PATTERN = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$';
/** A Kubernetes DNS-1123 label (a Service or Node name part). */
export const DNS_LABEL_PATTERN = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$';
/** A ConfigMap or Secret key. */
export const DATA_KEY_PATTERN = '^[-._a-zA-Z0-9]+$';
/** RFC 3339 date-time, as Kubernetes writes times. */
export const RFC3339_PATTERN =
  '[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})';
/** A resource quantity (`500m`, `2Gi`, `1e3`), as Kubernetes' `resource.Quantity` accepts it. */
export const QUANTITY_PATTERN =
  '^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))))?$';
/** A duration as Go's time.ParseDuration (and metav1.Duration) writes it, restricted to h, m, s and ms. */
export const DURATION_PATTERN = '^([0-9]+(h|m|s|ms))+$';
/** A platform `os/arch[/variant]`. */
export const PLATFORM_PATTERN = '^[a-z0-9_]+/[a-z0-9_]+(/[a-z0-9_.]+)?$';

/**
 * A {@link DURATION_PATTERN} duration (`1h30m`, `90s`, `250ms`) in milliseconds; RangeError for anything else
 * (the schema refuses it first in a cluster).
 */
export function durationMs(duration: string): number {
  if (!new RegExp(DURATION_PATTERN).test(duration))
    throw new RangeError(`${JSON.stringify(duration)} is not a duration like 30s, 5m or 1h30m`);
  const scale: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1 };
  let ms = 0;
  for (const m of duration.matchAll(/([0-9]+)(ms|h|m|s)/g)) ms += Number(m[1]) * scale[m[2]!]!;
  return ms;
}

// --- shared schema pieces -------------------------------------------------------------------------------------------

/** A duration field (see {@link DURATION_PATTERN}). */
export function duration(description: string, defaultValue?: string): Field<string> {
  return string({
    description: `${description} A duration such as 30s, 5m or 1h30m.`,
    pattern: DURATION_PATTERN,
    maxLength: 32,
    ...(defaultValue !== undefined ? { default: defaultValue } : {}),
  });
}

/** A resource quantity field (`500m`, `2Gi`). */
export function quantity(description = 'A resource quantity (e.g. 500m, 2Gi).'): Field<string> {
  return string({ description, pattern: QUANTITY_PATTERN, maxLength: 64 });
}

/** A reference to a Secret in the object's namespace, optionally naming the key. */
export function secretKeyRef(description: string, defaultKey: string): Field<{ name: string; key: string }> {
  return object(
    {
      name: string({ description: 'Name of the Secret.', pattern: DNS_SUBDOMAIN_PATTERN, maxLength: 253 }),
      key: string({
        description: `The key in the Secret's data (default ${defaultKey}).`,
        pattern: DATA_KEY_PATTERN,
        maxLength: 253,
        default: defaultKey,
      }),
    },
    { description },
  );
}

/** A reference by name to an object of `kind` in the object's namespace. */
export function localObjectRef(kind: string, description: string): Field<{ name: string }> {
  return object(
    { name: string({ description: `Name of the ${kind}.`, pattern: DNS_SUBDOMAIN_PATTERN, maxLength: 253 }) },
    { description },
  );
}

/**
 * An absolute node path without `.` or `..` segments (RE2: no lookahead), so a namespaced object cannot walk the
 * agent out of the directory it names.
 */
export const NODE_PATH_PATTERN = '^(/([^/.][^/]*|\\.[^/.][^/]*|\\.\\.[^/]+))+$';

/** A node label selector as a pod's `nodeSelector` writes it: every label must match. */
export function nodeSelector(description: string): Field<Record<string, string>> {
  return map(string({ maxLength: 63 }), { description, maxProperties: 64 });
}

/** A core/v1 Toleration. */
export const toleration = object({
  key: optional(
    string({ description: 'The taint key; empty with operator Exists matches all taints.', maxLength: 316 }),
  ),
  operator: optional(enumOf(['Exists', 'Equal'] as const, { description: 'Defaults to Equal.' })),
  value: optional(string({ description: 'The taint value (with operator Equal).', maxLength: 63 })),
  effect: optional(
    enumOf(['NoSchedule', 'PreferNoSchedule', 'NoExecute'] as const, {
      description: 'The taint effect to match; empty matches all effects.',
    }),
  ),
  tolerationSeconds: optional(
    integer({ description: 'How long a NoExecute taint is tolerated before eviction.' }),
  ),
});

/** A list of {@link toleration}s. */
export function tolerations(description: string): Field<TypeOf<typeof toleration>[]> {
  return array(toleration, { description, maxItems: 64, listType: 'atomic' });
}

/** core/v1 ResourceRequirements (requests and limits only). */
export function resources(description: string): Field<{
  requests?: Record<string, string>;
  limits?: Record<string, string>;
}> {
  return object(
    {
      requests: optional(
        map(quantity(), {
          description: 'Minimum resources (cpu, memory, ephemeral-storage).',
          maxProperties: 16,
        }),
      ),
      limits: optional(
        map(quantity(), {
          description: 'Maximum resources (cpu, memory, ephemeral-storage).',
          maxProperties: 16,
        }),
      ),
    },
    { description },
  );
}

const selectorRequirement = object(
  {
    key: string({ description: 'The label key.', minLength: 1, maxLength: 316 }),
    operator: enumOf(['In', 'NotIn', 'Exists', 'DoesNotExist'] as const, {
      description: "How the key's value is compared with values.",
    }),
    values: optional(
      array(string({ maxLength: 63 }), {
        description: 'Values for In and NotIn (at least one); empty for Exists and DoesNotExist.',
        maxItems: 64,
        listType: 'atomic',
      }),
    ),
  },
  {
    description: 'A label requirement.',
    rules: [
      celRule<{ operator: string; values?: string[] }>(
        "self.operator in ['In', 'NotIn'] ? has(self.values) && size(self.values) > 0 : !has(self.values) || size(self.values) == 0",
        'values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist',
        {
          fieldPath: '.values',
          local: (s) =>
            s.operator === 'In' || s.operator === 'NotIn'
              ? (s.values?.length ?? 0) > 0
              : (s.values?.length ?? 0) === 0,
        },
      ),
    ],
  },
);

/** A metav1.LabelSelector: every matchLabels entry and every matchExpressions requirement must hold. */
export function labelSelector(description: string): Field<{
  matchLabels?: Record<string, string>;
  matchExpressions?: TypeOf<typeof selectorRequirement>[];
}> {
  return object(
    {
      matchLabels: optional(
        map(string({ maxLength: 63 }), { description: 'Labels that must match exactly.', maxProperties: 64 }),
      ),
      matchExpressions: optional(
        array(selectorRequirement, {
          description: 'Requirements that must all hold.',
          maxItems: 32,
          listType: 'atomic',
        }),
      ),
    },
    { description },
  );
}

/** metav1.Condition, with the validation Kubernetes' own CRDs use. */
export const condition = object({
  type: string({
    description: 'Type of condition in CamelCase: Ready, Progressing or Failed.',
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

/** `status.conditions`: metav1.Conditions keyed by type. */
export function conditions(description: string): Field<TypeOf<typeof condition>[]> {
  return array(condition, { description, maxItems: 16, listType: 'map', mapKeys: ['type'] });
}

/** `status.observedGeneration`. */
export const observedGeneration = integer({
  description: 'The .metadata.generation this status describes.',
  minimum: 0,
});

/** A metav1.Condition. */
export type Condition = TypeOf<typeof condition>;
/** A core/v1 Toleration. */
export type Toleration = TypeOf<typeof toleration>;
/** A metav1.LabelSelector. */
export type LabelSelector = TypeOf<ReturnType<typeof labelSelector>>;

/** The ObjectMeta fields a Strata object file may carry. */
export interface ObjectMeta {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  generation?: number;
  uid?: string;
  resourceVersion?: string;
}

/** The printer columns every kind has: Ready from the condition, Age. */
export const READY_COLUMN = {
  name: 'Ready',
  type: 'string',
  jsonPath: '.status.conditions[?(@.type=="Ready")].status',
} as const;
/** The Age column kubectl shows for every object. */
export const AGE_COLUMN = { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' } as const;
/** The Ready condition's reason, for `-o wide`. */
export const REASON_COLUMN = {
  name: 'Reason',
  type: 'string',
  jsonPath: '.status.conditions[?(@.type=="Ready")].reason',
  priority: 1,
} as const;
