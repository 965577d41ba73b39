import { randomBytes } from 'node:crypto';
import { writeFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { StrataError, type StrataErrorCode } from '../../src/engine/errors.js';
import { runCli } from '../support/cli.js';
import { digestOf } from '../../src/engine/oci/digest.js';
import { MediaType } from '../../src/engine/oci/media-types.js';
import {
  blobName,
  buildTar,
  dirs,
  freshStore,
  layerTar,
  loadFrom,
  scratch,
  type TarMember,
} from './helpers.js';

afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function expectRefused(file: string, code: StrataErrorCode, message: RegExp): Promise<void> {
  const store = await freshStore();
  const err: unknown = await loadFrom(store, file).then(
    () => new Error('load succeeded'),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(StrataError);
  expect((err as StrataError).message).toMatch(message);
  expect((err as StrataError).code).toBe(code);
  expect(await store.listRefs()).toEqual([]);
}

/** A valid one-layer docker-archive image: its members and manifest.json entry. */
async function validImage(tag: string): Promise<{ members: TarMember[]; entry: object; layer: Buffer }> {
  const layer = await layerTar({ [`etc/${tag.replace(/\W/g, '_')}`]: tag });
  const config = JSON.stringify({
    architecture: 'amd64',
    os: 'linux',
    rootfs: { type: 'layers', diff_ids: [digestOf(layer)] },
  });
  return {
    layer,
    members: [
      { name: blobName(layer), data: layer },
      { name: blobName(config), data: config },
    ],
    entry: { Config: blobName(config), RepoTags: [tag], Layers: [blobName(layer)] },
  };
}

describe('hostile archives are refused clearly and tag nothing', () => {
  it('a ../ member name', async () => {
    const ok = await validImage('good:1');
    const file = await buildTar([
      ...ok.members,
      { name: '../evil', data: 'x' },
      { name: 'manifest.json', data: JSON.stringify([ok.entry]) },
    ]);
    await expectRefused(file, 'MANIFEST_INVALID', /archive member "\.\.\/evil": path escapes the archive/);
  });

  it('an absolute member name, and a symlink pointing outside', async () => {
    await expectRefused(
      await buildTar([{ name: '/etc/passwd', data: 'x' }]),
      'MANIFEST_INVALID',
      /absolute path/,
    );
    await expectRefused(
      await buildTar([{ name: 'abc/layer.tar', symlink: '../../etc/passwd' }]),
      'MANIFEST_INVALID',
      /"abc\/layer.tar": link target "..\/..\/etc\/passwd" is outside the archive/,
    );
  });

  it('a manifest.json naming a member outside the archive', async () => {
    const ok = await validImage('good:1');
    const file = await buildTar([
      ...ok.members,
      { name: 'manifest.json', data: JSON.stringify([{ ...ok.entry, Config: '../../etc/shadow' }]) },
    ]);
    await expectRefused(file, 'MANIFEST_INVALID', /"\.\.\/\.\.\/etc\/shadow": path escapes/);
  });

  it('a blob whose content does not match its name', async () => {
    const ok = await validImage('good:1');
    const file = await buildTar([
      ...ok.members,
      { name: blobName('the real content'), data: 'something else' },
      { name: 'manifest.json', data: JSON.stringify([ok.entry]) },
    ]);
    await expectRefused(
      file,
      'DIGEST_MISMATCH',
      /archive member blobs\/sha256\/[a-f0-9]{64}: digest mismatch/,
    );
  });

  it('an oversized manifest.json', async () => {
    const file = await buildTar([{ name: 'manifest.json', data: Buffer.alloc(4 * 1024 * 1024 + 1, 0x20) }]);
    await expectRefused(
      file,
      'SIZE_LIMIT',
      /archive member "manifest.json" is 4194305 bytes, over the 4194304-byte limit/,
    );
  });

  it('a member that manifest.json names but the archive lacks', async () => {
    const ok = await validImage('good:1');
    const file = await buildTar([
      ...ok.members,
      { name: 'manifest.json', data: JSON.stringify([{ ...ok.entry, Layers: ['0123/layer.tar'] }]) },
    ]);
    await expectRefused(
      file,
      'BLOB_UNKNOWN',
      /manifest.json\[0\] Layers\[0\] names member "0123\/layer.tar", which is not in the archive/,
    );
  });

  it('an OCI index naming a blob the archive lacks', async () => {
    const layer = await layerTar({ a: 'a' });
    const config = JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      rootfs: { type: 'layers', diff_ids: [digestOf(layer)] },
    });
    const manifest = JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      config: { mediaType: MediaType.OciConfig, digest: digestOf(config), size: config.length },
      layers: [{ mediaType: MediaType.OciLayer, digest: digestOf(layer), size: layer.length }],
    });
    const index = JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: MediaType.OciManifest,
          digest: digestOf(manifest),
          size: manifest.length,
          annotations: { 'io.containerd.image.name': 'example.com/x:1' },
        },
      ],
    });
    const file = await buildTar([
      { name: 'oci-layout', data: '{"imageLayoutVersion":"1.0.0"}' },
      { name: 'index.json', data: index },
      { name: blobName(manifest), data: manifest },
      { name: blobName(config), data: config },
    ]);
    await expectRefused(file, 'BLOB_UNKNOWN', new RegExp(`layer 0\\) names member "${blobName(layer)}"`));
  });

  it('duplicate members', async () => {
    const ok = await validImage('good:1');
    const file = await buildTar([
      ...ok.members,
      { name: 'manifest.json', data: JSON.stringify([ok.entry]) },
      { name: './manifest.json', data: JSON.stringify([]) },
    ]);
    await expectRefused(file, 'MANIFEST_INVALID', /archive member "manifest.json" appears twice/);
  });

  it('a layer that does not match the config diff_id: not even the sound image beside it is tagged', async () => {
    const ok = await validImage('good:1');
    const bad = await validImage('bad:1');
    const other = await layerTar({ 'etc/other': 'other' });
    const file = await buildTar([
      ...ok.members,
      ...bad.members,
      { name: 'other/layer.tar', data: other },
      {
        name: 'manifest.json',
        data: JSON.stringify([ok.entry, { ...bad.entry, Layers: ['other/layer.tar'] }]),
      },
    ]);
    await expectRefused(
      file,
      'DIGEST_MISMATCH',
      /manifest.json\[1\]: layer other\/layer.tar does not match the config/,
    );
  });

  it('something that is not a tar, and an archive without image metadata', async () => {
    const junk = join(await scratch(), 'junk.tar');
    await writeFile(junk, randomBytes(4096));
    await expectRefused(junk, 'INVALID_ARGUMENT', /not a readable tar archive/);
  });

  it('a plain filesystem tar: NOT_AN_IMAGE_ARCHIVE naming the file and suggesting import, nothing kept', async () => {
    const file = await buildTar([
      { name: 'etc/', dir: true },
      { name: 'etc/hostname', data: 'box\n' },
      { name: 'bin/sh', data: Buffer.alloc(3000, 1) },
    ]);
    const store = await freshStore();
    const err = await loadFrom(store, file, { source: file }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StrataError);
    expect((err as StrataError).code).toBe('NOT_AN_IMAGE_ARCHIVE');
    expect((err as StrataError).message).toContain(file);
    expect((err as StrataError).message).toContain(`strata import ${file}`);
    expect(await store.listRefs()).toEqual([]);
    const blobs: unknown[] = [];
    for await (const b of store.listBlobs()) blobs.push(b);
    expect(blobs).toEqual([]); // the members it stored on the way are deleted again
  });
});

