import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryError } from '../../src/engine/errors.js';
import { parseReference } from '../../src/engine/oci/index.js';
import { RegistryClient, StaticCredentials } from '../../src/engine/registry/index.js';
import { startDockerRegistry, type DockerRegistry } from '../support/docker-registry.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { startTokenProxy, type TokenProxy } from '../support/token-proxy.js';
import { makeImage, pushImage, readAll, recordingSleep, rejectionOf, type TestImage } from './helpers.js';

const USER = 'strata';
const PASS = 's3cret-Pa55';
const CHUNK = 64 * 1024;

let basicRegistry: DockerRegistry;
let basicProxy: FaultProxy;
let plainRegistry: DockerRegistry;
let image: TestImage;
const stops: (() => Promise<void>)[] = [];

beforeAll(async () => {
  [basicRegistry, plainRegistry] = await Promise.all([
    startDockerRegistry({ auth: { username: USER, password: PASS } }),
    startDockerRegistry(),
  ]);
  basicProxy = await startFaultProxy(basicRegistry.url);
  image = makeImage([1500, 200 * 1024]);
});

afterAll(async () => {
  for (const s of stops.reverse()) await s();
  await basicProxy?.stop();
  await Promise.all([basicRegistry?.stop(), plainRegistry?.stop()]);
});

function newClient(
  creds?: Record<string, { username: string; password: string }>,
  extra: ConstructorParameters<typeof RegistryClient>[0] = {},
): RegistryClient {
  const c = new RegistryClient({
    chunkSize: CHUNK,
    sleep: recordingSleep().sleep,
    ...(creds ? { credentials: new StaticCredentials(creds) } : {}),
    ...extra,
  });
  stops.push(() => c.close());
  return c;
}

describe('Basic auth (htpasswd registry)', () => {
  it('pushes and pulls with the right credentials', async () => {
    const c = newClient({ [basicRegistry.host]: { username: USER, password: PASS } });
    await c.ping(basicRegistry.host);
    const repo = { registry: basicRegistry.host, repository: 'private/app' };
    const digest = await pushImage(c, repo, image, 'v1');
    expect(digest).toBe(image.manifestDigest);
    const doc = await c.getManifest({ ...repo, tag: 'v1' });
    expect(doc.bytes.equals(image.manifest)).toBe(true);
    expect(
      (await readAll(await c.openBlob(repo, image.layers[1]!.desc))).equals(image.layers[1]!.bytes),
    ).toBe(true);
  });

  it('fails with UNAUTHORIZED on a wrong password, quickly and without leaking it', async () => {
    basicProxy.reset();
    const c = newClient({ [basicProxy.host]: { username: USER, password: 'wrong-password' } });
    const err = await rejectionOf(c.getManifest(parseReference(`${basicProxy.host}/private/app:v1`)));
    expect(err).toBeInstanceOf(RegistryError);
    expect((err as RegistryError).code).toBe('UNAUTHORIZED');
    expect((err as RegistryError).retryable).toBe(false);
    expect(err.message).not.toContain('wrong-password');
    expect(JSON.stringify((err as RegistryError).detail)).not.toContain('wrong-password');
    // One anonymous attempt, one with the credentials: no retry loop.
    expect(basicProxy.requests).toHaveLength(2);
  });

  it('fails with UNAUTHORIZED without credentials', async () => {
    const c = newClient();
    const err = await rejectionOf(c.ping(basicRegistry.host));
    expect((err as RegistryError).code).toBe('UNAUTHORIZED');
  });

  it('follows a blob redirect to another host without sending Authorization there', async () => {
    const layer = image.layers[1]!;
    const seen: (string | undefined)[] = [];
    const storage = createServer((req, res) => {
      seen.push(req.headers.authorization);
      res.writeHead(200, { 'content-length': String(layer.bytes.length) });
      res.end(layer.bytes);
    });
    await new Promise<void>((r) => storage.listen(0, '127.0.0.1', r));
    stops.push(() => new Promise((r) => storage.close(() => r())));
    const storageUrl = `http://localhost:${(storage.address() as AddressInfo).port}/bucket/blob?sig=abc`;
    basicProxy.reset();
    basicProxy.addRule({
      method: 'GET',
      path: /\/blobs\/sha256:/,
      fault: { kind: 'status', status: 307, headers: { location: storageUrl }, body: '' },
    });
    const c = newClient({ [basicProxy.host]: { username: USER, password: PASS } });
    const repo = { registry: basicProxy.host, repository: 'private/app' };
    await c.ping(basicProxy.host); // learns the Basic challenge: the blob GET then carries Authorization
    const got = await readAll(await c.openBlob(repo, layer.desc));
    expect(got.equals(layer.bytes)).toBe(true);
    expect(seen).toEqual([undefined]);
  });
});

