import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { link, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { cacheCommittedLayer } from '../../src/engine/commit/cache-layer.js';
import type { Digest } from '../../src/engine/oci/digest.js';
import type { ContentStore } from '../../src/engine/store/types.js';
import { layerDiffDir } from '../../src/engine/union/layer-cache.js';
import { tempDir } from '../support/images.js';
import { requireRootAndOverlay } from '../support/root.js';

const hex = (c: string) => `sha256:${c.repeat(64)}` as Digest;

/** An overlay-style upper dir: files, a hard link, an opaque marker and overlayfs bookkeeping to drop. */
async function upperDir(): Promise<string> {
  const upper = join(await tempDir('strata-upper-'), 'upper');
  await mkdir(join(upper, 'srv', 'gen'), { recursive: true });
  await writeFile(join(upper, 'srv', 'gen', 'a'), 'alpha');
  await link(join(upper, 'srv', 'gen', 'a'), join(upper, 'srv', 'gen', 'a-link'));
  execFileSync('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', join(upper, 'srv')]);
  execFileSync('setfattr', ['-n', 'trusted.overlay.origin', '-v', 'x', join(upper, 'srv', 'gen', 'a')]);
  return upper;
}

function xattrs(path: string): string {
  return execFileSync('getfattr', ['-h', '-d', '-m', '-', path], { encoding: 'utf8' });
}

describe('a build step layer moves into the layer cache', () => {
  beforeAll(() => requireRootAndOverlay());

  it('renames the upper dir (no copy), drops overlay bookkeeping, keeps the opaque marker and hard links', async () => {
    const store = { root: await tempDir('strata-store-') } as ContentStore;
    const upper = await upperDir();
    const layer = { digest: hex('a'), diffId: hex('b'), chainId: hex('c') };
    const ino = (await stat(join(upper, 'srv', 'gen', 'a'))).ino;
    await cacheCommittedLayer(store, upper, layer, { move: true });
    expect(existsSync(upper)).toBe(false);
    const diff = layerDiffDir(store.root, layer.chainId);
    const a = await stat(join(diff, 'srv', 'gen', 'a'));
    expect(a.ino).toBe(ino); // the same inode: moved, not copied
    expect(a.nlink).toBe(2);
    expect(await readFile(join(diff, 'srv', 'gen', 'a-link'), 'utf8')).toBe('alpha');
    expect(xattrs(join(diff, 'srv'))).toContain('trusted.overlay.opaque');
    expect(xattrs(join(diff, 'srv', 'gen', 'a'))).not.toContain('trusted.overlay.origin');
  });

  it('copies without move, and leaves the upper dir alone when the entry exists already', async () => {
    const store = { root: await tempDir('strata-store-') } as ContentStore;
    const layer = { digest: hex('d'), diffId: hex('e'), chainId: hex('f') };
    const first = await upperDir();
    await cacheCommittedLayer(store, first, layer);
    expect(existsSync(join(first, 'srv', 'gen', 'a'))).toBe(true);
    const second = await upperDir();
    await cacheCommittedLayer(store, second, layer, { move: true });
    expect(existsSync(join(second, 'srv', 'gen', 'a'))).toBe(true);
    expect(await readFile(join(layerDiffDir(store.root, layer.chainId), 'srv', 'gen', 'a'), 'utf8')).toBe(
      'alpha',
    );
  });
});