describe('a gzip-compressed archive that expands without end', () => {
  it('is cut at the archive cap with SIZE_LIMIT, tagging nothing', async () => {
    const { gzipSync } = await import('node:zlib');
    const ok = await validImage('bomb:1');
    const tar = await buildTar([
      { name: 'padding.bin', data: Buffer.alloc(4 * 1024 * 1024) },
      ...ok.members,
      { name: 'manifest.json', data: JSON.stringify([ok.entry]) },
    ]);
    const { readFile } = await import('node:fs/promises');
    const file = join(await scratch(), 'bomb.tar.gz');
    await writeFile(file, gzipSync(await readFile(tar)));
    const store = await freshStore();
    await expect(loadFrom(store, file, { limits: { archiveBytes: 1024 * 1024 } })).rejects.toMatchObject({
      code: 'SIZE_LIMIT',
      message: expect.stringContaining('expands beyond 1048576 bytes'),
    });
    expect(await store.listRefs()).toEqual([]);
    // The same archive under the default cap loads.
    await expect(loadFrom(await freshStore(), file)).resolves.toMatchObject({ images: [expect.anything()] });
  });
});

describe('CLI', () => {
  it('load -i of a root filesystem tar fails saying it is no image archive and suggesting import', async () => {
    const file = await buildTar([{ name: 'etc/hostname', data: 'box\n' }]);
    const store = await freshStore();
    const run = await runCli(['--store', store.root, 'load', '-i', file]);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(/not an image archive/);
    expect(run.stderr).toMatch(/strata import/);
    expect(await store.listRefs()).toEqual([]);
  });
});
