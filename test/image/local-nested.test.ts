/**
 * `loadLocalImage` over nested indexes (an index whose entry is another index, as `docker buildx` OCI layouts with
 * attestations are written): the platform is chosen below the nested index, attestations are not images.
 */
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { findLocalRef, listImages, loadLocalImage } from '../../src/engine/image/local.js';
import { descriptorOf } from '../../src/engine/image/store-endpoint.js';
import { digestOf } from '../../src/engine/oci/digest.js';
import { MediaType } from '../../src/engine/oci/media-types.js';
import { formatPlatform, hostPlatform, type Platform } from '../../src/engine/oci/platform.js';
import { parseManifest, type Descriptor } from '../../src/engine/oci/types.js';
import { RegistryClient } from '../../src/engine/registry/client.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { makeImage, tempDir } from '../support/images.js';

let dir: string;
let store: FsStore;
const host = hostPlatform();
const other: Platform = { os: 'linux', architecture: host.architecture === 'arm64' ? 'amd64' : 'arm64' };
const children = new Map<string, Descriptor>();

/** Stores an index document over `manifests`; tags it `name` when given. */
async function putIndex(manifests: Descriptor[], name?: string): Promise<Descriptor> {
  const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests }));
  await store.putBytes(bytes);
  const d = descriptorOf(parseManifest(bytes, digestOf(bytes), MediaType.OciIndex));
  if (name) await store.setRef(name, d);
  return d;
}

beforeAll(async () => {
  dir = await tempDir('strata-image-nested-');
  store = await FsStore.open(dir);
  for (const p of [host, other]) {
    const tmp = `tmp/${p.architecture}:1`;
    children.set(formatPlatform(p), {
      ...(await makeImage(store, tmp, { 'etc/arch': p.architecture }, p)),
      platform: p,
    });
    await store.deleteRef(tmp);
  }
  // An attestation manifest as buildx writes it: platform unknown/unknown, marked by an annotation.
  const att = await makeImage(store, 'tmp/att:1', { 'sbom.json': '{}' }, host);
  await store.deleteRef('tmp/att:1');
  const attestation: Descriptor = {
    ...att,
    platform: { os: 'unknown', architecture: 'unknown' },
    annotations: {
      'vnd.docker.reference.type': 'attestation-manifest',
      'vnd.docker.reference.digest': children.get(formatPlatform(host))!.digest,
    },
  };
  const inner = await putIndex([
    children.get(formatPlatform(other))!,
    children.get(formatPlatform(host))!,
    attestation,
  ]);
  await putIndex([inner], 'ex.com/nested:1');
  // Only the other platform present: the attestation alone must not stand in for the host's image.
  const onlyOther = await putIndex([children.get(formatPlatform(other))!, attestation]);
  await putIndex([onlyOther], 'ex.com/nested-other:1');
  // A nested index whose own platform contradicts its children is not followed.
  await putIndex(
    [{ ...inner, platform: { os: 'windows', architecture: 'amd64' } }],
    'ex.com/nested-windows:1',
  );
}, 60_000);

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('loadLocalImage with a nested index', () => {
  it('chooses the host platform below the nested index and lists the local platforms without attestations', async () => {
    const image = await loadLocalImage(store, await findLocalRef(store, 'ex.com/nested:1'));
    expect(image.manifest.digest).toBe(children.get(formatPlatform(host))!.digest);
    expect(image.top.kind).toBe('index');
    expect(image.config.architecture).toBe(host.architecture);
    expect([...image.localPlatforms].sort()).toEqual([formatPlatform(host), formatPlatform(other)].sort());
  });

  it('chooses a platform asked for', async () => {
    const image = await loadLocalImage(store, await findLocalRef(store, 'ex.com/nested:1'), other);
    expect(image.manifest.digest).toBe(children.get(formatPlatform(other))!.digest);
  });

  it('the only image below stands in when no platform is asked for; an attestation never does', async () => {
    const image = await loadLocalImage(store, await findLocalRef(store, 'ex.com/nested-other:1'));
    expect(image.manifest.digest).toBe(children.get(formatPlatform(other))!.digest);
    await expect(
      loadLocalImage(store, await findLocalRef(store, 'ex.com/nested-other:1'), host),
    ).rejects.toMatchObject({ code: 'PLATFORM_NOT_FOUND' });
  });

  it('a nested index whose platform contradicts its children is not followed (PLATFORM_NOT_FOUND)', async () => {
    await expect(
      loadLocalImage(store, await findLocalRef(store, 'ex.com/nested-windows:1')),
    ).rejects.toMatchObject({ code: 'PLATFORM_NOT_FOUND' });
  });

  it('images and unpack work on it', async () => {
    const row = (await listImages(store)).find((r) => r.name === 'ex.com/nested:1')!;
    expect(row.id).toMatch(/^sha256:/);
    const engine = new Engine({ store, registry: new RegistryClient() });
    const out = await tempDir('strata-image-nested-unpack-');
    try {
      const r = await engine.unpack('ex.com/nested:1', `${out}/root`);
      expect(r.layers).toHaveLength(1);
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  });
});
