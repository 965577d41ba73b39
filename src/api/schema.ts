/**
 * A tiny schema builder: each call yields a {@link Field} holding both the OpenAPI v3 JSON schema (the subset a
 * Kubernetes structural schema allows) and, as a phantom type, the TypeScript type of the values it accepts. The
 * CRD's schema and the API's TypeScript types therefore come from one source and cannot drift.
 *
 * Typing rules: a field built with {@link optional} becomes an optional property (`?`); a field with a `default`
 * stays a required property of the TypeScript type (defaults are applied before anyone reads the value) but is
 * left out of the schema's `required` list.
 */

/** The OpenAPI v3 schema subset used by Kubernetes CRDs (structural schemas). */
export interface JsonSchema {
  type?: 'object' | 'array' | 'string' | 'integer' | 'number' | 'boolean';
  description?: string;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  additionalProperties?: JsonSchema;
  items?: JsonSchema;
  enum?: string[];
  pattern?: string;
  format?: 'date-time' | 'int32' | 'int64';
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  minItems?: number;
  maxItems?: number;
  minProperties?: number;
  maxProperties?: number;
  default?: unknown;
  oneOf?: JsonSchema[];
  anyOf?: JsonSchema[];
  'x-kubernetes-int-or-string'?: true;
  'x-kubernetes-list-type'?: 'atomic' | 'set' | 'map';
  'x-kubernetes-list-map-keys'?: string[];
  'x-kubernetes-map-type'?: 'atomic' | 'granular';
  'x-kubernetes-preserve-unknown-fields'?: true;
  'x-kubernetes-validations'?: ValidationRule[];
}

/**
 * A CEL validation rule (`x-kubernetes-validations`), evaluated by the apiserver on the node it is attached to
 * (`self`; `oldSelf` in a transition rule). Rendered into the CRD as is.
 */
export interface ValidationRule {
  /** The CEL expression; true means valid. */
  readonly rule: string;
  /** What the apiserver answers when the rule is false (after the field path). */
  readonly message: string;
  /** A relative JSON path (`.pushSecret`) the error is reported at, instead of the node the rule is on. */
  readonly fieldPath?: string;
  /** The error type (`FieldValueInvalid` by default). */
  readonly reason?:
    'FieldValueInvalid' | 'FieldValueForbidden' | 'FieldValueRequired' | 'FieldValueDuplicate';
}

/** The local twin of a CEL rule: the same check in TypeScript over the (schema-valid, defaulted) value. */
export type LocalCheck = (self: never) => boolean;

// Twins live beside the rendered rule objects, not in them, so the CRD YAML holds only what Kubernetes reads.
const localChecks = new WeakMap<ValidationRule, LocalCheck>();

/**
 * A CEL rule. `local` is its TypeScript twin, run by the local validator (`validate.ts`); without one the rule is
 * the apiserver's alone (transition rules always are: a file has no old object). The real-apiserver test checks
 * that each twin and its rule refuse the same examples with the same message.
 */
export function celRule<S = never>(
  rule: string,
  message: string,
  opts?: { fieldPath?: string; reason?: ValidationRule['reason']; local?: (self: S) => boolean },
): ValidationRule {
  const r: ValidationRule = {
    rule,
    message,
    ...(opts?.fieldPath !== undefined ? { fieldPath: opts.fieldPath } : {}),
    ...(opts?.reason !== undefined ? { reason: opts.reason } : {}),
  };
  if (opts?.local) localChecks.set(r, opts.local as LocalCheck);
  return r;
}

/** The TypeScript twin of a rule made by {@link celRule}, if it has one. */
export function localCheckOf(rule: ValidationRule): LocalCheck | undefined {
  return localChecks.get(rule);
}

/** A schema and, as a phantom, the static type `T` of its values; `Opt` marks an optional object property. */
export interface Field<T, Opt extends boolean = false> {
  readonly schema: JsonSchema;
  readonly optional: Opt;
  /** True when the schema has a `default`: not in the parent's `required`, yet always present after defaulting. */
  readonly hasDefault: boolean;
  /** Never set at run time: carries `T` for {@link TypeOf}. */
  readonly __type?: T;
}

/** The static type of a field's values. */
// The phantom is an optional property, so inference sees `T | undefined`: no schema value is ever undefined.
export type TypeOf<F> = F extends Field<infer T, boolean> ? Exclude<T, undefined> : never;

