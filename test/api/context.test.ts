import { execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir, readFile, readdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeHeader, END_OF_ARCHIVE, padding } from '../../src/engine/tar/header.js';
import type { ImageBuildSpec } from '../../src/api/v1alpha1/imagebuild.js';
import { resolveBuildContext } from '../../src/cli/build-context/index.js';
import { hasCode } from '../../src/engine/errors.js';
import { requirePeer } from '../support/peers.js';
import { tempDir } from '../support/images.js';

type Spec = Pick<ImageBuildSpec, 'context' | 'dockerfile'>;
const DOCKERFILE = { path: 'Dockerfile' } as const;

/** A tar of `entries` written with the project's own header encoder (so hostile names can be made). */
function tarOf(
  entries: {
    name: string;
    type?: 'file' | 'directory' | 'symlink' | 'link';
    body?: string;
    linkname?: string;
  }[],
): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.body ?? '');
    parts.push(
      Buffer.from(
        encodeHeader({
          name: e.name.replace(/\/$/, ''),
          typeflag: ({ file: '0', link: '1', symlink: '2', directory: '5' } as const)[e.type ?? 'file'],
          mode: e.type === 'directory' ? 0o755 : 0o644,
          uid: 0,
          gid: 0,
          size: e.type === undefined || e.type === 'file' ? body.length : 0,
          mtime: 1_700_000_000,
          linkname: e.linkname ?? '',
        }),
      ),
    );
    if (body.length && (e.type ?? 'file') === 'file') parts.push(body, Buffer.alloc(padding(body.length)));
  }
  parts.push(Buffer.from(END_OF_ARCHIVE));
  return Buffer.concat(parts);
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  }
  return 'resolved';
}

let work: string;
beforeAll(async () => {
  work = await tempDir('strata-ctx-');
});

describe('resolveBuildContext: dir', () => {
  it('resolves a relative dir against the YAML directory and reads the Dockerfile', async () => {
    await mkdir(join(work, 'yaml/app'), { recursive: true });
    await writeFile(join(work, 'yaml/app/Dockerfile'), 'FROM scratch\n');
    const r = await resolveBuildContext(
      { context: { dir: 'app' }, dockerfile: DOCKERFILE },
      { baseDir: join(work, 'yaml'), workDir: join(work, 'w') },
    );
    expect(r.dir).toBe(join(work, 'yaml/app'));
    expect(r.dockerfile).toBe('FROM scratch\n');
    expect(r.dockerfilePath).toBe(join(work, 'yaml/app/Dockerfile'));
    await r.cleanup();
    expect(await readdir(join(work, 'yaml/app'))).toContain('Dockerfile');
  });

  it('uses an inline Dockerfile, refuses a Dockerfile symlinked out of the context and a missing dir', async () => {
    const app = join(work, 'dir2');
    await mkdir(app);
    await writeFile(join(work, 'secret'), 'FROM outside\n');
    await symlink('../secret', join(app, 'Dockerfile'));
    await symlink('/Dockerfile.real', join(app, 'abs'));
    await writeFile(join(app, 'Dockerfile.real'), 'FROM inside\n');
    const inline = await resolveBuildContext(
      { context: { dir: app }, dockerfile: { inline: 'FROM x\n' } },
      { baseDir: work, workDir: work },
    );
    expect(inline).toMatchObject({ dockerfile: 'FROM x\n', dockerfilePath: undefined });
    await expect(
      resolveBuildContext(
        { context: { dir: app }, dockerfile: DOCKERFILE },
        { baseDir: work, workDir: work },
      ),
    ).rejects.toThrow(/points outside the context/);
    // An absolute symlink target is taken relative to the context root, as in a chroot.
    const abs = await resolveBuildContext(
      { context: { dir: app }, dockerfile: { path: 'abs' } },
      { baseDir: work, workDir: work },
    );
    expect(abs.dockerfile).toBe('FROM inside\n');
    expect(
      await code(
        resolveBuildContext(
          { context: { dir: 'nope' }, dockerfile: DOCKERFILE },
          { baseDir: work, workDir: work },
        ),
      ),
    ).toBe('BUILD_CONTEXT_INVALID');
    expect(
      await code(
        resolveBuildContext(
          { context: { dir: app }, dockerfile: { path: 'missing' } },
          { baseDir: work, workDir: work },
        ),
      ),
    ).toBe('BUILD_CONTEXT_INVALID');
  });
});

