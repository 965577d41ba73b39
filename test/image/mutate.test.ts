import { rm } from 'node:fs/promises';
import { afterAll, describe, expect, it } from 'vitest';
import {
  appendLayer,
  EMPTY_LAYER_DIFF_ID,
  emptyImage,
  imageOf,
  renderImage,
  withAnnotations,
  withAuthor,
  withConfigChanges,
  withCreated,
  withFamily,
  type ImageValue,
  type LayerAddendum,
} from '../../src/engine/image/mutate.js';
import { readImageValue, writeImage } from '../../src/engine/image/mutate-store.js';
import { digestOf, type Digest } from '../../src/engine/oci/digest.js';
import { MediaType } from '../../src/engine/oci/media-types.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { tempDir } from '../support/images.js';

const dirs: string[] = [];
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

const layer = (n: number, mediaType: string = MediaType.OciLayerGzip): LayerAddendum => ({
  mediaType,
  digest: digestOf(`blob ${n}`),
  size: 100 + n,
  diffId: digestOf(`tar ${n}`),
});
const base = emptyImage({ os: 'linux', architecture: 'arm64', variant: 'v8' });

describe('image values (pure)', () => {
  it('scratch: no layers, an empty history, the platform in the config', () => {
    expect(base.layers).toEqual([]);
    expect(base.config).toMatchObject({
      os: 'linux',
      architecture: 'arm64',
      variant: 'v8',
      rootfs: { type: 'layers', diff_ids: [] },
      history: [],
    });
  });

  const cases: Array<{ name: string; make: () => ImageValue; check: (img: ImageValue) => void }> = [
    {
      name: 'appendLayer adds the descriptor, the diffID and the history entry',
      make: () =>
        appendLayer(base, {
          layer: layer(1),
          history: { created_by: 'COPY . /', comment: 'c', author: 'a' },
        }),
      check: (img) => {
        expect(img.layers).toEqual([
          { mediaType: MediaType.OciLayerGzip, digest: layer(1).digest, size: 101 },
        ]);
        expect(img.config.rootfs.diff_ids).toEqual([layer(1).diffId]);
        expect(img.config.history).toEqual([{ created_by: 'COPY . /', comment: 'c', author: 'a' }]);
      },
    },
    {
      name: 'no layer: an empty_layer step',
      make: () => appendLayer(base, { history: { created_by: 'CMD ["sh"]' } }),
      check: (img) => {
        expect(img.layers).toEqual([]);
        expect(img.config.history).toEqual([{ created_by: 'CMD ["sh"]', empty_layer: true }]);
      },
    },
    {
      name: 'the empty tar is an empty_layer step too, as docker does',
      make: () => appendLayer(base, { layer: { ...layer(1), diffId: EMPTY_LAYER_DIFF_ID }, history: {} }),
      check: (img) => {
        expect(img.layers).toEqual([]);
        expect(img.config.rootfs.diff_ids).toEqual([]);
        expect(img.config.history).toEqual([{ empty_layer: true }]);
      },
    },
    {
      name: 'a base without history gets one blank entry per layer first',
      make: () =>
        appendLayer(
          imageOf(
            { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [layer(1).diffId] } },
            [{ mediaType: MediaType.OciLayerGzip, digest: layer(1).digest, size: 101 }],
          ),
          { layer: layer(2), history: { created_by: 'x' } },
        ),
      check: (img) => expect(img.config.history).toEqual([{ created_by: '' }, { created_by: 'x' }]),
    },
    {
      name: '-c changes, created and author land in the config',
      make: () =>
        withAuthor(
          withCreated(withConfigChanges(base, ['ENV A=1', 'CMD ["run"]', 'WORKDIR /srv']), new Date(0)),
          'me',
        ),
      check: (img) =>
        expect(img.config).toMatchObject({
          created: '1970-01-01T00:00:00.000Z',
          author: 'me',
          config: { Env: ['A=1'], Cmd: ['run'], WorkingDir: '/srv' },
        }),
    },
    {
      name: 'to Docker schema2: layer types mapped, annotations dropped',
      make: () =>
        withFamily(
          withAnnotations(appendLayer(base, { layer: layer(1), history: {} }), { a: 'b' }),
          'docker',
        ),
      check: (img) => {
        expect(img.layers[0]!.mediaType).toBe(MediaType.DockerLayer);
        expect(img.annotations).toBeUndefined();
        expect(renderImage(img).manifest.value).toMatchObject({
          mediaType: MediaType.DockerManifest,
          config: { mediaType: MediaType.DockerConfig },
        });
      },
    },
    {
      name: 'back to OCI: docker layer types mapped',
      make: () =>
        withFamily(
          appendLayer(emptyImage({ os: 'linux', architecture: 'amd64' }, 'docker'), {
            layer: layer(1, MediaType.DockerLayer),
            history: {},
          }),
          'oci',
        ),
      check: (img) => expect(img.layers[0]!.mediaType).toBe(MediaType.OciLayerGzip),
    },
  ];
  for (const c of cases) it(c.name, () => c.check(c.make()));

  it('Docker schema2 cannot describe a zstd or plain layer: INVALID_ARGUMENT naming it', () => {
    const img = appendLayer(base, { layer: layer(1, MediaType.OciLayerZstd), history: {} });
    expect(() => withFamily(img, 'docker')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });

  it('values are immutable: the input never changes', () => {
    const frozen = JSON.stringify(base);
    appendLayer(base, { layer: layer(1), history: {} });
    withConfigChanges(base, ['ENV X=1']);
    withCreated(base, '2020-01-01T00:00:00Z');
    expect(JSON.stringify(base)).toBe(frozen);
  });

  it('layers and diff_ids that do not pair up are MANIFEST_INVALID', () => {
    expect(() =>
      imageOf(base.config, [{ mediaType: MediaType.OciLayer, digest: layer(1).digest, size: 1 }]),
    ).toThrow(expect.objectContaining({ code: 'MANIFEST_INVALID' }));
  });

  it('renders deterministically; raw config bytes are kept until the config changes', () => {
    const raw = Buffer.from(JSON.stringify(base.config, null, 2)); // not our serialization
    const loaded = imageOf(base.config, [], { rawConfig: raw });
    expect(renderImage(loaded).config.descriptor.digest).toBe(digestOf(raw));
    const changed = withCreated(loaded, '2021-01-01T00:00:00Z');
    expect(changed.rawConfig).toBeUndefined();
    expect(renderImage(changed).config.descriptor.digest).not.toBe(digestOf(raw));
    expect(renderImage(changed).manifest.bytes).toEqual(renderImage(changed).manifest.bytes);
  });
});

