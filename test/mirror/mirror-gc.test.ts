/**
 * The mirror's cache is a gc root: `strata gc` on the shared store (every blob older than the grace period) keeps
 * what the mirror cached, so a warm pull still works with the upstream stopped; markers of older versions
 * (`strata/mirror/lru/`) become roots at start.
 */
import { createHash } from 'node:crypto';
import { mkdir, readdir, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestHex, type Digest } from '../../src/engine/oci/digest.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { RootSet } from '../../src/engine/store/roots.js';
import type { MirrorServer } from '../../src/mirror/index.js';
import { runCli } from '../support/cli.js';
import type { DockerRegistry } from '../support/docker-registry.js';
import { pushRandomImage, startHub, type Hub, type PushedImage } from './mirror-support.js';

let hub: Hub;
let upstream: DockerRegistry;
let mirror: MirrorServer | undefined;
let store: FsStore;
let img: PushedImage;

beforeAll(async () => {
  hub = await startHub('strata-mirror-gc-', async (upstream) => {
    img = await pushRandomImage(upstream.host, 'team/kept', 'v1', 512 * 1024);
  });
  ({ upstream, store } = hub);
}, 60_000);

afterAll(() => hub?.stop(mirror));

/** Pulls the image through the mirror: manifest by tag, then config and layer; returns the blob digests seen. */
async function pull(m: MirrorServer): Promise<{ manifest: string; blobs: string[] }> {
  const res = await fetch(`${m.url}/v2/team/kept/manifests/v1`, {
    headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
  });
  expect(res.status).toBe(200);
  const bytes = Buffer.from(await res.arrayBuffer());
  const doc = JSON.parse(bytes.toString('utf8')) as {
    config: { digest: string };
    layers: { digest: string }[];
  };
  const blobs: string[] = [];
  for (const d of [doc.config, ...doc.layers]) {
    const b = await fetch(`${m.url}/v2/team/kept/blobs/${d.digest}`);
    expect(b.status, d.digest).toBe(200);
    blobs.push(
      `sha256:${createHash('sha256')
        .update(Buffer.from(await b.arrayBuffer()))
        .digest('hex')}`,
    );
  }
  for (let n = 0; n < 250 && m.backend.fills.inFlight > 0; n++) await new Promise((r) => setTimeout(r, 20));
  return { manifest: `sha256:${createHash('sha256').update(bytes).digest('hex')}`, blobs };
}

/** Makes every blob look 3 h old: past gc's grace period, so only roots keep them. */
async function ageBlobs(): Promise<void> {
  const old = new Date(Date.now() - 3 * 60 * 60 * 1000);
  const dir = join(store.root, 'blobs', 'sha256');
  for (const name of await readdir(dir)) await utimes(join(dir, name), old, old);
}

describe('mirror: the cache survives gc', () => {
  it('strata gc on the shared store keeps cached content; a warm pull works with the upstream stopped', async () => {
    // A marker left by an older version, for a blob it cached: it must become a root too.
    const legacy = (await store.putBytes(Buffer.from('cached by an older mirror'))).digest;
    const legacyDir = join(store.root, 'strata', 'mirror', 'lru', 'sha256');
    await mkdir(legacyDir, { recursive: true });
    await writeFile(join(legacyDir, digestHex(legacy)), '');
    const loose = (await store.putBytes(Buffer.from('an unreferenced blob nobody keeps'))).digest;

    mirror = await hub.startMirror();
    const cold = await pull(mirror);
    expect(cold.manifest).toBe(img.manifest.digest);
    expect(cold.blobs).toContain(img.layer.digest);
    await mirror.close();
    mirror = undefined;
    const roots = new Set((await new RootSet(store.root, 'mirror').list()).map((e) => e.digest));
    for (const d of [img.manifest.digest, ...cold.blobs, legacy])
      expect(roots.has(d as Digest), d).toBe(true);

    await ageBlobs();
    const gc = await runCli(['--store', store.root, 'gc']);
    expect(gc.code, gc.stderr).toBe(0);
    expect(await store.has(loose)).toBe(false); // gc did run past the grace period
    for (const d of [img.manifest.digest, ...cold.blobs, legacy])
      expect(await store.has(d as Digest), d).toBe(true);

    await upstream.stop();
    mirror = await hub.startMirror();
    const warm = await pull(mirror); // the tag is revalidated after a restart: served stale, then by digest
    expect(warm).toEqual(cold);
    const byDigest = await fetch(`${mirror.url}/v2/team/kept/manifests/${img.manifest.digest}`);
    expect(byDigest.status).toBe(200);
  }, 60_000);
});
