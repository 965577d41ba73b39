/**
 * The mirror against an upstream that needs credentials (docker-registry with htpasswd): credentials from a docker
 * config file, re-read when it changes; tags revalidated after the TTL; stale answers on 5xx and 429; an index
 * stored whole with platform manifests fetched on demand; referrers through the OCI tag fallback.
 */
import { createHash } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestOf, type Digest } from '../../src/engine/oci/digest.js';
import { MediaType } from '../../src/engine/oci/media-types.js';
import type { Descriptor } from '../../src/engine/oci/types.js';
import { RegistryClient, StaticCredentials } from '../../src/engine/registry/index.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { startMirrorServer, type MirrorServer } from '../../src/mirror/index.js';
import { startDockerRegistry, type DockerRegistry } from '../support/docker-registry.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { tempDir } from '../support/images.js';

const USER = { username: 'mirror', password: 's3cret-pass' };

let upstream: DockerRegistry;
let faulty: FaultProxy;
let mirror: MirrorServer;
let store: FsStore;
let work: string;
let creds: string;
let client: RegistryClient;
let clock = Date.now();

async function writeCreds(password: string): Promise<void> {
  const auth = Buffer.from(`${USER.username}:${password}`).toString('base64');
  await writeFile(creds, JSON.stringify({ auths: { [upstream.host]: { auth }, [faulty.host]: { auth } } }));
}

/** Pushes bytes as a blob and returns their descriptor. */
async function blob(repository: string, bytes: Buffer, mediaType: string): Promise<Descriptor> {
  const d: Descriptor = { mediaType, digest: digestOf(bytes), size: bytes.length };
  await client.uploadBlob({ registry: upstream.host, repository }, d, async () => Readable.from([bytes]));
  return d;
}

/** Pushes a one-layer image manifest under `tag` (or by digest only); returns its descriptor. */
async function image(repository: string, tag: string | undefined, content: string): Promise<Descriptor> {
  const layer = await blob(repository, Buffer.from(content), MediaType.OciLayerGzip);
  const config = await blob(
    repository,
    Buffer.from(
      JSON.stringify({ os: 'linux', architecture: content, rootfs: { type: 'layers', diff_ids: [] } }),
    ),
    MediaType.OciConfig,
  );
  return manifest(repository, tag, {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config,
    layers: [layer],
  });
}

async function manifest(
  repository: string,
  tag: string | undefined,
  doc: { mediaType: string; [key: string]: unknown },
): Promise<Descriptor> {
  const bytes = Buffer.from(JSON.stringify(doc));
  const digest = digestOf(bytes);
  await client.putManifest(
    { registry: upstream.host, repository, ...(tag ? { tag } : { digest }) } as never,
    bytes,
    doc.mediaType,
  );
  return { mediaType: doc.mediaType, digest, size: bytes.length };
}

beforeAll(async () => {
  work = await tempDir('strata-mirror-upstream-');
  creds = join(work, 'config.json');
  upstream = await startDockerRegistry({ auth: USER });
  faulty = await startFaultProxy(upstream.url);
  client = new RegistryClient({
    credentials: new StaticCredentials({ [upstream.host]: USER }),
    retry: { retries: 0 },
  });
  await writeCreds('wrong-password');
  store = await FsStore.open(join(work, 'store'));
  mirror = await startMirrorServer({
    store,
    upstreams: [
      { name: 'docker.io', url: upstream.url, credentialsFile: creds },
      { name: 'quay.io', url: faulty.url, credentialsFile: creds },
    ],
    tagTtlMs: 60_000,
    now: () => clock,
  });
}, 60_000);

afterAll(async () => {
  await mirror?.close();
  await client?.close();
  await faulty?.stop();
  await upstream?.stop();
  await rm(work, { recursive: true, force: true });
});

const get = (path: string, init?: RequestInit): Promise<Response> => fetch(new URL(path, mirror.url), init);

