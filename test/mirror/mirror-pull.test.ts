/**
 * `strata mirror serve` in front of a real distribution registry (Debian's docker-registry) standing in for Docker
 * Hub: skopeo and `strata pull` cold and warm with identical digests, routing (`?ns=`, path prefix, default
 * upstream, `library/`), the hosted registry beside the mirror, stale tags when the upstream is gone, hostile names.
 */
import { createHash } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { startMirrorServer, type MirrorServer } from '../../src/mirror/index.js';
import { runCli } from '../support/cli.js';
import type { DockerRegistry } from '../support/docker-registry.js';
import { makeImage } from '../support/images.js';
import {
  hubUpstream,
  pushRandomImage,
  skopeo,
  startHub,
  type Hub,
  type PushedImage,
} from './mirror-support.js';
import { rawErrorCode, rawRequest } from './support.js';

let hub: Hub;
let upstream: DockerRegistry;
let mirror: MirrorServer;
let work: string;
let store: FsStore;
let appDigest: string;
let big: PushedImage;
let clock = Date.now();

beforeAll(async () => {
  hub = await startHub('strata-mirror-pull-', async (upstream, work) => {
    // A real image (a tar layer `strata pull` can verify), pushed by skopeo to `library/app:v1` on the "hub".
    const src = await FsStore.open(join(work, 'src'));
    await makeImage(src, 'app:v1', { 'etc/hello': 'hello mirror\n', 'bin/tool': 4096 });
    await skopeo([
      'copy',
      '--dest-tls-verify=false',
      `oci:${src.root}:app:v1`,
      `docker://${upstream.host}/library/app:v1`,
    ]);
    appDigest = (
      JSON.parse(
        await skopeo(['inspect', '--tls-verify=false', `docker://${upstream.host}/library/app:v1`]),
      ) as {
        Digest: string;
      }
    ).Digest;
    big = await pushRandomImage(upstream.host, 'team/big', 'v1', 3 * 1024 * 1024);
  });
  ({ upstream, work, store } = hub);
  mirror = await hub.startMirror({ hosted: ['local'], tagTtlMs: 60_000, now: () => clock });
}, 60_000);

afterAll(() => hub?.stop(mirror));

const get = (path: string, init?: RequestInit): Promise<Response> => fetch(new URL(path, mirror.url), init);

async function errorCode(res: Response): Promise<string | undefined> {
  const body = (await res.json()) as { errors?: Array<{ code: string }> };
  return body.errors?.[0]?.code;
}

