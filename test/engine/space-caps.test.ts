import { createReadStream } from 'node:fs';
import { statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { StrataError } from '../../src/engine/errors.js';
import { MediaType } from '../../src/engine/oci/media-types.js';
import { RegistryClient } from '../../src/engine/registry/client.js';
import { FsStore } from '../../src/engine/store/index.js';
import { mountTmpfs, type SmallFs } from '../support/tmpfs.js';
import { names } from '../store/helpers.js';
import { diffIdOf, makeTar, storeImage, tempDir } from '../union/helpers.js';

const MiB = 1024 * 1024;
let fs: SmallFs | undefined;
afterEach(() => {
  fs?.unmount();
  fs = undefined;
});

/** Bytes used on the small filesystem. */
async function used(dir: string): Promise<number> {
  const st = await statfs(dir);
  return (st.blocks - st.bfree) * st.bsize;
}

/** A store (on the big disk) holding `ex.com/bomb:1`, one layer of `size` zero bytes, compressed by `compress`. */
async function bombImage(size: number, compress: (tar: Buffer) => Buffer): Promise<Engine> {
  const store = await FsStore.open(await tempDir());
  const tar = await makeTar([{ name: 'zeros', content: Buffer.alloc(size) }]);
  await storeImage(store, 'ex.com/bomb:1', [
    { blob: compress(tar), mediaType: MediaType.OciLayerGzip, diffId: diffIdOf(tar) },
  ]);
  return new Engine({ store, registry: new RegistryClient() });
}

describe('decompression caps follow the free space', () => {
  it('unpack of a gzip layer larger than the free space fails at once with STORAGE_FULL, writing nothing', async () => {
    fs = mountTmpfs(8 * MiB);
    const engine = await bombImage(64 * MiB, (tar) => gzipSync(tar)); // ~64 KiB compressed
    const layer = (await engine.store.listRefs())[0]!;
    const before = await used(fs.dir);
    const err = await engine.unpack('ex.com/bomb:1', join(fs.dir, 'root')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StrataError);
    expect(err).toMatchObject({ code: 'STORAGE_FULL', retryable: true });
    expect((err as Error).message).toMatch(/^layer sha256:[0-9a-f]{64}: /);
    expect((err as Error).message).toContain(fs.dir);
    expect(await used(fs.dir)).toBeLessThan(before + 64 * 1024); // failed before the first file was written
    expect(layer.name).toBe('ex.com/bomb:1');
  });

  it('when the size cannot be told up front (multi-member gzip), the stream stops at the free space', async () => {
    fs = mountTmpfs(8 * MiB);
    // The last member's ISIZE is tiny, so only counting the bytes as they flow can catch this one.
    const engine = await bombImage(64 * MiB, (tar) =>
      Buffer.concat([
        gzipSync(tar.subarray(0, tar.length - 1024)),
        gzipSync(tar.subarray(tar.length - 1024)),
      ]),
    );
    const err = await engine.unpack('ex.com/bomb:1', join(fs.dir, 'root')).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'STORAGE_FULL' });
    expect((err as Error).message).toMatch(/^layer sha256:[0-9a-f]{64}: uncompressed/);
  });

  it('create (the layer cache, in the store) fails with STORAGE_FULL on a store without room', async () => {
    fs = mountTmpfs(8 * MiB);
    const store = await FsStore.open(join(fs.dir, 'store'));
    const tar = await makeTar([{ name: 'zeros', content: Buffer.alloc(64 * MiB) }]);
    await storeImage(store, 'ex.com/bomb:1', [
      { blob: gzipSync(tar), mediaType: MediaType.OciLayerGzip, diffId: diffIdOf(tar) },
    ]);
    const engine = new Engine({ store, registry: new RegistryClient() });
    const err = await engine.create('ex.com/bomb:1', { driver: 'vfs' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'STORAGE_FULL' });
    expect((err as Error).message).toMatch(/^layer sha256:[0-9a-f]{64}: /);
  });

  it('the configured cap still applies where there is room (SIZE_LIMIT), and is an engine option', async () => {
    const engine = await bombImage(4 * MiB, (tar) => gzipSync(tar));
    const capped = new Engine({
      store: engine.store,
      registry: new RegistryClient(),
      maxUncompressedBytes: MiB,
    });
    const dir = await tempDir();
    await expect(capped.unpack('ex.com/bomb:1', join(dir, 'a'))).rejects.toMatchObject({
      code: 'SIZE_LIMIT',
    });
    const ok = await engine.unpack('ex.com/bomb:1', join(dir, 'b'));
    expect(ok.layers).toHaveLength(1);
  });

  it('load of a gzip archive expanding past the store’s free space fails with STORAGE_FULL, leaving nothing', async () => {
    fs = mountTmpfs(8 * MiB);
    const store = await FsStore.open(join(fs.dir, 'store'));
    const engine = new Engine({ store, registry: new RegistryClient() });
    const member = `blobs/sha256/${'a'.repeat(64)}`;
    const file = join(await tempDir(), 'bomb.tar.gz'); // a file stream, as the CLI reads archives
    await writeFile(file, gzipSync(await makeTar([{ name: member, content: Buffer.alloc(64 * MiB) }])));
    const err = await engine.load(createReadStream(file)).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'STORAGE_FULL', retryable: true });
    expect((err as Error).message).toMatch(/^load: the gzip archive/);
    expect(await names(join(store.root, 'ingest'))).toEqual([]);
    expect(await names(join(store.root, 'blobs', 'sha256'))).toEqual([]);
  });
});
