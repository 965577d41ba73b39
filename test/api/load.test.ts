import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ImageBuildFileError, loadImageBuildFile, parseImageBuild } from '../../src/api/v1alpha1/load.js';
import type { ImageBuild, ImageBuildSpec } from '../../src/api/v1alpha1/imagebuild.js';
import { sourceDateEpoch } from '../../src/api/v1alpha1/imagebuild.js';
import { tempDir } from '../support/images.js';

const EXAMPLES = fileURLToPath(new URL('../../examples', import.meta.url));

const HEAD = 'apiVersion: strata.dev/v1alpha1\nkind: ImageBuild\nmetadata:\n  name: t\n';

function issuesOf(text: string): { path: string; message: string; line?: number }[] {
  try {
    parseImageBuild(text, 'test.yaml');
  } catch (err) {
    expect(err).toBeInstanceOf(ImageBuildFileError);
    expect((err as ImageBuildFileError).code).toBe('INVALID_ARGUMENT');
    return [...(err as ImageBuildFileError).issues];
  }
  throw new Error('expected the file to be refused');
}

describe('loadImageBuildFile', () => {
  it('loads the hello example with defaults applied', async () => {
    const ib: ImageBuild = await loadImageBuildFile(join(EXAMPLES, 'imagebuild-hello.yaml'));
    expect(ib.metadata.name).toBe('hello');
    const spec: ImageBuildSpec = ib.spec;
    expect(spec.context).toEqual({ dir: 'hello' });
    expect(spec.dockerfile).toEqual({ path: 'Dockerfile' });
    expect(spec.output).toEqual({ images: ['localhost:5000/examples/hello:v1'], push: false });
    expect(spec.network).toBe('host');
    expect(spec.timestamp).toBe(0);
    // The types narrow on the context kind: this line would not compile against a wrong type.
    if (spec.context.dir !== undefined) expect(spec.context.git).toBeUndefined();
  });

  it('loads the git example with every field', async () => {
    const ib = await loadImageBuildFile(join(EXAMPLES, 'imagebuild-git.yaml'));
    const git = ib.spec.context.git;
    expect(git).toEqual({
      url: 'https://github.com/example/app.git',
      ref: 'v1.2.0',
      subPath: 'services/api',
    });
    expect(ib.spec.output.push).toBe(true);
    expect(ib.spec.cache).toEqual({ repository: 'registry.example.com/app/api-cache', disabled: false });
    expect(ib.spec.tolerations?.[0]?.effect).toBe('NoSchedule');
    expect(ib.spec.resources?.requests).toEqual({ cpu: '500m', memory: '1Gi' });
    expect(sourceDateEpoch(ib.spec.timestamp)).toBe(1704067200);
  });

  it('picks the ImageBuild among several documents, and by name when there are two', async () => {
    const dir = await tempDir();
    const other = 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n';
    const ib = (name: string): string =>
      `apiVersion: strata.dev/v1alpha1\nkind: ImageBuild\nmetadata:\n  name: ${name}\nspec:\n  context:\n    dir: .\n  output:\n    images: [a/b]\n`;
    await writeFile(join(dir, 'one.yaml'), `${other}---\n${ib('x')}`);
    expect((await loadImageBuildFile(join(dir, 'one.yaml'))).metadata.name).toBe('x');
    await writeFile(join(dir, 'two.yaml'), `${ib('x')}---\n${ib('y')}`);
    await expect(loadImageBuildFile(join(dir, 'two.yaml'))).rejects.toThrow(
      /2 ImageBuild documents \(x, y\)/,
    );
    expect((await loadImageBuildFile(join(dir, 'two.yaml'), { name: 'y' })).metadata.name).toBe('y');
    await writeFile(join(dir, 'none.yaml'), other);
    await expect(loadImageBuildFile(join(dir, 'none.yaml'))).rejects.toThrow(
      /no strata.dev\/v1alpha1 ImageBuild document \(found v1 ConfigMap\)/,
    );
  });

  it('accepts an inline Dockerfile and an RFC 3339 timestamp; converts both timestamp forms', () => {
    const ib = parseImageBuild(
      `${HEAD}spec:\n  dockerfile:\n    inline: |\n      FROM scratch\n  context: {tarball: https://example.com/c.tgz}\n  output: {images: [x]}\n  timestamp: 2024-01-01T00:00:00Z\n`,
      'f.yaml',
    );
    expect(ib.spec.dockerfile).toEqual({ inline: 'FROM scratch\n' });
    expect(sourceDateEpoch(ib.spec.timestamp)).toBe(1704067200);
    expect(sourceDateEpoch('1700000000')).toBe(1700000000);
    expect(() => sourceDateEpoch('2023-02-30T00:00:00Z')).toThrow(RangeError);
  });

  const base = {
    context: '  context:\n    dir: .\n',
    output: '  output:\n    images: [reg.example/a:1]\n',
  };
  const spec = (parts: Partial<typeof base> & { extra?: string }): string =>
    `${HEAD}spec:\n${parts.context ?? base.context}${parts.output ?? base.output}${parts.extra ?? ''}`;

  const bad: [string, string, string, RegExp][] = [
    [
      'git without url',
      spec({ context: '  context:\n    git:\n      ref: main\n' }),
      'spec.context.git.url',
      /^required$/,
    ],
    [
      'two context kinds',
      spec({ context: '  context:\n    dir: .\n    tarball: x.tar\n' }),
      'spec.context',
      /^exactly one of dir, tarball, git, configMap must be set$/,
    ],
    [
      'no context kind',
      spec({ context: '  context: {}\n' }),
      'spec.context',
      /^exactly one of dir, tarball, git, configMap must be set$/,
    ],
    ['no context', spec({ context: '' }), 'spec.context', /^required$/],
    ['no images', spec({ output: '  output:\n    images: []\n' }), 'spec.output.images', /at least one item/],
    [
      'bad image ref',
      spec({ output: '  output:\n    images: ["Reg/UPPER"]\n' }),
      'spec.output.images[0]',
      /is not valid/,
    ],
    [
      'digest as output',
      spec({ output: `  output:\n    images: ["a/b@sha256:${'a'.repeat(64)}"]\n` }),
      'spec.output.images[0]',
      /is not valid/,
    ],
    [
      'duplicate images',
      spec({ output: '  output:\n    images: [a/b, a/b]\n' }),
      'spec.output.images[1]',
      /duplicate/,
    ],
    ['bad network', spec({ extra: '  network: bridge\n' }), 'spec.network', /must be one of host, none/],
    [
      'push not a bool',
      spec({ output: '  output:\n    images: [a]\n    push: "yes"\n' }),
      'spec.output.push',
      /must be a boolean, not a string/,
    ],
    ['unknown field', spec({ extra: '  dockerFile: x\n' }), 'spec.dockerFile', /unknown field/],
    [
      'bad build arg name',
      spec({ extra: '  buildArgs:\n    - name: 1X\n      value: a\n' }),
      'spec.buildArgs[0].name',
      /is not valid/,
    ],
    [
      'duplicate build arg',
      spec({ extra: '  buildArgs:\n    - {name: A, value: a}\n    - {name: A, value: b}\n' }),
      'spec.buildArgs[1]',
      /duplicate entry with name "A"/,
    ],
    [
      'build arg without value',
      spec({ extra: '  buildArgs:\n    - name: A\n' }),
      'spec.buildArgs[0].value',
      /^required$/,
    ],
    ['bad platform', spec({ extra: '  platform: amd64\n' }), 'spec.platform', /is not valid/],
    ['negative timestamp', spec({ extra: '  timestamp: -1\n' }), 'spec.timestamp', /at least 0/],
    ['bad timestamp', spec({ extra: '  timestamp: yesterday\n' }), 'spec.timestamp', /is not valid/],
    [
      'impossible date',
      spec({ extra: '  timestamp: 2023-02-30T00:00:00Z\n' }),
      'spec.timestamp',
      /does not exist/,
    ],
    [
      'escaping dockerfile',
      spec({ extra: '  dockerfile:\n    path: ../Dockerfile\n' }),
      'spec.dockerfile.path',
      /inside the context/,
    ],
    [
      'escaping subPath',
      spec({ context: '  context:\n    git:\n      url: https://x/y.git\n      subPath: a/../../b\n' }),
      'spec.context.git.subPath',
      /inside the repository/,
    ],
    [
      'path and inline',
      spec({ extra: '  dockerfile:\n    path: D\n    inline: FROM scratch\n' }),
      'spec.dockerfile',
      /^exactly one of path, inline must be set$/,
    ],
    [
      'push to Docker Hub by omission (a CEL rule, refused offline by its twin)',
      spec({ output: '  output:\n    images: [app:v1]\n    push: true\n' }),
      'spec.output.images',
      /every image must name a registry host/,
    ],
    [
      'pushSecret without push (a CEL rule)',
      spec({ output: '  output:\n    images: [reg.example/a:1]\n    pushSecret: {name: creds}\n' }),
      'spec.output',
      /^pushSecret is only used with push: true$/,
    ],
    [
      'bad toleration',
      spec({ extra: '  tolerations:\n    - operator: Maybe\n' }),
      'spec.tolerations[0].operator',
      /Exists, Equal/,
    ],
    [
      'bad quantity',
      spec({ extra: '  resources:\n    limits:\n      memory: lots\n' }),
      'spec.resources.limits.memory',
      /is not valid/,
    ],
    [
      'label not a string',
      spec({ extra: '  labels:\n    a.b/c: 3\n' }),
      'spec.labels[a.b/c]',
      /must be a string, not an integer/,
    ],
    [
      'git option injection',
      spec({ context: '  context:\n    git:\n      url: --upload-pack=touch\n' }),
      'spec.context.git.url',
      /is not valid/,
    ],
    [
      'configMap bad name',
      spec({ context: '  context:\n    configMap:\n      name: Bad_Name\n' }),
      'spec.context.configMap.name',
      /is not valid/,
    ],
  ];
  for (const [name, text, path, message] of bad) {
    it(`refuses ${name} at ${path}`, () => {
      const issues = issuesOf(text);
      const hit = issues.find((i) => i.path === path);
      expect(hit, JSON.stringify(issues)).toBeDefined();
      expect(hit!.message).toMatch(message);
      expect(hit!.line).toBeGreaterThan(4);
    });
  }

  it('refuses a wrong apiVersion, a missing name, a missing spec and bad YAML with a line', () => {
    const wrong = issuesOf('apiVersion: strata.dev/v1\nkind: ImageBuild\nmetadata: {}\n');
    expect(wrong.map((i) => i.path)).toEqual(['apiVersion', 'metadata.name', 'spec']);
    const yaml = issuesOf(`${HEAD}spec:\n  context: [\n`);
    expect(yaml[0]!.message).toMatch(/invalid YAML/);
    expect(yaml[0]!.line).toBeGreaterThan(4);
    const dup = issuesOf(`${HEAD}spec:\n  target: a\n  target: b\n`);
    expect(dup[0]!.message).toMatch(/invalid YAML/);
  });

  it('names the line of the offending field', () => {
    const issues = issuesOf(spec({ extra: '  network: bridge\n' }));
    expect(issues).toEqual([{ path: 'spec.network', message: expect.stringMatching(/one of/), line: 10 }]);
  });
});
