import { execFileSync } from 'node:child_process';
import {
  chmod,
  lchown,
  lstat,
  mkdir,
  readFile,
  readlink,
  stat,
  symlink,
  utimes,
  writeFile,
  link,
} from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { copyIntoRoot } from '../../src/engine/build/copy/copy.js';
import { hasCode } from '../../src/engine/errors.js';
import { tempDir } from '../support/images.js';
import { requirePeer } from '../support/peers.js';
import { requireRoot } from '../support/root.js';
import { exists, failure } from '../support/outcomes.js';
import { fromContext } from './copy-support.js';

async function tree(files: Record<string, string>): Promise<string> {
  const dir = await tempDir('strata-copy-ctx-');
  for (const [name, content] of Object.entries(files)) {
    await mkdir(join(dir, name, '..'), { recursive: true });
    if (name.endsWith('/')) await mkdir(join(dir, name), { recursive: true });
    else await writeFile(join(dir, name), content);
  }
  return dir;
}

const copy = fromContext('COPY');

describe('copyIntoRoot: docker rules', () => {
  beforeAll(() => {
    requireRoot('the COPY tests (chown, devices)');
    requirePeer('getfattr');
    requirePeer('setfattr');
  });

  it('copies a directory’s contents, not the directory', async () => {
    const ctx = await tree({ 'src/a.txt': 'A', 'src/sub/b.txt': 'B' });
    const root = await tempDir();
    const r = await copy(ctx, root, { sources: ['src'], destination: '/app' });
    expect(await readFile(join(root, 'app/a.txt'), 'utf8')).toBe('A');
    expect(await readFile(join(root, 'app/sub/b.txt'), 'utf8')).toBe('B');
    expect(await exists(join(root, 'app/src'))).toBe(false);
    expect(r.files).toBe(3);
    expect(r.bytes).toBe(2);
  });

  it.each<[string, string]>([
    ['/dst/', 'dst/f.txt'],
    ['/dst', 'dst'],
    ['rel/', 'work/rel/f.txt'],
    ['.', 'work/f.txt'],
    ['/exists', 'exists/f.txt'],
  ])('COPY f.txt %s → %s', async (destination, want) => {
    const ctx = await tree({ 'f.txt': 'F' });
    const root = await tempDir();
    await mkdir(join(root, 'exists'));
    await copy(ctx, root, { sources: ['f.txt'], destination, workdir: '/work' });
    expect((await stat(join(root, want))).isFile()).toBe(true);
    expect(await readFile(join(root, want), 'utf8')).toBe('F');
  });

  it('several sources need a destination ending with /', async () => {
    const ctx = await tree({ a: '1', b: '2', 'x.txt': '', 'y.txt': '' });
    const root = await tempDir();
    expect((await failure(copy(ctx, root, { sources: ['a', 'b'], destination: '/d' }))).code).toBe(
      'DOCKERFILE_INVALID',
    );
    expect((await failure(copy(ctx, root, { sources: ['*.txt'], destination: '/d' }))).code).toBe(
      'DOCKERFILE_INVALID',
    );
    await copy(ctx, root, { sources: ['a', 'b'], destination: '/d/' });
    expect(await readFile(join(root, 'd/b'), 'utf8')).toBe('2');
  });

  it.each<[string, string[]]>([
    ['*.txt', ['one.txt', 'two.txt']],
    ['dir/*', ['x', 'y']],
    ['[ab].c', ['a.c', 'b.c']],
  ])('glob %s', async (glob, want) => {
    const ctx = await tree({
      'one.txt': '1',
      'two.txt': '2',
      'three.md': '',
      'dir/x': '',
      'dir/y': '',
      'a.c': '',
      'b.c': '',
      'c.c': '',
    });
    const root = await tempDir();
    await copy(ctx, root, { sources: [glob], destination: '/out/' });
    const { readdir } = await import('node:fs/promises');
    expect((await readdir(join(root, 'out'))).sort()).toEqual(want);
  });

  it('a glob matching nothing and a missing source are errors naming them', async () => {
    const ctx = await tree({ 'a.txt': '' });
    const root = await tempDir();
    const g = await failure(copy(ctx, root, { sources: ['*.nope'], destination: '/d/' }));
    expect(g.code).toBe('BUILD_CONTEXT_INVALID');
    expect(g.message).toContain('*.nope');
    const m = await failure(copy(ctx, root, { sources: ['missing.bin'], destination: '/d/' }));
    expect(m.code).toBe('BUILD_CONTEXT_INVALID');
    expect(m.message).toContain('missing.bin');
    expect(m.detail?.ignored).toBe(false);
  });

  it('.dockerignore: ** patterns, ! exceptions inside an excluded dir, a hint for excluded sources', async () => {
    const ctx = await tree({
      'app/main.js': 'm',
      'app/debug.log': 'l',
      'app/deep/x.log': 'l',
      'node_modules/dep/index.js': 'd',
      'node_modules/keep/ok.js': 'k',
      secret: 's',
    });
    const root = await tempDir();
    const ignorePatterns = ['**/*.log', 'node_modules', '!node_modules/keep/ok.js', 'secret'];
    await copyIntoRoot({
      instruction: 'COPY',
      from: { dir: ctx, isContext: true, ignorePatterns },
      sources: ['.'],
      destination: '/',
      workdir: '/',
      destRoot: root,
    });
    expect(await exists(join(root, 'app/main.js'))).toBe(true);
    expect(await exists(join(root, 'app/debug.log'))).toBe(false);
    expect(await exists(join(root, 'app/deep/x.log'))).toBe(false);
    expect(await exists(join(root, 'node_modules/dep'))).toBe(false);
    expect(await readFile(join(root, 'node_modules/keep/ok.js'), 'utf8')).toBe('k');
    expect(await exists(join(root, 'secret'))).toBe(false);
    const err = await failure(
      copyIntoRoot({
        instruction: 'COPY',
        from: { dir: ctx, isContext: true, ignorePatterns },
        sources: ['secret'],
        destination: '/',
        workdir: '/',
        destRoot: root,
      }),
    );
    expect(err.code).toBe('BUILD_CONTEXT_INVALID');
    expect(err.message).toContain('.dockerignore');
  });

  it('../ and absolute sources stay in the context', async () => {
    const parent = await tempDir();
    const ctx = join(parent, 'ctx');
    await mkdir(join(ctx, 'etc'), { recursive: true });
    await writeFile(join(parent, 'escape'), 'HOST');
    await writeFile(join(ctx, 'etc/passwd'), 'CONTEXT');
    const root = await tempDir();
    expect((await failure(copy(ctx, root, { sources: ['../escape'], destination: '/e' }))).code).toBe(
      'BUILD_CONTEXT_INVALID',
    );
    await copy(ctx, root, { sources: ['/etc/passwd'], destination: '/p' });
    expect(await readFile(join(root, 'p'), 'utf8')).toBe('CONTEXT');
  });

  it('a context symlink pointing outside is not followed out; inside ones are followed for sources, kept as links in trees', async () => {
    const parent = await tempDir();
    const ctx = join(parent, 'ctx');
    await mkdir(join(ctx, 'd'), { recursive: true });
    await writeFile(join(parent, 'outside'), 'HOST');
    await writeFile(join(ctx, 'real.txt'), 'REAL');
    await symlink('../outside', join(ctx, 'out'));
    await symlink('/etc/hostname', join(ctx, 'abs'));
    await symlink('real.txt', join(ctx, 'in'));
    await symlink('../../outside', join(ctx, 'd/link'));
    const root = await tempDir();
    expect((await failure(copy(ctx, root, { sources: ['out'], destination: '/x' }))).code).toBe(
      'BUILD_CONTEXT_INVALID',
    );
    // an absolute target restarts at the context root: /etc/hostname is not in the context
    expect((await failure(copy(ctx, root, { sources: ['abs'], destination: '/x' }))).code).toBe(
      'BUILD_CONTEXT_INVALID',
    );
    await copy(ctx, root, { sources: ['in'], destination: '/y/' });
    expect(await readFile(join(root, 'y/in'), 'utf8')).toBe('REAL');
    expect((await lstat(join(root, 'y/in'))).isFile()).toBe(true);
    await copy(ctx, root, { sources: ['d'], destination: '/z' });
    expect(await readlink(join(root, 'z/link'))).toBe('../../outside');
  });

  it('destinations through in-root symlinks land inside the root, never on the host', async () => {
    const ctx = await tree({ 'f.txt': 'F' });
    const outer = await tempDir();
    const root = join(outer, 'a', 'b', 'root');
    await mkdir(join(root, 'etc'), { recursive: true });
    await symlink('/etc', join(root, 'app'));
    await symlink('../../..', join(root, 'up'));
    await copy(ctx, root, { sources: ['f.txt'], destination: '/app/' });
    expect(await readFile(join(root, 'etc/f.txt'), 'utf8')).toBe('F');
    // `..` at the root stays at the root, as chroot does: /up/pwned is the root's /pwned.
    await copy(ctx, root, { sources: ['f.txt'], destination: '/up/pwned' });
    expect(await readFile(join(root, 'pwned'), 'utf8')).toBe('F');
    expect(await exists(join(outer, 'pwned'))).toBe(false);
    expect(await exists(join(outer, 'a', 'pwned'))).toBe(false);
  });

  it('owners: context files become 0:0, --from roots keep theirs, --chown and --chmod win; created parents get the chown owner', async () => {
    const ctx = await tree({ 'dir/f': 'x' });
    await chmod(join(ctx, 'dir/f'), 0o750);
    await lchown(join(ctx, 'dir/f'), 1234, 1234);
    const root = await tempDir();
    await copy(ctx, root, { sources: ['dir/f'], destination: '/ctx/f' });
    let st = await stat(join(root, 'ctx/f'));
    expect([st.uid, st.gid, st.mode & 0o7777]).toEqual([0, 0, 0o750]);
    await copyIntoRoot({
      instruction: 'COPY',
      from: { dir: ctx, isContext: false },
      sources: ['dir'],
      destination: '/from/',
      workdir: '/',
      destRoot: root,
    });
    st = await stat(join(root, 'from/f'));
    expect([st.uid, st.gid]).toEqual([1234, 1234]);
    await copy(ctx, root, {
      sources: ['dir'],
      destination: '/new/deep/',
      chown: { uid: 42, gid: 43 },
      chmod: 0o604,
    });
    st = await stat(join(root, 'new/deep/f'));
    expect([st.uid, st.gid, st.mode & 0o7777]).toEqual([42, 43, 0o604]);
    const parent = await stat(join(root, 'new'));
    expect([parent.uid, parent.gid, parent.mode & 0o7777]).toEqual([42, 43, 0o755]);
  });

  it('keeps mtimes, setuid bits, xattrs (security.capability) and hard links; replaces files; refuses a directory where a file goes', async () => {
    const ctx = await tree({ 'bin/tool': 'T', 'bin/other': 'O' });
    await chmod(join(ctx, 'bin/tool'), 0o4755);
    await utimes(join(ctx, 'bin/tool'), 1_000_000, 1_000_000);
    await link(join(ctx, 'bin/tool'), join(ctx, 'bin/tool2'));
    execFileSync('setfattr', [
      '-n',
      'security.capability',
      '-v',
      '0x0100000200200000000000000000000000000000',
      join(ctx, 'bin/tool'),
    ]);
    execFileSync('setfattr', ['-n', 'user.note', '-v', 'hi', join(ctx, 'bin/other')]);
    const root = await tempDir();
    await mkdir(join(root, 'usr/bin/other'), { recursive: true });
    await writeFile(join(root, 'usr/bin/tool'), 'OLD');
    const err = await failure(copy(ctx, root, { sources: ['bin'], destination: '/usr/bin' }));
    expect(err.code).toBe('CONFLICT');
    await copy(ctx, root, { sources: ['bin/tool', 'bin/tool2'], destination: '/usr/bin/' });
    const st = await stat(join(root, 'usr/bin/tool'));
    expect(await readFile(join(root, 'usr/bin/tool'), 'utf8')).toBe('T');
    expect(st.mode & 0o7777).toBe(0o4755);
    expect(st.mtimeMs).toBe(1_000_000_000);
    expect((await stat(join(root, 'usr/bin/tool2'))).ino).toBe(st.ino);
    const caps = execFileSync(
      'getfattr',
      ['-n', 'security.capability', '-e', 'hex', '--absolute-names', join(root, 'usr/bin/tool')],
      { encoding: 'utf8' },
    );
    expect(caps).toContain('0x0100000200200000000000000000000000000000');
    const root2 = await tempDir();
    await copy(ctx, root2, { sources: ['bin'], destination: '/b' });
    expect(
      execFileSync('getfattr', ['-n', 'user.note', '--only-values', join(root2, 'b/other')], {
        encoding: 'utf8',
      }),
    ).toBe('hi');
  });

  it('copies fifos and device nodes from --from roots', async () => {
    const src = await tempDir();
    execFileSync('mknod', [join(src, 'null'), 'c', '1', '3']);
    execFileSync('mkfifo', [join(src, 'pipe')]);
    const root = await tempDir();
    await copyIntoRoot({
      instruction: 'COPY',
      from: { dir: src, isContext: false },
      sources: ['/'],
      destination: '/dev/',
      workdir: '/',
      destRoot: root,
    });
    const dev = await lstat(join(root, 'dev/null'));
    expect(dev.isCharacterDevice()).toBe(true);
    expect(dev.rdev).toBe((await lstat('/dev/null')).rdev);
    expect((await lstat(join(root, 'dev/pipe'))).isFIFO()).toBe(true);
  });

  it('heredoc sources become files named after the heredoc', async () => {
    const ctx = await tree({});
    const root = await tempDir();
    await copy(ctx, root, {
      sources: [],
      inline: [{ name: 'EOF', content: 'hello\n' }],
      destination: '/etc/',
    });
    expect(await readFile(join(root, 'etc/EOF'), 'utf8')).toBe('hello\n');
    await copy(ctx, root, { sources: [], inline: [{ name: 'EOF', content: 'x' }], destination: '/greeting' });
    expect(await readFile(join(root, 'greeting'), 'utf8')).toBe('x');
  });

  it('reports progress and honours an aborted signal', async () => {
    const ctx = await tree({ big: 'x'.repeat(3 << 20), small: 's' });
    const root = await tempDir();
    const seen: number[] = [];
    await copy(ctx, root, {
      sources: ['big', 'small'],
      destination: '/d/',
      onProgress: (p) => seen.push(p.bytes),
    });
    expect(seen.length).toBeGreaterThanOrEqual(3);
    expect(seen[seen.length - 1]).toBe((3 << 20) + 1);
    const ac = new AbortController();
    ac.abort();
    expect(
      hasCode(
        await failure(copy(ctx, root, { sources: ['big'], destination: '/e', signal: ac.signal })),
        'ABORTED',
      ),
    ).toBe(true);
  });

  it('COPY refuses URLs', async () => {
    const ctx = await tree({});
    const root = await tempDir();
    expect(
      (await failure(copy(ctx, root, { sources: ['http://example.invalid/x'], destination: '/x' }))).code,
    ).toBe('DOCKERFILE_INVALID');
  });
});
