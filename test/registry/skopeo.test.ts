import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestHex, digestOf, type Digest } from '../../src/engine/oci/index.js';
import { RegistryClient } from '../../src/engine/registry/index.js';
import { startDockerRegistry, type DockerRegistry } from '../support/docker-registry.js';
import { requirePeer } from '../support/peers.js';
import { makeImage, pushImage, readAll } from './helpers.js';

const run = promisify(execFile);

let registry: DockerRegistry;
let client: RegistryClient;
let work: string;
let skopeo: string;

beforeAll(async () => {
  skopeo = requirePeer('skopeo');
  registry = await startDockerRegistry();
  client = new RegistryClient({ chunkSize: 64 * 1024 });
  work = await mkdtemp(join(tmpdir(), 'strata-skopeo-'));
});

afterAll(async () => {
  await client?.close();
  await registry?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

async function skopeoRun(args: string[]): Promise<string> {
  const { stdout } = await run(skopeo, args, { timeout: 30_000, maxBuffer: 16 * 1024 * 1024 });
  return stdout;
}

describe('interop with skopeo', () => {
  it('skopeo inspects and copies an image our client pushed', async () => {
    const image = makeImage([4096, 150 * 1024]);
    const repo = { registry: registry.host, repository: 'interop/ours' };
    await pushImage(client, repo, image, 'v1');

    const inspect = JSON.parse(
      await skopeoRun(['inspect', '--tls-verify=false', `docker://${registry.host}/interop/ours:v1`]),
    ) as {
      Digest: string;
      Layers: string[];
      Os: string;
      Architecture: string;
    };
    expect(inspect.Digest).toBe(image.manifestDigest);
    expect(inspect.Layers).toEqual(image.layers.map((l) => l.desc.digest));
    expect(inspect.Os).toBe('linux');
    expect(inspect.Architecture).toBe('amd64');

    const dir = join(work, 'copied');
    await skopeoRun([
      'copy',
      '--src-tls-verify=false',
      `docker://${registry.host}/interop/ours:v1`,
      `oci:${dir}:x`,
    ]);
    const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as {
      manifests: { digest: string }[];
    };
    expect(index.manifests).toHaveLength(1);
    for (const blob of [image.config, ...image.layers]) {
      const bytes = await readFile(join(dir, 'blobs', 'sha256', digestHex(blob.desc.digest)));
      expect(bytes.equals(blob.bytes)).toBe(true);
    }
  });

  it('our client pulls and verifies an image skopeo pushed', async () => {
    const image = makeImage([2048, 120 * 1024]);
    const layout = join(work, 'layout');
    await mkdir(join(layout, 'blobs', 'sha256'), { recursive: true });
    await writeFile(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    const writeBlob = (d: Digest, b: Buffer): Promise<void> =>
      writeFile(join(layout, 'blobs', 'sha256', digestHex(d)), b);
    for (const blob of [image.config, ...image.layers]) await writeBlob(blob.desc.digest, blob.bytes);
    await writeBlob(image.manifestDigest, image.manifest);
    await writeFile(
      join(layout, 'index.json'),
      JSON.stringify({
        schemaVersion: 2,
        manifests: [
          {
            mediaType: image.mediaType,
            digest: image.manifestDigest,
            size: image.manifest.length,
            annotations: { 'org.opencontainers.image.ref.name': 'src' },
          },
        ],
      }),
    );
    await skopeoRun([
      'copy',
      '--dest-tls-verify=false',
      `oci:${layout}:src`,
      `docker://${registry.host}/interop/theirs:v1`,
    ]);

    const repo = { registry: registry.host, repository: 'interop/theirs' };
    const doc = await client.getManifest({ ...repo, tag: 'v1' });
    expect(doc.kind).toBe('manifest');
    if (doc.kind !== 'manifest') return;
    expect(doc.manifest.layers.map((l) => l.digest)).toEqual(image.layers.map((l) => l.desc.digest));
    const byDigest = await client.getManifest({ ...repo, digest: doc.digest });
    expect(byDigest.bytes.equals(doc.bytes)).toBe(true);
    for (const desc of [doc.manifest.config, ...doc.manifest.layers]) {
      const bytes = await readAll(await client.openBlob(repo, desc));
      expect(digestOf(bytes)).toBe(desc.digest);
      expect(bytes.length).toBe(desc.size);
    }
  });
});
