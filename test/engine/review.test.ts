/**
 * Regression tests for review findings on the copy pipeline, the engine verbs and their endpoints, against a real
 * registry (Debian's docker-registry) and a real store.
 */
import { mkdir, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { skipBytes } from '../../src/engine/image/registry-endpoint.js';
import { StoreTarget } from '../../src/engine/image/store-endpoint.js';
import { hostPlatform } from '../../src/engine/oci/platform.js';
import type { Descriptor } from '../../src/engine/oci/types.js';
import { RegistryClient } from '../../src/engine/registry/client.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { startDockerRegistry, type DockerRegistry } from '../support/docker-registry.js';
import { makeImage, makeMultiPlatformImage, tempDir } from '../support/images.js';

const HOST = hostPlatform();
const OTHER =
  HOST.architecture === 'arm64'
    ? { os: 'linux', architecture: 'amd64' }
    : { os: 'linux', architecture: 'arm64' };
const THIRD = { os: 'linux', architecture: 's390x' };

let reg: DockerRegistry;
let client: RegistryClient;
const dirs: string[] = [];

async function freshEngine(): Promise<Engine> {
  const dir = await tempDir('strata-review-');
  dirs.push(dir);
  return new Engine({ store: await FsStore.open(dir), registry: client });
}

beforeAll(async () => {
  reg = await startDockerRegistry();
  client = new RegistryClient();
});

afterAll(async () => {
  await client?.close();
  await reg?.stop();
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe('copy pipeline', () => {
  it('re-pushing a partially pulled index to the tag that names it keeps the index (no downgrade)', async () => {
    const src = await freshEngine();
    const { index } = await makeMultiPlatformImage(src.store, 'example.com/keep:1', [HOST, OTHER]);
    await src.push('example.com/keep:1', `${reg.host}/keep/app:1`);

    const partial = await freshEngine();
    await partial.pull(`${reg.host}/keep/app:1`); // host platform only
    const again = await partial.push(`${reg.host}/keep/app:1`);
    expect(again.digest).toBe(index.digest);
    expect(again.bytesTransferred).toBe(0);
    expect(
      (await client.headManifest({ registry: reg.host, repository: 'keep/app', tag: '1' }))?.digest,
    ).toBe(index.digest);
  });

  it('push and copy default to every platform even when `platforms: undefined` is passed explicitly', async () => {
    const src = await freshEngine();
    const { index } = await makeMultiPlatformImage(src.store, 'example.com/undef:1', [HOST, OTHER]);
    const pushed = await src.push('example.com/undef:1', `${reg.host}/undef/app:1`, { platforms: undefined });
    expect(pushed.digest).toBe(index.digest);
    expect(pushed.manifests).toHaveLength(2);
    const copied = await src.copy(`${reg.host}/undef/app:1`, `${reg.host}/undef/copy:1`, {
      platforms: undefined,
    });
    expect(copied.digest).toBe(index.digest);
  });

  it('lists the copied manifests in index order, whatever order they finish in', async () => {
    const src = await freshEngine();
    const { children } = await makeMultiPlatformImage(src.store, 'example.com/order:1', [HOST, OTHER, THIRD]);
    for (let i = 0; i < 3; i++) {
      const r = await src.push('example.com/order:1', `${reg.host}/order/app:${i}`, { concurrency: 1 });
      expect(r.manifests.map((m) => m.digest)).toEqual(children.map((c) => c.digest));
    }
  });

  it('refuses to write an image under a destination digest that is not its own', async () => {
    const src = await freshEngine();
    const a = await makeImage(src.store, 'example.com/pin:a', { a: 'a' });
    const b = await makeImage(src.store, 'example.com/pin:b', { b: 'b' });
    await expect(src.push('example.com/pin:a', `${reg.host}/pin/app@${b.digest}`)).rejects.toMatchObject({
      code: 'DIGEST_MISMATCH',
    });
    const ok = await src.push('example.com/pin:a', `${reg.host}/pin/app@${a.digest}`);
    expect(ok.digest).toBe(a.digest);
  });
});

describe('store target and gc', () => {
  it('a blob found present by a copy is claimed, so a gc before the new ref is set keeps it', async () => {
    const e = await freshEngine();
    const d = await makeImage(e.store, 'example.com/old:1', { f: 'x'.repeat(1000) });
    const manifest = JSON.parse((await e.store.readBlob(d.digest)).toString()) as { layers: Descriptor[] };
    const layer = manifest.layers[0]!;
    // The image is old, then its ref goes (rmi --no-prune) while another pull that shares the layer is in flight.
    const old = new Date(Date.now() - 3 * 60 * 60 * 1000);
    await utimes(e.store.blobPath(layer.digest), old, old);
    await e.store.deleteRef('example.com/old:1');
    const target = new StoreTarget(e.store, 'example.com/new:1');
    expect(await target.hasBlob(layer)).toBe(true);
    await e.store.gc();
    expect(await e.store.has(layer.digest)).toBe(true);
    // A descriptor lying about the size of a present blob is refused, not taken as present.
    await expect(target.hasBlob({ ...layer, size: layer.size + 1 })).rejects.toMatchObject({
      code: 'SIZE_MISMATCH',
    });
  });

  it('push survives a damaged blob-locations hint file', async () => {
    const e = await freshEngine();
    const d = await makeImage(e.store, 'example.com/hints:1', { h: 'h' });
    await mkdir(join(e.store.root, 'strata'), { recursive: true });
    const m = JSON.parse((await e.store.readBlob(d.digest)).toString()) as {
      config: Descriptor;
      layers: Descriptor[];
    };
    const damaged: Record<string, unknown> = { x: ['y', 3] };
    for (const b of [m.config, ...m.layers]) damaged[b.digest] = 5;
    await writeFile(join(e.store.root, 'strata', 'blob-locations.json'), JSON.stringify(damaged));
    const r = await e.push('example.com/hints:1', `${reg.host}/hints/app:1`);
    expect(r.digest).toBe(d.digest);
  });
});

describe('rmi', () => {
  it('tries every reference, prunes what it removed, and reports the failures', async () => {
    const e = await freshEngine();
    await makeImage(e.store, 'example.com/one:1', { one: 'one' });
    const result = await e.rmi(['nothing/here:1', 'example.com/one:1']);
    expect(result.removed).toEqual(['example.com/one:1']);
    expect(result.failed).toEqual([
      { reference: 'nothing/here:1', error: expect.objectContaining({ code: 'NOT_FOUND' }) },
    ]);
    expect(result.gc?.removed.length).toBe(3); // manifest, config, layer
    expect(await readdir(join(e.store.root, 'blobs', 'sha256'))).toEqual([]);
  });

  it('an image ID naming several refs is a CONFLICT unless forced; a name removes only itself', async () => {
    const e = await freshEngine();
    const d = await makeImage(e.store, 'example.com/multi:1', { m: 'm' });
    await e.tag('example.com/multi:1', 'example.com/multi:2');
    await e.tag('example.com/multi:1', 'example.com/multi:3');
    const id = d.digest.slice(7, 19);
    const conflict = await e.rmi([id]);
    expect(conflict.removed).toEqual([]);
    expect(conflict.failed[0]?.error).toMatchObject({ code: 'CONFLICT' });
    expect((await e.rmi(['example.com/multi:3'])).removed).toEqual(['example.com/multi:3']);
    expect(await e.store.has(d.digest)).toBe(true);
    const forced = await e.rmi([id], { force: true });
    expect(forced.removed.sort()).toEqual(['example.com/multi:1', 'example.com/multi:2']);
    expect(await e.store.has(d.digest)).toBe(false);
  });
});

describe('skipBytes', () => {
  it('drops the first bytes, and destroying the result releases the source', async () => {
    const source = new PassThrough();
    const skipped = skipBytes(source, 3);
    const chunks: Buffer[] = [];
    skipped.on('data', (c: Buffer) => chunks.push(c));
    source.write(Buffer.from('ab'));
    source.write(Buffer.from('cdef'));
    await new Promise((r) => setImmediate(r));
    expect(Buffer.concat(chunks).toString()).toBe('def');
    skipped.destroy();
    await new Promise((r) => setImmediate(r));
    expect(source.destroyed).toBe(true);
  });
});
