/**
 * File names that come from a heredoc or a URL stay inside the destination directory: BuildKit keeps the base
 * name only, and a name with nothing usable left is an error naming the URL.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyIntoRoot } from '../../src/engine/build/copy/copy.js';
import { urlFileName } from '../../src/engine/build/copy/fetch.js';
import type { CopyRequest } from '../../src/engine/build/copy/types.js';
import { StrataError } from '../../src/engine/errors.js';
import { tempDir } from '../support/images.js';
import { requireRoot } from '../support/root.js';

let server: Server;
let base: string;

beforeAll(async () => {
  requireRoot('the COPY/ADD file name tests (copies chown to 0:0)');
  server = createServer((req, res) => res.end(`served ${req.url}`));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(() => server?.close());

/** A fresh image-like root with an /etc/passwd to protect, and an empty context. */
async function roots(): Promise<{ ctx: string; root: string }> {
  const ctx = await tempDir('strata-names-ctx-');
  const root = await tempDir('strata-names-root-');
  await mkdir(join(root, 'etc'));
  await writeFile(join(root, 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\n');
  return { ctx, root };
}

function request(
  ctx: string,
  root: string,
  more: Partial<CopyRequest> & { destination: string },
): CopyRequest {
  return {
    instruction: 'ADD',
    from: { dir: ctx, isContext: true },
    sources: [],
    workdir: '/',
    destRoot: root,
    ...more,
  };
}

describe('heredoc and URL file names', () => {
  it.each([
    ['/ok/..%2fetc%2fpasswd', 'passwd'],
    ['/ok/a%2Fb', 'b'],
    ['/plain/name.txt', 'name.txt'],
    ['/slash/', ''],
    ['/x/%2e%2e', ''],
    ['/x/..%2f', ''],
    ['/x/%2e', ''],
  ])('urlFileName(%j) is %j', (path, name) => {
    expect(urlFileName(new URL(`http://h${path}`))).toBe(name);
  });

  it('a heredoc named ../etc/passwd lands in the destination directory as passwd', async () => {
    const { ctx, root } = await roots();
    await copyIntoRoot(
      request(ctx, root, {
        instruction: 'COPY',
        inline: [{ name: '../etc/passwd', content: 'heredoc\n' }],
        destination: '/x/',
      }),
    );
    expect(await readFile(join(root, 'x/passwd'), 'utf8')).toBe('heredoc\n');
    expect(await readFile(join(root, 'etc/passwd'), 'utf8')).toBe('root:x:0:0::/root:/bin/sh\n');
  });

  it('an ADD URL whose last segment decodes to ../etc/passwd lands in the destination directory as passwd', async () => {
    const { ctx, root } = await roots();
    await copyIntoRoot(request(ctx, root, { sources: [`${base}/ok/..%2fetc%2fpasswd`], destination: '/x/' }));
    expect(await readFile(join(root, 'x/passwd'), 'utf8')).toBe('served /ok/..%2fetc%2fpasswd');
    expect(await readFile(join(root, 'etc/passwd'), 'utf8')).toBe('root:x:0:0::/root:/bin/sh\n');
  });

  it('a URL with no usable file name is a Dockerfile error naming the URL, and nothing is written', async () => {
    for (const path of ['/slash/', '/x/..%2f']) {
      const { ctx, root } = await roots();
      const err = await copyIntoRoot(
        request(ctx, root, { sources: [`${base}${path}`], destination: '/x/' }),
      ).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(StrataError);
      expect((err as StrataError).code).toBe('DOCKERFILE_INVALID');
      expect((err as StrataError).message).toContain(`${base}${path}`);
      expect(await readdir(join(root, 'etc'))).toEqual(['passwd']);
    }
  });
});
