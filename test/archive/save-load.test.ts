import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findLocalRef, loadLocalImage } from '../../src/engine/image/local.js';
import { formatPlatform, hostPlatform } from '../../src/engine/oci/platform.js';
import type { ContentStore } from '../../src/engine/store/types.js';
import { runCli } from '../support/cli.js';
import { makeMultiPlatformImage } from '../support/images.js';
import { requirePeer } from '../support/peers.js';
import { dirs, freshStore, loadFrom, makeLayeredImage, readLayoutImage, saveTo, scratch } from './helpers.js';

const CLI = fileURLToPath(new URL('../../bin/strata.js', import.meta.url));
const NAME = 'localhost:5000/team/app:1';
let skopeo: string;
let src: ContentStore;
let image: Awaited<ReturnType<typeof makeLayeredImage>>;

function sk(...args: string[]): string {
  return execFileSync(skopeo, ['--insecure-policy', ...args], { encoding: 'utf8' });
}

async function sha(file: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(file))
    .digest('hex');
}

beforeAll(async () => {
  skopeo = requirePeer('skopeo');
  src = await freshStore();
  image = await makeLayeredImage(src, NAME, [
    { 'etc/os-release': 'ID=test\n', 'bin/tool': 64 * 1024 },
    { 'srv/app.js': 'console.log(1)\n', 'srv/data.bin': 32 * 1024 },
  ]);
  await src.setRef('docker.io/library/nginx:latest', image.manifest);
});

afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe('save: docker-archive as docker 25 writes it', () => {
  it('is read by skopeo (copy and inspect), with config, diff_ids and tags preserved', async () => {
    const { file, result } = await saveTo(src, [NAME, 'nginx']);
    expect(result).toMatchObject({ format: 'docker', blobs: 4 }); // manifest, config, 2 layers: shared by both names
    const tags = JSON.parse(sk('list-tags', `docker-archive:${file}`)) as { Tags: string[] };
    expect(tags.Tags.sort()).toEqual(['localhost:5000/team/app:1', 'nginx:latest']);

    const listing = execFileSync('tar', ['-tf', file], { encoding: 'utf8' }).trim().split('\n');
    expect(listing).toEqual([...listing].sort());
    expect(listing).toEqual(
      expect.arrayContaining(['manifest.json', 'repositories', 'index.json', 'oci-layout']),
    );
    const manifestJson = JSON.parse(
      execFileSync('tar', ['-xOf', file, 'manifest.json'], { encoding: 'utf8' }),
    );
    expect(manifestJson).toEqual([
      {
        Config: `blobs/sha256/${image.config.slice(7)}`,
        RepoTags: ['localhost:5000/team/app:1', 'nginx:latest'],
        Layers: image.layers.map((l) => `blobs/sha256/${l.digest.slice(7)}`),
      },
    ]);
    const repositories = JSON.parse(
      execFileSync('tar', ['-xOf', file, 'repositories'], { encoding: 'utf8' }),
    );
    expect(Object.keys(repositories).sort()).toEqual(['localhost:5000/team/app', 'nginx']);
    expect(repositories.nginx.latest).toMatch(/^[a-f0-9]{64}$/);
    const index = JSON.parse(execFileSync('tar', ['-xOf', file, 'index.json'], { encoding: 'utf8' }));
    expect(index.manifests).toEqual([
      expect.objectContaining({
        digest: image.manifest.digest,
        annotations: {
          'io.containerd.image.name': 'localhost:5000/team/app:1',
          'org.opencontainers.image.ref.name': '1',
        },
      }),
      expect.objectContaining({
        digest: image.manifest.digest,
        annotations: {
          'io.containerd.image.name': 'docker.io/library/nginx:latest',
          'org.opencontainers.image.ref.name': 'latest',
        },
      }),
    ]);

    const inspected = JSON.parse(sk('inspect', `docker-archive:${file}:nginx:latest`)) as {
      Layers: string[];
    };
    expect(inspected.Layers).toEqual(image.diffIds);
    const out = join(await scratch(), 'layout');
    sk('copy', '-q', `docker-archive:${file}:${NAME}`, `oci:${out}:x`);
    const copied = await readLayoutImage(out);
    expect(copied.manifest.config.digest).toBe(image.config);
    expect(copied.config.rootfs.diff_ids).toEqual(image.diffIds);
  });

  it('is deterministic: the same images give the same bytes', async () => {
    const a = await saveTo(src, [NAME]);
    const b = await saveTo(src, [NAME]);
    expect(await sha(a.file)).toBe(await sha(b.file));
  });
});

describe('save --format oci', () => {
  it('is read by skopeo as oci-archive with the manifest byte for byte', async () => {
    const { file } = await saveTo(src, [NAME], { format: 'oci' });
    const out = join(await scratch(), 'layout');
    sk('copy', '-q', `oci-archive:${file}`, `oci:${out}:x`);
    const copied = await readLayoutImage(out);
    expect(copied.manifestDigest).toBe(image.manifest.digest);
    expect(copied.config.rootfs.diff_ids).toEqual(image.diffIds);
    expect(JSON.parse(sk('inspect', `oci-archive:${file}:1`))).toMatchObject({
      Digest: image.manifest.digest,
      Layers: image.layers.map((l) => l.digest),
    });
  });

  it('keeps a multi-platform index with the platforms present locally and names the missing one', async () => {
    const store = await freshStore();
    const host = hostPlatform();
    const other =
      host.architecture === 'arm64'
        ? { os: 'linux', architecture: 'amd64' }
        : { os: 'linux', architecture: 'arm64' };
    const { index, children } = await makeMultiPlatformImage(store, 'example.com/multi:1', [host, other]);
    await store.deleteBlob(children[1]!.digest);
    const oci = await saveTo(store, ['example.com/multi:1'], { format: 'oci' });
    expect(oci.result.images[0]).toMatchObject({
      digest: index.digest,
      missingPlatforms: [formatPlatform(other)],
    });
    const dst = await freshStore();
    const loaded = await loadFrom(dst, oci.file);
    expect(loaded.images).toEqual([
      expect.objectContaining({ reference: 'example.com/multi:1', digest: index.digest }),
    ]);
    expect(loaded.notes.join('\n')).toContain(formatPlatform(other));
    const img = await loadLocalImage(dst, await findLocalRef(dst, 'example.com/multi:1'));
    expect(img.manifest.digest).toBe(children[0]!.digest);

    // The docker format is single-platform: the host's manifest.
    const docker = await saveTo(store, ['example.com/multi:1']);
    expect(docker.result.images[0]).toMatchObject({
      digest: children[0]!.digest,
      platform: formatPlatform(host),
    });
  });
});

