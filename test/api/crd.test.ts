import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import * as prettier from 'prettier';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import type { JsonSchema } from '../../src/api/schema.js';
import { structuralViolations } from '../../src/api/structural.js';
import {
  IMAGEBUILD_CRD_FILE,
  imageBuildCrd,
  imageBuildSchema,
  renderCrdYaml,
} from '../../src/api/v1alpha1/crd.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

describe('ImageBuild CRD', () => {
  it('the committed YAML is what scripts/gen-crds.mjs writes (run npm run gen:crds after a schema change)', async () => {
    const file = `${ROOT}${IMAGEBUILD_CRD_FILE}`;
    const expected = await prettier.format(renderCrdYaml(imageBuildCrd()), {
      ...(await prettier.resolveConfig(file)),
      filepath: file,
    });
    const committed = await readFile(file, 'utf8');
    expect(committed).toBe(expected);
    expect(parse(committed)).toEqual(imageBuildCrd());
  });

  it('has the status subresource, printer columns, short name and the schema', () => {
    const crd = imageBuildCrd() as {
      metadata: { name: string };
      spec: {
        group: string;
        names: { shortNames: string[]; kind: string };
        scope: string;
        versions: Record<string, unknown>[];
      };
    };
    expect(crd.metadata.name).toBe('imagebuilds.strata.dev');
    expect(crd.spec.group).toBe('strata.dev');
    expect(crd.spec.names.shortNames).toEqual(['ib']);
    const v = crd.spec.versions[0]!;
    expect(v.subresources).toEqual({ status: {} });
    expect((v.additionalPrinterColumns as { name: string }[]).map((c) => c.name)).toEqual([
      'Phase',
      'Digest',
      'Image',
      'Age',
    ]);
    expect((v.schema as { openAPIV3Schema: JsonSchema }).openAPIV3Schema).toEqual(imageBuildSchema());
  });

  it('the schema is structural', () => {
    expect(structuralViolations(imageBuildSchema())).toEqual([]);
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
      /^metadata: only/,
    ])
      expect(
        v.some((x) => m.test(x)),
        `${m} in ${JSON.stringify(v)}`,
      ).toBe(true);
  });
});