describe('resolveBuildContext: tarball', () => {
  const good = tarOf([
    { name: './', type: 'directory' },
    { name: './Dockerfile', body: 'FROM scratch\nCOPY a /a\n' },
    { name: './sub/', type: 'directory' },
    { name: './sub/a', body: 'hello' },
    { name: './sub/link', type: 'symlink', linkname: '../../../etc/passwd' },
    { name: './sub/hard', type: 'link', linkname: './sub/a' },
  ]);

  it('extracts a gzip tarball from a local path, keeping symlinks as they are; cleanup removes it', async () => {
    await writeFile(join(work, 'ctx.tar.gz'), gzipSync(good));
    const r = await resolveBuildContext(
      { context: { tarball: 'ctx.tar.gz' }, dockerfile: DOCKERFILE },
      { baseDir: work, workDir: join(work, 'tmp') },
    );
    expect(r.dockerfile).toBe('FROM scratch\nCOPY a /a\n');
    expect(await readFile(join(r.dir, 'sub/a'), 'utf8')).toBe('hello');
    expect(await readFile(join(r.dir, 'sub/hard'), 'utf8')).toBe('hello');
    expect(execFileSync('readlink', [join(r.dir, 'sub/link')], { encoding: 'utf8' }).trim()).toBe(
      '../../../etc/passwd',
    );
    await r.cleanup();
    expect(await readdir(join(work, 'tmp'))).toEqual([]);
  });

  it('refuses entries that escape: ../, a write through a symlink, a hard link outside', async () => {
    const cases = [
      tarOf([{ name: '../evil', body: 'x' }]),
      tarOf([{ name: 'a/../../evil', body: 'x' }]),
      tarOf([
        { name: 'out', type: 'symlink', linkname: '..' },
        { name: 'out/evil', body: 'x' },
      ]),
      tarOf([{ name: 'h', type: 'link', linkname: '../../etc/passwd' }]),
    ];
    for (const [i, tar] of cases.entries()) {
      await writeFile(join(work, `evil${i}.tar.gz`), gzipSync(tar));
      const err = await resolveBuildContext(
        { context: { tarball: `evil${i}.tar.gz` }, dockerfile: DOCKERFILE },
        { baseDir: work, workDir: join(work, 'tmp') },
      ).catch((e: unknown) => e);
      expect(hasCode(err, 'BUILD_CONTEXT_INVALID'), `case ${i}: ${String(err)}`).toBe(true);
      expect(String(err)).toMatch(/entry/);
    }
    expect(await readdir(join(work, 'tmp'))).toEqual([]);
    expect(await readdir(work)).not.toContain('evil');
  });

  it('refuses a corrupt archive and one over the size caps', async () => {
    await writeFile(join(work, 'junk.tar'), Buffer.alloc(1024, 7));
    expect(
      await code(
        resolveBuildContext(
          { context: { tarball: 'junk.tar' }, dockerfile: DOCKERFILE },
          { baseDir: work, workDir: join(work, 'tmp') },
        ),
      ),
    ).toBe('BUILD_CONTEXT_INVALID');
    await writeFile(join(work, 'big.tar'), good);
    expect(
      await code(
        resolveBuildContext(
          { context: { tarball: 'big.tar' }, dockerfile: DOCKERFILE },
          { baseDir: work, workDir: join(work, 'tmp'), maxTarballBytes: 100 },
        ),
      ),
    ).toBe('SIZE_LIMIT');
    await writeFile(join(work, 'bomb.tar.gz'), gzipSync(tarOf([{ name: 'z', body: 'x'.repeat(100_000) }])));
    expect(
      await code(
        resolveBuildContext(
          { context: { tarball: 'bomb.tar.gz' }, dockerfile: DOCKERFILE },
          { baseDir: work, workDir: join(work, 'tmp'), maxContextBytes: 10_000 },
        ),
      ),
    ).toBe('SIZE_LIMIT');
  });

  describe('over http', () => {
    let base: string;
    const server = createServer((req, res) => {
      if (req.url === '/ctx.tar.gz') res.end(gzipSync(good));
      else if (req.url === '/slow')
        res.writeHead(200).write('x'); // never ends
      else res.writeHead(404).end();
    });
    beforeAll(async () => {
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });
    afterAll(async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    });

    it('downloads and extracts; 404 and a stalled download fail clearly', async () => {
      const r = await resolveBuildContext(
        { context: { tarball: `${base}/ctx.tar.gz` }, dockerfile: DOCKERFILE },
        { baseDir: work, workDir: join(work, 'tmp') },
      );
      expect(await readFile(join(r.dir, 'sub/a'), 'utf8')).toBe('hello');
      await r.cleanup();
      const nf = await resolveBuildContext(
        { context: { tarball: `${base}/missing` }, dockerfile: DOCKERFILE },
        { baseDir: work, workDir: join(work, 'tmp') },
      ).catch((e: unknown) => e);
      expect(hasCode(nf, 'BUILD_CONTEXT_INVALID')).toBe(true);
      expect(String(nf)).toMatch(/HTTP 404/);
      expect(
        await code(
          resolveBuildContext(
            { context: { tarball: `${base}/slow` }, dockerfile: DOCKERFILE },
            { baseDir: work, workDir: join(work, 'tmp'), timeoutMs: 300 },
          ),
        ),
      ).toBe('NETWORK');
      expect(await readdir(join(work, 'tmp'))).toEqual([]);
    });
  });
});

