/**
 * The OCI distribution-spec conformance suite v1.1 (opencontainers/distribution-spec `conformance/`), replayed
 * against the embedded registry started on a loopback port. Go is not installed here, so these tests are the
 * evidence of conformance: every `describe` mirrors one `g.Context` and every `it` one `g.Specify` of the
 * suite, with the same name, in the same order, on the same kind of data (built as `setup.go` builds it), and
 * with the same expectations (status codes, Location / Docker-Content-Digest / Range / OCI-Subject /
 * OCI-Filters-Applied / Content-Type headers, bodies and error codes). Where the suite accepts several outcomes
 * (e.g. "201 or 202"), so do these tests unless a comment says this registry is held to one of them.
 *
 * Mirrored files: `01_pull_test.go` (Pull), `02_push_test.go` (Push), `03_discovery_test.go` (Content
 * Discovery), `04_management_test.go` (Content Management), with the data of `setup.go` and `image.go`.
 * The suite's specs that only run when its environment says so are left out, as a default run skips them:
 * "Get tag name from environment", "Populate registry with test tags (no push)" (run only without setup), and
 * the two "Cross-mounting without from, and automatic content discovery …" specs (OCI_AUTOMATIC_CROSSMOUNT).
 * The suite runs its teardowns with OCI_DELETE_MANIFEST_BEFORE_BLOBS at its default (true); so do these.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawRequest, startHarness, type Harness } from './support.js';

// ---- the suite's data (setup.go) ----

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
const OCI_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
const NUM_WORKFLOWS = 16; // setup.go: pull, push, contentDiscovery, contentManagement are bits; numWorkflows = 1 << 4
const TEST_TAG_NAME = 'tagtest0';
const EMPTY_LAYER_TEST_TAG = 'emptylayer';
const NONEXISTENT_MANIFEST = '.INVALID_MANIFEST_NAME';
const ARTIFACT_TYPE_FILTER = 'artifactType';
const TEST_ANNOTATION_KEY = 'org.opencontainers.conformance.test';
const ERROR_CODES = [
  'BLOB_UNKNOWN',
  'BLOB_UPLOAD_INVALID',
  'BLOB_UPLOAD_UNKNOWN',
  'DIGEST_INVALID',
  'MANIFEST_BLOB_UNKNOWN',
  'MANIFEST_INVALID',
  'MANIFEST_UNKNOWN',
  'MANIFEST_UNVERIFIED',
  'NAME_INVALID',
  'NAME_UNKNOWN',
  'SIZE_INVALID',
  'TAG_INVALID',
  'UNAUTHORIZED',
  'DENIED',
  'UNSUPPORTED',
];

interface TestBlob {
  readonly content: Buffer;
  readonly contentLength: string;
  readonly digest: string;
}

interface Desc {
  mediaType: string;
  digest: string;
  size: number;
  data?: string;
  artifactType?: string;
  // image.go's descriptor carries a field no spec defines (always serialised, `null` when empty): registries
  // must store and serve such manifests anyway.
  newUnspecifiedField: string | null;
}

function sha256(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

function blobOf(content: Buffer): TestBlob {
  return { content, contentLength: String(content.length), digest: sha256(content) };
}

/** Go's `json.MarshalIndent(v, "", "\t")`: manifests are pushed with this formatting and must come back as is. */
function marshalIndent(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value, null, '\t'));
}

function desc(mediaType: string, content: Buffer, extra: Partial<Desc> = {}): Desc {
  return { mediaType, digest: sha256(content), size: content.length, ...extra, newUnspecifiedField: null };
}

// A unique config per workflow (a random author), as setup.go makes them.
const configs: TestBlob[] = Array.from({ length: NUM_WORKFLOWS }, () =>
  blobOf(
    marshalIndent({
      author: randomBytes(12).toString('base64url').slice(0, 16),
      architecture: 'amd64',
      os: 'linux',
      rootfs: { type: 'layers', diff_ids: [] },
    }),
  ),
);

