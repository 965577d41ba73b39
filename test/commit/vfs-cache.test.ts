/**
 * A vfs commit seeds the layer cache: the container's rootfs is the full tree of the new chain, registered as its
 * vfs snapshot (copied, or moved when the container is thrown away right after, as a build step's is), so a
 * `create` of the committed image — the next step of a build — unpacks nothing.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { link, mkdir, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { findLocalRef, loadLocalImage } from '../../src/engine/image/local.js';
import type { EngineEvent } from '../../src/engine/observe.js';
import type { RegistryApi } from '../../src/engine/registry/types.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { chainIds, vfsSnapshotDir } from '../../src/engine/union/layer-cache.js';
import { tempDir } from '../support/images.js';
import { requirePeer } from '../support/peers.js';
import { requireRoot } from '../support/root.js';
import { diffTrees, snapshotTree } from './helpers.js';

let work: string;
let store: FsStore;
let engine: Engine;
const events: EngineEvent[] = [];
const applied = (): EngineEvent[] => events.filter((e) => e.type === 'layer-apply');

beforeAll(async () => {
  requireRoot('the vfs commit cache tests (owners, devices)');
  work = await tempDir('strata-commit-vfs-cache-');
  store = await FsStore.open(join(work, 'store'));
  engine = new Engine({ store, registry: {} as RegistryApi, listeners: [(e) => events.push(e)] });
  const base = join(work, 'base');
  await mkdir(join(base, 'etc'), { recursive: true });
  await writeFile(join(base, 'etc/config'), 'v1\n');
  await writeFile(join(base, 'etc/gone'), 'deleted by the commit\n');
  await writeFile(join(base, 'etc/keep'), 'unchanged, hardlinked by the commit\n');
  await engine.importDirectory(base, 'example.com/base:1', { message: 'base' });
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

/** The vfs full tree (rootfs) of an image's top chain. */
async function topTree(ref: string): Promise<string> {
  const image = await loadLocalImage(store, await findLocalRef(store, ref));
  return vfsSnapshotDir(store.root, chainIds(image.config.rootfs.diff_ids).at(-1)!);
}

/** The root filesystem umoci unpacks from the image: what applying the layers really gives. */
async function umociTree(ref: string): Promise<ReturnType<typeof snapshotTree>> {
  const bundle = join(work, `bundle-${Math.random().toString(36).slice(2)}`);
  execFileSync(requirePeer('umoci'), ['unpack', '--image', `${store.root}:${ref}`, bundle], {
    stdio: 'pipe',
  });
  return snapshotTree(join(bundle, 'rootfs'));
}

describe('vfs commit seeds the layer cache', () => {
  it('copies the rootfs as the new chain’s tree (sockets left out); create of the image unpacks nothing', async () => {
    const record = await engine.create('example.com/base:1', { name: 'v1', driver: 'vfs' });
    await writeFile(join(record.merged, 'etc/config'), 'v2\n');
    await rm(join(record.merged, 'etc/gone'));
    await mkdir(join(record.merged, 'srv'));
    await writeFile(join(record.merged, 'srv/new'), 'new\n');
    await link(join(record.merged, 'etc/keep'), join(record.merged, 'srv/keep-link'));
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(join(record.merged, 'srv/app.sock'), resolve));
    try {
      await engine.commit('v1', 'example.com/v:1');
      const tree = await topTree('example.com/v:1');
      expect(existsSync(join(tree, '..', 'done'))).toBe(true);
      expect(existsSync(join(tree, 'srv/app.sock'))).toBe(false);
      // Copied, not moved: the container keeps its root.
      expect(existsSync(join(record.merged, 'srv/app.sock'))).toBe(true);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }

    events.length = 0;
    const again = await engine.create('example.com/v:1', { name: 'v1b', driver: 'vfs' });
    expect(applied()).toEqual([]);
    expect(diffTrees(await snapshotTree(again.merged), await umociTree('example.com/v:1'))).toEqual([]);
    expect(diffTrees(await snapshotTree(again.merged), await snapshotTree(record.merged))).toEqual([]);
    await engine.rm(['v1', 'v1b'], { force: true });
  });

  it('containerDiscarded moves the rootfs instead; the image is still right', async () => {
    const record = await engine.create('example.com/base:1', { name: 'v2', driver: 'vfs' });
    await writeFile(join(record.merged, 'etc/moved'), 'moved\n');
    await engine.commit('v2', 'example.com/v:2', { containerDiscarded: true });
    expect(existsSync(record.merged)).toBe(false);
    expect(existsSync(join(await topTree('example.com/v:2'), 'etc/moved'))).toBe(true);
    await engine.rm(['v2'], { force: true });
    events.length = 0;
    const again = await engine.create('example.com/v:2', { name: 'v2b', driver: 'vfs' });
    expect(applied()).toEqual([]);
    expect(diffTrees(await snapshotTree(again.merged), await umociTree('example.com/v:2'))).toEqual([]);
    await engine.rm(['v2b'], { force: true });
  });

  it('cacheLayer: false leaves the new chain to be unpacked by create', async () => {
    const record = await engine.create('example.com/base:1', { name: 'v3', driver: 'vfs' });
    await writeFile(join(record.merged, 'etc/x'), 'x\n');
    await engine.commit('v3', 'example.com/v:3', { cacheLayer: false });
    expect(existsSync(await topTree('example.com/v:3'))).toBe(false);
    events.length = 0;
    await engine.create('example.com/v:3', { name: 'v3b', driver: 'vfs' });
    expect(applied().length).toBeGreaterThan(0);
    await engine.rm(['v3', 'v3b'], { force: true });
  });

  it('a vfs build: each step’s tree is moved into the cache, so later steps unpack only the base', async () => {
    const ctx = await tempDir('strata-commit-vfs-ctx-');
    await writeFile(join(ctx, 'a'), 'a');
    await writeFile(join(ctx, 'b'), 'b');
    events.length = 0;
    const result = await engine.build({
      contextDir: ctx,
      dockerfile: 'FROM example.com/base:1\nCOPY a /a\nCOPY b /b\nCOPY a /c\n',
      driver: 'vfs',
      tags: ['example.com/built:1'],
    });
    expect(result.layers).toBe(4);
    const base = await loadLocalImage(store, await findLocalRef(store, 'example.com/base:1'));
    const layers = new Set(applied().map((e) => (e as { layer: string }).layer));
    // The base layer may have been unpacked before (earlier tests): nothing but it is ever applied.
    expect([...layers].filter((l) => l !== base.manifest.manifest.layers[0]!.digest)).toEqual([]);
    events.length = 0;
    const made = await engine.create('example.com/built:1', { name: 'built', driver: 'vfs' });
    expect(applied()).toEqual([]);
    expect(diffTrees(await snapshotTree(made.merged), await umociTree('example.com/built:1'))).toEqual([]);
    await engine.rm(['built'], { force: true });
    await rm(ctx, { recursive: true, force: true });
  });
});
