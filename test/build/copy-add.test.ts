import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Digest } from '../../src/engine/oci/digest.js';
import { tempDir } from '../support/images.js';
import { requirePeer } from '../support/peers.js';
import { requireRoot } from '../support/root.js';
import { exists, failure } from '../support/outcomes.js';
import { fromContext } from './copy-support.js';

const add = fromContext('ADD');

describe('ADD: local archives', () => {
  let ctx: string;
  beforeAll(async () => {
    requireRoot('the ADD tests');
    for (const t of ['tar', 'gzip', 'bzip2', 'xz', 'zstd']) requirePeer(t);
    ctx = await tempDir('strata-add-ctx-');
    const content = join(ctx, 'content');
    await mkdir(join(content, 'pkg/sub'), { recursive: true });
    await writeFile(join(content, 'pkg/a.txt'), 'A');
    await writeFile(join(content, 'pkg/sub/.wh.b'), 'not a whiteout');
    const tar = (name: string, flag: string[]) =>
      execFileSync('tar', ['-C', content, '--owner=7', '--group=8', ...flag, '-cf', join(ctx, name), 'pkg']);
    tar('plain.tar', []);
    tar('gz.bin', ['-z']); // names do not matter: the content is sniffed
    tar('x.tar.bz2', ['-j']);
    tar('x.tar.xz', ['-J']);
    tar('x.tar.zst', ['--zstd']);
    await writeFile(join(ctx, 'notes.txt.gz'), 'not an archive');
    // `../` entry: built with tar's --transform so the member name climbs out
    execFileSync(
      'tar',
      ['-C', content, '--transform', 's,^pkg/a.txt,../evil.txt,', '-cf', join(ctx, 'evil.tar'), 'pkg/a.txt'],
      {
        stdio: 'pipe',
      },
    );
  });

  it.each(['plain.tar', 'gz.bin', 'x.tar.bz2', 'x.tar.xz', 'x.tar.zst'])(
    '%s is extracted into the destination',
    async (name) => {
      const root = await tempDir();
      await mkdir(join(root, 'opt/pkg'), { recursive: true });
      await writeFile(join(root, 'opt/pkg/a.txt'), 'OLD');
      await add(ctx, root, { sources: [name], destination: '/opt' });
      expect(await readFile(join(root, 'opt/pkg/a.txt'), 'utf8')).toBe('A');
      expect(await readFile(join(root, 'opt/pkg/sub/.wh.b'), 'utf8')).toBe('not a whiteout');
      const st = await stat(join(root, 'opt/pkg/a.txt'));
      expect([st.uid, st.gid]).toEqual([7, 8]);
    },
  );

  it('a non-archive is copied as a file, and --unpack=false keeps an archive as a file', async () => {
    const root = await tempDir();
    await add(ctx, root, { sources: ['notes.txt.gz'], destination: '/d/' });
    expect(await readFile(join(root, 'd/notes.txt.gz'), 'utf8')).toBe('not an archive');
    await add(ctx, root, { sources: ['plain.tar'], destination: '/k/', unpack: false });
    expect((await stat(join(root, 'k/plain.tar'))).isFile()).toBe(true);
    expect(await exists(join(root, 'k/pkg'))).toBe(false);
  });

  it('an archive with ../ entries is refused and writes nothing outside', async () => {
    const outer = await tempDir();
    const root = join(outer, 'root');
    await mkdir(join(root, 'x'), { recursive: true });
    const err = await failure(add(ctx, root, { sources: ['evil.tar'], destination: '/x/' }));
    expect(err.code).toBe('BUILD_CONTEXT_INVALID');
    expect(await exists(join(root, 'evil.txt'))).toBe(false);
    expect(await exists(join(outer, 'evil.txt'))).toBe(false);
  });
});

describe('ADD: URLs', () => {
  let server: Server;
  let base: string;
  const sockets = new Set<Socket>();
  const body = 'remote content\n';
  const sha = `sha256:${createHash('sha256').update(body).digest('hex')}` as Digest;
  beforeAll(async () => {
    server = createServer((req, res) => {
      if (req.url === '/hang') return; // never answers
      if (req.url === '/files/tool.sh') {
        res.writeHead(200, {
          'last-modified': 'Wed, 21 Oct 2015 07:28:00 GMT',
          'content-length': body.length,
        });
        res.end(body);
        return;
      }
      res.writeHead(404).end();
    });
    server.on('connection', (s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
  });

  it('fetches to a file named after the URL, mode 0600, mtime from Last-Modified, checksum verified', async () => {
    const ctx = await tempDir();
    const root = await tempDir();
    await add(ctx, root, {
      sources: [`${base}/files/tool.sh`],
      destination: '/usr/local/bin/',
      checksum: sha,
    });
    const p = join(root, 'usr/local/bin/tool.sh');
    expect(await readFile(p, 'utf8')).toBe(body);
    const st = await stat(p);
    expect(st.mode & 0o7777).toBe(0o600);
    expect(st.mtimeMs).toBe(Date.parse('Wed, 21 Oct 2015 07:28:00 GMT'));
    await add(ctx, root, { sources: [`${base}/files/tool.sh`], destination: '/renamed' });
    expect(await readFile(join(root, 'renamed'), 'utf8')).toBe(body);
  });

  it('a bad checksum fails with DIGEST_MISMATCH and leaves nothing', async () => {
    const ctx = await tempDir();
    const root = await tempDir();
    const bad = `sha256:${'0'.repeat(64)}` as Digest;
    const err = await failure(
      add(ctx, root, { sources: [`${base}/files/tool.sh`], destination: '/d/', checksum: bad }),
    );
    expect(err.code).toBe('DIGEST_MISMATCH');
    const { readdir } = await import('node:fs/promises');
    expect(await readdir(join(root, 'd'))).toEqual([]);
  });

  it('a server that never answers times out; a 404 is NOT_FOUND', async () => {
    const ctx = await tempDir();
    const root = await tempDir();
    const t0 = Date.now();
    const err = await failure(
      add(ctx, root, { sources: [`${base}/hang`], destination: '/h', fetch: { connectTimeoutMs: 300 } }),
    );
    expect(err.code).toBe('NETWORK');
    expect(err.retryable).toBe(true);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect((await failure(add(ctx, root, { sources: [`${base}/nope`], destination: '/n' }))).code).toBe(
      'NOT_FOUND',
    );
  });
});