/** Flattens intersections so editors show plain object types. */
export type Simplify<T> = { [K in keyof T]: T[K] } & {};

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyField = Field<any, boolean>;
type Props = Record<string, AnyField>;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type OptionalKeys<P extends Props> = { [K in keyof P]: P[K] extends Field<any, true> ? K : never }[keyof P];

/** The object type of a property map: optional fields become `?` properties. */
export type ObjectOf<P extends Props> = Simplify<
  { [K in Exclude<keyof P, OptionalKeys<P>>]: TypeOf<P[K]> } & { [K in OptionalKeys<P>]?: TypeOf<P[K]> }
>;

/** `T` where exactly one of `Keys` is set (the others are absent). */
export type ExactlyOne<T, Keys extends keyof T> = {
  [K in Keys]: Simplify<
    Omit<T, Keys> & { [P in K]-?: Exclude<T[P], undefined> } & { [P in Exclude<Keys, K>]?: never }
  >;
}[Keys];

/** Options every builder takes. */
export interface Common<T> {
  description?: string;
  default?: T;
  /** CEL rules on this node (see {@link celRule}); their `self` is the value of this field. */
  rules?: readonly ValidationRule[];
}

/** `kubectl explain` does not show defaults: a scalar default the description does not mention is appended. */
function withDefault(description: string, value: unknown): string {
  if (value === undefined || typeof value === 'object' || /default/i.test(description)) return description;
  return `${description} Default: ${String(value)}.`;
}

function field<T>(schema: JsonSchema, opts: Common<T> | undefined): Field<T> {
  const s: JsonSchema = { ...schema };
  if (opts?.description !== undefined) s.description = withDefault(opts.description, opts.default);
  if (opts?.default !== undefined) s.default = opts.default;
  // kube-apiserver 1.28.0 reports every failing rule after one with a fieldPath at that fieldPath (its path is
  // shared and mutated): the fieldPath rule goes last (structural.ts allows one per node).
  if (opts?.rules?.length)
    s['x-kubernetes-validations'] = [
      ...opts.rules.filter((r) => r.fieldPath === undefined),
      ...opts.rules.filter((r) => r.fieldPath !== undefined),
    ];
  // Key order: type, description first, for readable YAML.
  const ordered: JsonSchema = {
    ...(s.type ? { type: s.type } : {}),
    ...(s.description ? { description: s.description } : {}),
    ...s,
  };
  return { schema: ordered, optional: false, hasDefault: opts?.default !== undefined };
}

/** A string, optionally constrained by pattern, length or format. */
export function string(
  opts?: Common<string> & Pick<JsonSchema, 'pattern' | 'minLength' | 'maxLength' | 'format'>,
): Field<string> {
  const { description: _d, default: _def, rules: _r, ...rest } = opts ?? {};
  return field<string>({ type: 'string', ...rest }, opts);
}

/** A string that must be one of `values`; the static type is their union. */
export function enumOf<const V extends string>(values: readonly V[], opts?: Common<V>): Field<V> {
  return field<V>({ type: 'string', enum: [...values] }, opts);
}

/** An integer (int64 unless told otherwise). */
export function integer(
  opts?: Common<number> & Pick<JsonSchema, 'minimum' | 'maximum'> & { format?: 'int32' | 'int64' },
): Field<number> {
  const { description: _d, default: _def, rules: _r, format, ...rest } = opts ?? {};
  return field<number>({ type: 'integer', format: format ?? 'int64', ...rest }, opts);
}

/** A boolean. */
export function boolean(opts?: Common<boolean>): Field<boolean> {
  return field<boolean>({ type: 'boolean' }, opts);
}

/**
 * An integer or a string (Kubernetes `x-kubernetes-int-or-string`); `pattern` applies to the string form and
 * `minimum` to the integer form.
 */
export function intOrString(
  opts?: Common<number | string> & Pick<JsonSchema, 'pattern' | 'minimum'>,
): Field<number | string> {
  const { description: _d, default: _def, rules: _r, ...rest } = opts ?? {};
  return field<number | string>(
    { anyOf: [{ type: 'integer' }, { type: 'string' }], 'x-kubernetes-int-or-string': true, ...rest },
    opts,
  );
}

