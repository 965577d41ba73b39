/**
 * A small validator and defaulter over the {@link JsonSchema} subset the API's schemas use, so a file is checked
 * locally by the very schema object the CRD publishes. It is stricter than the apiserver in one way: unknown
 * fields are errors (the apiserver would prune them silently, hiding a typo).
 */
import { localCheckOf, type JsonSchema } from './schema.js';

/** A path into a document: property names and list indexes. */
export type FieldPath = readonly (string | number)[];

/** One problem found, at a field path. */
export interface Issue {
  readonly path: FieldPath;
  readonly message: string;
}

/** `spec.context.git.url`, `spec.buildArgs[0].name`, `spec.labels[my.key]`. */
export function formatPath(path: FieldPath): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(p)) out += out ? `.${p}` : p;
    else out += `[${p}]`;
  }
  return out;
}

const RFC3339 =
  /^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$/;

const patternCache = new Map<string, RegExp>();
function regex(pattern: string): RegExp {
  let r = patternCache.get(pattern);
  if (!r) {
    r = new RegExp(pattern, 'u');
    patternCache.set(pattern, r);
  }
  return r;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function kindOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'number') return Number.isInteger(v) ? 'an integer' : 'a number';
  return `a ${typeof v}`;
}

const TYPE_NAMES: Record<NonNullable<JsonSchema['type']>, string> = {
  object: 'an object',
  array: 'a list',
  string: 'a string',
  integer: 'an integer',
  number: 'a number',
  boolean: 'a boolean',
};

function typeMatches(type: NonNullable<JsonSchema['type']>, v: unknown): boolean {
  switch (type) {
    case 'object':
      return isPlainObject(v);
    case 'array':
      return Array.isArray(v);
    case 'string':
      return typeof v === 'string';
    case 'integer':
      return typeof v === 'number' && Number.isSafeInteger(v);
    case 'number':
      return typeof v === 'number' && Number.isFinite(v);
    case 'boolean':
      return typeof v === 'boolean';
  }
}

/**
 * Validates `value` against `schema` and answers a defaulted copy (defaults filled in where a property is
 * missing, recursively) and every issue found, each at its field path under `path`. The input is not changed.
 */
export function validate(
  schema: JsonSchema,
  value: unknown,
  path: FieldPath = [],
): { value: unknown; issues: Issue[] } {
  const issues: Issue[] = [];
  const out = check(schema, value, path, issues);
  return { value: out, issues };
}

function check(schema: JsonSchema, v: unknown, path: FieldPath, issues: Issue[]): unknown {
  const at = (message: string): void => {
    issues.push({ path, message });
  };
  if (schema['x-kubernetes-int-or-string']) {
    if (!(typeof v === 'string' || (typeof v === 'number' && Number.isSafeInteger(v)))) {
      at(`must be an integer or a string, not ${kindOf(v)}`);
      return v;
    }
  } else if (schema.type && !typeMatches(schema.type, v)) {
    at(`must be ${TYPE_NAMES[schema.type]}, not ${kindOf(v)}`);
    return v;
  }
  let out = v;
  if (typeof v === 'string') checkString(schema, v, at);
  if (typeof v === 'number') {
    if (schema.minimum !== undefined && v < schema.minimum) at(`must be at least ${schema.minimum}`);
    if (schema.maximum !== undefined && v > schema.maximum) at(`must be at most ${schema.maximum}`);
  }
  if (Array.isArray(v)) out = checkArray(schema, v, path, issues, at);
  else if (isPlainObject(v)) out = checkObject(schema, v, path, issues, at);
  // Like the apiserver, rules run even when something beneath them is wrong, but never on a value of the wrong
  // type (returned above); a twin that trips over a malformed part is skipped, the part's own issue stands.
  checkRules(schema, out, path, issues);
  return out;
}

/** Runs the TypeScript twins of the node's CEL rules; a rule without a twin is left to the apiserver. */
function checkRules(schema: JsonSchema, v: unknown, path: FieldPath, issues: Issue[]): void {
  for (const rule of schema['x-kubernetes-validations'] ?? []) {
    const local = localCheckOf(rule) as ((self: unknown) => boolean) | undefined;
    let ok = true;
    try {
      ok = local?.(v) ?? true;
    } catch {
      // A malformed part already has its issue.
    }
    if (ok) continue;
    const extra = (rule.fieldPath ?? '').split('.').filter((p) => p !== '');
    issues.push({ path: [...path, ...extra], message: rule.message });
  }
}

