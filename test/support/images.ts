import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { importTarball } from '../../src/engine/archive/import.js';
import { descriptorOf } from '../../src/engine/image/store-endpoint.js';
import { digestOf } from '../../src/engine/oci/digest.js';
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
  await importTarball(store, createReadStream(tar), name, {
    ...(platform ? { platform } : {}),
    message: `test image ${name}`,
  });
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
