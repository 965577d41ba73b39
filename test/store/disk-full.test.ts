/**
 * A blob write that runs out of space fails with STORAGE_FULL (not ABORTED), leaves no partial file, and the store
 * works again once space is freed. On a real small tmpfs: needs root, and fails (never skips) without it.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { digestOf } from '../../src/engine/oci/digest.js';
import { RegistryClient } from '../../src/engine/registry/client.js';
import { FsStore } from '../../src/engine/store/index.js';
import { startDockerRegistry } from '../support/docker-registry.js';
import { makeImage, tempDir } from '../support/images.js';

const MiB = 1024 * 1024;
const mounts: string[] = [];

/** A fresh tmpfs of `size` mounted on a temp dir. */
async function smallFs(size: string): Promise<string> {
  if (process.getuid?.() !== 0)
    throw new Error(
      `the disk-full tests mount a tmpfs and must run as root${process.env.CI === 'true' ? ' (CI=true)' : ''}`,
    );
  const dir = await mkdtemp(join(tmpdir(), 'strata-full-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
  mounts.push(dir);
  return dir;
}

afterEach(async () => {
  for (const dir of mounts.splice(0)) {
    execFileSync('umount', ['-l', dir]);
    await rm(dir, { recursive: true, force: true });
  }
});

function chunks(bytes: Buffer): (offset: number) => Promise<Readable> {
  return async (offset) =>
    Readable.from(
      (async function* () {
        for (let i = offset; i < bytes.length; i += 256 * 1024) yield bytes.subarray(i, i + 256 * 1024);
      })(),
    );
}

describe('a full disk during ingest', () => {
  it('fails with STORAGE_FULL, keeps no partial, and the store works once space is freed', async () => {
    const fs = await smallFs('8m');
    const store = await FsStore.open(join(fs, 'store'));
    const filler = join(fs, 'filler');
    await writeFile(filler, randomBytes(5 * MiB));
    const big = randomBytes(4 * MiB);
    const digest = digestOf(big);
    for (const source of [chunks(big), Readable.from([big.subarray(0, 2 * MiB), big.subarray(2 * MiB)])]) {
      const err = await store.ingest(source, { digest, size: big.length }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toMatchObject({ code: 'STORAGE_FULL', retryable: true });
      expect(await readdir(join(fs, 'store', 'ingest'))).toEqual([]);
      expect(await store.has(digest)).toBe(false);
    }
    // Unknown digest (a commit's layer) too.
    await expect(store.ingest(Readable.from([big]), {})).rejects.toMatchObject({ code: 'STORAGE_FULL' });
    expect(await readdir(join(fs, 'store', 'ingest'))).toEqual([]);

    await unlink(filler);
    expect(await store.ingest(chunks(big), { digest, size: big.length })).toEqual({
      digest,
      size: big.length,
      existed: false,
    });
    expect(await store.has(digest)).toBe(true);
  });

  it('a pull that fills the disk fails with STORAGE_FULL, not ABORTED; gc then leaves no partial', async () => {
    const registry = await startDockerRegistry();
    const client = new RegistryClient({});
    const srcDir = await tempDir('strata-full-src-');
    try {
      const src = new Engine({ store: await FsStore.open(srcDir), registry: client });
      await makeImage(src.store, 'example.com/big:1', { 'a.bin': 3 * MiB, 'b.bin': 3 * MiB });
      await src.push('example.com/big:1', `${registry.host}/full/big:1`);
      const fs = await smallFs('4m');
      const dst = new Engine({ store: await FsStore.open(join(fs, 'store')), registry: client });
      await expect(dst.pull(`${registry.host}/full/big:1`)).rejects.toMatchObject({ code: 'STORAGE_FULL' });
      expect(await dst.store.getRef(`${registry.host}/full/big:1`)).toBeUndefined();
      await dst.gc();
      expect(await readdir(join(fs, 'store', 'ingest'))).toEqual([]);
    } finally {
      await client.close();
      await registry.stop();
      await rm(srcDir, { recursive: true, force: true });
    }
  });
});
