import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryError, StrataError, VerificationError } from '../../src/engine/errors.js';
import { digestOf, MediaType, parseReference, type Digest } from '../../src/engine/oci/index.js';
import { RegistryClient } from '../../src/engine/registry/index.js';
import { startDockerRegistry, type DockerRegistry } from '../support/docker-registry.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import {
  gzipLayer,
  makeImage,
  opener,
  pushImage,
  readAll,
  recordingSleep,
  rejectionOf,
  type TestImage,
} from './helpers.js';

const CHUNK = 64 * 1024;

let registry: DockerRegistry;
let proxy: FaultProxy;
let client: RegistryClient;
let image: TestImage;
const closers: (() => Promise<void>)[] = [];

beforeAll(async () => {
  registry = await startDockerRegistry();
  proxy = await startFaultProxy(registry.url);
  client = new RegistryClient({ chunkSize: CHUNK, retry: { baseDelayMs: 1, maxDelayMs: 5 } });
  image = makeImage([2048, 300 * 1024]);
  await pushImage(client, { registry: registry.host, repository: 'base/app' }, image, 'v1');
});

afterAll(async () => {
  await client?.close();
  for (const c of closers) await c();
  await proxy?.stop();
  await registry?.stop();
});

describe('RegistryClient against docker-registry', () => {
  it('pings', async () => {
    await expect(client.ping(registry.host)).resolves.toBeUndefined();
  });

  it('pulls the pushed image by tag and by digest, byte for byte', async () => {
    const byTag = await client.getManifest(parseReference(`${registry.host}/base/app:v1`));
    expect(byTag.kind).toBe('manifest');
    expect(byTag.digest).toBe(image.manifestDigest);
    expect(byTag.mediaType).toBe(MediaType.OciManifest);
    expect(byTag.bytes.equals(image.manifest)).toBe(true);

    const byDigest = await client.getManifest(
      parseReference(`${registry.host}/base/app@${image.manifestDigest}`),
    );
    expect(byDigest.digest).toBe(image.manifestDigest);
    expect(byDigest.bytes.equals(image.manifest)).toBe(true);

    const head = await client.headManifest(parseReference(`${registry.host}/base/app:v1`));
    expect(head).toEqual({
      mediaType: MediaType.OciManifest,
      digest: image.manifestDigest,
      size: image.manifest.length,
    });
    expect(await client.headManifest(parseReference(`${registry.host}/base/app:nope`))).toBeUndefined();
  });

  it('reports blobs and streams them back verified', async () => {
    const repo = { registry: registry.host, repository: 'base/app' };
    for (const blob of [image.config, ...image.layers]) {
      expect(await client.blobExists(repo, blob.desc.digest)).toEqual({ size: blob.desc.size });
      const got = await readAll(await client.openBlob(repo, blob.desc));
      expect(got.equals(blob.bytes)).toBe(true);
    }
    expect(await client.blobExists(repo, digestOf('absent'))).toBeUndefined();
    const err = await rejectionOf(
      client.openBlob(repo, { mediaType: MediaType.OciLayerGzip, digest: digestOf('absent'), size: 6 }),
    );
    expect(err).toBeInstanceOf(RegistryError);
    expect((err as RegistryError).code).toBe('BLOB_UNKNOWN');
  });

  it('uploads a large blob in chunks (content verified by the registry)', async () => {
    const repo = { registry: registry.host, repository: 'chunked/one' };
    const layer = gzipLayer('big.bin', 5 * CHUNK + 123);
    const progress: number[] = [];
    await client.uploadBlob(repo, layer.desc, opener(layer.bytes), { onProgress: (n) => progress.push(n) });
    const empty = { mediaType: 'application/octet-stream', digest: digestOf(''), size: 0 };
    await client.uploadBlob(repo, empty, opener(Buffer.alloc(0)));
    expect(await client.blobExists(repo, empty.digest)).toEqual({ size: 0 });
    expect((await readAll(await client.openBlob(repo, empty))).length).toBe(0);
    expect(await client.blobExists(repo, layer.desc.digest)).toEqual({ size: layer.desc.size });
    expect(progress.at(-1)).toBe(layer.desc.size);
    const got = await readAll(await client.openBlob(repo, layer.desc));
    expect(got.equals(layer.bytes)).toBe(true);
  });

  it('mounts a blob across repositories, and answers false when the source lacks it', async () => {
    const repo = { registry: registry.host, repository: 'other/app' };
    const from = { registry: registry.host, repository: 'base/app' };
    const layer = image.layers[1]!;
    expect(await client.blobExists(repo, layer.desc.digest)).toBeUndefined();
    expect(await client.mountBlob(repo, layer.desc, from)).toBe(true);
    expect(await client.blobExists(repo, layer.desc.digest)).toEqual({ size: layer.desc.size });

    const stray = gzipLayer('stray.bin', 100);
    expect(await client.mountBlob(repo, stray.desc, from)).toBe(false);
    await client.uploadBlob(repo, stray.desc, opener(stray.bytes));
    expect(await client.blobExists(repo, stray.desc.digest)).toEqual({ size: stray.desc.size });
  });

  it('lists tags following Link pagination', async () => {
    const repo = { registry: registry.host, repository: 'base/app' };
    for (const tag of ['v2', 'v3', 'v4', 'latest']) {
      await client.putManifest({ ...repo, tag }, image.manifest, image.mediaType);
    }
    const tags = await client.listTags(repo, { pageSize: 2 });
    expect([...tags].sort()).toEqual(['latest', 'v1', 'v2', 'v3', 'v4']);
    const err = await rejectionOf(client.listTags({ registry: registry.host, repository: 'no/such' }));
    expect((err as RegistryError).code).toBe('NAME_UNKNOWN');
  });

  it('answers MANIFEST_UNKNOWN naming the reference', async () => {
    const err = await rejectionOf(client.getManifest(parseReference(`${registry.host}/base/app:missing`)));
    expect(err).toBeInstanceOf(RegistryError);
    expect((err as RegistryError).code).toBe('MANIFEST_UNKNOWN');
    expect((err as RegistryError).status).toBe(404);
    expect((err as RegistryError).retryable).toBe(false);
    expect(err.message).toContain(`pull ${registry.host}/base/app:missing`);
    expect(err.message).toMatch(/MANIFEST_UNKNOWN, HTTP 404/);
  });

  it('pushes an index and reads it back as an index', async () => {
    const repo = { registry: registry.host, repository: 'base/app' };
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciIndex,
        manifests: [
          {
            mediaType: MediaType.OciManifest,
            digest: image.manifestDigest,
            size: image.manifest.length,
            platform: { os: 'linux', architecture: 'amd64' },
          },
        ],
      }),
    );
    const digest = await client.putManifest({ ...repo, tag: 'multi' }, index, MediaType.OciIndex);
    expect(digest).toBe(digestOf(index));
    const doc = await client.getManifest({ ...repo, tag: 'multi' });
    expect(doc.kind).toBe('index');
    expect(doc.bytes.equals(index)).toBe(true);
  });
});

