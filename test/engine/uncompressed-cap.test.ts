/**
 * `EngineOptions.maxUncompressedBytes` reaches every place that expands layers: unpack, create (the layer cache of
 * either driver) and the step containers of a build. Past the cap each fails with SIZE_LIMIT and leaves nothing.
 */
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { MediaType } from '../../src/engine/oci/media-types.js';
import { RegistryClient } from '../../src/engine/registry/client.js';
import { FsStore } from '../../src/engine/store/index.js';
import { strataDir } from '../../src/engine/union/layer-cache.js';
import type { DriverName } from '../../src/engine/union/snapshotter.js';
import { requireRootAndOverlay } from '../support/root.js';
import { diffIdOf, makeTar, storeImage, tempDir } from '../union/helpers.js';

const MiB = 1024 * 1024;

/** Every path under the store's `strata/` dir (containers, layer cache, vfs trees, temp dirs of either). */
async function strataTree(root: string): Promise<string[]> {
  return (await readdir(strataDir(root), { recursive: true }).catch(() => [] as string[])).sort();
}

/** An engine capped at 1 MiB over a store holding `ex.com/big:1`: one gzip layer of 4 MiB of zeros. */
async function cappedEngine(): Promise<{ capped: Engine; free: Engine }> {
  const store = await FsStore.open(await tempDir());
  const tar = await makeTar([{ name: 'zeros', content: Buffer.alloc(4 * MiB) }]);
  await storeImage(store, 'ex.com/big:1', [
    { blob: gzipSync(tar), mediaType: MediaType.OciLayerGzip, diffId: diffIdOf(tar) },
  ]);
  return {
    capped: new Engine({ store, registry: new RegistryClient(), maxUncompressedBytes: MiB }),
    free: new Engine({ store, registry: new RegistryClient() }),
  };
}

describe('the configured uncompressed cap', () => {
  beforeAll(() => requireRootAndOverlay());

  for (const driver of ['vfs', 'overlay'] as DriverName[])
    it(`create on ${driver}: a layer past the cap fails with SIZE_LIMIT and leaves no container or cache entry`, async () => {
      const { capped, free } = await cappedEngine();
      const before = await strataTree(capped.store.root);
      const err = await capped.create('ex.com/big:1', { name: 'c1', driver }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'SIZE_LIMIT' });
      expect((err as Error).message).toMatch(/^layer sha256:[0-9a-f]{64}: /);
      // No container dir, no cache entry, no temp dir (parent dirs, the lease dir and the overlay probe may stay).
      const after = (await strataTree(capped.store.root)).filter((p) => !before.includes(p));
      expect(after.filter((p) => /^(containers|layers|vfs)\//.test(p))).toEqual([]);
      // The same store without the cap makes the container: the cap, not the image, was the cause.
      const ok = await free.create('ex.com/big:1', { name: 'c1', driver });
      expect(ok.layers).toHaveLength(1);
      await free.rm(['c1'], { force: true });
    });

  it('build: a step container over a base past the cap fails with SIZE_LIMIT, removing the container', async () => {
    const { capped } = await cappedEngine();
    const ctx = await tempDir();
    await writeFile(join(ctx, 'f'), 'f');
    const err = await capped
      .build({
        contextDir: ctx,
        dockerfile: 'FROM ex.com/big:1\nCOPY f /f\n',
        driver: 'vfs',
      })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'SIZE_LIMIT' });
    const left = await strataTree(capped.store.root);
    expect(left.filter((p) => /^(containers|layers|vfs)\//.test(p))).toEqual([]);
  });
});