/** Options of {@link array}. */
export interface ArrayOptions<T> extends Common<T[]> {
  minItems?: number;
  maxItems?: number;
  /** `map` lists are keyed by `mapKeys` (merged per item by server-side apply); `set` lists hold unique scalars. */
  listType?: 'atomic' | 'set' | 'map';
  mapKeys?: string[];
}

/** A list of `items`. */
export function array<T>(items: Field<T, boolean>, opts?: ArrayOptions<T>): Field<T[]> {
  const s: JsonSchema = { type: 'array', items: items.schema };
  if (opts?.minItems !== undefined) s.minItems = opts.minItems;
  if (opts?.maxItems !== undefined) s.maxItems = opts.maxItems;
  if (opts?.listType) s['x-kubernetes-list-type'] = opts.listType;
  if (opts?.mapKeys) s['x-kubernetes-list-map-keys'] = opts.mapKeys;
  return field<T[]>(s, opts);
}

/** A map from string keys to `values` (an object with `additionalProperties`). */
export function map<T>(
  values: Field<T, boolean>,
  opts?: Common<Record<string, T>> & Pick<JsonSchema, 'maxProperties'>,
): Field<Record<string, T>> {
  const { description: _d, default: _def, rules: _r, ...rest } = opts ?? {};
  return field<Record<string, T>>({ type: 'object', additionalProperties: values.schema, ...rest }, opts);
}

/** Options of {@link object}. */
export interface ObjectOptions<T, K> extends Common<T> {
  /** Exactly one of these properties must be set (rendered as a CEL rule, with its local twin). */
  exactlyOneOf?: readonly K[];
}

/** An object with fixed properties; unknown properties are refused by the validator and pruned by Kubernetes. */
export function object<P extends Props>(
  props: P,
  opts?: ObjectOptions<ObjectOf<P>, never>,
): Field<ObjectOf<P>>;
/** An object of which exactly one of `exactlyOneOf` is set; the static type is the union of the cases. */
export function object<P extends Props, const K extends OptionalKeys<P> & string>(
  props: P,
  opts: ObjectOptions<ObjectOf<P>, K> & { exactlyOneOf: readonly K[] },
): Field<ExactlyOne<ObjectOf<P>, K & keyof ObjectOf<P>>>;
export function object<P extends Props>(
  props: P,
  opts?: ObjectOptions<ObjectOf<P>, string>,
): Field<ObjectOf<P>> {
  const properties: Record<string, JsonSchema> = {};
  const required: string[] = [];
  for (const [name, f] of Object.entries(props)) {
    properties[name] = f.schema;
    if (!f.optional && !f.hasDefault) required.push(name);
  }
  const s: JsonSchema = { type: 'object', properties };
  if (required.length) s.required = required;
  const common = opts as Common<ObjectOf<P>> | undefined;
  if (!opts?.exactlyOneOf) return field<ObjectOf<P>>(s, common);
  // A CEL rule rather than `oneOf`: the apiserver's oneOf error names no field ("<nil>: must validate one and
  // only one schema"), the rule's names the object and the choices.
  const keys = opts.exactlyOneOf;
  const one = celRule<Record<string, unknown>>(
    `${keys.map((k) => `(has(self.${k}) ? 1 : 0)`).join(' + ')} == 1`,
    `exactly one of ${keys.join(', ')} must be set`,
    { local: (v) => keys.filter((k) => v[k] !== undefined).length === 1 },
  );
  return field<ObjectOf<P>>(s, { ...common, rules: [one, ...(common?.rules ?? [])] });
}

/**
 * An object whose content the apiserver keeps without a schema (`x-kubernetes-preserve-unknown-fields`): used
 * only where a full schema of a core type is out of reach (e.g. a pod's affinity terms); the consumer (the pod)
 * validates it. The static type is an open record.
 */
export function freeform(opts?: Common<Record<string, unknown>>): Field<Record<string, unknown>> {
  return field<Record<string, unknown>>(
    { type: 'object', 'x-kubernetes-preserve-unknown-fields': true },
    opts,
  );
}

/** Marks a field as an optional object property (`+optional`): it may be omitted. */
export function optional<T>(f: Field<T, boolean>): Field<T, true> {
  return { schema: f.schema, optional: true, hasDefault: f.hasDefault };
}