describe('image values and the store', () => {
  it('writeImage stores config and manifest; readImageValue reads the same value back', async () => {
    const dir = await tempDir('strata-mutate-');
    dirs.push(dir);
    const store = await FsStore.open(dir);
    const blob = await store.putBytes(Buffer.from('layer bytes'));
    const img = withAnnotations(
      appendLayer(base, {
        layer: { mediaType: MediaType.OciLayer, digest: blob.digest, size: blob.size, diffId: blob.digest },
        history: { created_by: 'test' },
      }),
      { 'org.example': 'yes' },
    );
    const written = await writeImage(store, img);
    const back = await readImageValue(store, written.manifest.descriptor.digest as Digest, 'test');
    expect(back.image.layers).toEqual(img.layers);
    expect(back.image.config).toEqual(img.config);
    expect(back.image.annotations).toEqual({ 'org.example': 'yes' });
    expect(renderImage(back.image).manifest.descriptor).toEqual(written.manifest.descriptor);
  });

  it('writeImage refuses an image whose layer is not stored (BLOB_UNKNOWN), writing nothing', async () => {
    const dir = await tempDir('strata-mutate-');
    dirs.push(dir);
    const store = await FsStore.open(dir);
    const img = appendLayer(base, { layer: layer(9), history: {} });
    await expect(writeImage(store, img)).rejects.toMatchObject({ code: 'BLOB_UNKNOWN' });
    const blobs: unknown[] = [];
    for await (const b of store.listBlobs()) blobs.push(b);
    expect(blobs).toEqual([]);
  });
});
