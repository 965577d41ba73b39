/**
 * The Pull workflow of the OCI distribution-spec conformance suite (`01_pull_test.go`, as replayed against the
 * embedded registry in conformance.test.ts) through the mirror: the suite's setup content is pushed to the
 * upstream (an embedded registry on another store), then every Pull spec, with the same expectations, is sent to
 * `strata mirror serve`, whose default upstream it is; the teardown's deletes get the 405 the suite accepts.
 */
import { createHash, randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { startMirrorServer, type MirrorServer } from '../../src/mirror/index.js';
import { tempDir } from '../support/images.js';
import { rawRequest, startHarness, type Harness } from './support.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const NAMESPACE = `conformance/mirror${randomBytes(4).toString('hex')}`;
const TAG = 'tagtest0';
const NONEXISTENT_MANIFEST = '.INVALID_MANIFEST_NAME';
const ERROR_CODES = [
  'BLOB_UNKNOWN',
  'DIGEST_INVALID',
  'MANIFEST_INVALID',
  'MANIFEST_UNKNOWN',
  'NAME_INVALID',
];

const sha256 = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const blob = (content: Buffer): { content: Buffer; digest: string } => ({ content, digest: sha256(content) });

// setup.go's shape: two configs, one layer, two manifests (manifest[1] pushed by digest only).
const configs = [0, 1].map((i) =>
  blob(
    Buffer.from(
      JSON.stringify({ architecture: 'amd64', os: 'linux', author: `conformance ${i}` }, null, '\t'),
    ),
  ),
);
const layer = blob(randomBytes(2048));
const manifests = configs.map((c) =>
  blob(
    Buffer.from(
      JSON.stringify(
        {
          schemaVersion: 2,
          mediaType: OCI_MANIFEST,
          config: {
            mediaType: 'application/vnd.oci.image.config.v1+json',
            digest: c.digest,
            size: c.content.length,
          },
          layers: [
            { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layer.digest, size: 2048 },
          ],
        },
        null,
        '\t',
      ),
    ),
  ),
);
const dummyDigest = sha256('hello world');

let upstream: Harness;
let mirror: MirrorServer;
let work: string;

beforeAll(async () => {
  work = await tempDir('strata-mirror-conformance-');
  upstream = await startHarness();
  const push = async (path: string, init: RequestInit): Promise<void> => {
    const res = await upstream.fetch(path, init);
    expect(res.status, path).toBeLessThan(300);
  };
  for (const b of [...configs, layer])
    await push(`/v2/${NAMESPACE}/blobs/uploads/?digest=${b.digest}`, { method: 'POST', body: b.content });
  const ct = { 'Content-Type': OCI_MANIFEST };
  await push(`/v2/${NAMESPACE}/manifests/${TAG}`, {
    method: 'PUT',
    headers: ct,
    body: manifests[0]!.content,
  });
  await push(`/v2/${NAMESPACE}/manifests/${manifests[1]!.digest}`, {
    method: 'PUT',
    headers: ct,
    body: manifests[1]!.content,
  });
  mirror = await startMirrorServer({
    store: await FsStore.open(join(work, 'store')),
    upstreams: [{ name: 'upstream.test', url: upstream.server.url }],
    defaultUpstream: 'upstream.test',
  });
}, 30_000);

afterAll(async () => {
  await mirror?.close();
  await upstream?.close();
  await rm(work, { recursive: true, force: true });
});

const send = (method: string, path: string, headers: Record<string, string> = {}): Promise<Response> =>
  fetch(new URL(path.replace('<name>', NAMESPACE), mirror.url), { method, headers });

describe('OCI conformance through the mirror: Pull', () => {
  describe('Pull blobs', () => {
    it('HEAD request to nonexistent blob should result in 404 response', async () => {
      expect((await send('HEAD', `/v2/<name>/blobs/${dummyDigest}`)).status).toBe(404);
    });
    it('HEAD request to existing blob should yield 200', async () => {
      const res = await send('HEAD', `/v2/<name>/blobs/${configs[0]!.digest}`);
      expect(res.status).toBe(200);
      expect(res.headers.get('docker-content-digest')).toBe(configs[0]!.digest);
      expect(res.headers.get('content-length')).toBe(String(configs[0]!.content.length));
    });
    it('GET nonexistent blob should result in 404 response', async () => {
      expect((await send('GET', `/v2/<name>/blobs/${dummyDigest}`)).status).toBe(404);
    });
    it('GET request to existing blob URL should yield 200', async () => {
      const res = await send('GET', `/v2/<name>/blobs/${configs[0]!.digest}`);
      expect(res.status).toBe(200);
      expect(Buffer.from(await res.arrayBuffer()).equals(configs[0]!.content)).toBe(true);
    });
  });

  describe('Pull manifests', () => {
    const accept = { Accept: OCI_MANIFEST };
    it('HEAD request to nonexistent manifest should return 404', async () => {
      expect((await send('HEAD', `/v2/<name>/manifests/${NONEXISTENT_MANIFEST}`)).status).toBe(404);
    });
    for (const i of [0, 1]) {
      it(`HEAD request to manifest[${i}] path (digest) should yield 200 response`, async () => {
        const res = await send('HEAD', `/v2/<name>/manifests/${manifests[i]!.digest}`, accept);
        expect(res.status).toBe(200);
        expect(res.headers.get('docker-content-digest')).toBe(manifests[i]!.digest);
      });
    }
    it('HEAD request to manifest path (tag) should yield 200 response', async () => {
      const res = await send('HEAD', `/v2/<name>/manifests/${TAG}`, accept);
      expect(res.status).toBe(200);
      expect(res.headers.get('docker-content-digest')).toBe(manifests[0]!.digest);
    });
    it('GET nonexistent manifest should return 404', async () => {
      const res = await send('GET', `/v2/<name>/manifests/${NONEXISTENT_MANIFEST}`);
      expect(res.status).toBe(404);
      const body = (await res.json()) as { errors: Array<{ code: string }> };
      expect(body.errors[0]!.code).toBe('MANIFEST_UNKNOWN');
    });
    for (const i of [0, 1]) {
      it(`GET request to manifest[${i}] path (digest) should yield 200 response`, async () => {
        const res = await send('GET', `/v2/<name>/manifests/${manifests[i]!.digest}`, accept);
        expect(res.status).toBe(200);
        expect(Buffer.from(await res.arrayBuffer()).equals(manifests[i]!.content)).toBe(true);
      });
    }
    it('GET request to manifest path (tag) should yield 200 response', async () => {
      const res = await send('GET', `/v2/<name>/manifests/${TAG}`, accept);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe(OCI_MANIFEST);
    });
  });

  describe('Error codes', () => {
    it('400 response body should contain OCI-conforming JSON message', async () => {
      const res = await rawRequest(mirror.url, {
        method: 'GET',
        path: `/v2/${NAMESPACE}/manifests/sha256:totallywrong`,
        headers: { 'Content-Type': OCI_MANIFEST },
        body: Buffer.from('{"invalid": true}'),
      });
      expect([400, 404]).toContain(res.status);
      const body = JSON.parse(res.body.toString('utf8')) as { errors: Array<{ code: string }> };
      expect(ERROR_CODES).toContain(body.errors[0]!.code);
    });
  });

  describe('Teardown', () => {
    const ok = (status: number, allowed: number[]): boolean =>
      (status >= 200 && status < 300) || allowed.includes(status);
    for (const i of [0, 1]) {
      it(`Delete manifest[${i}] created in setup`, async () => {
        expect(ok((await send('DELETE', `/v2/<name>/manifests/${manifests[i]!.digest}`)).status, [405])).toBe(
          true,
        );
      });
    }
    for (const [what, digest] of [
      ['config[0]', configs[0]!.digest],
      ['config[1]', configs[1]!.digest],
      ['layer', layer.digest],
    ] as const) {
      it(`Delete ${what} blob created in setup`, async () => {
        expect(ok((await send('DELETE', `/v2/<name>/blobs/${digest}`)).status, [404, 405])).toBe(true);
      });
    }
  });
});
