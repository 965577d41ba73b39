/**
 * Checks the rules Kubernetes asks of a CRD's structural schema (apiextensions.k8s.io/v1), so a schema mistake
 * is found by a unit test rather than by the apiserver at install time. Answers a list of violations, each
 * naming the schema path.
 */
import type { JsonSchema } from './schema.js';
import { validate } from './validate.js';

const JUNCTORS = ['oneOf', 'anyOf', 'allOf', 'not'] as const;
const FORBIDDEN = [
  '$ref',
  'definitions',
  'dependencies',
  'patternProperties',
  'additionalItems',
  '$schema',
  'id',
];
const KNOWN = new Set([
  'type',
  'description',
  'properties',
  'required',
  'additionalProperties',
  'items',
  'enum',
  'pattern',
  'format',
  'minLength',
  'maxLength',
  'minimum',
  'maximum',
  'minItems',
  'maxItems',
  'minProperties',
  'maxProperties',
  'default',
  'oneOf',
  'anyOf',
  'x-kubernetes-int-or-string',
  'x-kubernetes-list-type',
  'x-kubernetes-list-map-keys',
  'x-kubernetes-map-type',
  'x-kubernetes-preserve-unknown-fields',
  'x-kubernetes-validations',
  'nullable',
  'title',
  'example',
]);

function isIntOrStringAnyOf(s: JsonSchema): boolean {
  const a = s.anyOf;
  return (
    a?.length === 2 &&
    a[0]!.type === 'integer' &&
    a[1]!.type === 'string' &&
    Object.keys(a[0]!).length === 1 &&
    Object.keys(a[1]!).length === 1
  );
}

/** Violations of the structural-schema rules in `root` (a CRD version's `openAPIV3Schema`); empty when fine. */
export function structuralViolations(root: JsonSchema): string[] {
  const out: string[] = [];
  walk(root, '', true, out);
  const meta = root.properties?.metadata;
  if (meta && (meta.type !== 'object' || Object.keys(meta).some((k) => k !== 'type')))
    out.push('metadata: only `type: object` is allowed (the apiserver validates metadata itself)');
  return out;
}

function walk(s: JsonSchema, path: string, isRoot: boolean, out: string[]): void {
  const at = path || '<root>';
  const raw = s as Record<string, unknown>;
  for (const k of Object.keys(raw)) {
    if (FORBIDDEN.includes(k)) out.push(`${at}: ${k} is not allowed`);
    else if (!KNOWN.has(k)) out.push(`${at}: unknown schema keyword ${k}`);
  }
  if (!s.type && !s['x-kubernetes-int-or-string']) out.push(`${at}: type is required`);
  if (s['x-kubernetes-int-or-string'] && s.anyOf && !isIntOrStringAnyOf(s))
    out.push(`${at}: x-kubernetes-int-or-string allows only anyOf [integer, string]`);
  if (s.properties && s.additionalProperties)
    out.push(`${at}: properties and additionalProperties are exclusive`);
  // kube-apiserver 1.28.0 reports every failing rule after one with a fieldPath under that path (joined, as in
  // `spec.defaultUpstream.replicas`): one rule per node may carry a fieldPath, and it must come last.
  const rules = s['x-kubernetes-validations'] ?? [];
  const withPath = rules.filter((r) => r.fieldPath !== undefined);
  if (withPath.length > 1 || (withPath.length === 1 && rules.at(-1)!.fieldPath === undefined))
    out.push(`${at}: only the last validation rule of a node may have a fieldPath`);
  for (const r of s['x-kubernetes-validations'] ?? []) {
    if (!r.rule.trim() || !r.message.trim()) out.push(`${at}: a validation rule needs a rule and a message`);
    if (r.fieldPath !== undefined && !/^(\.[A-Za-z_][A-Za-z0-9_]*)+$/.test(r.fieldPath))
      out.push(`${at}: fieldPath ${r.fieldPath} must be a relative path like .a.b`);
  }
  if (s.type === 'array' && !s.items) out.push(`${at}: an array needs items`);
  if (isRoot && s.type !== 'object') out.push('<root>: must be an object');
  if (s.required)
    for (const r of s.required) if (!s.properties?.[r]) out.push(`${at}: required ${r} is not a property`);
  // Inside junctors: no type, description, default, additionalProperties, nullable; every property named there
  // must also be specified outside them.
  for (const j of JUNCTORS) {
    const branches = (raw[j] === undefined ? [] : Array.isArray(raw[j]) ? raw[j] : [raw[j]]) as JsonSchema[];
    if (j === 'anyOf' && isIntOrStringAnyOf(s)) continue;
    branches.forEach((b, i) => junctorBranch(b, `${at}.${j}[${i}]`, s, out));
  }
  if (s.default !== undefined) {
    const r = validate(s, s.default);
    for (const issue of r.issues) out.push(`${at}: default is invalid: ${issue.message}`);
  }
  if (s['x-kubernetes-list-type'] === 'map') {
    const keys = s['x-kubernetes-list-map-keys'] ?? [];
    if (!keys.length) out.push(`${at}: a map list needs x-kubernetes-list-map-keys`);
    for (const k of keys) {
      const p = s.items?.properties?.[k];
      if (!p || !['string', 'integer', 'boolean'].includes(p.type ?? ''))
        out.push(`${at}: map key ${k} must be a scalar property`);
      else if (!s.items?.required?.includes(k) && p.default === undefined)
        out.push(`${at}: map key ${k} must be required or defaulted`);
    }
  }
  for (const [k, p] of Object.entries(s.properties ?? {})) walk(p, path ? `${path}.${k}` : k, false, out);
  if (s.items) walk(s.items, `${path}[]`, false, out);
  if (s.additionalProperties) walk(s.additionalProperties, `${path}{}`, false, out);
}

function junctorBranch(b: JsonSchema, at: string, outer: JsonSchema, out: string[]): void {
  for (const k of ['type', 'description', 'default', 'additionalProperties', 'nullable'])
    if (k in b) out.push(`${at}: ${k} is not allowed inside a logical junctor`);
  for (const r of b.required ?? [])
    if (!outer.properties?.[r]) out.push(`${at}: ${r} is not specified outside the junctor`);
  for (const k of Object.keys(b.properties ?? {}))
    if (!outer.properties?.[k]) out.push(`${at}: ${k} is not specified outside the junctor`);
}