describe('resolveBuildContext: git', () => {
  let url: string;
  let first: string;
  const git = (cwd: string, ...args: string[]): string =>
    execFileSync('git', args, {
      cwd,
      encoding: 'utf8',
      env: {
        ...process.env,
        GIT_AUTHOR_NAME: 't',
        GIT_AUTHOR_EMAIL: 't@e',
        GIT_COMMITTER_NAME: 't',
        GIT_COMMITTER_EMAIL: 't@e',
      },
    }).trim();

  beforeAll(async () => {
    requirePeer('git');
    const src = join(work, 'src');
    await mkdir(join(src, 'app'), { recursive: true });
    git(src, 'init', '-q', '-b', 'main');
    await writeFile(join(src, 'app/Dockerfile'), 'FROM scratch\n# v1\n');
    await symlink('../..', join(src, 'up'));
    git(src, 'add', '-A');
    git(src, 'commit', '-qm', 'v1');
    first = git(src, 'rev-parse', 'HEAD');
    git(src, 'tag', 'v1');
    await writeFile(join(src, 'app/Dockerfile'), 'FROM scratch\n# v2\n');
    git(src, 'commit', '-qam', 'v2');
    git(src, 'branch', 'feature');
    git(work, 'clone', '-q', '--bare', src, 'repo.git');
    url = `file://${join(work, 'repo.git')}`;
  });

  const ctx = (ref: string | undefined, subPath = 'app'): Spec => ({
    context: { git: { url, ...(ref ? { ref } : {}), subPath } },
    dockerfile: DOCKERFILE,
  });

  it('clones by branch, tag, commit SHA and default branch; drops .git', async () => {
    const opts = { baseDir: work, workDir: join(work, 'gitwork') };
    const byBranch = await resolveBuildContext(ctx('feature'), opts);
    expect(byBranch.dockerfile).toBe('FROM scratch\n# v2\n');
    expect(await readdir(join(byBranch.dir, '..'))).not.toContain('.git');
    await byBranch.cleanup();
    const byTag = await resolveBuildContext(ctx('v1'), opts);
    expect(byTag.dockerfile).toBe('FROM scratch\n# v1\n');
    await byTag.cleanup();
    const bySha = await resolveBuildContext(ctx(first), opts);
    expect(bySha.dockerfile).toBe('FROM scratch\n# v1\n');
    await bySha.cleanup();
    const byDefault = await resolveBuildContext(ctx(undefined), opts);
    expect(byDefault.dockerfile).toBe('FROM scratch\n# v2\n');
    await byDefault.cleanup();
    expect(await readdir(join(work, 'gitwork'))).toEqual([]);
  });

  it('refuses a subPath that escapes through a symlink, an unknown ref, and hides credentials', async () => {
    const opts = { baseDir: work, workDir: join(work, 'gitwork') };
    const esc = await resolveBuildContext(ctx('main', 'up'), opts).catch((e: unknown) => e);
    expect(hasCode(esc, 'BUILD_CONTEXT_INVALID')).toBe(true);
    expect(String(esc)).toMatch(/subPath "up".*outside/);
    const unknown = await resolveBuildContext(ctx('no-such-branch'), opts).catch((e: unknown) => e);
    expect(hasCode(unknown, 'BUILD_CONTEXT_INVALID')).toBe(true);
    const secret = await resolveBuildContext(
      { context: { git: { url: 'http://user:s3cr3t@127.0.0.1:1/x.git' } }, dockerfile: DOCKERFILE },
      { ...opts, timeoutMs: 10_000 },
    ).catch((e: unknown) => e);
    expect(secret).toBeInstanceOf(Error);
    expect(String(secret)).not.toMatch(/s3cr3t/);
    expect(await readdir(join(work, 'gitwork'))).toEqual([]);
  });
});