describe('Bearer token flow (token proxy)', () => {
  let proxy: TokenProxy;
  beforeAll(async () => {
    proxy = await startTokenProxy({
      upstream: plainRegistry.url,
      credentials: { username: USER, password: PASS },
    });
    stops.push(() => proxy.stop());
  });

  it('pushes and pulls with tokens, requesting pull,push then pull, and caches tokens', async () => {
    const c = newClient({ [proxy.host]: { username: USER, password: PASS } });
    const repo = { registry: proxy.host, repository: 'team/app' };
    await pushImage(c, repo, image, 'v1');
    const pushTokens = proxy.tokenRequests.filter((t) => t.scopes.includes('repository:team/app:pull,push'));
    expect(pushTokens).toHaveLength(1);
    expect(pushTokens[0]!.withCredentials).toBe(true);
    expect(pushTokens[0]!.service).toBe('strata-token-proxy');

    const before = proxy.tokenRequests.length;
    const ref = parseReference(`${proxy.host}/team/app:v1`);
    for (let i = 0; i < 3; i++) {
      const doc = await c.getManifest(ref);
      expect(doc.digest).toBe(image.manifestDigest);
    }
    expect(
      (await readAll(await c.openBlob(repo, image.layers[0]!.desc))).equals(image.layers[0]!.bytes),
    ).toBe(true);
    // The pull token was fetched once (for the blob HEADs of the push) and served every pull since.
    expect(proxy.tokenRequests.slice(before)).toHaveLength(0);
    const pullTokens = proxy.tokenRequests.filter((t) => t.scopes.join(' ') === 'repository:team/app:pull');
    expect(pullTokens).toHaveLength(1);
    expect(proxy.requests.filter((r) => r.status === 401 && r.hadToken)).toHaveLength(0);
  });

  it('fetches one token for many concurrent first requests', async () => {
    const c = newClient({ [proxy.host]: { username: USER, password: PASS } });
    const before = proxy.tokenRequests.length;
    const ref = parseReference(`${proxy.host}/team/app:v1`);
    const docs = await Promise.all(Array.from({ length: 6 }, () => c.getManifest(ref)));
    expect(new Set(docs.map((d) => d.digest))).toEqual(new Set([image.manifestDigest]));
    expect(proxy.tokenRequests.length - before).toBe(1);
  });

  it('asks for pull on the source repository when mounting', async () => {
    const c = newClient({ [proxy.host]: { username: USER, password: PASS } });
    const from = { registry: proxy.host, repository: 'team/app' };
    const repo = { registry: proxy.host, repository: 'team/copy' };
    const layer = image.layers[1]!;
    await c.ping(proxy.host);
    expect(await c.mountBlob(repo, layer.desc, from)).toBe(true);
    const mountToken = proxy.tokenRequests.at(-1)!;
    expect([...mountToken.scopes].sort()).toEqual([
      'repository:team/app:pull',
      'repository:team/copy:pull,push',
    ]);
    expect(await c.blobExists(repo, layer.desc.digest)).toEqual({ size: layer.desc.size });
  });

  it('refetches a token once when a cached token is refused', async () => {
    const c = newClient({ [proxy.host]: { username: USER, password: PASS } });
    const ref = parseReference(`${proxy.host}/team/app:v1`);
    await c.getManifest(ref);
    const before = proxy.tokenRequests.length;
    proxy.revokeAll();
    const doc = await c.getManifest(ref);
    expect(doc.digest).toBe(image.manifestDigest);
    expect(proxy.tokenRequests.length - before).toBe(1);
  });

  it('fetches a new token once the cached one is about to expire', async () => {
    let now = 1_000_000;
    const c = newClient({ [proxy.host]: { username: USER, password: PASS } }, { now: () => now });
    const ref = parseReference(`${proxy.host}/team/app:v1`);
    await c.getManifest(ref);
    const before = proxy.tokenRequests.length;
    now += 60_000;
    await c.getManifest(ref);
    expect(proxy.tokenRequests.length).toBe(before);
    now += 300_000;
    await c.getManifest(ref);
    expect(proxy.tokenRequests.length).toBe(before + 1);
  });

  it('fails with UNAUTHORIZED when the realm refuses the credentials', async () => {
    const c = newClient({ [proxy.host]: { username: USER, password: 'nope' } });
    const err = await rejectionOf(c.getManifest(parseReference(`${proxy.host}/team/app:v1`)));
    expect((err as RegistryError).code).toBe('UNAUTHORIZED');
    expect(err.message).not.toContain('nope');
  });

  it('treats fewer granted actions as no error until the registry refuses', async () => {
    const limited = await startTokenProxy({
      upstream: plainRegistry.url,
      grant: () => ['pull'],
      accessTokenOnly: true,
    });
    stops.push(() => limited.stop());
    const c = newClient();
    const repo = { registry: limited.host, repository: 'team/app' };
    const doc = await c.getManifest({ ...repo, tag: 'v1' });
    expect(doc.digest).toBe(image.manifestDigest);
    const err = await rejectionOf(c.putManifest({ ...repo, tag: 'v2' }, image.manifest, image.mediaType));
    expect((err as RegistryError).code).toBe('UNAUTHORIZED');
    expect(
      limited.tokenRequests.filter((t) => t.scopes.includes('repository:team/app:pull,push')).length,
    ).toBeLessThanOrEqual(2);
  });

  it('uploads chunked through the token proxy', async () => {
    const c = newClient({ [proxy.host]: { username: USER, password: PASS } });
    const big = makeImage([3 * CHUNK]);
    await pushImage(c, { registry: proxy.host, repository: 'team/big' }, big, 'v1');
    const plain = newClient();
    const doc = await plain.getManifest(parseReference(`${plainRegistry.host}/team/big:v1`));
    expect(doc.digest).toBe(big.manifestDigest);
    expect(
      proxy.requests.filter((r) => r.method === 'PATCH' && r.status === 202).length,
    ).toBeGreaterThanOrEqual(3);
  });
});
