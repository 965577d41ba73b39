import { readFile } from 'node:fs/promises';
import * as prettier from 'prettier';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { celRule, type JsonSchema } from '../../src/api/schema.js';
import { structuralViolations } from '../../src/api/structural.js';
import { formatPath } from '../../src/api/validate.js';
import {
  chartCrdFile,
  crdFile,
  crdOf,
  IMAGEBUILD,
  KINDS,
  kindSchema,
  renderCrdYaml,
  validateObject,
} from '../../src/api/v1alpha1/crd.js';
import { durationMs } from '../../src/api/v1alpha1/common.js';
import { BAD_CASES, ROOT, strataExamples } from './crd-cases.js';

describe('the CRDs', () => {
  it.each(KINDS.map((k) => [k.kind, k] as const))(
    '%s: the committed crds/ YAML is what scripts/gen-crds.mjs writes (run npm run gen:crds after a schema change)',
    async (_kind, def) => {
      const file = `${ROOT}${crdFile(def)}`;
      const expected = await prettier.format(renderCrdYaml(def), {
        ...(await prettier.resolveConfig(file)),
        filepath: file,
      });
      const committed = await readFile(file, 'utf8');
      expect(committed).toBe(expected);
      expect(parse(committed)).toEqual(crdOf(def));
      expect(await readFile(`${ROOT}${chartCrdFile(def)}`, 'utf8'), 'the chart has the same CRD').toBe(
        committed,
      );
    },
  );

  it('each has the status subresource, printer columns, short names, the category and a structural schema', () => {
    const short = new Set<string>();
    for (const def of KINDS) {
      const crd = crdOf(def) as {
        metadata: { name: string };
        spec: {
          group: string;
          names: { shortNames: string[]; categories: string[] };
          versions: Record<string, unknown>[];
        };
      };
      expect(crd.metadata.name).toBe(`${def.plural}.strata.dev`);
      expect(crd.spec.names.categories).toEqual(['strata']);
      for (const n of crd.spec.names.shortNames) {
        expect(short.has(n), n).toBe(false);
        short.add(n);
      }
      const v = crd.spec.versions[0]!;
      expect(v.subresources).toEqual({ status: {} });
      const columns = v.additionalPrinterColumns as { name: string; jsonPath: string }[];
      expect(columns.find((c) => c.name === 'Ready')?.jsonPath).toBe(
        '.status.conditions[?(@.type=="Ready")].status',
      );
      expect((v.schema as { openAPIV3Schema: JsonSchema }).openAPIV3Schema).toEqual(kindSchema(def));
      expect(structuralViolations(kindSchema(def)), def.kind).toEqual([]);
    }
    expect([...short]).toEqual(['ib', 'rmirror', 'lc', 'snode']);
    const ib = crdOf(IMAGEBUILD) as {
      spec: { versions: { additionalPrinterColumns: { name: string }[] }[] };
    };
    expect(ib.spec.versions[0]!.additionalPrinterColumns.map((c) => c.name)).toEqual([
      'Image',
      'Ready',
      'Digest',
      'Age',
      'Phase',
      'Reason',
    ]);
  });

  it('every node with a CEL rule or under one has a description, and every string, list and map a CEL rule reads is bounded', () => {
    // The apiserver refuses rules whose worst-case cost exceeds its budget; maxLength/maxItems/maxProperties on
    // what a rule can reach keep the estimate small. Descriptions make `kubectl explain` read like documentation.
    const missing: string[] = [];
    const walk = (s: JsonSchema, path: string, underRule: boolean): void => {
      const ruled = underRule || (s['x-kubernetes-validations']?.length ?? 0) > 0;
      if (ruled && s.type === 'string' && s.maxLength === undefined && !s.enum && s.format !== 'date-time')
        missing.push(`${path}: maxLength`);
      if (ruled && s.type === 'array' && s.maxItems === undefined) missing.push(`${path}: maxItems`);
      if (ruled && s.additionalProperties && s.maxProperties === undefined)
        missing.push(`${path}: maxProperties`);
      for (const [k, p] of Object.entries(s.properties ?? {})) {
        if (!p.description && !['apiVersion', 'kind', 'metadata'].includes(k))
          missing.push(`${path}.${k}: description`);
        walk(p, `${path}.${k}`, ruled);
      }
      if (s.items) walk(s.items, `${path}[]`, ruled);
      if (s.additionalProperties) walk(s.additionalProperties, `${path}{}`, ruled);
    };
    for (const def of KINDS) walk(kindSchema(def), def.kind, false);
    expect(missing).toEqual([]);
  });

  it('the examples/ objects are valid locally, with defaults applied', async () => {
    const seen = new Set<string>();
    for (const { file, def, object } of await strataExamples()) {
      seen.add(def.kind);
      const r = validateObject(def, object);
      expect(
        r.issues.map((i) => `${formatPath(i.path)}: ${i.message}`),
        file,
      ).toEqual([]);
    }
    expect([...seen].sort()).toEqual(['ImageBuild', 'LayerCache', 'RegistryMirror']);
  });

  it.each(BAD_CASES.filter((c) => c.local?.length === 0).map((c) => [c.name, c] as const))(
    'allows locally what only a cluster refuses: %s',
    (_name, c) => {
      expect(validateObject(c.kind, c.object).issues).toEqual([]);
    },
  );

  it.each(BAD_CASES.filter((c) => c.local?.length).map((c) => [c.name, c] as const))(
    'refuses locally: %s',
    (_name, c) => {
      const issues = validateObject(c.kind, c.object).issues.map(
        (i) => `${formatPath(i.path)}: ${i.message}`,
      );
      for (const want of c.local!)
        expect(
          issues.some((i) => i.startsWith(want)),
          `${want} in ${JSON.stringify(issues)}`,
        ).toBe(true);
      expect(issues).toHaveLength(c.local!.length);
    },
  );

  it('defaults reach into nested objects and lists', () => {
    const r = validateObject(KINDS[1]!, {
      apiVersion: 'strata.dev/v1alpha1',
      kind: 'RegistryMirror',
      metadata: { name: 'm' },
      spec: { upstreams: [{ name: 'docker.io', url: 'https://registry-1.docker.io' }] },
    });
    expect(r.issues).toEqual([]);
    expect(r.value.spec).toMatchObject({
      replicas: 1,
      tagTTL: '5m',
      configureNodes: true,
      service: { type: 'ClusterIP', port: 5000 },
      runtimes: {
        containerd: { enabled: true, configPath: '/etc/containerd/certs.d' },
        docker: { enabled: false },
      },
      upstreams: [{ insecureSkipTLSVerify: false }],
    });
  });

  it('durations convert to milliseconds', () => {
    expect(durationMs('5m')).toBe(300_000);
    expect(durationMs('1h30m')).toBe(5_400_000);
    expect(durationMs('250ms')).toBe(250);
    expect(() => durationMs('5 minutes')).toThrow(RangeError);
    expect(() => durationMs('')).toThrow(RangeError);
  });

  it('the structural check catches each rule it claims', () => {
    const bad: JsonSchema = {
      type: 'object',
      properties: {
        metadata: { type: 'object', properties: { name: { type: 'string' } } },
        noType: { description: 'x' },
        ref: { type: 'object', ...({ $ref: '#/x' } as object) },
        both: {
          type: 'object',
          properties: { a: { type: 'string' } },
          additionalProperties: { type: 'string' },
        },
        junctor: {
          type: 'object',
          properties: { a: { type: 'string' } },
          oneOf: [{ required: ['b'] }, { type: 'object', required: ['a'] }],
        },
        badDefault: { type: 'string', enum: ['x'], default: 'y' },
        rules: {
          type: 'object',
          'x-kubernetes-validations': [
            celRule('true', 'a', { fieldPath: '.x' }),
            celRule('true', 'b', { fieldPath: '.y' }),
          ],
        },
        list: {
          type: 'array',
          items: { type: 'object', properties: { k: { type: 'string' } } },
          'x-kubernetes-list-type': 'map',
          'x-kubernetes-list-map-keys': ['k'],
        },
      },
    };
    const v = structuralViolations(bad);
    for (const m of [
      /^noType: type is required/,
      /^ref: \$ref is not allowed/,
      /^both: properties and additionalProperties/,
      /^junctor.oneOf\[0\]: b is not specified outside/,
      /^junctor.oneOf\[1\]: type is not allowed inside/,
      /^badDefault: default is invalid/,
      /^list: map key k must be required/,
      /^rules: only the last validation rule of a node may have a fieldPath/,
      /^metadata: only/,
    ])
      expect(
        v.some((x) => m.test(x)),
        `${m} in ${JSON.stringify(v)}`,
      ).toBe(true);
  });
});
