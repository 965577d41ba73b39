import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readDockerignore } from '../../src/engine/build/copy/context.js';
import {
  compileDockerignore,
  createIgnoreMatcher,
  parseDockerignore,
} from '../../src/engine/build/copy/dockerignore.js';
import { hasCode } from '../../src/engine/errors.js';
import { tempDir } from '../support/images.js';

describe('parseDockerignore', () => {
  it.each<[string, string[]]>([
    ['# comment\n\n  a  \n', ['a']],
    ['  # not a comment', ['# not a comment']],
    ['/abs\n./rel/\nx/../y\n', ['abs', 'rel', 'y']],
    ['!  keep.txt\n!/x/', ['!keep.txt', '!x']],
    ['\ufeffbom\r\nwin\r\n', ['bom', 'win']],
    ['/', ['/']],
  ])('%j → %j', (text, want) => {
    expect(parseDockerignore(text)).toEqual(want);
  });
});

describe('malformed patterns name their line, never their text', () => {
  it.each<[string, string]>([
    ['a\n# c\n\nsecret[x\n', '.dockerignore line 4: unterminated character class'],
    ['ok\nsecret\\', '.dockerignore line 2: the pattern ends with a backslash'],
    ['!', '.dockerignore line 1: illegal exclusion pattern: "!"'],
  ])('%j', (text, want) => {
    expect(() => parseDockerignore(text)).toThrow(want);
    expect(() => parseDockerignore(text)).not.toThrow(/secret/);
  });

  it('names the file it was given, and a pattern list by position', () => {
    expect(() => parseDockerignore('[', 'app.Dockerfile.dockerignore')).toThrow(
      'app.Dockerfile.dockerignore line 1: unterminated character class',
    );
    expect(() => compileDockerignore(['ok', 'secret['])).toThrow(
      /^\.dockerignore pattern 2: unterminated character class$/,
    );
  });
});

describe('createIgnoreMatcher (moby patternmatcher)', () => {
  const table: Array<[string[], string, boolean]> = [
    [['*.log'], 'a.log', true],
    [['*.log'], 'dir/a.log', false],
    [['**/*.log'], 'dir/sub/a.log', true],
    [['**/*.log'], 'a.log', true],
    [['dir/**'], 'dir/x/y', true],
    [['dir/**'], 'dir', false],
    [['dir'], 'dir/deep/file', true],
    [['a/**/b'], 'a/b', true],
    [['a/**/b'], 'a/x/y/b', true],
    [['a/**/b'], 'a/x/y/c', false],
    [['node_modules', '!node_modules/keep'], 'node_modules/keep/x.js', false],
    [['node_modules', '!node_modules/keep'], 'node_modules/other.js', true],
    [['*', '!README.md'], 'README.md', false],
    [['*', '!README.md'], 'src', true],
    [['!README.md', '*'], 'README.md', true],
    [['?.c'], 'a.c', true],
    [['?.c'], 'ab.c', false],
    [['[ab].c'], 'b.c', true],
    [['[!a].c'], 'a.c', false],
    [['[^a].c'], 'b.c', true],
    [['a\\*'], 'a*', true],
    [['a\\*'], 'ab', false],
    [['Dockerfile', '.dockerignore'], '.dockerignore', true],
    [['.*'], '.git/config', true],
  ];
  it.each(table)('%j excludes %j: %s', (patterns, path, want) => {
    expect(createIgnoreMatcher(patterns)(path, false)).toBe(want);
  });

  it('knows which excluded directories an exception can re-enter', () => {
    const f = compileDockerignore(['dir', '!dir/keep/file', 'other']);
    expect(f.mayReinclude('dir')).toBe(true);
    expect(f.mayReinclude('dir/keep')).toBe(true);
    expect(f.mayReinclude('other')).toBe(false);
    expect(compileDockerignore(['x', '!**/y']).mayReinclude('x/deep')).toBe(true);
  });

  it('refuses a bare "!"', () => {
    let err: unknown;
    try {
      createIgnoreMatcher(['!']);
    } catch (e) {
      err = e;
    }
    expect(hasCode(err, 'INVALID_ARGUMENT')).toBe(true);
  });
});

describe('readDockerignore', () => {
  it('prefers <Dockerfile>.dockerignore next to the Dockerfile, else .dockerignore', async () => {
    const ctx = await tempDir('strata-copy-ignore-');
    expect(await readDockerignore(ctx)).toEqual([]);
    await writeFile(join(ctx, '.dockerignore'), 'a\n');
    expect(await readDockerignore(ctx, 'Dockerfile')).toEqual(['a']);
    await mkdir(join(ctx, 'build'));
    await writeFile(join(ctx, 'build', 'app.Dockerfile.dockerignore'), 'b\n!c\n');
    expect(await readDockerignore(ctx, 'build/app.Dockerfile')).toEqual(['b', '!c']);
    expect(await readDockerignore(ctx, join(ctx, 'build/app.Dockerfile'))).toEqual(['b', '!c']);
  });

  it('reads through symlinks only inside the root: out-of-root targets land inside (or are missing)', async () => {
    const outside = await tempDir('strata-copy-ignore-outside-');
    await writeFile(join(outside, 'list'), 'secret[\n');
    const ctx = await tempDir('strata-copy-ignore-');
    await symlink(join(outside, 'list'), join(ctx, '.dockerignore'));
    await symlink(`../../../../..${join(outside, 'list')}`, join(ctx, 'Dockerfile.dockerignore'));
    expect(await readDockerignore(ctx, 'Dockerfile')).toEqual([]);
    // The same absolute path inside the context is what the link means.
    await mkdir(join(ctx, outside), { recursive: true });
    await writeFile(join(ctx, outside, 'list'), 'inside\n');
    expect(await readDockerignore(ctx, 'Dockerfile')).toEqual(['inside']);
  });
});
