import { execFileSync, spawnSync } from 'node:child_process';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { descriptorOf } from '../../src/engine/image/store-endpoint.js';
import { findLocalRef, loadLocalImage } from '../../src/engine/image/local.js';
import { digestOf, type Digest } from '../../src/engine/oci/digest.js';
import { MediaType } from '../../src/engine/oci/media-types.js';
import { hostPlatform } from '../../src/engine/oci/platform.js';
import { parseManifest, type Descriptor, type ImageManifest } from '../../src/engine/oci/types.js';
import type { EngineEvent } from '../../src/engine/observe.js';
import type { ContentStore } from '../../src/engine/store/types.js';
import { requirePeer } from '../support/peers.js';
import { dirs, freshStore, loadFrom, makeLayeredImage, saveTo, scratch } from './helpers.js';

/**
 * Images with Docker schema2 media types in the store (pulled from a registry that serves them, loaded from a
 * docker-archive of such images, committed on such a base) are invisible to skopeo's and podman's `oci:` transport
 * and refused by umoci, which read OCI-typed entries only. These tests pin that with the real peers and check
 * that `save --format oci` converts (unless asked to keep the stored types).
 */

const DOCKER = 'example.com/docker:1';
const LIST = 'example.com/dockerlist:1';
let skopeo: string;
let umoci: string;
let store: ContentStore;
let image: Awaited<ReturnType<typeof makeLayeredImage>>;
let dockerManifest: Descriptor;
let listDesc: Descriptor;

async function putDoc(doc: object, mediaType: string): Promise<Descriptor> {
  const bytes = Buffer.from(JSON.stringify(doc));
  await store.putBytes(bytes);
  return descriptorOf(parseManifest(bytes, digestOf(bytes), mediaType));
}

beforeAll(async () => {
  skopeo = requirePeer('skopeo');
  umoci = requirePeer('umoci');
  store = await freshStore();
  image = await makeLayeredImage(store, 'example.com/oci:1', [{ 'etc/a': 'a' }, { 'etc/b': 'b' }]);
  const m = JSON.parse((await store.readBlob(image.manifest.digest)).toString()) as ImageManifest;
  dockerManifest = await putDoc(
    {
      schemaVersion: 2,
      mediaType: MediaType.DockerManifest,
      config: { ...m.config, mediaType: MediaType.DockerConfig },
      layers: m.layers.map((l) => ({ ...l, mediaType: MediaType.DockerLayer })),
    },
    MediaType.DockerManifest,
  );
  await store.setRef(DOCKER, dockerManifest);
  listDesc = await putDoc(
    {
      schemaVersion: 2,
      mediaType: MediaType.DockerManifestList,
      manifests: [{ ...dockerManifest, platform: hostPlatform() }],
    },
    MediaType.DockerManifestList,
  );
  await store.setRef(LIST, listDesc);
});

afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

function peer(bin: string, args: string[]): { ok: boolean; out: string } {
  const r = spawnSync(bin, args, { encoding: 'utf8' });
  return { ok: r.status === 0, out: `${r.stdout}${r.stderr}` };
}

describe('Docker media types in the store and the oci: readers (real skopeo and umoci)', () => {
  it('skopeo oci: sees the OCI-typed ref but not the Docker-typed one; umoci refuses it', () => {
    expect(peer(skopeo, ['inspect', `oci:${store.root}:example.com/oci:1`]).ok).toBe(true);
    const sk = peer(skopeo, ['inspect', `oci:${store.root}:${DOCKER}`]);
    expect(sk.ok).toBe(false);
    expect(sk.out).toMatch(/no descriptor found/);
    const um = peer(umoci, ['stat', '--image', `${store.root}:${DOCKER}`]);
    expect(um.ok).toBe(false);
    expect(um.out).toMatch(/vnd\.docker\.distribution\.manifest\.v2\+json/);
  });
});