describe('mirror: upstream credentials, revalidation, indexes, referrers', () => {
  it('uses the credentials file, re-reading it when it changes; never answers 401 itself', async () => {
    const d = await image('team/private', 'v1', 'private layer');
    const denied = await get('/v2/docker.io/team/private/manifests/v1');
    expect(denied.status).toBe(502); // the mirror's credentials are wrong: not the client's business
    expect(denied.headers.get('www-authenticate')).toBeNull();
    await writeCreds(USER.password);
    await new Promise((r) => setTimeout(r, 1100)); // the file is checked at most once a second
    const ok = await get('/v2/docker.io/team/private/manifests/v1');
    expect(ok.status).toBe(200);
    expect(ok.headers.get('docker-content-digest')).toBe(d.digest);
  }, 30_000);

  it('revalidates a tag after the TTL and follows it when it moved upstream', async () => {
    const first = await image('team/moving', 'latest', 'first');
    expect(
      (await get('/v2/docker.io/team/moving/manifests/latest')).headers.get('docker-content-digest'),
    ).toBe(first.digest);
    const second = await image('team/moving', 'latest', 'second');
    // Within the TTL the cached answer stands; after it, a HEAD upstream finds the new digest.
    expect(
      (await get('/v2/docker.io/team/moving/manifests/latest')).headers.get('docker-content-digest'),
    ).toBe(first.digest);
    clock += 61_000;
    expect(
      (await get('/v2/docker.io/team/moving/manifests/latest')).headers.get('docker-content-digest'),
    ).toBe(second.digest);
    // The first one stays cached by digest for good.
    expect((await get(`/v2/docker.io/team/moving/manifests/${first.digest}`)).status).toBe(200);
  }, 30_000);

  it('serves a cached tag stale (Warning) when the upstream answers 503 or 429, and 502/429 when not cached', async () => {
    const d = await image('team/flaky', 'v1', 'flaky');
    expect((await get('/v2/quay.io/team/flaky/manifests/v1')).status).toBe(200);
    for (const status of [503, 429]) {
      faulty.reset();
      faulty.addRule({
        path: /\/manifests\//,
        fault: { kind: 'status', status, headers: { 'retry-after': '0' } },
      });
      clock += 61_000;
      const res = await get('/v2/quay.io/team/flaky/manifests/v1');
      expect(res.status, String(status)).toBe(200);
      expect(res.headers.get('docker-content-digest')).toBe(d.digest);
      expect(res.headers.get('warning')).toMatch(/^110 /);
      const cold = await get('/v2/quay.io/team/flaky/manifests/never-cached');
      expect(cold.status).toBe(status === 429 ? 429 : 502);
    }
    faulty.reset();
  }, 30_000);

  it('stores an index whole and fetches each platform manifest on demand', async () => {
    const amd = await image('team/multi', undefined, 'amd64');
    const arm = await image('team/multi', undefined, 'arm64');
    const index = await manifest('team/multi', 'v1', {
      mediaType: MediaType.OciIndex,
      schemaVersion: 2,
      manifests: [
        { ...amd, platform: { os: 'linux', architecture: 'amd64' } },
        { ...arm, platform: { os: 'linux', architecture: 'arm64' } },
      ],
    } as never);
    const res = await get('/v2/docker.io/team/multi/manifests/v1');
    expect(res.headers.get('content-type')).toBe(MediaType.OciIndex);
    const bytes = Buffer.from(await res.arrayBuffer());
    expect(`sha256:${createHash('sha256').update(bytes).digest('hex')}`).toBe(index.digest);
    expect(await store.has(index.digest)).toBe(true);
    expect(await store.has(amd.digest)).toBe(false); // not fetched until asked for
    expect(await store.has(arm.digest)).toBe(false);
    const child = await get(`/v2/docker.io/team/multi/manifests/${arm.digest}`);
    expect(child.status).toBe(200);
    expect(child.headers.get('content-type')).toBe(MediaType.OciManifest);
    expect(await store.has(arm.digest)).toBe(true);
    // Its blobs are now known to the repository: served without asking the upstream whether they exist.
    const doc = JSON.parse(Buffer.from(await child.arrayBuffer()).toString('utf8')) as {
      layers: Descriptor[];
    };
    const layer = await get(`/v2/docker.io/team/multi/blobs/${doc.layers[0]!.digest}`);
    expect(Buffer.from(await layer.arrayBuffer()).toString()).toBe('arm64');
  }, 30_000);

  it('lists referrers through the OCI tag fallback of an upstream without the Referrers API', async () => {
    const subject = await image('team/signed', 'v1', 'signed');
    const sig = await manifest('team/signed', undefined, {
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      artifactType: 'application/vnd.example.signature',
      config: await blob('team/signed', Buffer.from('{}'), 'application/vnd.oci.empty.v1+json'),
      layers: [await blob('team/signed', Buffer.from('sig'), 'application/octet-stream')],
      subject,
    } as never);
    await manifest('team/signed', (subject.digest as Digest).replace(':', '-'), {
      schemaVersion: 2,
      mediaType: MediaType.OciIndex,
      manifests: [{ ...sig, artifactType: 'application/vnd.example.signature' }],
    } as never);
    const res = await get(`/v2/docker.io/team/signed/referrers/${subject.digest}`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { manifests: Descriptor[] };
    expect(body.manifests.map((m) => m.digest)).toEqual([sig.digest]);
    const filtered = (await (
      await get(`/v2/docker.io/team/signed/referrers/${subject.digest}?artifactType=application/other`)
    ).json()) as { manifests: Descriptor[] };
    expect(filtered.manifests).toEqual([]);
    const none = (await (await get(`/v2/docker.io/team/signed/referrers/${sig.digest}`)).json()) as {
      manifests: Descriptor[];
    };
    expect(none.manifests).toEqual([]);
  }, 30_000);
});
