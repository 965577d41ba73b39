/** `strata save --format oci --keep-media-types` through the real CLI: Docker-typed manifests written as stored. */
import { execFileSync } from 'node:child_process';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { descriptorOf } from '../../src/engine/image/store-endpoint.js';
import { digestOf } from '../../src/engine/oci/digest.js';
import { MediaType } from '../../src/engine/oci/media-types.js';
import { parseManifest, type Descriptor, type ImageManifest } from '../../src/engine/oci/types.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { runCli } from '../support/cli.js';
import { tempDir } from '../support/images.js';
import { makeLayeredImage } from '../archive/helpers.js';

const DOCKER = 'example.com/docker:1';
let work: string;
let env: Record<string, string>;
let dockerManifest: Descriptor;

beforeAll(async () => {
  work = await tempDir('strata-cli-save-mt-');
  const store = await FsStore.open(join(work, 'store'));
  env = { STRATA_STORE: store.root };
  const image = await makeLayeredImage(store, 'example.com/oci:1', [{ 'etc/a': 'a' }]);
  const m = JSON.parse((await store.readBlob(image.manifest.digest)).toString()) as ImageManifest;
  const bytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.DockerManifest,
      config: { ...m.config, mediaType: MediaType.DockerConfig },
      layers: m.layers.map((l) => ({ ...l, mediaType: MediaType.DockerLayer })),
    }),
  );
  await store.putBytes(bytes);
  dockerManifest = descriptorOf(parseManifest(bytes, digestOf(bytes), MediaType.DockerManifest));
  await store.setRef(DOCKER, dockerManifest);
}, 60_000);

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** The `index.json` of an OCI layout tar. */
async function indexOf(file: string): Promise<{ manifests: Descriptor[] }> {
  const dir = join(work, `x-${Math.random().toString(36).slice(2)}`);
  await mkdir(dir);
  execFileSync('tar', ['-xf', file, '-C', dir]);
  return JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
}

describe('save --keep-media-types', () => {
  it('--format oci converts a Docker-typed manifest by default', async () => {
    const file = join(work, 'converted.tar');
    const r = await runCli(['save', '--format', 'oci', '-o', file, DOCKER], env);
    expect(r.code, r.stderr).toBe(0);
    const [entry] = (await indexOf(file)).manifests;
    expect(entry!.mediaType).toBe(MediaType.OciManifest);
    expect(entry!.digest).not.toBe(dockerManifest.digest);
  });

  it('--keep-media-types writes it as stored: Docker media type, same digest', async () => {
    const file = join(work, 'kept.tar');
    const r = await runCli(
      ['--json', 'save', '--format', 'oci', '--keep-media-types', '-o', file, DOCKER],
      env,
    );
    expect(r.code, r.stderr).toBe(0);
    const [entry] = (await indexOf(file)).manifests;
    expect(entry).toMatchObject({ mediaType: MediaType.DockerManifest, digest: dockerManifest.digest });
    const result = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as {
      images: Array<Record<string, unknown>>;
    };
    expect(result.images[0]).toMatchObject({ digest: dockerManifest.digest });
    expect(result.images[0]!.convertedFrom).toBeUndefined();
  });

  it('refuses --keep-media-types with the docker format (INVALID_ARGUMENT, no file written)', async () => {
    const file = join(work, 'docker.tar');
    const r = await runCli(['save', '--keep-media-types', '-o', file, DOCKER], env);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/--keep-media-types applies to --format oci only/);
    await expect(readFile(file)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
