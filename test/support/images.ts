import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { importTarball } from '../../src/engine/archive/import.js';
import { descriptorOf } from '../../src/engine/image/store-endpoint.js';
import { digestOf, type Digest } from '../../src/engine/oci/digest.js';
import { MediaType } from '../../src/engine/oci/media-types.js';
import type { Platform } from '../../src/engine/oci/platform.js';
import { parseManifest, type Descriptor } from '../../src/engine/oci/types.js';
import type { ContentStore } from '../../src/engine/store/types.js';

/** A fresh temp directory. */
export function tempDir(prefix = 'strata-test-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

/** Writes `files` (path → content; a number means that many random bytes) into a directory and tars it. */
export async function makeTarball(files: Record<string, string | number>): Promise<string> {
  const dir = await tempDir('strata-rootfs-');
  const root = join(dir, 'rootfs');
  await mkdir(root);
  for (const [name, content] of Object.entries(files)) {
    await mkdir(join(root, name, '..'), { recursive: true });
    await writeFile(join(root, name), typeof content === 'number' ? randomBytes(content) : content);
  }
  const tar = join(dir, 'rootfs.tar');
  execFileSync('tar', [
    '--sort=name',
    '--owner=0',
    '--group=0',
    '--numeric-owner',
    '-cf',
    tar,
    '-C',
    root,
    '.',
  ]);
  return tar;
}

/** Imports a one-layer image of `files` for `platform` into the store under `name`; returns its manifest descriptor. */
export async function makeImage(
  store: ContentStore,
  name: string,
  files: Record<string, string | number>,
  platform?: Platform,
): Promise<Descriptor> {
  const tar = await makeTarball(files);
  try {
    await importTarball(store, createReadStream(tar), name, {
      ...(platform ? { platform } : {}),
      message: `test image ${name}`,
    });
  } finally {
    await rm(dirname(tar), { recursive: true, force: true }); // the tarball's own temp dir: no leftovers
  }
  const d = await store.getRef(name);
  if (!d) throw new Error(`makeImage: ${name} not set`);
  return d;
}

/** Makes one image per platform and an OCI index over them, tagged `name` in the store. */
export async function makeMultiPlatformImage(
  store: ContentStore,
  name: string,
  platforms: readonly Platform[],
): Promise<{ index: Descriptor; children: Descriptor[] }> {
  const children: Descriptor[] = [];
  for (const p of platforms) {
    const tmpName = `${name}-${p.architecture}`;
    const d = await makeImage(store, tmpName, { 'etc/arch': p.architecture, 'bin/tool': 2048 }, p);
    await store.deleteRef(tmpName);
    children.push({ ...d, platform: p });
  }
  const bytes = Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: children }),
  );
  const doc = parseManifest(bytes, digestOf(bytes), MediaType.OciIndex);
  await store.putBytes(bytes);
  await store.setRef(name, descriptorOf(doc));
  return { index: descriptorOf(doc), children };
}

/** A layer blob in the store with its diffID. */
export interface TestLayer {
  readonly descriptor: Descriptor;
  readonly diffId: Digest;
}

/**
 * Builds one layer: `build(root)` fills an empty dir (owners, modes, links, whiteout files `.wh.x`,
 * `.wh..wh..opq` as empty regular files), GNU tar archives it (names sorted, numeric owners, hardlinks kept), and
 * the tar (gzip or plain) is written to the store.
 */
export async function makeLayer(
  store: ContentStore,
  build: (root: string) => Promise<void> | void,
  compression: 'gzip' | 'none' = 'gzip',
): Promise<TestLayer> {
  const dir = await tempDir('strata-layer-');
  const root = join(dir, 'root');
  await mkdir(root);
  await build(root);
  const tar = join(dir, 'layer.tar');
  execFileSync('tar', ['--sort=name', '--numeric-owner', '-cf', tar, '-C', root, '.']);
  const bytes = await readFile(tar);
  const diffId = digestOf(bytes);
  const blob = compression === 'gzip' ? gzipSync(bytes) : bytes;
  const put = await store.putBytes(blob);
  await rm(dir, { recursive: true, force: true });
  return {
    descriptor: {
      mediaType: compression === 'gzip' ? MediaType.OciLayerGzip : MediaType.OciLayer,
      digest: put.digest,
      size: put.size,
    },
    diffId,
  };
}

/**
 * Writes a config and an OCI manifest over `layers` (base first) and tags it `name`. `diffIds` overrides the
 * config's `rootfs.diff_ids` (to test verification).
 */
export async function makeLayeredImage(
  store: ContentStore,
  name: string,
  layers: readonly TestLayer[],
  options: { platform?: Platform; diffIds?: readonly Digest[] } = {},
): Promise<Descriptor> {
  const platform = options.platform ?? { os: 'linux', architecture: 'amd64' };
  const config = {
    created: '2024-01-01T00:00:00Z',
    architecture: platform.architecture,
    os: platform.os,
    config: { Cmd: ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: options.diffIds ?? layers.map((l) => l.diffId) },
    history: layers.map((_l, i) => ({ created: '2024-01-01T00:00:00Z', created_by: `layer ${i}` })),
  };
  const cfg = await store.putBytes(Buffer.from(JSON.stringify(config)));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      config: { mediaType: MediaType.OciConfig, digest: cfg.digest, size: cfg.size },
      layers: layers.map((l) => l.descriptor),
    }),
  );
  const put = await store.putBytes(manifest);
  const descriptor: Descriptor = { mediaType: MediaType.OciManifest, digest: put.digest, size: put.size };
  await store.setRef(name, descriptor);
  return descriptor;
}
