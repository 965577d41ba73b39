import { randomBytes } from 'node:crypto';
import { rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import type { Digest } from '../../src/engine/oci/digest.js';
import type { Descriptor } from '../../src/engine/oci/types.js';
import { RegistryClient } from '../../src/engine/registry/client.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import type { ContentStore } from '../../src/engine/store/types.js';
import { startBlobProxy, type BlobProxy } from '../support/blob-proxy.js';
import { startDockerRegistry, type DockerRegistry } from '../support/docker-registry.js';
import { makeLayer, makeLayeredImage, tempDir, type TestLayer } from '../support/images.js';

const HOUR = 60 * 60 * 1000;

let registry: DockerRegistry;
let proxy: BlobProxy;
let client: RegistryClient;
const dirs: string[] = [];
let base: TestLayer;
let top: TestLayer;
let appManifest: Descriptor;
let appConfig: Digest;

async function fresh(prefix = 'strata-lease-'): Promise<string> {
  const dir = await tempDir(prefix);
  dirs.push(dir);
  return dir;
}

/** An engine over a fresh store whose clock the test moves. */
async function clockedEngine(options: { tempGraceMs?: number } = {}) {
  let offset = 0;
  const store = await FsStore.open(await fresh(), { now: () => Date.now() + offset, ...options });
  const engine = new Engine({ store, registry: client, leaseTtlMs: 3 * HOUR });
  return { store, engine, advance: (ms: number) => (offset += ms) };
}

async function waitFor(check: () => Promise<boolean>, what: string): Promise<void> {
  const until = Date.now() + 20_000;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function assertComplete(store: ContentStore, name: string): Promise<void> {
  const d = await store.getRef(name);
  expect(d?.digest).toBe(appManifest.digest);
  for (const digest of [appManifest.digest, appConfig, base.descriptor.digest, top.descriptor.digest])
    expect(await store.has(digest), `${digest} of ${name}`).toBe(true);
}

beforeAll(async () => {
  registry = await startDockerRegistry();
  proxy = await startBlobProxy(registry.url);
  client = new RegistryClient({});
  const src = new Engine({ store: await FsStore.open(await fresh()), registry: client });
  base = await makeLayer(src.store, (root) =>
    writeFile(join(root, 'base.bin'), randomBytes(2 * 1024 * 1024)),
  );
  top = await makeLayer(src.store, (root) => writeFile(join(root, 'app.bin'), randomBytes(1024 * 1024)));
  await makeLayeredImage(src.store, 'example.com/base:1', [base]);
  appManifest = await makeLayeredImage(src.store, 'example.com/app:1', [base, top]);
  appConfig = (
    JSON.parse((await src.store.readBlob(appManifest.digest)).toString()) as { config: Descriptor }
  ).config.digest;
  await src.push('example.com/base:1', `${registry.host}/lease/base:1`);
  await src.push('example.com/app:1', `${registry.host}/lease/app:1`);
}, 60_000);

afterAll(async () => {
  await client?.close();
  await proxy?.stop();
  await registry?.stop();
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe('leases in the engine', () => {
  it('gc during a pull held past the grace period keeps what the pull fetched', async () => {
    const { store, engine, advance } = await clockedEngine();
    const held = proxy.hold(top.descriptor.digest);
    const pulling = engine.pull(`${proxy.host}/lease/app:1`);
    try {
      await held.reached;
      await waitFor(
        async () => (await store.has(base.descriptor.digest)) && store.has(appConfig),
        'early blobs',
      );
      advance(2 * HOUR); // the early blobs are older than the grace period now: only the lease keeps them
      const gc = await engine.gc();
      expect(gc.removed).toEqual([]);
    } finally {
      held.release();
    }
    await pulling;
    await assertComplete(store, `${proxy.host}/lease/app:1`);
    expect((await store.leasedContent()).digests.size).toBe(0); // released after the ref was set
  });

  it('rmi of an image sharing a layer with a pull in flight never breaks the pull', async () => {
    const { store, engine } = await clockedEngine();
    await engine.pull(`${proxy.host}/lease/base:1`);
    const held = proxy.hold(top.descriptor.digest);
    const pulling = engine.pull(`${proxy.host}/lease/app:1`);
    try {
      await held.reached;
      await waitFor(async () => (await store.leasedContent()).digests.has(base.descriptor.digest), 'claim');
      const rmi = await engine.rmi([`${proxy.host}/lease/base:1`]);
      expect(rmi.removed).toEqual([`${proxy.host}/lease/base:1`]);
      expect(rmi.gc?.removed).not.toContain(base.descriptor.digest);
    } finally {
      held.release();
    }
    await pulling;
    await assertComplete(store, `${proxy.host}/lease/app:1`);
    // Unleased, racing at random points: 10 more rounds, each must leave a complete image.
    for (let i = 0; i < 10; i++) {
      const round = await clockedEngine();
      await round.engine.pull(`${proxy.host}/lease/base:1`);
      const p = round.engine.pull(`${proxy.host}/lease/app:1`);
      await new Promise((r) => setTimeout(r, Math.random() * 30));
      await round.engine.rmi([`${proxy.host}/lease/base:1`]);
      await p;
      await assertComplete(round.store, `${proxy.host}/lease/app:1`);
    }
  });

  it('withLease holds content across calls until the block ends; an explicit lease works the same', async () => {
    const { store, engine, advance } = await clockedEngine();
    await engine.withLease(
      async (lease) => {
        await engine.pull(`${proxy.host}/lease/base:1`);
        await store.deleteRef(`${proxy.host}/lease/base:1`); // unreferenced now: only the lease keeps it
        advance(2 * HOUR);
        expect((await engine.gc()).removed).toEqual([]);
        expect(lease.holds(base.descriptor.digest)).toBe(true);
      },
      { owner: 'test reconciler' },
    );
    expect((await engine.gc()).removed).toContain(base.descriptor.digest);

    const lease = await store.createLease({ owner: 'explicit', ttlMs: 5 * HOUR });
    await engine.pull(`${proxy.host}/lease/base:1`, { lease });
    await store.deleteRef(`${proxy.host}/lease/base:1`);
    advance(2 * HOUR);
    expect((await engine.gc()).removed).toEqual([]);
    await lease.release();
    expect((await engine.gc()).removed).toContain(base.descriptor.digest);
  });

  it('load concurrent with gc keeps archive blobs already stored untagged and older than the grace period', async () => {
    const { store, engine, advance } = await clockedEngine();
    await engine.pull(`${proxy.host}/lease/app:1`);
    const archive = join(await fresh(), 'app.tar');
    const { createWriteStream, createReadStream } = await import('node:fs');
    await engine.save([`${proxy.host}/lease/app:1`], createWriteStream(archive));
    await engine.rmi([`${proxy.host}/lease/app:1`], { prune: false }); // untagged, still stored
    advance(2 * HOUR);
    // The archive is fed slowly, so gc runs while load has checked the blobs and not yet set the ref.
    const { PassThrough } = await import('node:stream');
    const input = new PassThrough();
    const loading = engine.load(input);
    const size = (await stat(archive)).size;
    const head = createReadStream(archive, { end: size - 1025 });
    head.pipe(input, { end: false });
    await new Promise<void>((r) => head.on('end', () => r()));
    await waitFor(
      async () => (await store.leasedContent()).digests.has(top.descriptor.digest),
      'load claims',
    );
    const gc = await engine.gc();
    expect(gc.removed).toEqual([]);
    createReadStream(archive, { start: size - 1024 }).pipe(input);
    await loading;
    await assertComplete(store, `${proxy.host}/lease/app:1`);
  });

  it('a digest-pinned pull whose content is present makes no request, and rewrites nothing', async () => {
    const { store, engine } = await clockedEngine();
    const pinned = `${proxy.host}/lease/app@${appManifest.digest}`;
    await engine.pull(pinned);
    const index = await stat(join(store.root, 'index.json'));
    const before = proxy.requests.length;
    const again = await engine.pull(pinned);
    expect(proxy.requests.length).toBe(before);
    expect(again.digest).toBe(appManifest.digest);
    expect(again.blobs.copied).toBe(0);
    const after = await stat(join(store.root, 'index.json'));
    expect([after.ino, after.mtimeMs]).toEqual([index.ino, index.mtimeMs]);
  });
});
