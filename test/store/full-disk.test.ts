import { randomBytes } from 'node:crypto';
import { readFile, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { StrataError } from '../../src/engine/errors.js';
import { FsStore } from '../../src/engine/store/index.js';
import { MIN_RESERVE_BYTES, RESERVE_FILE } from '../../src/engine/store/reserve.js';
import { runCli, type CliRun } from '../support/cli.js';
import { fillUp, freeBytes, mountTmpfs, type SmallFs } from '../support/tmpfs.js';
import { names } from './helpers.js';
import { addImage, addLayer } from './image.js';

let fs: SmallFs | undefined;
afterEach(() => {
  fs?.unmount();
  fs = undefined;
});

/** A store on a fresh 8 MiB tmpfs holding two tagged images of ~1 MiB of incompressible layer each. */
async function storeWithTwoImages(): Promise<{ store: FsStore; root: string }> {
  fs = mountTmpfs(8 * 1024 * 1024);
  const root = join(fs.dir, 'store');
  // gc's grace period is switched off (clock far ahead), so untagged content is collectable at once.
  const store = await FsStore.open(root, { now: () => Date.now() + 24 * 3600_000 });
  for (const tag of ['1', '2']) {
    const layer = await addLayer(store, { [`f${tag}`]: randomBytes(1024 * 1024).toString('latin1') });
    const { manifest } = await addImage(store, [layer], tag);
    await store.setRef(`example.com/app:${tag}`, manifest);
  }
  return { store, root };
}

function tempsIn(list: string[]): string[] {
  return list.filter((n) => n.includes('.tmp-'));
}

describe('a store on a 100% full filesystem', () => {
  it('opens, lists, gc --dry-run, untags and collects, frees space, and keeps working afterwards', async () => {
    const { root } = await storeWithTwoImages();
    expect((await stat(join(root, RESERVE_FILE))).size).toBeGreaterThanOrEqual(MIN_RESERVE_BYTES);
    await fillUp(join(fs!.dir, 'filler'));
    expect(await freeBytes(root)).toBe(0);
    await expect(writeFile(join(fs!.dir, 'probe'), 'x')).rejects.toMatchObject({ code: 'ENOSPC' });

    const store = await FsStore.open(root, { now: () => Date.now() + 24 * 3600_000 });
    expect((await store.listRefs()).map((r) => r.name)).toEqual(['example.com/app:1', 'example.com/app:2']);
    const dry = await store.gc({ dryRun: true });
    expect(dry.removed).toEqual([]);
    expect(await store.deleteRef('example.com/app:1')).toBe(true); // the reserve made room for the new index
    expect((await store.listRefs()).map((r) => r.name)).toEqual(['example.com/app:2']);
    const wouldFree = await store.gc({ dryRun: true });
    expect(wouldFree.removed).toHaveLength(3); // layer, config, manifest of app:1
    const gc = await store.gc();
    expect([...gc.removed].sort()).toEqual([...wouldFree.removed].sort());
    expect(gc.bytesFreed).toBeGreaterThan(1024 * 1024);
    expect(await freeBytes(root)).toBeGreaterThan(0);
    expect(tempsIn(await names(root))).toEqual([]);

    // The store keeps working, and the reserve is back for the next time the disk fills.
    const layer = await addLayer(store, { g: 'small' });
    const { manifest } = await addImage(store, [layer], '3');
    await store.setRef('example.com/app:3', manifest);
    expect((await store.listRefs()).map((r) => r.name)).toEqual(['example.com/app:2', 'example.com/app:3']);
    expect((await stat(join(root, RESERVE_FILE))).size).toBeGreaterThanOrEqual(MIN_RESERVE_BYTES);
  });

  it('the CLI: images, gc --dry-run, rmi and gc work at 100% full, and pull space back', async () => {
    const { root } = await storeWithTwoImages();
    await fillUp(join(fs!.dir, 'filler'));
    const cli = (...args: string[]): Promise<CliRun> => runCli(['--store', root, ...args]);
    const tags = async (): Promise<string[]> => {
      const run = await cli('--json', 'images');
      expect(run.stderr).toBe('');
      return (JSON.parse(run.stdout) as { tag: string }[]).map((i) => i.tag).sort();
    };
    expect(await tags()).toEqual(['1', '2']);
    expect((await cli('gc', '--dry-run')).code).toBe(0);
    const rmi = await cli('rmi', 'example.com/app:1');
    expect(rmi.stderr).toBe('');
    expect(rmi.code).toBe(0);
    expect(await freeBytes(root)).toBeGreaterThan(1024 * 1024); // rmi prunes what only app:1 used
    expect((await cli('gc')).code).toBe(0);
    expect(await tags()).toEqual(['2']);
  });

  it('without a reserve, an index write fails with STORAGE_FULL (retryable), leaving index.json and no temp file', async () => {
    const { store, root } = await storeWithTwoImages();
    await unlink(join(root, RESERVE_FILE)); // as if a previous rmi used it and the disk stayed full
    await fillUp(join(fs!.dir, 'filler'));
    const before = await readFile(join(root, 'index.json'), 'utf8');
    const err = await store.deleteRef('example.com/app:1').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StrataError);
    expect(err).toMatchObject({ code: 'STORAGE_FULL', retryable: true });
    expect(await readFile(join(root, 'index.json'), 'utf8')).toBe(before);
    expect(tempsIn(await names(root))).toEqual([]);
    expect(await names(root)).not.toContain('index.json.lock');
    // Freeing space is enough: the same call then succeeds.
    await unlink(join(fs!.dir, 'filler'));
    expect(await store.deleteRef('example.com/app:1')).toBe(true);
  });

  it('on a read-only filesystem: opens and reads; writes fail with PERMISSION_DENIED', async () => {
    const { root } = await storeWithTwoImages();
    execFileSync('mount', ['-o', 'remount,ro', fs!.dir], { stdio: 'pipe' });
    const store = await FsStore.open(root);
    expect(await store.listRefs()).toHaveLength(2);
    await expect(store.deleteRef('example.com/app:1')).rejects.toMatchObject({ code: 'PERMISSION_DENIED' });
    await expect(store.gc()).rejects.toMatchObject({ code: 'PERMISSION_DENIED' });
    execFileSync('mount', ['-o', 'remount,rw', fs!.dir], { stdio: 'pipe' });
    // A store root that cannot be created: PERMISSION_DENIED naming it (EACCES needs a non-root user, so EROFS).
    execFileSync('mount', ['-o', 'remount,ro', fs!.dir], { stdio: 'pipe' });
    await expect(FsStore.open(join(fs!.dir, 'new-store'))).rejects.toMatchObject({
      code: 'PERMISSION_DENIED',
    });
    execFileSync('mount', ['-o', 'remount,rw', fs!.dir], { stdio: 'pipe' });
  });
});