describe('load what skopeo writes', () => {
  it('docker-archive (uncompressed legacy layers): listed, same config and diff_ids', async () => {
    const file = join(await scratch(), 'sk.tar');
    sk('copy', '-q', `oci:${src.root}:${NAME}`, `docker-archive:${file}:localhost/app:2`);
    const dst = await freshStore();
    const result = await loadFrom(dst, file);
    expect(result.format).toBe('docker-archive');
    expect(result.images.map((i) => i.reference)).toEqual(['localhost/app:2']);
    const img = await loadLocalImage(dst, await findLocalRef(dst, 'localhost/app:2'));
    expect(img.configDigest).toBe(image.config);
    expect(img.config.rootfs.diff_ids).toEqual(image.diffIds);
    expect(img.manifest.manifest.layers.map((l) => l.digest)).toEqual(image.diffIds); // stored as skopeo wrote them
  });

  it('oci-archive named by a bare tag: localhost/TAG:latest as podman, or REPO:TAG with --name; same digest', async () => {
    const file = join(await scratch(), 'sk-oci.tar');
    sk('copy', '-q', `oci:${src.root}:${NAME}`, `oci-archive:${file}:v3`);
    const plain = await freshStore();
    const asPodman = await loadFrom(plain, file);
    expect(asPodman.images.map((i) => i.reference)).toEqual(['localhost/v3:latest']);
    expect(asPodman.notes.join('\n')).toContain('as podman does');
    const dst = await freshStore();
    const result = await loadFrom(dst, file, { name: 'localhost/app' });
    expect(result.images).toEqual([
      expect.objectContaining({
        reference: 'localhost/app:v3',
        digest: image.manifest.digest,
        configDigest: image.config,
      }),
    ]);
    const img = await loadLocalImage(dst, await findLocalRef(dst, 'localhost/app:v3'));
    expect(img.manifest.manifest.layers).toEqual(image.layers);
  });
});

describe('round trip', () => {
  for (const format of ['docker', 'oci'] as const) {
    it(`save --format ${format} → load into a fresh store keeps manifest, config and diff_ids`, async () => {
      const { file } = await saveTo(src, [NAME, 'nginx:latest'], { format });
      const dst = await freshStore();
      const result = await loadFrom(dst, file);
      expect(result.images.map((i) => i.reference).sort()).toEqual([
        'docker.io/library/nginx:latest',
        'localhost:5000/team/app:1',
      ]);
      for (const name of ['nginx', NAME]) {
        const img = await loadLocalImage(dst, await findLocalRef(dst, name));
        expect(img.manifest.digest).toBe(image.manifest.digest);
        expect(img.configDigest).toBe(image.config);
        expect(img.config.rootfs.diff_ids).toEqual(image.diffIds);
      }
      const again = await loadFrom(dst, file);
      expect(again.blobs.written).toBe(0);
    });
  }

  it('reads a gzip-compressed archive, and refuses a truncated one without tagging', async () => {
    const { file } = await saveTo(src, [NAME]);
    const bytes = await readFile(file);
    const gz = join(await scratch(), 'out.tar.gz');
    await writeFile(gz, gzipSync(bytes));
    const dst = await freshStore();
    expect((await loadFrom(dst, gz)).images.map((i) => i.reference)).toEqual([NAME]);
    const cut = join(await scratch(), 'cut.tar');
    await writeFile(cut, bytes.subarray(0, 2048 + 1000)); // inside the first layer
    const other = await freshStore();
    await expect(loadFrom(other, cut)).rejects.toThrow(/not a readable tar archive/);
    expect(await other.listRefs()).toEqual([]);
  });

  it('CLI: save | load through stdout and stdin, docker-like output', async () => {
    const srcDir = src.root;
    const dstDir = (await freshStore()).root;
    const out = execFileSync(
      'sh',
      [
        '-c',
        `node "${CLI}" --store "${srcDir}" save "${NAME}" nginx | node "${CLI}" --store "${dstDir}" load`,
      ],
      { encoding: 'utf8' },
    );
    expect(out.trim().split('\n').sort()).toEqual([
      'Loaded image: localhost:5000/team/app:1',
      'Loaded image: nginx:latest',
    ]);
    const file = join(await scratch(), 'cli.tar');
    const saved = await runCli(['--store', srcDir, 'save', '--format', 'oci', '-o', file, NAME]);
    expect(saved).toMatchObject({ code: 0, stdout: '' });
    const loaded = await runCli(['--store', dstDir, '--json', 'load', '-i', file]);
    expect(loaded.code).toBe(0);
    const last = JSON.parse(loaded.stdout.trim().split('\n').at(-1)!);
    expect(last).toMatchObject({ type: 'result', verb: 'load', format: 'oci-layout' });
    const missing = await runCli(['--store', dstDir, 'save', '-o', file, 'nope:1']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/no local image "nope:1"/);
  });
});