describe('faults', () => {
  const repo = (): { registry: string; repository: string } => ({
    registry: proxy.host,
    repository: 'base/app',
  });
  const big = (): TestImage['layers'][number] => image.layers[1]!;

  it('retries a 500 twice then succeeds', async () => {
    proxy.reset();
    const rule = proxy.addRule({
      method: 'GET',
      path: /\/manifests\/v1$/,
      times: 2,
      fault: { kind: 'status', status: 500 },
    });
    const rec = recordingSleep();
    const c = new RegistryClient({ sleep: rec.sleep });
    closers.push(() => c.close());
    const doc = await c.getManifest(parseReference(`${proxy.host}/base/app:v1`));
    expect(doc.digest).toBe(image.manifestDigest);
    expect(rule.hits).toBe(2);
    expect(rec.delays).toHaveLength(2);
    expect(proxy.requests.filter((r) => r.path.endsWith('/manifests/v1'))).toHaveLength(3);
  });

  it('gives up after the bounded number of retries', async () => {
    proxy.reset();
    proxy.addRule({ method: 'GET', path: /\/manifests\/v1$/, fault: { kind: 'status', status: 503 } });
    const rec = recordingSleep();
    const c = new RegistryClient({ sleep: rec.sleep, retry: { retries: 3 } });
    closers.push(() => c.close());
    const err = await rejectionOf(c.getManifest(parseReference(`${proxy.host}/base/app:v1`)));
    expect((err as RegistryError).code).toBe('REGISTRY_ERROR');
    expect((err as RegistryError).status).toBe(503);
    expect(rec.delays).toHaveLength(3);
    expect(proxy.requests).toHaveLength(4);
  });

  it('honours Retry-After on 429', async () => {
    proxy.reset();
    proxy.addRule({
      method: 'GET',
      path: /\/manifests\/v1$/,
      times: 1,
      fault: {
        kind: 'status',
        status: 429,
        headers: { 'retry-after': '7' },
        body: '{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}',
      },
    });
    const rec = recordingSleep();
    const c = new RegistryClient({ sleep: rec.sleep });
    closers.push(() => c.close());
    const doc = await c.getManifest(parseReference(`${proxy.host}/base/app:v1`));
    expect(doc.digest).toBe(image.manifestDigest);
    expect(rec.delays).toEqual([7000]);
  });

  it('resumes a blob with Range after a connection reset mid-body', async () => {
    proxy.reset();
    const rule = proxy.addRule({
      method: 'GET',
      path: /\/blobs\/sha256:/,
      times: 1,
      fault: { kind: 'reset', afterBytes: 100_000 },
    });
    const rec = recordingSleep();
    const c = new RegistryClient({ sleep: rec.sleep });
    closers.push(() => c.close());
    const got = await readAll(await c.openBlob(repo(), big().desc));
    expect(got.equals(big().bytes)).toBe(true);
    expect(rule.hits).toBe(1);
    const blobGets = proxy.requests.filter((r) => r.path.includes('/blobs/'));
    expect(blobGets).toHaveLength(2);
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(blobGets[1]!.range ?? '')?.[1]);
    expect(resumedAt).toBeGreaterThan(0);
    expect(resumedAt).toBeLessThanOrEqual(100_000);
  });

  it('resumes when the server ignores Range and answers 200 (skipping what it already sent)', async () => {
    const blob = big().bytes;
    const ranges: (string | undefined)[] = [];
    const server = createServer((req, res) => {
      ranges.push(req.headers.range);
      res.writeHead(200, {
        'content-length': String(blob.length),
        'content-type': 'application/octet-stream',
      });
      if (ranges.length === 1) {
        res.write(blob.subarray(0, 50_000), () => res.socket?.destroySoon());
      } else {
        res.end(blob);
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    closers.push(
      () =>
        new Promise((r) => {
          server.closeAllConnections();
          server.close(() => r());
        }),
    );
    const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    const c = new RegistryClient({ sleep: recordingSleep().sleep });
    closers.push(() => c.close());
    const got = await readAll(await c.openBlob({ registry: host, repository: 'base/app' }, big().desc));
    expect(got.equals(blob)).toBe(true);
    expect(ranges).toHaveLength(2);
    expect(ranges[0]).toBeUndefined();
    expect(ranges[1]).toMatch(/^bytes=\d+-$/);
  });

  it('fails with DIGEST_MISMATCH naming repository and digest when the registry lies about content', async () => {
    proxy.reset();
    proxy.addRule({ method: 'GET', path: /\/blobs\/sha256:/, fault: { kind: 'corrupt', at: 1234 } });
    const c = new RegistryClient({ sleep: recordingSleep().sleep });
    closers.push(() => c.close());
    const err = await rejectionOf(readAll(await c.openBlob(repo(), big().desc)));
    expect(err).toBeInstanceOf(VerificationError);
    expect((err as VerificationError).code).toBe('DIGEST_MISMATCH');
    expect(err.message).toContain(`${proxy.host}/base/app@${big().desc.digest}`);
  });

  it('fails with SIZE_MISMATCH when the registry announces a wrong Content-Length', async () => {
    proxy.reset();
    proxy.addRule({ method: 'GET', path: /\/blobs\/sha256:/, fault: { kind: 'wrong-length', length: 1000 } });
    const c = new RegistryClient({ sleep: recordingSleep().sleep });
    closers.push(() => c.close());
    const err = await rejectionOf(c.openBlob(repo(), big().desc));
    expect(err).toBeInstanceOf(VerificationError);
    expect((err as VerificationError).code).toBe('SIZE_MISMATCH');
    expect(err.message).toContain(big().desc.digest);
  });

  it('errors (after bounded retries) when the body is always truncated', async () => {
    proxy.reset();
    proxy.addRule({ method: 'GET', path: /\/blobs\/sha256:/, fault: { kind: 'truncate', afterBytes: 0 } });
    const rec = recordingSleep();
    const c = new RegistryClient({ sleep: rec.sleep, retry: { retries: 2 } });
    closers.push(() => c.close());
    const stream = await c.openBlob(repo(), big().desc);
    const err = await rejectionOf(readAll(stream));
    expect(err).toBeInstanceOf(StrataError);
    expect((err as StrataError).code).toBe('NETWORK');
    expect(err.message).toContain(big().desc.digest);
    expect(rec.delays).toHaveLength(2);
  });

  it('recovers a truncated body once by resuming', async () => {
    proxy.reset();
    proxy.addRule({
      method: 'GET',
      path: /\/blobs\/sha256:/,
      times: 1,
      fault: { kind: 'truncate', afterBytes: 70_000 },
    });
    const c = new RegistryClient({ sleep: recordingSleep().sleep });
    closers.push(() => c.close());
    const got = await readAll(await c.openBlob(repo(), big().desc));
    expect(got.equals(big().bytes)).toBe(true);
  });

  it('resumes a chunked upload after a failed PATCH from the committed offset', async () => {
    proxy.reset();
    // The third PATCH (bytes from 2·CHUNK) fails twice: the upload resumes there, not from 0.
    const rule = proxy.addRule({
      method: 'PATCH',
      path: /\/blobs\/uploads\//,
      after: 2,
      times: 2,
      fault: { kind: 'status', status: 500 },
    });
    const offsets: number[] = [];
    const c = new RegistryClient({ chunkSize: CHUNK, sleep: recordingSleep().sleep });
    closers.push(() => c.close());
    const layer = gzipLayer('resume.bin', 4 * CHUNK);
    const target = { registry: proxy.host, repository: 'chunked/resume' };
    await c.uploadBlob(target, layer.desc, opener(layer.bytes, offsets));
    expect(rule.hits).toBe(2);
    expect(offsets).toEqual([0, 2 * CHUNK, 2 * CHUNK]);
    expect(proxy.requests.some((r) => r.method === 'GET' && r.path.includes('/blobs/uploads/'))).toBe(true);
    const got = await readAll(
      await client.openBlob({ registry: registry.host, repository: 'chunked/resume' }, layer.desc),
    );
    expect(got.equals(layer.bytes)).toBe(true);
  });

  it('restarts a chunked upload from 0 when the session is lost', async () => {
    proxy.reset();
    proxy.addRule({
      method: 'PATCH',
      path: /\/blobs\/uploads\//,
      after: 1,
      times: 1,
      fault: { kind: 'status', status: 502 },
    });
    const lost = proxy.addRule({
      method: 'GET',
      path: /\/blobs\/uploads\//,
      times: 1,
      fault: {
        kind: 'status',
        status: 404,
        body: '{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"blob upload unknown"}]}',
      },
    });
    const offsets: number[] = [];
    const c = new RegistryClient({ chunkSize: CHUNK, sleep: recordingSleep().sleep });
    closers.push(() => c.close());
    const layer = gzipLayer('restart.bin', 3 * CHUNK);
    await c.uploadBlob(
      { registry: proxy.host, repository: 'chunked/restart' },
      layer.desc,
      opener(layer.bytes, offsets),
    );
    expect(lost.hits).toBe(1);
    expect(offsets).toEqual([0, 0]);
    expect(proxy.requests.filter((r) => r.method === 'POST')).toHaveLength(2);
    const got = await readAll(
      await client.openBlob({ registry: registry.host, repository: 'chunked/restart' }, layer.desc),
    );
    expect(got.equals(layer.bytes)).toBe(true);
  });

  it('refuses an oversize manifest (Content-Length and streamed)', async () => {
    const big5 = Buffer.alloc(5 * 1024 * 1024, 0x20);
    const server: Server = createServer((req, res) => {
      const chunked = req.url?.includes('chunked');
      res.writeHead(200, {
        'content-type': MediaType.OciManifest,
        ...(chunked ? {} : { 'content-length': String(big5.length) }),
      });
      res.on('error', () => undefined);
      async function* pieces(): AsyncGenerator<Buffer> {
        for (let i = 0; i < big5.length; i += 64 * 1024) yield big5.subarray(i, i + 64 * 1024);
      }
      Readable.from(pieces(), { objectMode: false }).pipe(res);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    closers.push(
      () =>
        new Promise((r) => {
          server.closeAllConnections();
          server.close(() => r());
        }),
    );
    const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    const c = new RegistryClient({ sleep: recordingSleep().sleep });
    closers.push(() => c.close());
    const e1 = await rejectionOf(c.getManifest(parseReference(`${host}/huge/app:cl`)));
    expect((e1 as StrataError).code).toBe('SIZE_LIMIT');
    expect(e1.message).toContain(`${host}/huge/app:cl`);
    const e2 = await rejectionOf(c.getManifest(parseReference(`${host}/huge/app:chunked`)));
    expect((e2 as StrataError).code).toBe('SIZE_LIMIT');
  });

  it('rejects a manifest whose content does not match the requested digest', async () => {
    const doc = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        config: image.config.desc,
        layers: [],
      }),
    );
    const server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': MediaType.OciManifest, 'content-length': String(doc.length) });
      res.end(doc);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    closers.push(() => new Promise((r) => server.close(() => r())));
    const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    const c = new RegistryClient();
    closers.push(() => c.close());
    const wanted: Digest = digestOf('something else');
    const err = await rejectionOf(c.getManifest(parseReference(`${host}/lie/app@${wanted}`)));
    expect((err as StrataError).code).toBe('DIGEST_MISMATCH');
  });

  it('aborts a pending retry sleep through the signal', async () => {
    proxy.reset();
    proxy.addRule({
      method: 'GET',
      path: /\/manifests\/v1$/,
      fault: { kind: 'status', status: 503, headers: { 'retry-after': '30' } },
    });
    const c = new RegistryClient();
    closers.push(() => c.close());
    const ac = new AbortController();
    const p = c.getManifest(parseReference(`${proxy.host}/base/app:v1`), { signal: ac.signal });
    setTimeout(() => ac.abort(), 100);
    const err = await rejectionOf(p);
    expect((err as StrataError).code).toBe('ABORTED');
  });
});
