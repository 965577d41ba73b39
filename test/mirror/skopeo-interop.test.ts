import { execFile } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Digest } from '../../src/engine/oci/digest.js';
import { requirePeer } from '../support/peers.js';
import { sha, startHarness, tempDir, type Harness } from './support.js';

const run = promisify(execFile);
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

/** Writes a blob into an OCI layout and returns its descriptor parts. */
async function writeBlob(layout: string, bytes: Buffer): Promise<{ digest: Digest; size: number }> {
  const digest = sha(bytes);
  await writeFile(join(layout, 'blobs', 'sha256', digest.slice(7)), bytes);
  return { digest, size: bytes.length };
}

/**
 * Builds an OCI image layout by hand: per platform a rootfs tarred by the system `tar`, gzipped with node:zlib,
 * a config and a manifest; `v1` names the amd64 manifest and `multi` a two-platform index.
 */
async function buildLayout(
  layout: string,
  work: string,
): Promise<{ single: Digest; index: Digest; children: Digest[] }> {
  await mkdir(join(layout, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const manifests: Array<{
    mediaType: string;
    digest: Digest;
    size: number;
    platform: { os: string; architecture: string };
  }> = [];
  for (const arch of ['amd64', 'arm64']) {
    const rootfs = join(work, `rootfs-${arch}`);
    await mkdir(join(rootfs, 'etc'), { recursive: true });
    await writeFile(join(rootfs, 'hello.txt'), `hello from ${arch}\n`);
    await writeFile(join(rootfs, 'etc', 'os-release'), `ID=strata-test\nARCH=${arch}\n`);
    const tarPath = join(work, `layer-${arch}.tar`);
    await run('tar', ['-C', rootfs, '--owner=0', '--group=0', '--numeric-owner', '-cf', tarPath, '.']);
    const tar = await readFile(tarPath);
    const layer = await writeBlob(layout, gzipSync(tar));
    const config = await writeBlob(
      layout,
      Buffer.from(
        JSON.stringify({
          created: '2024-01-01T00:00:00Z',
          architecture: arch,
          os: 'linux',
          config: { Cmd: ['/bin/sh'], Env: ['PATH=/usr/bin:/bin'] },
          rootfs: { type: 'layers', diff_ids: [sha(tar)] },
          history: [{ created: '2024-01-01T00:00:00Z', created_by: 'strata test' }],
        }),
      ),
    );
    const manifest = await writeBlob(
      layout,
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: OCI_MANIFEST,
          config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
          layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...layer }],
        }),
      ),
    );
    manifests.push({ mediaType: OCI_MANIFEST, ...manifest, platform: { os: 'linux', architecture: arch } });
  }
  const index = await writeBlob(
    layout,
    Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests })),
  );
  const single = manifests[0]!;
  await writeFile(
    join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [
        {
          mediaType: OCI_MANIFEST,
          digest: single.digest,
          size: single.size,
          annotations: { 'org.opencontainers.image.ref.name': 'v1' },
        },
        { mediaType: OCI_INDEX, ...index, annotations: { 'org.opencontainers.image.ref.name': 'multi' } },
      ],
    }),
  );
  return { single: single.digest, index: index.digest, children: manifests.map((m) => m.digest) };
}

/** The digest the OCI layout at `dir` names `ref`. */
async function layoutRef(dir: string, ref: string): Promise<string | undefined> {
  const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as {
    manifests: Array<{ digest: string; annotations?: Record<string, string> }>;
  };
  return index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === ref)?.digest;
}

describe('registry server: interop with skopeo', () => {
  let skopeo: string;
  let h: Harness;
  let work: string;
  let layout: string;
  let image: { single: Digest; index: Digest; children: Digest[] };

  const sk = async (...args: string[]): Promise<string> => {
    try {
      const { stdout } = await run(skopeo, ['--insecure-policy', ...args], { timeout: 30_000 });
      return stdout;
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(`skopeo ${args.join(' ')} failed: ${e.stderr ?? e.message}`);
    }
  };

  beforeAll(async () => {
    skopeo = requirePeer('skopeo'); // a missing peer fails the suite, never skips it
    requirePeer('tar');
    h = await startHarness();
    work = await tempDir('strata-skopeo-');
    layout = join(work, 'layout');
    image = await buildLayout(layout, work);
  });
  afterAll(async () => {
    await h?.close();
    if (work) await import('node:fs/promises').then((fs) => fs.rm(work, { recursive: true, force: true }));
  });

  it('pushes, inspects and pulls an image with skopeo, preserving digests; a second push succeeds', async () => {
    const dest = `docker://${h.server.host}/team/app:1`;
    await sk('copy', '--dest-tls-verify=false', `oci:${layout}:v1`, dest);

    const inspect = JSON.parse(await sk('inspect', '--tls-verify=false', dest)) as {
      Digest: string;
      Architecture: string;
      Layers: string[];
    };
    expect(inspect.Digest).toBe(image.single);
    expect(inspect.Architecture).toBe('amd64');
    const raw = await sk('inspect', '--raw', '--tls-verify=false', dest);
    expect(sha(raw)).toBe(image.single);

    const out = join(work, 'out');
    await sk('copy', '--src-tls-verify=false', dest, `oci:${out}:x`);
    expect(await layoutRef(out, 'x')).toBe(image.single);

    // The same image again: every blob exists (HEAD 200) and the manifest PUT is idempotent.
    await sk('copy', '--dest-tls-verify=false', `oci:${layout}:v1`, dest);
    // A second repository in the same registry: skopeo may mount or upload; either way the digest is kept.
    await sk('copy', '--dest-tls-verify=false', `oci:${layout}:v1`, `docker://${h.server.host}/other/app:2`);
    expect(
      JSON.parse(await sk('inspect', '--tls-verify=false', `docker://${h.server.host}/other/app:2`)).Digest,
    ).toBe(image.single);

    // The store itself reads as an OCI layout with `<repository>:<tag>` refs.
    expect(sha(await sk('inspect', '--raw', `oci:${h.store.root}:team/app:1`))).toBe(image.single);
  });

  it('copies a two-platform index whole with --all, by tag and by digest', async () => {
    const dest = `docker://${h.server.host}/team/multi:1`;
    await sk('copy', '--all', '--dest-tls-verify=false', `oci:${layout}:multi`, dest);
    const raw = await sk('inspect', '--raw', '--tls-verify=false', dest);
    expect(sha(raw)).toBe(image.index);
    for (const child of image.children) {
      const res = await h.fetch(`/v2/team/multi/manifests/${child}`, { method: 'HEAD' });
      expect(res.status).toBe(200);
    }
    const arm = JSON.parse(
      await sk(
        'inspect',
        '--override-arch=arm64',
        '--tls-verify=false',
        `docker://${h.server.host}/team/multi@${image.index}`,
      ),
    ) as { Digest: string; Architecture: string };
    expect(arm.Architecture).toBe('arm64');

    const out = join(work, 'out-multi');
    await sk('copy', '--all', '--src-tls-verify=false', dest, `oci:${out}:y`);
    expect(await layoutRef(out, 'y')).toBe(image.index);
    for (const child of image.children) {
      expect((await readFile(join(out, 'blobs', 'sha256', child.slice(7)))).length).toBeGreaterThan(0);
    }
    // Again: everything exists already.
    await sk('copy', '--all', '--dest-tls-verify=false', `oci:${layout}:multi`, dest);
  });
});
