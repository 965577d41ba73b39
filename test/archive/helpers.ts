import { createReadStream, createWriteStream } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';
import { loadArchive, type LoadOptions, type LoadResult } from '../../src/engine/archive/load.js';
import { saveArchive, type SaveOptions, type SaveResult } from '../../src/engine/archive/save.js';
import { descriptorOf } from '../../src/engine/image/store-endpoint.js';
import { digestOf, type Digest } from '../../src/engine/oci/digest.js';
import { MediaType } from '../../src/engine/oci/media-types.js';
import { hostPlatform } from '../../src/engine/oci/platform.js';
import { parseManifest, type Descriptor, type ImageManifest } from '../../src/engine/oci/types.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import type { ContentStore } from '../../src/engine/store/types.js';
import { makeTarball, tempDir } from '../support/images.js';

export const dirs: string[] = [];

/** A fresh empty store in a temp directory (removed by the suite's afterAll through `dirs`). */
export async function freshStore(): Promise<FsStore> {
  const dir = await tempDir('strata-archive-store-');
  dirs.push(dir);
  return FsStore.open(dir);
}

/** A temp directory removed after the suite. */
export async function scratch(): Promise<string> {
  const dir = await tempDir('strata-archive-');
  dirs.push(dir);
  return dir;
}

/** The uncompressed tar of `files`, as bytes (test layers are small). */
export async function layerTar(files: Record<string, string | number>): Promise<Buffer> {
  return readFile(await makeTarball(files));
}

/** An image of several gzip layers (one per file map) with a realistic config, tagged `name`. */
export async function makeLayeredImage(
  store: ContentStore,
  name: string,
  layers: ReadonlyArray<Record<string, string | number>>,
): Promise<{ manifest: Descriptor; config: Digest; diffIds: Digest[]; layers: Descriptor[] }> {
  const diffIds: Digest[] = [];
  const descs: Descriptor[] = [];
  for (const files of layers) {
    const tar = await layerTar(files);
    diffIds.push(digestOf(tar));
    const gz = gzipSync(tar);
    const r = await store.putBytes(gz);
    descs.push({ mediaType: MediaType.OciLayerGzip, digest: r.digest, size: r.size });
  }
  const p = hostPlatform();
  const config = Buffer.from(
    JSON.stringify({
      created: '2024-01-02T03:04:05Z',
      architecture: p.architecture,
      os: p.os,
      config: { Env: ['PATH=/usr/bin:/bin'], Cmd: ['/bin/sh', '-c', 'echo hi'], WorkingDir: '/srv' },
      rootfs: { type: 'layers', diff_ids: diffIds },
      history: layers.map((_, i) => ({ created: '2024-01-02T03:04:05Z', created_by: `step ${i}` })),
    }),
  );
  const cfg = await store.putBytes(config);
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: { mediaType: MediaType.OciConfig, digest: cfg.digest, size: cfg.size },
    layers: descs,
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  const doc = parseManifest(bytes, digestOf(bytes), MediaType.OciManifest);
  await store.putBytes(bytes);
  await store.setRef(name, descriptorOf(doc));
  return { manifest: descriptorOf(doc), config: cfg.digest, diffIds, layers: descs };
}

/** Saves into a file and returns its path and the result. */
export async function saveTo(
  store: ContentStore,
  refs: readonly string[],
  options: SaveOptions = {},
): Promise<{ file: string; result: SaveResult }> {
  const file = join(await scratch(), 'out.tar');
  const result = await saveArchive(store, refs, createWriteStream(file), options);
  return { file, result };
}

/** Loads a file into a store. */
export function loadFrom(store: ContentStore, file: string, options: LoadOptions = {}): Promise<LoadResult> {
  return loadArchive(store, createReadStream(file), options);
}

/** One member of a hand-built tar. */
export type TarMember =
  | { readonly name: string; readonly data: string | Buffer }
  | { readonly name: string; readonly symlink: string }
  | { readonly name: string; readonly hardlink: string }
  | { readonly name: string; readonly dir: true };

/** Writes a tar of exactly these members, in this order (tar-stream, so hostile names are kept as given). */
export async function buildTar(members: readonly TarMember[]): Promise<string> {
  const p = pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const c of p) chunks.push(c as Buffer);
  })();
  for (const m of members) {
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      if ('data' in m)
        p.entry({ name: m.name }, typeof m.data === 'string' ? Buffer.from(m.data) : m.data, cb);
      else if ('symlink' in m) p.entry({ name: m.name, type: 'symlink', linkname: m.symlink }, cb);
      else if ('hardlink' in m) p.entry({ name: m.name, type: 'link', linkname: m.hardlink }, cb);
      else p.entry({ name: m.name, type: 'directory' }, cb);
    });
  }
  p.finalize();
  await collected;
  const file = join(await scratch(), 'built.tar');
  await writeFile(file, Buffer.concat(chunks));
  return file;
}

/** `blobs/sha256/<hex>` of content. */
export function blobName(data: Buffer | string): string {
  return `blobs/sha256/${digestOf(data).slice('sha256:'.length)}`;
}

/** Reads an OCI layout directory's only image: manifest, config and their digests. */
export async function readLayoutImage(
  dir: string,
): Promise<{ manifestDigest: string; manifest: ImageManifest; config: { rootfs: { diff_ids: string[] } } }> {
  const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
  const d = index.manifests[0]!;
  const blob = (digest: string): Promise<string> =>
    readFile(join(dir, 'blobs', 'sha256', digest.slice('sha256:'.length)), 'utf8');
  const manifest = JSON.parse(await blob(d.digest)) as ImageManifest;
  const config = JSON.parse(await blob(manifest.config.digest)) as { rootfs: { diff_ids: string[] } };
  return { manifestDigest: d.digest, manifest, config };
}