describe('save --format oci converts Docker media types', () => {
  it('a Docker schema2 image: OCI-typed manifest, same config and layers, read by skopeo and umoci', async () => {
    const events: EngineEvent[] = [];
    const { file, result } = await saveTo(store, [DOCKER], {
      format: 'oci',
      observer: { log: console, emit: (e) => events.push(e) },
    });
    const saved = result.images[0]!;
    expect(saved.convertedFrom).toBe(dockerManifest.digest);
    expect(saved.digest).not.toBe(dockerManifest.digest);
    const inspect = JSON.parse(
      execFileSync(skopeo, ['--insecure-policy', 'inspect', '--raw', `oci-archive:${file}:1`], {
        encoding: 'utf8',
      }),
    ) as ImageManifest;
    expect(inspect.mediaType).toBe(MediaType.OciManifest);
    expect(inspect.config).toMatchObject({ mediaType: MediaType.OciConfig, digest: image.config });
    expect(inspect.layers.map((l) => [l.mediaType, l.digest])).toEqual(
      image.layers.map((l) => [MediaType.OciLayerGzip, l.digest]),
    );
    // umoci reads a layout directory: unpack the archive's layout and the image's rootfs.
    const layout = join(await scratch(), 'layout');
    await mkdir(layout);
    execFileSync('tar', ['-xf', file, '-C', layout]);
    const bundle = join(await scratch(), 'bundle');
    execFileSync(umoci, ['unpack', '--image', `${layout}:1`, bundle], { stdio: 'pipe' });
    expect(await readFile(join(bundle, 'rootfs/etc/b'), 'utf8')).toBe('b');
    const last = events.filter((e) => e.type === 'archive-progress').at(-1);
    expect(last).toMatchObject({ operation: 'save', done: true });
    // Loading it back keeps the image ID (the config bytes are unchanged).
    const dst = await freshStore();
    const loaded = await loadFrom(dst, file);
    expect(loaded.images[0]).toMatchObject({ digest: saved.digest, configDigest: image.config });
  });

  it('a Docker manifest list: an OCI index over the converted manifest', async () => {
    const { file, result } = await saveTo(store, [LIST], { format: 'oci' });
    expect(result.images[0]!.convertedFrom).toBe(listDesc.digest);
    const index = JSON.parse(
      execFileSync(skopeo, ['--insecure-policy', 'inspect', '--raw', `oci-archive:${file}:1`], {
        encoding: 'utf8',
      }),
    ) as { mediaType: string; manifests: Descriptor[] };
    expect(index.mediaType).toBe(MediaType.OciIndex);
    expect(index.manifests[0]!.mediaType).toBe(MediaType.OciManifest);
    await convertedChild(file, index.manifests[0]!.digest);
  });

  it('keepMediaTypes: written as stored (digest kept), which skopeo oci-archive: does not see', async () => {
    const { file, result } = await saveTo(store, [DOCKER], { format: 'oci', keepMediaTypes: true });
    expect(result.images[0]).toMatchObject({ digest: dockerManifest.digest });
    expect(result.images[0]!.convertedFrom).toBeUndefined();
    expect(peer(skopeo, ['inspect', `oci-archive:${file}:1`]).ok).toBe(false);
    const dst = await freshStore();
    await loadFrom(dst, file);
    const back = await loadLocalImage(dst, await findLocalRef(dst, DOCKER));
    expect(back.manifest.digest).toBe(dockerManifest.digest);
  });

  it('an OCI-typed image is written byte for byte (nothing to convert)', async () => {
    const { result } = await saveTo(store, ['example.com/oci:1'], { format: 'oci' });
    expect(result.images[0]).toMatchObject({ digest: image.manifest.digest });
    expect(result.images[0]!.convertedFrom).toBeUndefined();
  });
});

/** The digest of the blob in the archive's layout that a child descriptor names (it must be there). */
async function convertedChild(file: string, digest: Digest): Promise<void> {
  const layout = join(await scratch(), 'layout-list');
  await mkdir(layout);
  execFileSync('tar', ['-xf', file, '-C', layout]);
  const bytes = await readFile(join(layout, 'blobs/sha256', digest.slice('sha256:'.length)));
  expect(digestOf(bytes)).toBe(digest);
  expect((JSON.parse(bytes.toString()) as ImageManifest).mediaType).toBe(MediaType.OciManifest);
}