function checkString(schema: JsonSchema, v: string, at: (m: string) => void): void {
  if (schema.enum && !schema.enum.includes(v)) {
    at(`must be one of ${schema.enum.join(', ')} (got ${JSON.stringify(v)})`);
    return;
  }
  // Lengths count code points, as the apiserver does.
  const len = [...v].length;
  if (schema.minLength !== undefined && len < schema.minLength)
    at(schema.minLength === 1 ? 'must not be empty' : `must be at least ${schema.minLength} characters`);
  if (schema.maxLength !== undefined && len > schema.maxLength)
    at(`must be at most ${schema.maxLength} characters`);
  if (schema.pattern !== undefined && !regex(schema.pattern).test(v))
    at(
      `${JSON.stringify(v.length > 80 ? `${v.slice(0, 80)}…` : v)} is not valid (must match ${schema.pattern})`,
    );
  if (schema.format === 'date-time' && !RFC3339.test(v))
    at(`${JSON.stringify(v)} is not an RFC 3339 date-time`);
}

function checkArray(
  schema: JsonSchema,
  v: unknown[],
  path: FieldPath,
  issues: Issue[],
  at: (m: string) => void,
): unknown[] {
  if (schema.minItems !== undefined && v.length < schema.minItems)
    at(schema.minItems === 1 ? 'must have at least one item' : `must have at least ${schema.minItems} items`);
  if (schema.maxItems !== undefined && v.length > schema.maxItems)
    at(`must have at most ${schema.maxItems} items`);
  const out = v.map((item, i) => (schema.items ? check(schema.items, item, [...path, i], issues) : item));
  const listType = schema['x-kubernetes-list-type'];
  if (listType === 'set') {
    const seen = new Set<string>();
    out.forEach((item, i) => {
      const key = JSON.stringify(item);
      if (seen.has(key)) issues.push({ path: [...path, i], message: `duplicate value ${key}` });
      seen.add(key);
    });
  } else if (listType === 'map') {
    const keys = schema['x-kubernetes-list-map-keys'] ?? [];
    const seen = new Set<string>();
    out.forEach((item, i) => {
      if (!isPlainObject(item)) return;
      const key = JSON.stringify(keys.map((k) => item[k]));
      if (seen.has(key))
        issues.push({
          path: [...path, i],
          message: `duplicate entry with ${keys.join(', ')} ${key.slice(1, -1)}`,
        });
      seen.add(key);
    });
  }
  return out;
}

function checkObject(
  schema: JsonSchema,
  v: Record<string, unknown>,
  path: FieldPath,
  issues: Issue[],
  at: (m: string) => void,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  // A subtree without a schema: kept as written (its consumer validates it).
  if (schema['x-kubernetes-preserve-unknown-fields'] && !schema.properties) return structuredClone(v);
  if (schema.additionalProperties) {
    const n = Object.keys(v).length;
    if (schema.maxProperties !== undefined && n > schema.maxProperties)
      at(`must have at most ${schema.maxProperties} entries`);
    for (const [k, item] of Object.entries(v))
      out[k] = check(schema.additionalProperties, item, [...path, k], issues);
    return out;
  }
  const props = schema.properties ?? {};
  for (const [k, item] of Object.entries(v)) {
    const ps = props[k];
    if (!ps) {
      issues.push({ path: [...path, k], message: 'unknown field' });
      continue;
    }
    // Kubernetes treats an explicit null like an omitted optional field.
    if (item === null && !(schema.required ?? []).includes(k)) continue;
    out[k] = check(ps, item, [...path, k], issues);
  }
  if (schema.oneOf) checkOneOf(schema.oneOf, out, at);
  for (const [k, ps] of Object.entries(props)) {
    if (out[k] !== undefined || v[k] !== undefined) continue;
    if (ps.default !== undefined) out[k] = check(ps, structuredClone(ps.default), [...path, k], issues);
    else if (schema.required?.includes(k)) issues.push({ path: [...path, k], message: 'required' });
  }
  return out;
}

/** `oneOf` over `required` lists: exactly one of the named properties. Other branch shapes are checked as schemas. */
function checkOneOf(branches: JsonSchema[], v: Record<string, unknown>, at: (m: string) => void): void {
  const names = branches.map((b) => b.required?.[0]);
  if (
    names.every(
      (n, i) =>
        n !== undefined && Object.keys(branches[i]!).length === 1 && branches[i]!.required!.length === 1,
    )
  ) {
    const present = (names as string[]).filter((n) => v[n] !== undefined);
    if (present.length === 1) return;
    if (present.length === 0) at(`exactly one of ${names.join(', ')} is required`);
    else at(`exactly one of ${names.join(', ')} may be set (found ${present.join(', ')})`);
    return;
  }
  const matches = branches.filter((b) => validate(b, v).issues.length === 0).length;
  if (matches !== 1) at(`must match exactly one of ${branches.length} alternatives (matched ${matches})`);
}