describe('mirror: pulls through the cache', () => {
  it('skopeo copies cold then warm through the mirror with the upstream digest', async () => {
    for (const pass of ['cold', 'warm']) {
      const out = join(work, `skopeo-${pass}`);
      await skopeo(['copy', '--src-tls-verify=false', `docker://${mirror.host}/app:v1`, `oci:${out}:app:v1`]);
      const inspected = JSON.parse(
        await skopeo(['inspect', '--tls-verify=false', `docker://${mirror.host}/app:v1`]),
      ) as { Digest: string };
      expect(inspected.Digest).toBe(appDigest);
      const index = JSON.parse((await import('node:fs')).readFileSync(join(out, 'index.json'), 'utf8')) as {
        manifests: Array<{ digest: string }>;
      };
      expect(index.manifests[0]!.digest).toBe(appDigest);
    }
    // Cached: the manifest and every blob it names are in the mirror's store.
    expect(await store.has(appDigest as never)).toBe(true);
  }, 60_000);

  it('strata pull through the mirror, cold (fresh tag) and warm, gets identical digests', async () => {
    const digests: string[] = [];
    for (const pass of ['a', 'b']) {
      const run = await runCli(['--json', 'pull', `${mirror.host}/docker.io/library/app:v1`], {
        STRATA_STORE: join(work, `pull-${pass}`),
      });
      expect(run.stderr + run.stdout).not.toMatch(/"type":"error"/);
      expect(run.code).toBe(0);
      const st = await FsStore.open(join(work, `pull-${pass}`));
      const refs = await st.listRefs();
      expect(refs).toHaveLength(1);
      digests.push(refs[0]!.descriptor.digest);
    }
    expect(digests).toEqual([appDigest, appDigest]);
  }, 60_000);

  it('routes by ?ns=, by path prefix and to the default upstream, adding library/ for one-word names', async () => {
    for (const path of [
      '/v2/app/manifests/v1',
      '/v2/library/app/manifests/v1?ns=docker.io',
      '/v2/app/manifests/v1?ns=docker.io',
      '/v2/docker.io/library/app/manifests/v1',
      '/v2/docker.io/app/manifests/v1',
    ]) {
      const res = await get(path, { method: 'HEAD' });
      expect(res.status, path).toBe(200);
      expect(res.headers.get('docker-content-digest'), path).toBe(appDigest);
    }
    const tags = (await (await get('/v2/docker.io/team/big/tags/list')).json()) as { tags: string[] };
    expect(tags).toEqual({ name: 'docker.io/team/big', tags: ['v1'] });
    expect((await get('/v2/docker.io/team/nothing/manifests/v1')).status).toBe(404);
  });

  it('serves blobs with ranges, cold and warm, byte-exact', async () => {
    const path = `/v2/team/big/blobs/${big.layer.digest}`;
    const cold = await get(path, { headers: { range: 'bytes=100-199' } });
    expect(cold.status).toBe(206);
    expect(Buffer.from(await cold.arrayBuffer())).toEqual(big.layerBytes.subarray(100, 200));
    const whole = Buffer.from(await (await get(path)).arrayBuffer());
    expect(createHash('sha256').update(whole).digest('hex')).toBe(big.layer.digest.slice(7));
    const head = await get(path, { method: 'HEAD' });
    expect(head.headers.get('content-length')).toBe(String(big.layer.size));
  });

  it('keeps the hosted registry under its prefix and refuses pushes to mirrored names', async () => {
    const src = join(work, 'skopeo-cold');
    await skopeo([
      'copy',
      '--dest-tls-verify=false',
      `oci:${src}:app:v1`,
      `docker://${mirror.host}/local/app:v2`,
    ]);
    const inspected = JSON.parse(
      await skopeo(['inspect', '--tls-verify=false', `docker://${mirror.host}/local/app:v2`]),
    ) as { Digest: string };
    expect(inspected.Digest).toBe(appDigest);
    const push = await get('/v2/docker.io/library/app/blobs/uploads/', { method: 'POST' });
    expect(push.status).toBe(405);
    expect(await errorCode(push)).toBe('UNSUPPORTED');
    const put = await get('/v2/app/manifests/v9', {
      method: 'PUT',
      headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
      body: '{}',
    });
    expect(put.status).toBe(405);
    expect((await get('/v2/app/manifests/v1', { method: 'DELETE' })).status).toBe(405);
  }, 60_000);

  it('rejects path traversal and bad digests without touching the upstream or the filesystem', async () => {
    for (const path of [
      '/v2/docker.io/..%2f..%2fetc/manifests/v1',
      '/v2/docker.io/library/%2e%2e/app/manifests/v1',
      '/v2/../app/manifests/v1?ns=docker.io',
      '/v2/a%2f..%2fb/blobs/sha256:' + 'a'.repeat(64),
      '/v2/docker.io/Library/App/manifests/v1',
    ]) {
      // Sent as is: fetch() would resolve the dot segments before they reach the server.
      const res = await rawRequest(mirror.url, { path });
      expect(res.status, path).toBe(400);
      expect(rawErrorCode(res), path).toBe('NAME_INVALID');
    }
    const bad = await rawRequest(mirror.url, { path: '/v2/app/blobs/sha256:..%2f..%2fetc%2fpasswd' });
    expect(bad.status).toBe(400);
    const badDigest = await get('/v2/app/blobs/sha256:xyz');
    expect(badDigest.status).toBe(400);
    expect(await errorCode(badDigest)).toBe('DIGEST_INVALID');
    const badRef = await get('/v2/app/manifests/sha256:nothex');
    expect(await errorCode(badRef)).toBe('DIGEST_INVALID');
  });

  it('serves a cached tag by tag (stale, with a Warning) and by digest once the upstream is gone', async () => {
    await upstream.stop();
    // Within the TTL: served as fresh, without asking the upstream.
    const fresh = await get('/v2/app/manifests/v1');
    expect(fresh.status).toBe(200);
    expect(fresh.headers.get('warning')).toBeNull();
    clock += 120_000; // past the TTL: revalidation fails, the cached tag is served stale
    const stale = await get('/v2/app/manifests/v1');
    expect(stale.status).toBe(200);
    expect(stale.headers.get('docker-content-digest')).toBe(appDigest);
    expect(stale.headers.get('warning')).toMatch(/^110 /);
    const byDigest = await get(`/v2/docker.io/library/app/manifests/${appDigest}`);
    expect(byDigest.status).toBe(200);
    expect(
      createHash('sha256')
        .update(Buffer.from(await byDigest.arrayBuffer()))
        .digest('hex'),
    ).toBe(appDigest.slice(7));
    // A warm pull works with the upstream down.
    const run = await runCli(['--json', 'pull', `${mirror.host}/app:v1`], {
      STRATA_STORE: join(work, 'pull-c'),
    });
    expect(run.code, run.stderr + run.stdout).toBe(0);
    // A mirror restarted on the same store while the upstream is down still serves the cached image's blobs,
    // even to a client that asks for a blob before any manifest (resuming a pull).
    const layer = (
      JSON.parse((await store.readBlob(appDigest as never)).toString('utf8')) as {
        layers: Array<{ digest: string }>;
      }
    ).layers[0]!.digest;
    const again = await startMirrorServer({
      store: await FsStore.open(store.root),
      ...hubUpstream(upstream.url),
    });
    try {
      const res = await fetch(`${again.url}/v2/app/blobs/${layer}`);
      expect(res.status).toBe(200);
      expect(
        createHash('sha256')
          .update(Buffer.from(await res.arrayBuffer()))
          .digest('hex'),
      ).toBe(layer.slice(7));
      // Not a blob of this repository's cached images: the upstream cannot confirm it, so it is not served.
      expect((await fetch(`${again.url}/v2/other/blobs/${layer}`)).status).toBe(502);
    } finally {
      await again.close();
    }
    // Never cached: a clean upstream error, not a hang or a 500.
    const missing = await get('/v2/docker.io/library/other/manifests/v1');
    expect(missing.status).toBe(502);
    // Nothing partial anywhere in the store's ingest directory.
    const ingest = await readdir(join(store.root, 'ingest')).catch(() => []);
    expect(ingest.filter((n) => !n.endsWith('.lock'))).toEqual([]);
  }, 60_000);
});
