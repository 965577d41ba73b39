import { describe, expect, it } from 'vitest';
import {
  familiarName,
  formatReference,
  manifestIdentifier,
  parseReference,
} from '../../src/engine/oci/reference.js';
import { hasCode } from '../../src/engine/errors.js';

const D = `sha256:${'a'.repeat(64)}`;

describe('parseReference (docker semantics)', () => {
  const table: Array<[string, string]> = [
    ['nginx', 'docker.io/library/nginx:latest'],
    ['nginx:1.25', 'docker.io/library/nginx:1.25'],
    ['library/nginx', 'docker.io/library/nginx:latest'],
    ['user/app', 'docker.io/user/app:latest'],
    ['docker.io/nginx', 'docker.io/library/nginx:latest'],
    ['index.docker.io/nginx', 'docker.io/library/nginx:latest'],
    ['localhost/app', 'localhost/app:latest'],
    ['localhost:5000/app:v1', 'localhost:5000/app:v1'],
    ['127.0.0.1:5000/team/sub/app:1', '127.0.0.1:5000/team/sub/app:1'],
    ['ghcr.io/org/app', 'ghcr.io/org/app:latest'],
    ['[::1]:5000/app', '[::1]:5000/app:latest'],
    ['Registry.Example.com/app', 'Registry.Example.com/app:latest'],
    [`nginx@${D}`, `docker.io/library/nginx@${D}`],
    [`nginx:1@${D}`, `docker.io/library/nginx:1@${D}`],
    ['a.b/c__d/e-f.g:T_1.x-y', 'a.b/c__d/e-f.g:T_1.x-y'],
    ['a:5000', 'docker.io/library/a:5000'],
    ['UPPER/app', 'UPPER/app:latest'],
  ];
  it.each(table)('%s → %s', (input, want) => {
    expect(formatReference(parseReference(input))).toBe(want);
  });

  const bad = [
    '',
    ' nginx',
    'Nginx',
    'nginx:',
    'nginx:-x',
    'nginx@sha256:abc',
    `nginx@md5:${'a'.repeat(32)}`,
    'a//b',
    '-a/b',
    'host:port/x',
    'nginx:' + 'x'.repeat(129),
    'a/b_/c',
  ];
  it.each(bad)('rejects %j with INVALID_REFERENCE', (input) => {
    let err: unknown;
    try {
      parseReference(input);
    } catch (e) {
      err = e;
    }
    expect(hasCode(err, 'INVALID_REFERENCE')).toBe(true);
    expect(String((err as Error).message)).toContain(JSON.stringify(input));
  });

  it('keeps neither tag nor digest when asked', () => {
    expect(parseReference('nginx', { defaultTag: false })).toEqual({
      registry: 'docker.io',
      repository: 'library/nginx',
    });
  });

  it('prefers the digest to ask the registry for, and prints the familiar name', () => {
    const ref = parseReference(`nginx:1@${D}`);
    expect(manifestIdentifier(ref)).toBe(D);
    expect(familiarName(ref)).toBe(`nginx:1@${D}`);
    expect(familiarName(parseReference('localhost:5000/a/b:2'))).toBe('localhost:5000/a/b:2');
  });
});
