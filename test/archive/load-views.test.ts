import { rm } from 'node:fs/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { findLocalRef, imageClosure } from '../../src/engine/image/local.js';
import { digestHex, type Digest } from '../../src/engine/oci/digest.js';
import { hostPlatform, type Platform } from '../../src/engine/oci/platform.js';
import { parseManifest } from '../../src/engine/oci/types.js';
import type { ContentStore } from '../../src/engine/store/types.js';
import type { EngineEvent } from '../../src/engine/observe.js';
import { makeMultiPlatformImage } from '../support/images.js';
import {
  blobName,
  buildTar,
  dirs,
  freshStore,
  loadFrom,
  makeLayeredImage,
  type TarMember,
} from './helpers.js';

afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function blobSet(store: ContentStore): Promise<Set<Digest>> {
  const out = new Set<Digest>();
  for await (const b of store.listBlobs()) out.add(b.digest);
  return out;
}

/** Every blob of the ref's closure as an archive member `blobs/sha256/<hex>`. */
async function blobMembers(store: ContentStore, ref: string): Promise<TarMember[]> {
  const closure = await imageClosure(store, await findLocalRef(store, ref));
  const out: TarMember[] = [];
  for (const d of closure)
    out.push({ name: `blobs/sha256/${digestHex(d)}`, data: await store.readBlob(d, 1 << 30) });
  return out;
}

const other: Platform =
  hostPlatform().architecture === 'arm64'
    ? { os: 'linux', architecture: 'amd64' }
    : { os: 'linux', architecture: 'arm64' };

describe('load keeps only what the images reference', () => {
  it('members nothing refers to are not left in the store as blobs', async () => {
    const src = await freshStore();
    const image = await makeLayeredImage(src, 'example.com/app:1', [{ 'etc/a': 'a' }, { 'etc/b': 'b' }]);
    const junk = Buffer.from('nobody refers to me');
    const file = await buildTar([
      ...(await blobMembers(src, 'example.com/app:1')),
      { name: blobName(junk), data: junk },
      { name: 'extra/notes.txt', data: 'not part of any image' },
      {
        name: 'index.json',
        data: JSON.stringify({
          schemaVersion: 2,
          manifests: [
            { ...image.manifest, annotations: { 'io.containerd.image.name': 'example.com/app:1' } },
          ],
        }),
      },
      { name: 'oci-layout', data: '{"imageLayoutVersion":"1.0.0"}' },
    ]);
    const dst = await freshStore();
    const events: EngineEvent[] = [];
    const result = await loadFrom(dst, file, { observer: { log: console, emit: (e) => events.push(e) } });
    expect(result.images.map((i) => i.reference)).toEqual(['example.com/app:1']);
    expect(result.blobs.discarded).toBe(2);
    expect(await blobSet(dst)).toEqual(
      new Set([image.manifest.digest, image.config, ...image.layers.map((l) => l.digest)]),
    );
    const last = events.filter((e) => e.type === 'archive-progress').at(-1);
    expect(last).toMatchObject({ type: 'archive-progress', operation: 'load', done: true, entries: 8 });
  });

  it('a blob that was in the store before the load is never deleted, even when the archive does not use it', async () => {
    const dst = await freshStore();
    const mine = Buffer.from('stored before');
    await dst.putBytes(mine);
    const src = await freshStore();
    const image = await makeLayeredImage(src, 'example.com/app:2', [{ 'etc/a': 'a' }]);
    const file = await buildTar([
      ...(await blobMembers(src, 'example.com/app:2')),
      { name: blobName(mine), data: mine },
      {
        name: 'index.json',
        data: JSON.stringify({
          schemaVersion: 2,
          manifests: [
            { ...image.manifest, annotations: { 'io.containerd.image.name': 'example.com/app:2' } },
          ],
        }),
      },
    ]);
    const result = await loadFrom(dst, file);
    expect(result.blobs.discarded).toBe(0);
    expect((await blobSet(dst)).has((await dst.putBytes(mine)).digest)).toBe(true);
  });
});

describe('load of an archive with both manifest.json and a multi-platform index.json', () => {
  it('keeps the index whole, as podman and containerd do (ctr export --all-platforms layout)', async () => {
    const src = await freshStore();
    const name = 'docker.io/library/multi:1';
    const { index, children } = await makeMultiPlatformImage(src, name, [hostPlatform(), other]);
    // What `ctr export --all-platforms` writes: index.json naming the index, manifest.json one platform only.
    const host = children[0]!;
    const hostManifest = parseManifest(await src.readBlob(host.digest), host.digest, host.mediaType);
    if (hostManifest.kind !== 'manifest') throw new Error('expected a manifest');
    const file = await buildTar([
      ...(await blobMembers(src, name)),
      {
        name: 'index.json',
        data: JSON.stringify({
          schemaVersion: 2,
          mediaType: 'application/vnd.oci.image.index.v1+json',
          manifests: [
            {
              ...index,
              annotations: {
                'io.containerd.image.name': name,
                'org.opencontainers.image.ref.name': '1',
              },
            },
          ],
        }),
      },
      {
        name: 'manifest.json',
        data: JSON.stringify([
          {
            Config: blobName(await src.readBlob(hostManifest.manifest.config.digest)),
            RepoTags: ['multi:1'],
            Layers: hostManifest.manifest.layers.map((l) => `blobs/sha256/${digestHex(l.digest)}`),
          },
        ]),
      },
      { name: 'oci-layout', data: '{"imageLayoutVersion":"1.0.0"}' },
    ]);
    const dst = await freshStore();
    const result = await loadFrom(dst, file);
    expect(result.format).toBe('docker-archive');
    expect(result.images).toEqual([
      expect.objectContaining({ reference: name, digest: index.digest, mediaType: index.mediaType }),
    ]);
    expect(await dst.getRef(name)).toMatchObject({ digest: index.digest });
    for (const c of children) expect(await dst.has(c.digest)).toBe(true); // both platforms kept
  });

  it('falls back to manifest.json when index.json cannot be used, saying so', async () => {
    const src = await freshStore();
    const image = await makeLayeredImage(src, 'example.com/app:3', [{ 'etc/a': 'a' }]);
    const members = await blobMembers(src, 'example.com/app:3');
    const file = await buildTar([
      ...members.filter((m) => m.name !== `blobs/sha256/${digestHex(image.manifest.digest)}`),
      {
        name: 'index.json',
        data: JSON.stringify({ schemaVersion: 2, manifests: [image.manifest] }), // its manifest is missing
      },
      {
        name: 'manifest.json',
        data: JSON.stringify([
          {
            Config: `blobs/sha256/${digestHex(image.config)}`,
            RepoTags: ['example.com/app:3'],
            Layers: image.layers.map((l) => `blobs/sha256/${digestHex(l.digest)}`),
          },
        ]),
      },
    ]);
    const dst = await freshStore();
    const result = await loadFrom(dst, file);
    expect(result.images.map((i) => i.reference)).toEqual(['example.com/app:3']);
    expect(result.notes.join('\n')).toMatch(/index\.json ignored/);
  });
});