describe('resolveBuildContext: configMap', () => {
  it('is refused locally with a clear message', async () => {
    const err = await resolveBuildContext(
      { context: { configMap: { name: 'ctx' } }, dockerfile: DOCKERFILE },
      { baseDir: work, workDir: work },
    ).catch((e: unknown) => e);
    expect(hasCode(err, 'BUILD_CONTEXT_INVALID')).toBe(true);
    expect(String(err)).toMatch(
      /a configMap context is resolved by the cluster; use dir, tarball or git to build locally/,
    );
  });

  /** A ConfigMap volume as the kubelet writes it: files under ..<stamp>/, ..data → it, each key → ..data/key. */
  async function kubeletVolume(name: string, files: Record<string, string | Buffer>): Promise<string> {
    const dir = join(work, name);
    await mkdir(join(dir, '..2026_12_02_07_00_00.1'), { recursive: true });
    for (const [k, v] of Object.entries(files)) await writeFile(join(dir, '..2026_12_02_07_00_00.1', k), v);
    await symlink('..2026_12_02_07_00_00.1', join(dir, '..data'));
    for (const k of Object.keys(files)) await symlink(join('..data', k), join(dir, k));
    return dir;
  }

  it('reads the keys of a mounted ConfigMap as the context (the kubelet entries are no files of it)', async () => {
    const mount = await kubeletVolume('cm-files', {
      Dockerfile: 'FROM scratch\nCOPY a.txt /\n',
      'a.txt': 'A',
    });
    const r = await resolveBuildContext(
      { context: { configMap: { name: 'ctx' } }, dockerfile: DOCKERFILE },
      { baseDir: work, workDir: join(work, 'cmwork'), configMapMount: mount },
    );
    try {
      expect((await readdir(r.dir)).sort()).toEqual(['Dockerfile', 'a.txt']);
      expect(r.dockerfile).toBe('FROM scratch\nCOPY a.txt /\n');
      expect(await readFile(join(r.dir, 'a.txt'), 'utf8')).toBe('A');
    } finally {
      await r.cleanup();
    }
    expect(await readdir(join(work, 'cmwork'))).toEqual([]);
  });

  it('extracts the tarball held by configMap.key; a key that leaves the mount is refused', async () => {
    const tar = tarOf([
      { name: 'Dockerfile', body: 'FROM scratch\n' },
      { name: 'sub/', type: 'directory' },
      { name: 'sub/b.txt', body: 'B' },
    ]);
    const mount = await kubeletVolume('cm-tar', { 'ctx.tar.gz': gzipSync(tar) });
    const r = await resolveBuildContext(
      { context: { configMap: { name: 'ctx', key: 'ctx.tar.gz' } }, dockerfile: DOCKERFILE },
      { baseDir: work, workDir: join(work, 'cmwork'), configMapMount: mount },
    );
    try {
      expect(await readFile(join(r.dir, 'sub/b.txt'), 'utf8')).toBe('B');
    } finally {
      await r.cleanup();
    }
    await symlink('/etc/passwd', join(mount, 'evil'));
    const err = await resolveBuildContext(
      { context: { configMap: { name: 'ctx', key: 'evil' } }, dockerfile: DOCKERFILE },
      { baseDir: work, workDir: join(work, 'cmwork'), configMapMount: mount },
    ).catch((e: unknown) => e);
    expect(hasCode(err, 'BUILD_CONTEXT_INVALID')).toBe(true);
  });
});