/** setup.go's layer: a gzipped tarball holding one small `test.txt`. */
function makeLayerBlob(): Buffer {
  const dir = mkdtempSync(join(tmpdir(), 'strata-conformance-'));
  try {
    writeFileSync(join(dir, 'test.txt'), 'you bothered to find out what was in here. Congratulations!\n');
    return execFileSync('tar', ['-C', dir, '-czf', '-', 'test.txt']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
const layerBlobData = makeLayerBlob();
const layerBlobDigest = sha256(layerBlobData);
const layerBlobContentLength = String(layerBlobData.length);
const layers = [desc(OCI_LAYER_GZIP, layerBlobData)];

const manifests: TestBlob[] = configs.map((c) =>
  blobOf(
    marshalIndent({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: {
        mediaType: OCI_CONFIG,
        digest: c.digest,
        size: c.content.length,
        data: c.content.toString('base64'), // must be the config content
        newUnspecifiedField: Buffer.from('hello world').toString('base64'), // content does not matter
      },
      layers,
    }),
  ),
);

// Push test: a manifest without mediaType and without layers.
const emptyLayerManifestContent = marshalIndent({
  schemaVersion: 2,
  config: {
    mediaType: OCI_CONFIG,
    digest: configs[1]!.digest,
    size: configs[1]!.content.length,
    data: configs[1]!.content.toString('base64'),
    newUnspecifiedField: Buffer.from('hello world').toString('base64'),
  },
  layers: [],
});
const emptyLayerManifestDigest = sha256(emptyLayerManifestContent);

const invalidManifestContent = Buffer.from('blablabla');

const testBlobA = blobOf(randomBytes(42));
const testBlobB = randomBytes(42);
const testBlobBDigest = sha256(testBlobB);
const testBlobBChunk1 = testBlobB.subarray(0, 42 / 2 + 1);
const testBlobBChunk2 = testBlobB.subarray(42 / 2 + 1);
const testBlobBChunk1Range = `0-${testBlobBChunk1.length - 1}`;
const testBlobBChunk2Range = `${testBlobBChunk1.length}-${testBlobB.length - 1}`;

const dummyDigest = sha256('hello world');

// Referrers (artifacts whose subject is manifests[4], and one whose subject manifests[3] is never pushed).
const emptyJSONBlob = Buffer.from('{}');
const emptyJSONDescriptor = desc('application/vnd.oci.empty.v1+json', emptyJSONBlob);
const testRefBlobA = blobOf(Buffer.from('NHL Peanut Butter on my NHL bagel'));
const testRefArtifactTypeA = 'application/vnd.nhl.peanut.butter.bagel';
const testRefBlobB = blobOf(Buffer.from('NBA Strawberry Jam on my NBA croissant'));
const testRefArtifactTypeB = 'application/vnd.nba.strawberry.jam.croissant';
const testRefArtifactTypeIndex = 'application/vnd.food.stand';
const subject4 = desc(OCI_MANIFEST, manifests[4]!.content);
const subject3 = desc(OCI_MANIFEST, manifests[3]!.content);
const testAnnotationValues: Record<string, string> = {};

function artifact(doc: Record<string, unknown>): TestBlob {
  const b = blobOf(marshalIndent(doc));
  const annotations = doc.annotations as Record<string, string> | undefined;
  if (annotations) testAnnotationValues[b.digest] = annotations[TEST_ANNOTATION_KEY]!;
  return b;
}

/** An artifact manifest whose type is its config's media type (the config is the reference blob). */
function configArtifact(type: string, blob: TestBlob, annotation: string): TestBlob {
  return artifact({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: desc(type, blob.content),
    layers: [emptyJSONDescriptor],
    subject: subject4,
    annotations: { [TEST_ANNOTATION_KEY]: annotation },
  });
}

/** An artifact manifest with an `artifactType`, the empty JSON as config and the reference blob as layer. */
function layerArtifact(type: string, blob: TestBlob, subject: Desc, annotation?: string): TestBlob {
  return artifact({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    artifactType: type,
    config: emptyJSONDescriptor,
    layers: [desc(type, blob.content)],
    subject,
    ...(annotation !== undefined ? { annotations: { [TEST_ANNOTATION_KEY]: annotation } } : {}),
  });
}

const refsManifestAConfigArtifact = configArtifact(testRefArtifactTypeA, testRefBlobA, 'test config a');
const refsManifestBConfigArtifact = configArtifact(testRefArtifactTypeB, testRefBlobB, 'test config b');
const refsManifestALayerArtifact = layerArtifact(
  testRefArtifactTypeA,
  testRefBlobA,
  subject4,
  'test layer a',
);
const refsManifestBLayerArtifact = layerArtifact(
  testRefArtifactTypeB,
  testRefBlobB,
  subject4,
  'test layer b',
);
// the same as B, with a subject that is never pushed (and no annotations)
const refsManifestCLayerArtifact = layerArtifact(testRefArtifactTypeB, testRefBlobB, subject3);
const refsIndexArtifact = artifact({
  schemaVersion: 2,
  mediaType: OCI_INDEX,
  artifactType: testRefArtifactTypeIndex,
  manifests: [
    desc(OCI_MANIFEST, refsManifestAConfigArtifact.content),
    desc(OCI_MANIFEST, refsManifestALayerArtifact.content),
  ],
  subject: subject4,
  annotations: { [TEST_ANNOTATION_KEY]: 'test index' },
});

// ---- a client in the manner of the suite's (reggie): `<name>` paths, relative Locations ----

const NAMESPACE = 'conformance/myorg/myrepo';
const crossmountNamespace = `conformance-${randomUUID()}`;

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h.close();
});

interface Req {
  readonly method: string;
  readonly path: string;
  readonly headers?: Record<string, string>;
  readonly query?: Record<string, string>;
  readonly body?: Buffer;
}

/** One request; `<name>` in the path is the suite's namespace (as reggie's default name). */
async function send(r: Req): Promise<Response> {
  const url = new URL(r.path.replace('<name>', NAMESPACE), h.server.url);
  for (const [k, v] of Object.entries(r.query ?? {})) url.searchParams.set(k, v);
  return fetch(url, {
    method: r.method,
    headers: r.headers ?? {},
    ...(r.body !== undefined ? { body: r.body } : {}),
    signal: AbortSignal.timeout(20_000),
  });
}

/** reggie's GetRelativeLocation: the path and query of the Location header, whether absolute or relative. */
function relativeLocation(res: Response): string {
  const loc = res.headers.get('location');
  if (!loc) return '';
  const u = new URL(loc, 'http://location.invalid');
  return u.pathname + u.search;
}

function is2xx(status: number): boolean {
  return status >= 200 && status < 300;
}

/** The first error code of an OCI error body. */
async function firstErrorCode(res: Response): Promise<string> {
  const body = (await res.json()) as { errors?: Array<{ code: string }> };
  expect(body.errors).toBeDefined();
  expect(body.errors).not.toHaveLength(0);
  return body.errors![0]!.code;
}

/** The Setup specs' "Populate registry with test blob": POST a session, then PUT the blob into it. */
async function populateBlob(
  content: Buffer,
  digest: string,
  contentLength = String(content.length),
): Promise<void> {
  const start = await send({ method: 'POST', path: '/v2/<name>/blobs/uploads/' });
  const res = await send({
    method: 'PUT',
    path: relativeLocation(start),
    query: { digest },
    headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': contentLength },
    body: content,
  });
  expect(is2xx(res.status), `PUT ${digest}: ${res.status}`).toBe(true);
}

async function putManifestRef(
  reference: string,
  content: Buffer,
  mediaType = OCI_MANIFEST,
): Promise<Response> {
  return send({
    method: 'PUT',
    path: `/v2/<name>/manifests/${reference}`,
    headers: { 'Content-Type': mediaType },
    body: content,
  });
}

function del(kind: 'manifests' | 'blobs', reference: string, name = '<name>'): Promise<Response> {
  return send({ method: 'DELETE', path: `/v2/${name}/${kind}/${reference}` });
}

async function expectTeardownDelete(res: Promise<Response>, allowed: number[]): Promise<void> {
  const status = (await res).status;
  expect(is2xx(status) || allowed.includes(status), `status ${status}`).toBe(true);
}

// ---- 01_pull_test.go ----

describe('OCI conformance: Pull', () => {
  let tag = '';

  describe('Setup', () => {
    it('Populate registry with test blob', async () => {
      await populateBlob(configs[0]!.content, configs[0]!.digest, configs[0]!.contentLength);
    });

    it('Populate registry with test blob (config[1])', async () => {
      await populateBlob(configs[1]!.content, configs[1]!.digest, configs[1]!.contentLength);
    });

    it('Populate registry with test layer', async () => {
      await populateBlob(layerBlobData, layerBlobDigest, layerBlobContentLength);
    });

    it('Populate registry with test manifest', async () => {
      tag = TEST_TAG_NAME;
      const res = await putManifestRef(tag, manifests[0]!.content);
      expect(is2xx(res.status)).toBe(true);
    });

    it('Populate registry with test manifest (manifest[1] by digest)', async () => {
      const res = await putManifestRef(manifests[1]!.digest, manifests[1]!.content);
      expect(is2xx(res.status)).toBe(true);
    });
  });

  describe('Pull blobs', () => {
    it('HEAD request to nonexistent blob should result in 404 response', async () => {
      const res = await send({ method: 'HEAD', path: `/v2/<name>/blobs/${dummyDigest}` });
      expect(res.status).toBe(404);
    });

    it('HEAD request to existing blob should yield 200', async () => {
      const res = await send({ method: 'HEAD', path: `/v2/<name>/blobs/${configs[0]!.digest}` });
      expect(res.status).toBe(200);
      const h = res.headers.get('docker-content-digest');
      if (h) expect(h).toBe(configs[0]!.digest);
      expect(res.headers.get('content-length')).toBe(configs[0]!.contentLength);
    });

    it('GET nonexistent blob should result in 404 response', async () => {
      const res = await send({ method: 'GET', path: `/v2/<name>/blobs/${dummyDigest}` });
      expect(res.status).toBe(404);
    });

    it('GET request to existing blob URL should yield 200', async () => {
      const res = await send({ method: 'GET', path: `/v2/<name>/blobs/${configs[0]!.digest}` });
      expect(res.status).toBe(200);
      expect(Buffer.from(await res.arrayBuffer()).equals(configs[0]!.content)).toBe(true);
    });
  });

  describe('Pull manifests', () => {
    const accept = { Accept: OCI_MANIFEST };

    it('HEAD request to nonexistent manifest should return 404', async () => {
      const res = await send({ method: 'HEAD', path: `/v2/<name>/manifests/${NONEXISTENT_MANIFEST}` });
      expect(res.status).toBe(404);
    });

    it('HEAD request to manifest[0] path (digest) should yield 200 response', async () => {
      const res = await send({
        method: 'HEAD',
        path: `/v2/<name>/manifests/${manifests[0]!.digest}`,
        headers: accept,
      });
      expect(res.status).toBe(200);
      const h = res.headers.get('docker-content-digest');
      if (h) expect(h).toBe(manifests[0]!.digest);
    });

    it('HEAD request to manifest[1] path (digest) should yield 200 response', async () => {
      const res = await send({
        method: 'HEAD',
        path: `/v2/<name>/manifests/${manifests[1]!.digest}`,
        headers: accept,
      });
      expect(res.status).toBe(200);
      const h = res.headers.get('docker-content-digest');
      if (h) expect(h).toBe(manifests[1]!.digest);
    });

    it('HEAD request to manifest path (tag) should yield 200 response', async () => {
      expect(tag).not.toBe('');
      const res = await send({ method: 'HEAD', path: `/v2/<name>/manifests/${tag}`, headers: accept });
      expect(res.status).toBe(200);
      const h = res.headers.get('docker-content-digest');
      if (h) expect(h).toBe(manifests[0]!.digest);
    });

    it('GET nonexistent manifest should return 404', async () => {
      const res = await send({ method: 'GET', path: `/v2/<name>/manifests/${NONEXISTENT_MANIFEST}` });
      expect(res.status).toBe(404);
      expect(await firstErrorCode(res)).toBe('MANIFEST_UNKNOWN');
    });

    it('GET request to manifest[0] path (digest) should yield 200 response', async () => {
      const res = await send({
        method: 'GET',
        path: `/v2/<name>/manifests/${manifests[0]!.digest}`,
        headers: accept,
      });
      expect(res.status).toBe(200);
      expect(Buffer.from(await res.arrayBuffer()).equals(manifests[0]!.content)).toBe(true);
    });

    it('GET request to manifest[1] path (digest) should yield 200 response', async () => {
      const res = await send({
        method: 'GET',
        path: `/v2/<name>/manifests/${manifests[1]!.digest}`,
        headers: accept,
      });
      expect(res.status).toBe(200);
      expect(Buffer.from(await res.arrayBuffer()).equals(manifests[1]!.content)).toBe(true);
    });

    it('GET request to manifest path (tag) should yield 200 response', async () => {
      expect(tag).not.toBe('');
      const res = await send({ method: 'GET', path: `/v2/<name>/manifests/${tag}`, headers: accept });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe(OCI_MANIFEST);
    });
  });

  describe('Error codes', () => {
    it('400 response body should contain OCI-conforming JSON message', async () => {
      // The suite sends this GET with a body, which fetch cannot do: node:http can.
      const res = await rawRequest(h.server.url, {
        method: 'GET',
        path: `/v2/${NAMESPACE}/manifests/sha256:totallywrong`,
        headers: { 'Content-Type': OCI_MANIFEST },
        body: invalidManifestContent,
      });
      expect([400, 404]).toContain(res.status);
      if (res.status === 400) {
        const body = JSON.parse(res.body.toString('utf8')) as { errors: Array<{ code: string }> };
        expect(body.errors).not.toHaveLength(0);
        expect(ERROR_CODES).toContain(body.errors[0]!.code);
      }
    });
  });

  describe('Teardown', () => {
    it('Delete manifest[0] created in setup', async () => {
      await expectTeardownDelete(del('manifests', manifests[0]!.digest), [405]);
    });
    it('Delete manifest[1] created in setup', async () => {
      await expectTeardownDelete(del('manifests', manifests[1]!.digest), [405]);
    });
    it('Delete config[0] blob created in setup', async () => {
      await expectTeardownDelete(del('blobs', configs[0]!.digest), [404, 405]);
    });
    it('Delete config[1] blob created in setup', async () => {
      await expectTeardownDelete(del('blobs', configs[1]!.digest), [404, 405]);
    });
    it('Delete layer blob created in setup', async () => {
      await expectTeardownDelete(del('blobs', layerBlobDigest), [404, 405]);
    });
  });
});

// ---- 02_push_test.go ----

describe('OCI conformance: Push', () => {
  let lastResponse: Response | undefined;
  let prevResponse: Response | undefined;
  let emptyLayerManifestRef = '';

  describe('Blob Upload Streamed', () => {
    it('PATCH request with blob in body should yield 202 response', async () => {
      const start = await send({ method: 'POST', path: '/v2/<name>/blobs/uploads/' });
      expect(start.headers.get('location')).toBeTruthy();
      const res = await send({
        method: 'PATCH',
        path: relativeLocation(start),
        headers: { 'Content-Type': 'application/octet-stream' },
        body: testBlobA.content,
      });
      expect(res.status).toBe(202);
      lastResponse = res;
    });

    it('PUT request to session URL with digest should yield 201 response', async () => {
      expect(lastResponse).toBeDefined();
      const res = await send({
        method: 'PUT',
        path: relativeLocation(lastResponse!),
        query: { digest: testBlobA.digest },
        headers: { 'Content-Type': 'application/octet-stream' },
      });
      expect(res.status).toBe(201);
      expect(res.headers.get('location')).toBeTruthy();
    });
  });

  describe('Blob Upload Monolithic', () => {
    it('GET nonexistent blob should result in 404 response', async () => {
      const res = await send({ method: 'GET', path: `/v2/<name>/blobs/${dummyDigest}` });
      expect(res.status).toBe(404);
    });

    it('POST request with digest and blob should yield a 201 or 202', async () => {
      const res = await send({
        method: 'POST',
        path: '/v2/<name>/blobs/uploads/',
        query: { digest: configs[1]!.digest },
        headers: { 'Content-Length': configs[1]!.contentLength, 'Content-Type': 'application/octet-stream' },
        body: configs[1]!.content,
      });
      expect(res.headers.get('location')).toBeTruthy();
      expect([201, 202]).toContain(res.status);
      lastResponse = res;
    });

    it('GET request to blob URL from prior request should yield 200 or 404 based on response code', async () => {
      expect(lastResponse).toBeDefined();
      const res = await send({ method: 'GET', path: `/v2/<name>/blobs/${configs[1]!.digest}` });
      expect(res.status).toBe(lastResponse!.status === 202 ? 404 : 200);
    });

    it('POST request should yield a session ID', async () => {
      const res = await send({ method: 'POST', path: '/v2/<name>/blobs/uploads/' });
      expect(res.status).toBe(202);
      lastResponse = res;
    });

    it('PUT upload of a blob should yield a 201 Response', async () => {
      const res = await send({
        method: 'PUT',
        path: relativeLocation(lastResponse!),
        query: { digest: configs[1]!.digest },
        headers: { 'Content-Length': configs[1]!.contentLength, 'Content-Type': 'application/octet-stream' },
        body: configs[1]!.content,
      });
      expect(res.headers.get('location')).toBeTruthy();
      expect(res.status).toBe(201);
    });

    it('GET request to existing blob should yield 200 response', async () => {
      const res = await send({ method: 'GET', path: `/v2/<name>/blobs/${configs[1]!.digest}` });
      expect(res.status).toBe(200);
    });

    it('PUT upload of a layer blob should yield a 201 Response', async () => {
      const start = await send({ method: 'POST', path: '/v2/<name>/blobs/uploads/' });
      const res = await send({
        method: 'PUT',
        path: relativeLocation(start),
        query: { digest: layerBlobDigest },
        headers: { 'Content-Length': layerBlobContentLength, 'Content-Type': 'application/octet-stream' },
        body: layerBlobData,
      });
      expect(res.headers.get('location')).toBeTruthy();
      expect(res.status).toBe(201);
    });

    it('GET request to existing layer should yield 200 response', async () => {
      const res = await send({ method: 'GET', path: `/v2/<name>/blobs/${layerBlobDigest}` });
      expect(res.status).toBe(200);
    });
  });

  describe('Blob Upload Chunked', () => {
    it('Out-of-order blob upload should return 416', async () => {
      const start = await send({
        method: 'POST',
        path: '/v2/<name>/blobs/uploads/',
        headers: { 'Content-Length': '0' },
      });
      expect(start.headers.get('location')).toBeTruthy();
      // The suite rebuilds its chunks when OCI-Chunk-Min-Length exceeds them; this registry sets no minimum.
      expect(start.headers.get('oci-chunk-min-length')).toBeNull();
      const res = await send({
        method: 'PATCH',
        path: relativeLocation(start),
        headers: {
          'Content-Type': 'application/octet-stream',
          'Content-Length': String(testBlobBChunk2.length),
          'Content-Range': testBlobBChunk2Range,
        },
        body: testBlobBChunk2,
      });
      expect(res.status).toBe(416);
    });

    it('PATCH request with first chunk should return 202', async () => {
      const start = await send({
        method: 'POST',
        path: '/v2/<name>/blobs/uploads/',
        headers: { 'Content-Length': '0' },
      });
      expect(start.headers.get('location')).toBeTruthy();
      prevResponse = start;
      const res = await send({
        method: 'PATCH',
        path: relativeLocation(start),
        headers: {
          'Content-Type': 'application/octet-stream',
          'Content-Length': String(testBlobBChunk1.length),
          'Content-Range': testBlobBChunk1Range,
        },
        body: testBlobBChunk1,
      });
      expect(res.status).toBe(202);
      expect(res.headers.get('range')).toBe(testBlobBChunk1Range);
      lastResponse = res;
    });

    it('Retry previous blob chunk should return 416', async () => {
      const res = await send({
        method: 'PATCH',
        path: relativeLocation(prevResponse!),
        headers: {
          'Content-Type': 'application/octet-stream',
          'Content-Length': String(testBlobBChunk1.length),
          'Content-Range': testBlobBChunk1Range,
        },
        body: testBlobBChunk1,
      });
      expect(res.status).toBe(416);
    });

    it('Get on stale blob upload should return 204 with a range and location', async () => {
      const res = await send({ method: 'GET', path: relativeLocation(prevResponse!) });
      expect(res.status).toBe(204);
      expect(res.headers.get('location')).toBeTruthy();
      expect(res.headers.get('range')).toBe(testBlobBChunk1Range);
      lastResponse = res;
    });

    it('PATCH request with second chunk should return 202', async () => {
      const res = await send({
        method: 'PATCH',
        path: relativeLocation(lastResponse!),
        headers: {
          'Content-Length': String(testBlobBChunk2.length),
          'Content-Range': testBlobBChunk2Range,
          'Content-Type': 'application/octet-stream',
        },
        body: testBlobBChunk2,
      });
      expect(res.status).toBe(202);
      expect(res.headers.get('location')).toBeTruthy();
      lastResponse = res;
    });

    it('PUT request with digest should return 201', async () => {
      const res = await send({
        method: 'PUT',
        path: relativeLocation(lastResponse!),
        query: { digest: testBlobBDigest },
        headers: { 'Content-Length': '0', 'Content-Type': 'application/octet-stream' },
      });
      expect(res.status).toBe(201);
      expect(res.headers.get('location')).toBeTruthy();
    });
  });

  describe('Cross-Repository Blob Mount', () => {
    it('Cross-mounting of a blob without the from argument should yield session id', async () => {
      const res = await send({
        method: 'POST',
        path: `/v2/${crossmountNamespace}/blobs/uploads/`,
        query: { mount: dummyDigest },
      });
      expect(res.status).toBe(202);
      expect(res.headers.get('location')).toBeTruthy();
    });

    it("POST request to mount another repository's blob should return 201 or 202", async () => {
      const res = await send({
        method: 'POST',
        path: `/v2/${crossmountNamespace}/blobs/uploads/`,
        query: { mount: testBlobA.digest, from: NAMESPACE },
      });
      // This registry mounts whatever the source repository holds: held to 201.
      expect(res.status).toBe(201);
      lastResponse = res;
    });

    it('GET request to test digest within cross-mount namespace should return 200', async () => {
      expect(lastResponse!.status).toBe(201); // the suite runs this spec only after a 201
      expect(relativeLocation(lastResponse!)).toBe(`/v2/${crossmountNamespace}/blobs/${testBlobA.digest}`);
      const res = await send({ method: 'GET', path: relativeLocation(lastResponse!) });
      expect(res.status).toBe(200);
    });

    it('Cross-mounting of nonexistent blob should yield session id', async () => {
      // The suite checks this only after a 202 to the mount above; here, a mount of a blob the source lacks.
      const res = await send({
        method: 'POST',
        path: `/v2/${crossmountNamespace}/blobs/uploads/`,
        query: { mount: dummyDigest, from: NAMESPACE },
      });
      expect(res.status).toBe(202);
      expect(relativeLocation(res).startsWith(`/v2/${crossmountNamespace}/blobs/uploads/`)).toBe(true);
    });
  });

  describe('Manifest Upload', () => {
    it('GET nonexistent manifest should return 404', async () => {
      const res = await send({ method: 'GET', path: `/v2/<name>/manifests/${NONEXISTENT_MANIFEST}` });
      expect(res.status).toBe(404);
    });

    it('PUT should accept a manifest upload', async () => {
      for (let i = 0; i < 4; i++) {
        const res = await putManifestRef(`test${i}`, manifests[1]!.content);
        expect(res.headers.get('location')).toBeTruthy();
        expect(res.status).toBe(201);
      }
    });

    it('Registry should accept a manifest upload with no layers', async () => {
      const res = await putManifestRef(EMPTY_LAYER_TEST_TAG, emptyLayerManifestContent);
      // The suite only warns when this is refused; this registry is held to accepting it.
      expect(res.status).toBe(201);
      emptyLayerManifestRef = res.headers.get('location') ?? '';
      expect(emptyLayerManifestRef).toBeTruthy();
    });

    it('GET request to manifest URL (digest) should yield 200 response', async () => {
      const res = await send({
        method: 'GET',
        path: `/v2/<name>/manifests/${manifests[1]!.digest}`,
        headers: { Accept: OCI_MANIFEST },
      });
      expect(res.status).toBe(200);
    });
  });

  describe('Teardown', () => {
    it('Delete manifest created in tests', async () => {
      await expectTeardownDelete(del('manifests', manifests[1]!.digest), [405]);
      if (emptyLayerManifestRef !== '')
        await expectTeardownDelete(del('manifests', emptyLayerManifestDigest), [405]);
    });
    it('Delete config blob created in tests', async () => {
      await expectTeardownDelete(del('blobs', configs[1]!.digest), [404, 405]);
    });
    it('Delete layer blob created in setup', async () => {
      await expectTeardownDelete(del('blobs', layerBlobDigest), [404, 405]);
    });
  });
});

// ---- 03_discovery_test.go ----

describe('OCI conformance: Content Discovery', () => {
  let numTags = 4;
  let tagList: string[] = [];

  async function getTagList(res: Response): Promise<string[]> {
    try {
      return ((await res.json()) as { tags?: string[] }).tags ?? [];
    } catch {
      return [];
    }
  }

  describe('Setup', () => {
    it('Populate registry with test blob', async () => {
      await populateBlob(configs[2]!.content, configs[2]!.digest, configs[2]!.contentLength);
    });

    it('Populate registry with test layer', async () => {
      await populateBlob(layerBlobData, layerBlobDigest, layerBlobContentLength);
    });

    it('Populate registry with test tags', async () => {
      for (let i = 0; i < numTags; i++) {
        const res = await putManifestRef(`test${i}`, manifests[2]!.content);
        expect(is2xx(res.status)).toBe(true);
      }
      tagList = await getTagList(await send({ method: 'GET', path: '/v2/<name>/tags/list' }));
    });

    it('References setup', async () => {
      expect(emptyJSONDescriptor.digest).toBe(
        'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a',
      );
      await populateBlob(emptyJSONBlob, emptyJSONDescriptor.digest);
      // the reference blob, before the image manifest (the subject) is pushed
      await populateBlob(testRefBlobA.content, testRefBlobA.digest);

      const expectReferrerPut = async (ref: TestBlob, mediaType: string, subject: string): Promise<void> => {
        const res = await putManifestRef(ref.digest, ref.content, mediaType);
        expect(is2xx(res.status), `PUT ${ref.digest}: ${res.status}`).toBe(true);
        expect(res.headers.get('oci-subject')).toBe(subject);
      };
      await expectReferrerPut(refsManifestAConfigArtifact, OCI_MANIFEST, manifests[4]!.digest);
      await expectReferrerPut(refsManifestALayerArtifact, OCI_MANIFEST, manifests[4]!.digest);
      await expectReferrerPut(refsIndexArtifact, OCI_INDEX, manifests[4]!.digest);

      await populateBlob(configs[4]!.content, configs[4]!.digest);
      await populateBlob(layerBlobData, layerBlobDigest);
      const subject = await putManifestRef(TEST_TAG_NAME, manifests[4]!.content);
      expect(is2xx(subject.status)).toBe(true);

      // the reference blob, after the image manifest is pushed
      await populateBlob(testRefBlobB.content, testRefBlobB.digest);
      await expectReferrerPut(refsManifestBConfigArtifact, OCI_MANIFEST, manifests[4]!.digest);
      await expectReferrerPut(refsManifestBLayerArtifact, OCI_MANIFEST, manifests[4]!.digest);
      // a referrer whose subject does not exist
      await expectReferrerPut(refsManifestCLayerArtifact, OCI_MANIFEST, manifests[3]!.digest);
    });
  });

  describe('Test content discovery endpoints (listing tags)', () => {
    it('GET request to list tags should yield 200 response', async () => {
      const res = await send({ method: 'GET', path: '/v2/<name>/tags/list' });
      expect(res.status).toBe(200);
      tagList = await getTagList(res);
      numTags = tagList.length;
      // What the workflows left in the namespace: test0..3 (re-pushed above) and tagtest0.
      expect(tagList).toEqual([TEST_TAG_NAME, 'test0', 'test1', 'test2', 'test3']);
    });

    it('GET number of tags should be limitable by `n` query parameter', async () => {
      const numResults = Math.floor(numTags / 2);
      const res = await send({
        method: 'GET',
        path: '/v2/<name>/tags/list',
        query: { n: String(numResults) },
      });
      expect(res.status).toBe(200);
      tagList = await getTagList(res);
      expect(tagList).toHaveLength(numResults);
    });

    it('GET start of tag is set by `last` query parameter', async () => {
      const numResults = Math.floor(numTags / 2);
      const first = await send({
        method: 'GET',
        path: '/v2/<name>/tags/list',
        query: { n: String(numResults) },
      });
      tagList = await getTagList(first);
      const res = await send({
        method: 'GET',
        path: '/v2/<name>/tags/list',
        query: { n: String(numResults), last: tagList[numResults - 1]! },
      });
      expect(res.status).toBe(200);
      expect(tagList.length).toBeLessThanOrEqual(numResults);
      expect(tagList).toContain(tagList[numResults - 1]);
      // The suite stops there; the page after `last` must also start after it.
      const next = await getTagList(res);
      expect(next).toHaveLength(numResults);
      expect(next.every((t) => t > tagList[numResults - 1]!)).toBe(true);
    });
  });

  describe('Test content discovery endpoints (listing references)', () => {
    interface IndexDoc {
      manifests: Array<{ digest: string; annotations?: Record<string, string> }>;
    }

    it('GET request to nonexistent blob should result in empty 200 response', async () => {
      const res = await send({ method: 'GET', path: `/v2/<name>/referrers/${dummyDigest}` });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe(OCI_INDEX);
      const index = (await res.json()) as IndexDoc;
      expect(index.manifests).toHaveLength(0);
    });

    it('GET request to existing blob should yield 200', async () => {
      const res = await send({ method: 'GET', path: `/v2/<name>/referrers/${manifests[4]!.digest}` });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe(OCI_INDEX);
      const index = (await res.json()) as IndexDoc;
      expect(index.manifests).toHaveLength(5);
      expect(index.manifests[0]!.digest).not.toBe(index.manifests[1]!.digest);
      for (const m of index.manifests) {
        expect(Object.keys(m.annotations ?? {})).toHaveLength(1);
        expect(m.annotations![TEST_ANNOTATION_KEY]).toBe(testAnnotationValues[m.digest]);
      }
    });

    it('GET request to existing blob with filter should yield 200', async () => {
      const res = await send({
        method: 'GET',
        path: `/v2/<name>/referrers/${manifests[4]!.digest}`,
        query: { artifactType: testRefArtifactTypeA },
      });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe(OCI_INDEX);
      const index = (await res.json()) as IndexDoc;
      // The suite accepts an unfiltered answer with a warning; this registry filters, so it is held to that.
      expect(res.headers.get('oci-filters-applied')).toBe(ARTIFACT_TYPE_FILTER);
      expect(index.manifests).toHaveLength(2);
      for (const m of index.manifests) {
        expect(Object.keys(m.annotations ?? {})).toHaveLength(1);
        expect(m.annotations![TEST_ANNOTATION_KEY]).toBe(testAnnotationValues[m.digest]);
      }
    });

    it('GET request to missing manifest should yield 200', async () => {
      const res = await send({ method: 'GET', path: `/v2/<name>/referrers/${manifests[3]!.digest}` });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe(OCI_INDEX);
      const index = (await res.json()) as IndexDoc;
      expect(index.manifests).toHaveLength(1);
      expect(index.manifests[0]!.digest).toBe(refsManifestCLayerArtifact.digest);
    });
  });

  describe('Teardown', () => {
    it('Delete created manifest & associated tags', async () => {
      const references = [
        refsIndexArtifact.digest,
        manifests[2]!.digest,
        manifests[4]!.digest,
        refsManifestAConfigArtifact.digest,
        refsManifestALayerArtifact.digest,
        TEST_TAG_NAME,
        refsManifestBConfigArtifact.digest,
        refsManifestBLayerArtifact.digest,
        refsManifestCLayerArtifact.digest,
      ];
      for (const ref of references) await expectTeardownDelete(del('manifests', ref), [404, 405]);
    });

    it('Delete config blob created in tests', async () => {
      await expectTeardownDelete(del('blobs', configs[2]!.digest), [405]);
    });

    it('Delete layer blob created in setup', async () => {
      await expectTeardownDelete(del('blobs', layerBlobDigest), [405]);
    });

    it('References teardown', async () => {
      for (const ref of [
        refsIndexArtifact.digest,
        refsManifestAConfigArtifact.digest,
        refsManifestALayerArtifact.digest,
        manifests[4]!.digest,
        refsManifestBConfigArtifact.digest,
        refsManifestBLayerArtifact.digest,
      ])
        await expectTeardownDelete(del('manifests', ref), [404, 405]);
      for (const blob of [
        configs[4]!.digest,
        testRefBlobA.digest,
        testRefBlobB.digest,
        emptyJSONDescriptor.digest,
      ])
        await expectTeardownDelete(del('blobs', blob), [404, 405]);
    });
  });
});

// ---- 04_management_test.go ----

describe('OCI conformance: Content Management', () => {
  const defaultTagName = TEST_TAG_NAME;
  let tagToDelete = '';
  let numTags = 0;
  let blobDeleteAllowed = true;

  async function countTags(): Promise<number> {
    const res = await send({ method: 'GET', path: '/v2/<name>/tags/list' });
    expect(res.status).toBe(200);
    return ((await res.json()) as { tags: string[] }).tags.length;
  }

  describe('Setup', () => {
    it('Populate registry with test config blob', async () => {
      await populateBlob(configs[3]!.content, configs[3]!.digest, configs[3]!.contentLength);
    });

    it('Populate registry with test layer', async () => {
      await populateBlob(layerBlobData, layerBlobDigest, layerBlobContentLength);
    });

    it('Populate registry with test tag', async () => {
      tagToDelete = defaultTagName;
      const res = await putManifestRef(tagToDelete, manifests[3]!.content);
      expect(is2xx(res.status)).toBe(true);
    });

    it('Check how many tags there are before anything gets deleted', async () => {
      numTags = await countTags();
    });
  });

  describe('Manifest delete', () => {
    it('DELETE request to manifest tag should return 202, unless tag deletion is disallowed (400/405)', async () => {
      const res = await del('manifests', tagToDelete);
      expect([400, 202, 405]).toContain(res.status);
      if (res.status === 400) expect(await firstErrorCode(res)).toBe('UNSUPPORTED');
    });

    it('DELETE request to manifest (digest) should yield 202 response unless already deleted', async () => {
      const res = await del('manifests', manifests[3]!.digest);
      expect([202, 404]).toContain(res.status);
    });

    it('GET request to deleted manifest URL should yield 404 response, unless delete is disallowed', async () => {
      const res = await send({ method: 'GET', path: `/v2/<name>/manifests/${manifests[3]!.digest}` });
      expect([404, 200]).toContain(res.status);
    });

    it('GET request to tags list should reflect manifest deletion', async () => {
      expect(await countTags()).toBeLessThan(numTags);
    });
  });

  describe('Blob delete', () => {
    it('DELETE request to blob URL should yield 202 response', async () => {
      const config = await del('blobs', configs[3]!.digest);
      expect([202, 404, 405]).toContain(config.status);
      const layer = await del('blobs', layerBlobDigest);
      expect([202, 404, 405]).toContain(layer.status);
      if (layer.status === 405) blobDeleteAllowed = false;
    });

    it('GET request to deleted blob URL should yield 404 response', async () => {
      expect(blobDeleteAllowed).toBe(true);
      const res = await send({ method: 'GET', path: `/v2/<name>/blobs/${configs[3]!.digest}` });
      expect(res.status).toBe(404);
    });
  });
});
