import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RegistryBackend } from '../../src/mirror/index.js';
import { ociError, prepareImage, pushBlob, putManifest, sha, startHarness, type Harness } from './support.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h.close();
});

async function expectManifest(repo: string, ref: string, bytes: Buffer, mediaType: string): Promise<void> {
  const get = await h.fetch(`/v2/${repo}/manifests/${ref}`, {
    headers: { Accept: `${OCI_MANIFEST}, ${DOCKER_MANIFEST}, ${OCI_INDEX}, ${DOCKER_LIST}` },
  });
  expect(get.status).toBe(200);
  expect(get.headers.get('content-type')).toBe(mediaType);
  expect(get.headers.get('docker-content-digest')).toBe(sha(bytes));
  expect(get.headers.get('content-length')).toBe(String(bytes.length));
  expect(Buffer.from(await get.arrayBuffer()).equals(bytes)).toBe(true);
  const head = await h.fetch(`/v2/${repo}/manifests/${ref}`, { method: 'HEAD' });
  expect(head.status).toBe(200);
  expect(head.headers.get('content-type')).toBe(mediaType);
  expect(head.headers.get('docker-content-digest')).toBe(sha(bytes));
  expect(head.headers.get('content-length')).toBe(String(bytes.length));
}

describe('registry server: manifests', () => {
  it('stores an OCI manifest by tag and serves it byte for byte by tag and digest', async () => {
    const img = await prepareImage(h, 'team/app');
    const put = await putManifest(h, 'team/app', 'v1', img.bytes, OCI_MANIFEST);
    expect(put.status).toBe(201);
    expect(put.headers.get('docker-content-digest')).toBe(img.digest);
    expect(put.headers.get('location')).toBe(`/v2/team/app/manifests/${img.digest}`);
    await expectManifest('team/app', 'v1', img.bytes, OCI_MANIFEST);
    await expectManifest('team/app', img.digest, img.bytes, OCI_MANIFEST);
    // Tags are store refs `<repository>:<tag>`: the store reads as an OCI layout.
    expect(await h.store.getRef('team/app:v1')).toMatchObject({
      digest: img.digest,
      mediaType: OCI_MANIFEST,
      size: img.bytes.length,
    });
  });

  it('stores a Docker schema2 manifest by digest and serves it with its media type', async () => {
    const img = await prepareImage(h, 'team/docker', { mediaType: DOCKER_MANIFEST });
    const put = await putManifest(h, 'team/docker', img.digest, img.bytes, DOCKER_MANIFEST);
    expect(put.status).toBe(201);
    await expectManifest('team/docker', img.digest, img.bytes, DOCKER_MANIFEST);
    // Serves it even when the client's Accept does not list the type.
    const get = await h.fetch(`/v2/team/docker/manifests/${img.digest}`, {
      headers: { Accept: OCI_MANIFEST },
    });
    expect(get.status).toBe(200);
    expect(get.headers.get('content-type')).toBe(DOCKER_MANIFEST);
    await get.arrayBuffer();
  });

  it('stores an index whose child manifests exist, and refuses one with a missing child', async () => {
    const amd = await prepareImage(h, 'team/multi', { arch: 'amd64' });
    const arm = await prepareImage(h, 'team/multi', { arch: 'arm64' });
    expect((await putManifest(h, 'team/multi', amd.digest, amd.bytes, OCI_MANIFEST)).status).toBe(201);
    const index = {
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [
        {
          mediaType: OCI_MANIFEST,
          digest: amd.digest,
          size: amd.bytes.length,
          platform: { os: 'linux', architecture: 'amd64' },
        },
        {
          mediaType: OCI_MANIFEST,
          digest: arm.digest,
          size: arm.bytes.length,
          platform: { os: 'linux', architecture: 'arm64' },
        },
      ],
    };
    const bytes = Buffer.from(JSON.stringify(index, null, 1));
    const missing = await putManifest(h, 'team/multi', 'latest', bytes, OCI_INDEX);
    expect(missing.status).toBe(400);
    expect((await ociError(missing)).code).toBe('MANIFEST_BLOB_UNKNOWN');

    expect((await putManifest(h, 'team/multi', arm.digest, arm.bytes, OCI_MANIFEST)).status).toBe(201);
    const put = await putManifest(h, 'team/multi', 'latest', bytes, OCI_INDEX);
    expect(put.status).toBe(201);
    await expectManifest('team/multi', 'latest', bytes, OCI_INDEX);
    await expectManifest('team/multi', sha(bytes), bytes, OCI_INDEX);
    // A Docker manifest list is served with its own type too.
    const list = Buffer.from(JSON.stringify({ ...index, mediaType: DOCKER_LIST }));
    expect((await putManifest(h, 'team/multi', 'list', list, DOCKER_LIST)).status).toBe(201);
    await expectManifest('team/multi', 'list', list, DOCKER_LIST);
  });

  it('refuses a manifest with a missing or unlinked layer (MANIFEST_BLOB_UNKNOWN)', async () => {
    const img = await prepareImage(h, 'team/missing');
    const doc = JSON.parse(img.bytes.toString()) as {
      layers: Array<{ digest: string; size: number; mediaType: string }>;
    };
    doc.layers.push({
      mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
      digest: sha('never uploaded'),
      size: 14,
    });
    const res = await putManifest(h, 'team/missing', 'v1', JSON.stringify(doc), OCI_MANIFEST);
    expect(res.status).toBe(400);
    const err = await ociError(res);
    expect(err.code).toBe('MANIFEST_BLOB_UNKNOWN');
    expect(err.detail).toEqual({ digest: sha('never uploaded') });
    // Present in the store but linked to another repository only: still unknown here.
    const other = await pushBlob(h, 'team/elsewhere', 'only elsewhere');
    doc.layers[doc.layers.length - 1] = {
      mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
      digest: other,
      size: 14,
    };
    const res2 = await putManifest(h, 'team/missing', 'v1', JSON.stringify(doc), OCI_MANIFEST);
    expect(res2.status).toBe(400);
    expect((await ociError(res2)).code).toBe('MANIFEST_BLOB_UNKNOWN');
    expect((await h.fetch('/v2/team/missing/manifests/v1')).status).toBe(404);
  });

  it('refuses invalid manifests, a digest mismatch and oversized documents', async () => {
    const notJson = await putManifest(h, 'team/app', 'bad', '{not json', OCI_MANIFEST);
    expect(notJson.status).toBe(400);
    expect((await ociError(notJson)).code).toBe('MANIFEST_INVALID');
    const img = await prepareImage(h, 'team/app', { layers: ['another layer'] });
    const wrong = await putManifest(h, 'team/app', sha('other'), img.bytes, OCI_MANIFEST);
    expect(wrong.status).toBe(400);
    expect((await ociError(wrong)).code).toBe('DIGEST_INVALID');
    const mismatch = await putManifest(h, 'team/app', 'x', img.bytes, DOCKER_MANIFEST);
    expect(mismatch.status).toBe(400);
    expect((await ociError(mismatch)).code).toBe('MANIFEST_INVALID');
    const small = await startHarness({ maxManifestBytes: 100 });
    try {
      const big = await putManifest(small, 'team/app', 'big', img.bytes, OCI_MANIFEST);
      expect(big.status).toBe(413);
      expect((await ociError(big)).code).toBe('MANIFEST_INVALID');
    } finally {
      await small.close();
    }
    const unknown = await h.fetch('/v2/team/app/manifests/nope');
    expect(unknown.status).toBe(404);
    expect((await ociError(unknown)).code).toBe('MANIFEST_UNKNOWN');
  });

  it('lists tags sorted and paginated with a Link header', async () => {
    const img = await prepareImage(h, 'team/tags');
    for (const t of ['v3', 'v1', 'latest', 'v2', 'a']) {
      expect((await putManifest(h, 'team/tags', t, img.bytes, OCI_MANIFEST)).status).toBe(201);
    }
    const all = await h.fetch('/v2/team/tags/tags/list');
    expect(await all.json()).toEqual({ name: 'team/tags', tags: ['a', 'latest', 'v1', 'v2', 'v3'] });

    const seen: string[] = [];
    let next: string | undefined = '/v2/team/tags/tags/list?n=2';
    let pages = 0;
    while (next) {
      const res = await h.fetch(next);
      expect(res.status).toBe(200);
      const body = (await res.json()) as { tags: string[] };
      expect(body.tags.length).toBeLessThanOrEqual(2);
      seen.push(...body.tags);
      const link = res.headers.get('link');
      next = link ? /^<([^>]+)>; rel="next"$/.exec(link)?.[1] : undefined;
      pages++;
    }
    expect(seen).toEqual(['a', 'latest', 'v1', 'v2', 'v3']);
    expect(pages).toBe(3);
    const after = await h.fetch('/v2/team/tags/tags/list?last=v1');
    expect(((await after.json()) as { tags: string[] }).tags).toEqual(['v2', 'v3']);

    const unknown = await h.fetch('/v2/no/such/repo/tags/list');
    expect(unknown.status).toBe(404);
    expect((await ociError(unknown)).code).toBe('NAME_UNKNOWN');
  });

  it('answers referrers for a subject, filtered by artifactType, and an empty index otherwise', async () => {
    const img = await prepareImage(h, 'team/ref');
    expect((await putManifest(h, 'team/ref', 'v1', img.bytes, OCI_MANIFEST)).status).toBe(201);
    const empty = await pushBlob(h, 'team/ref', '{}');
    const sig = await pushBlob(h, 'team/ref', 'a signature');
    const artifact = (artifactType: string, layer: string): Buffer =>
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: OCI_MANIFEST,
          artifactType,
          config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: empty, size: 2 },
          layers: [{ mediaType: 'application/octet-stream', digest: layer, size: 11 }],
          subject: { mediaType: OCI_MANIFEST, digest: img.digest, size: img.bytes.length },
          annotations: { 'org.example.kind': artifactType },
        }),
      );
    const a1 = artifact('application/vnd.example.signature', sig);
    const a2 = artifact('application/vnd.example.sbom', sig);
    const put1 = await putManifest(h, 'team/ref', sha(a1), a1, OCI_MANIFEST);
    expect(put1.status).toBe(201);
    expect(put1.headers.get('oci-subject')).toBe(img.digest);
    expect((await putManifest(h, 'team/ref', sha(a2), a2, OCI_MANIFEST)).status).toBe(201);

    const res = await h.fetch(`/v2/team/ref/referrers/${img.digest}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe(OCI_INDEX);
    const body = (await res.json()) as {
      schemaVersion: number;
      mediaType: string;
      manifests: Array<Record<string, unknown>>;
    };
    expect(body.schemaVersion).toBe(2);
    expect(body.mediaType).toBe(OCI_INDEX);
    expect(body.manifests).toHaveLength(2);
    expect(body.manifests).toContainEqual({
      mediaType: OCI_MANIFEST,
      digest: sha(a1),
      size: a1.length,
      artifactType: 'application/vnd.example.signature',
      annotations: { 'org.example.kind': 'application/vnd.example.signature' },
    });

    const filtered = await h.fetch(
      `/v2/team/ref/referrers/${img.digest}?artifactType=application/vnd.example.sbom`,
    );
    expect(filtered.headers.get('oci-filters-applied')).toBe('artifactType');
    expect(
      ((await filtered.json()) as { manifests: Array<{ digest: string }> }).manifests.map((m) => m.digest),
    ).toEqual([sha(a2)]);

    const none = await h.fetch(`/v2/team/ref/referrers/${sha('no subject')}`);
    expect(none.status).toBe(200);
    expect(await none.json()).toEqual({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] });

    // Deleting a referrer removes it from the list.
    expect((await h.fetch(`/v2/team/ref/manifests/${sha(a1)}`, { method: 'DELETE' })).status).toBe(202);
    const after = await h.fetch(`/v2/team/ref/referrers/${img.digest}`);
    expect(
      ((await after.json()) as { manifests: Array<{ digest: string }> }).manifests.map((m) => m.digest),
    ).toEqual([sha(a2)]);
  });

  it('deletes a manifest by digest with the tags pointing at it, and a tag alone', async () => {
    const img = await prepareImage(h, 'team/delete');
    await putManifest(h, 'team/delete', 'one', img.bytes, OCI_MANIFEST);
    await putManifest(h, 'team/delete', 'two', img.bytes, OCI_MANIFEST);
    const other = await prepareImage(h, 'team/delete', { layers: ['different'] });
    await putManifest(h, 'team/delete', 'keep', other.bytes, OCI_MANIFEST);

    const del = await h.fetch(`/v2/team/delete/manifests/${img.digest}`, { method: 'DELETE' });
    expect(del.status).toBe(202);
    expect((await h.fetch(`/v2/team/delete/manifests/${img.digest}`)).status).toBe(404);
    expect((await h.fetch('/v2/team/delete/manifests/one', { method: 'HEAD' })).status).toBe(404);
    const tags = await h.fetch('/v2/team/delete/tags/list');
    expect(((await tags.json()) as { tags: string[] }).tags).toEqual(['keep']);
    const again = await h.fetch(`/v2/team/delete/manifests/${img.digest}`, { method: 'DELETE' });
    expect(again.status).toBe(404);
    expect((await ociError(again)).code).toBe('MANIFEST_UNKNOWN');

    expect((await h.fetch('/v2/team/delete/manifests/keep', { method: 'DELETE' })).status).toBe(202);
    expect((await h.fetch('/v2/team/delete/manifests/keep')).status).toBe(404);
    expect((await h.fetch(`/v2/team/delete/manifests/${other.digest}`)).status).toBe(200);
  });

  it('accepts repository names with many components, including ones named like endpoints', async () => {
    for (const repo of ['a/b/c/d/e', 'x/blobs/uploads', 'y/manifests', 'z/tags/list-x']) {
      const img = await prepareImage(h, repo);
      expect((await putManifest(h, repo, 'v1', img.bytes, OCI_MANIFEST)).status).toBe(201);
      await expectManifest(repo, 'v1', img.bytes, OCI_MANIFEST);
      expect((await h.fetch(`/v2/${repo}/blobs/${img.layers[0]}`)).status).toBe(200);
      expect(((await (await h.fetch(`/v2/${repo}/tags/list`)).json()) as { tags: string[] }).tags).toEqual([
        'v1',
      ]);
    }
    const cat = await h.fetch('/v2/_catalog?n=1000');
    const repos = ((await cat.json()) as { repositories: string[] }).repositories;
    expect(repos).toEqual(expect.arrayContaining(['a/b/c/d/e', 'x/blobs/uploads', 'team/app']));
    expect([...repos].sort()).toEqual(repos);
    const page = await h.fetch('/v2/_catalog?n=2');
    expect(((await page.json()) as { repositories: string[] }).repositories).toHaveLength(2);
    expect(page.headers.get('link')).toMatch(/^<\/v2\/_catalog\?n=2&last=[^>]+>; rel="next"$/);
  });
});

describe('registry server: errors', () => {
  it('answers NAME_INVALID, 405 and 404 with the OCI error JSON', async () => {
    const bad = await h.fetch('/v2/Team/App/tags/list');
    expect(bad.status).toBe(400);
    expect(await ociError(bad)).toMatchObject({ code: 'NAME_INVALID', detail: { name: 'Team/App' } });
    const bad2 = await h.fetch('/v2/team//app/manifests/v1');
    expect(bad2.status).toBe(400);
    expect((await ociError(bad2)).code).toBe('NAME_INVALID');
    const method = await h.fetch('/v2/team/app/tags/list', { method: 'DELETE' });
    expect(method.status).toBe(405);
    expect(method.headers.get('allow')).toBe('GET, HEAD');
    expect((await ociError(method)).code).toBe('UNSUPPORTED');
    const nowhere = await h.fetch('/v2/team/app/whatever');
    expect(nowhere.status).toBe(404);
    await ociError(nowhere);
  });

  it('answers a 500 without internals when the backend throws', async () => {
    const failing = new Proxy({} as RegistryBackend, {
      get: () => () => Promise.reject(new Error('disk on fire at /secret/path')),
    });
    const broken = await startHarness({ backend: failing });
    try {
      const res = await broken.fetch('/v2/team/app/manifests/v1');
      expect(res.status).toBe(500);
      const text = await res.text();
      expect(JSON.parse(text)).toEqual({ errors: [{ code: 'UNKNOWN', message: 'internal server error' }] });
      expect(text).not.toContain('secret');
      // The server keeps serving.
      expect((await broken.fetch('/v2/')).status).toBe(200);
    } finally {
      await broken.close();
    }
  });
});

describe('registry server: persistence', () => {
  it('keeps tags, links and upload sessions across a restart on the same store', async () => {
    let p = await startHarness();
    try {
      const img = await prepareImage(p, 'keep/me');
      expect((await putManifest(p, 'keep/me', 'v1', img.bytes, OCI_MANIFEST)).status).toBe(201);
      const data = randomBytes(2048);
      const start = await p.fetch('/v2/keep/me/blobs/uploads/', { method: 'POST' });
      const location = start.headers.get('location')!;
      expect(
        (
          await p.fetch(location, {
            method: 'PATCH',
            body: data.subarray(0, 1024),
            headers: { 'Content-Range': '0-1023' },
          })
        ).status,
      ).toBe(202);

      p = await p.restart();
      await expectManifestOn(p, 'keep/me', 'v1', img.bytes);
      expect((await p.fetch(`/v2/keep/me/manifests/${img.digest}`)).status).toBe(200);
      expect((await p.fetch(`/v2/keep/me/blobs/${img.layers[0]}`)).status).toBe(200);
      expect((await p.fetch(`/v2/other/repo/blobs/${img.layers[0]}`)).status).toBe(404);
      expect(await (await p.fetch('/v2/keep/me/tags/list')).json()).toEqual({
        name: 'keep/me',
        tags: ['v1'],
      });

      const status = await p.fetch(location);
      expect(status.status).toBe(204);
      expect(status.headers.get('range')).toBe('0-1023');
      const put = await p.fetch(`${location}?digest=${sha(data)}`, {
        method: 'PUT',
        body: data.subarray(1024),
        headers: { 'Content-Range': '1024-2047' },
      });
      expect(put.status).toBe(201);
      expect(
        Buffer.from(await (await p.fetch(`/v2/keep/me/blobs/${sha(data)}`)).arrayBuffer()).equals(data),
      ).toBe(true);
    } finally {
      await p.close();
    }
  });
});

async function expectManifestOn(p: Harness, repo: string, ref: string, bytes: Buffer): Promise<void> {
  const res = await p.fetch(`/v2/${repo}/manifests/${ref}`);
  expect(res.status).toBe(200);
  expect(Buffer.from(await res.arrayBuffer()).equals(bytes)).toBe(true);
}
