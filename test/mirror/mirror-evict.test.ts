/**
 * The mirror's size limit: least-recently-used cached content is evicted, never a blob a client is reading, never
 * what a ref of the shared store reaches; evicted content is fetched again on demand.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FsStore } from '../../src/engine/store/fs-store.js';
import type { MirrorServer } from '../../src/mirror/index.js';
import { pushRandomImage, startHub, type Hub, type PushedImage } from './mirror-support.js';

const MiB = 1024 * 1024;
let hub: Hub;
let mirror: MirrorServer;
let store: FsStore;
let clock = Date.now();
const images: PushedImage[] = [];

beforeAll(async () => {
  hub = await startHub('strata-mirror-evict-', async (upstream) => {
    for (let i = 0; i < 5; i++) images.push(await pushRandomImage(upstream.host, `team/img${i}`, 'v1', MiB));
  });
  store = hub.store;
  mirror = await hub.startMirror({
    maxBytes: Math.floor(2.5 * MiB),
    evictIntervalMs: 3_600_000,
    now: () => clock,
  });
}, 60_000);

afterAll(() => hub?.stop(mirror));

async function pull(i: number): Promise<string> {
  clock += 120_000; // each pull a couple of minutes after the last: a clear LRU order
  const m = await fetch(`${mirror.url}/v2/team/img${i}/manifests/v1`);
  expect(m.status).toBe(200);
  const b = await fetch(`${mirror.url}/v2/team/img${i}/blobs/${images[i]!.layer.digest}`);
  const bytes = Buffer.from(await b.arrayBuffer());
  // The client has every byte before the fill has recorded the blob in the cache: wait for that too.
  for (let n = 0; n < 100 && mirror.backend.fills.inFlight > 0; n++)
    await new Promise((r) => setTimeout(r, 20));
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

describe('mirror: size limit', () => {
  it('evicts the least recently used content, keeping what is read and what a ref reaches', async () => {
    for (let i = 0; i < 3; i++) expect(await pull(i)).toBe(images[i]!.layer.digest);
    await mirror.backend.evictor!.evict();
    // 3 MiB of layers > 2.5 MiB: the oldest (img0) went, the newer two stayed.
    expect(await store.has(images[0]!.layer.digest)).toBe(false);
    expect(await store.has(images[1]!.layer.digest)).toBe(true);
    expect(await store.has(images[2]!.layer.digest)).toBe(true);

    // img1 is now the oldest, but a client is in the middle of reading it; and a ref of the store reaches img2.
    // (Taken at the backend: over HTTP, loopback socket buffers would swallow a 1 MiB blob at once.)
    const slow = await mirror.backend.openBlob('docker.io/team/img1', images[1]!.layer.digest);
    await store.setRef('pinned/img2:v1', images[2]!.manifest);
    expect(await pull(3)).toBe(images[3]!.layer.digest);
    expect(await pull(4)).toBe(images[4]!.layer.digest);
    await mirror.backend.evictor!.evict();
    expect(await store.has(images[1]!.layer.digest)).toBe(true); // being read
    expect(await store.has(images[2]!.layer.digest)).toBe(true); // reached by a ref
    expect(await store.has(images[3]!.layer.digest)).toBe(false); // oldest unpinned
    // The slow reader gets every byte.
    const hash = createHash('sha256');
    for await (const c of slow) hash.update(c as Buffer);
    expect(`sha256:${hash.digest('hex')}`).toBe(images[1]!.layer.digest);

    // Evicted content comes back from the upstream on demand.
    expect(await pull(0)).toBe(images[0]!.layer.digest);
    await store.deleteRef('pinned/img2:v1');
  }, 30_000);
});
