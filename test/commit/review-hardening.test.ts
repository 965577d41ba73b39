/**
 * Review regressions for commit/export: a file swapped after the walk (for a symlink to a host file, or for a
 * hardlink to one) never puts foreign bytes into the layer, and a failing store never leaves the compressor behind.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { link, mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { treeChanges } from '../../src/engine/commit/changes.js';
import { writeLayer } from '../../src/engine/commit/layer-writer.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import type { ContentStore } from '../../src/engine/store/types.js';
import { tempDir } from '../support/images.js';

async function setup(): Promise<{ work: string; src: string; secret: string; store: FsStore }> {
  const work = await tempDir('strata-commit-review-');
  const src = join(work, 'src');
  await mkdir(src);
  const secret = join(work, 'host-secret');
  await writeFile(secret, 'HOST SECRET'); // same size as the file below, so only the swap can differ
  await writeFile(join(src, 'f'), 'inside file');
  return { work, src, secret, store: await FsStore.open(join(work, 'store')) };
}

describe('layer writer against a tree that changes under it', () => {
  it('refuses a file replaced by a symlink after the walk', async () => {
    const { src, secret, store } = await setup();
    const changes = await treeChanges(src);
    await rm(join(src, 'f'));
    await symlink(secret, join(src, 'f'));
    await expect(writeLayer(store, changes, { compression: 'none' })).rejects.toThrow(/was replaced/);
  });

  it('refuses a file replaced by a hardlink to another file after the walk', async () => {
    const { src, secret, store } = await setup();
    const changes = await treeChanges(src);
    await rm(join(src, 'f'));
    await link(secret, join(src, 'f'));
    await expect(writeLayer(store, changes, { compression: 'none' })).rejects.toThrow(/was replaced/);
  });

  it('kills the compressor when the store fails', async () => {
    const { src, store } = await setup();
    await writeFile(join(src, 'big'), randomBytes(16 << 20));
    const changes = await treeChanges(src);
    const failing = Object.create(store) as ContentStore;
    failing.ingest = async (source: AsyncIterable<Uint8Array>) => {
      for await (const _ of source) break; // take one chunk, then fail as a full disk would
      throw new Error('disk full');
    };
    await expect(writeLayer(failing, changes, { compression: 'zstd', level: 1 })).rejects.toThrow(
      /disk full/,
    );
    const children = (): string =>
      execFileSync('ps', ['-o', 'comm=', '--ppid', String(process.pid)], { encoding: 'utf8' }).trim();
    for (let i = 0; i < 50 && /zstd/.test(children()); i++) await new Promise((r) => setTimeout(r, 20));
    expect(children()).not.toMatch(/zstd/);
  });
});
