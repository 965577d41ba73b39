import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createGzip } from 'node:zlib';
import { pipeline } from 'node:stream/promises';
import type { Digest } from '../../src/engine/oci/digest.js';
import { MediaType } from '../../src/engine/oci/media-types.js';
import type { Descriptor } from '../../src/engine/oci/types.js';
import type { FsStore } from '../../src/engine/store/index.js';
import { tempDir } from './helpers.js';

/** A layer made with the system `tar` from `files`, gzipped with node:zlib, and ingested into the store. */
export async function addLayer(
  store: FsStore,
  files: Record<string, string>,
): Promise<{ layer: Descriptor; diffId: Digest }> {
  const dir = await tempDir('strata-layer-');
  const rootfs = join(dir, 'rootfs');
  await mkdir(rootfs);
  for (const [name, content] of Object.entries(files)) {
    await mkdir(join(rootfs, name, '..'), { recursive: true });
    await writeFile(join(rootfs, name), content);
  }
  const tar = join(dir, 'layer.tar');
  execFileSync('tar', [
    '--sort=name',
    '--mtime=@0',
    '--owner=0',
    '--group=0',
    '--numeric-owner',
    '-cf',
    tar,
    '-C',
    rootfs,
    '.',
  ]);
  const diff = createHash('sha256');
  await pipeline(createReadStream(tar), diff);
  const diffId = `sha256:${diff.digest('hex')}` as Digest;
  const { digest, size } = await store.ingest(createReadStream(tar).pipe(createGzip()), {
    what: 'test layer',
  });
  return { layer: { mediaType: MediaType.OciLayerGzip, digest, size }, diffId };
}

/** Writes config and manifest for `layers` (base first); returns the manifest's descriptor. */
export async function addImage(
  store: FsStore,
  layers: readonly { layer: Descriptor; diffId: Digest }[],
  label = 'test',
): Promise<{ manifest: Descriptor; config: Descriptor }> {
  const cfg = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Cmd: ['/bin/sh'], Labels: { label } },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      history: layers.map(() => ({ created_by: 'test' })),
    }),
  );
  const c = await store.putBytes(cfg);
  const config: Descriptor = { mediaType: MediaType.OciConfig, digest: c.digest, size: c.size };
  const manifestBytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      config,
      layers: layers.map((l) => l.layer),
    }),
  );
  const m = await store.putBytes(manifestBytes);
  return { manifest: { mediaType: MediaType.OciManifest, digest: m.digest, size: m.size }, config };
}

/** Writes an index over `manifests` (with platforms) and returns its descriptor. */
export async function addIndex(store: FsStore, manifests: readonly Descriptor[]): Promise<Descriptor> {
  const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests }));
  const r = await store.putBytes(bytes);
  return { mediaType: MediaType.OciIndex, digest: r.digest, size: r.size };
}
