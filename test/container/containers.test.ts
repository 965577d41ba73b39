import { execFileSync } from 'node:child_process';
import { lstat, readdir, readFile, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { hasCode } from '../../src/engine/errors.js';
import { containerDir, RECORD_FILE } from '../../src/engine/container/record.js';
import { containerLayerDirs, pruneLayerCache } from '../../src/engine/container/containers.js';
import { chainIds, layersDir } from '../../src/engine/union/layer-cache.js';
import { mountPoints } from '../../src/engine/union/snapshotter.js';
import type { RegistryApi } from '../../src/engine/registry/types.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { makeLayeredImage, tempDir } from '../support/images.js';
import { requirePeer } from '../support/peers.js';
import { requireRootAndOverlay, unmountAllUnder } from '../support/root.js';
import { makeTestImages, snapshotTree, type Entry } from './helpers.js';

let work: string;
let store: FsStore;
let engine: Engine;
let images: Awaited<ReturnType<typeof makeTestImages>>;
let expected: Record<string, Entry>;

beforeAll(async () => {
  requireRootAndOverlay();
  const umoci = requirePeer('umoci');
  work = await tempDir('strata-containers-');
  store = await FsStore.open(join(work, 'store'));
  engine = new Engine({ store, registry: {} as RegistryApi });
  images = await makeTestImages(store);
  // The reference tree: what umoci makes of the same image.
  execFileSync(umoci, ['unpack', '--image', `${store.root}:${images.layered}`, join(work, 'bundle')], {
    stdio: 'pipe',
  });
  expected = await snapshotTree(join(work, 'bundle', 'rootfs'));
});

afterAll(async () => {
  if (!work) return;
  unmountAllUnder(work);
  await rm(work, { recursive: true, force: true });
});

async function mounted(path: string): Promise<number> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  return text.split('\n').filter((l) => l.split(' ')[4] === path).length;
}

describe('overlay containers', () => {
  it('the reference tree has the whiteouts, opaque dir and replaced dir applied', () => {
    expect(expected['etc/remove-me']).toBeUndefined();
    expect(expected['opt/app/a']).toBeUndefined();
    expect(expected['opt/app/new']?.type).toBe('file');
    expect(expected['var/lib/x']).toBeUndefined();
    expect(expected['usr/share/doc']?.type).toBe('file');
    expect(expected['bin/tool2']).toBeUndefined();
    expect(expected['bin/suid']?.mode).toBe('4755');
    expect(expected['run/fifo']?.type).toBe('fifo');
  });

  it('the mounted root shows the same tree as umoci unpack', async () => {
    const rec = await engine.create(images.layered, { name: 'c1', driver: 'overlay' });
    expect(rec.driver).toBe('overlay');
    const root = await engine.mount('c1');
    expect(root).toBe(rec.merged);
    expect(await mounted(root)).toBe(1);
    expect(await snapshotTree(root)).toEqual(expected);
  });

  it('writes the record of the contract', async () => {
    const dir = containerDir(store.root, 'c1');
    const rec = JSON.parse(await readFile(join(dir, RECORD_FILE), 'utf8')) as Record<string, unknown>;
    const manifest = await store.getRef(images.layered);
    const diffIds = [images.layers.base.diffId, images.layers.changes.diffId, images.layers.top.diffId];
    const chains = chainIds(diffIds);
    expect(rec).toMatchObject({
      name: 'c1',
      driver: 'overlay',
      image: { name: images.layered, manifest: manifest!.digest, platform: 'linux/amd64' },
      upper: join(dir, 'upper'),
      work: join(dir, 'work'),
      merged: join(dir, 'merged'),
      layers: diffIds.map((d, i) => ({
        diffId: d,
        chainId: chains[i],
        dir: join(layersDir(store.root), chains[i]!.slice(7), 'diff'),
      })),
    });
    expect(rec.id).toMatch(/^[a-f0-9]{64}$/);
    expect(new Date(rec.created as string).toISOString()).toBe(rec.created);
    expect(chains[0]).toBe(diffIds[0]);
  });

  it('writes land in upper; deleting a lower file leaves a 0:0 char device there; layer dirs are untouched', async () => {
    const root = await engine.mount('c1');
    const [rec] = (await engine.ps()).filter((c) => c.name === 'c1');
    await writeFile(join(root, 'etc/added'), 'added\n');
    await writeFile(join(root, 'etc/hosts'), 'modified\n');
    await unlink(join(root, 'etc/passwd'));
    expect(await readFile(join(rec!.upper, 'etc/added'), 'utf8')).toBe('added\n');
    expect(await readFile(join(rec!.upper, 'etc/hosts'), 'utf8')).toBe('modified\n');
    const wh = await lstat(join(rec!.upper, 'etc/passwd'));
    expect(wh.isCharacterDevice()).toBe(true);
    expect(wh.rdev).toBe(0);
    // The lower layer keeps its file.
    expect(await readFile(join(rec!.layers[0]!.dir, 'etc/passwd'), 'utf8')).toContain('root:x');
    expect(await readFile(join(rec!.layers[1]!.dir, 'etc/hosts'), 'utf8')).toContain('changed');
  });

  it('mount is idempotent', async () => {
    const a = await engine.mount('c1');
    const b = await engine.mount('c1');
    expect(a).toBe(b);
    expect(await mounted(a)).toBe(1);
  });

  it('layer dirs are shared by containers and images (one copy on disk)', async () => {
    const before = (await readdir(layersDir(store.root))).filter((n) => !n.startsWith('.'));
    expect(before).toHaveLength(3);
    const t0 = performance.now();
    const c2 = await engine.create(images.layered, { name: 'c2', driver: 'overlay' });
    const createMs = performance.now() - t0;
    const c1 = (await engine.ps()).find((c) => c.name === 'c1')!;
    expect(containerLayerDirs(c2)).toEqual(containerLayerDirs(c1));
    expect((await readdir(layersDir(store.root))).filter((n) => !n.startsWith('.'))).toHaveLength(3);
    const sib = await engine.create(images.sibling, { name: 'sib', driver: 'overlay' });
    expect(sib.layers[0]!.dir).toBe(c1.layers[0]!.dir);
    expect((await readdir(layersDir(store.root))).filter((n) => !n.startsWith('.'))).toHaveLength(4);
    const root = await engine.mount('sib');
    expect(await readFile(join(root, 'etc/sibling'), 'utf8')).toBe('sibling\n');
    expect(await readFile(join(root, 'etc/passwd'), 'utf8')).toContain('root:x');
    // c1's changes are not visible elsewhere.
    const root2 = await engine.mount('c2');
    expect(await readFile(join(root2, 'etc/passwd'), 'utf8')).toContain('root:x');
    console.log(`create with cached layers: ${createMs.toFixed(1)} ms`);
  });

  it('an image without layers gets an empty root', async () => {
    await engine.create(images.empty, { name: 'empty', driver: 'overlay' });
    const root = await engine.mount('empty');
    expect(await readdir(root)).toEqual([]);
    await writeFile(join(root, 'x'), 'x');
    expect(await engine.rm(['empty'])).toEqual(['empty']);
  });

  it('names are validated and unique; generated when omitted', async () => {
    await expect(engine.create(images.layered, { name: 'c1' })).rejects.toSatisfy((e) =>
      hasCode(e, 'ALREADY_EXISTS'),
    );
    await expect(engine.create(images.layered, { name: '-bad' })).rejects.toSatisfy((e) =>
      hasCode(e, 'INVALID_ARGUMENT'),
    );
    const rec = await engine.create(images.layered);
    expect(rec.name).toMatch(/^strata-[a-f0-9]{8}$/);
    expect(rec.driver).toBe('overlay'); // the default here: root with overlayfs
    await engine.rm([rec.name]);
  });

  it('ps lists containers with their mount state', async () => {
    const rows = await engine.ps();
    const byName = Object.fromEntries(rows.map((r) => [r.name, r]));
    expect(Object.keys(byName).sort()).toEqual(['c1', 'c2', 'sib']);
    expect(byName.c1!.mounted).toBe(true);
    expect(byName.c1!.image.name).toBe(images.layered);
    await engine.unmount('c2');
    expect((await engine.ps()).find((r) => r.name === 'c2')!.mounted).toBe(false);
  });

  it('rm refuses a busy root unless forced, unmounts and deletes; the shared layers stay', async () => {
    const root = await engine.mount('c2');
    const fd = await (await import('node:fs/promises')).open(join(root, 'etc/hosts'), 'r');
    try {
      await expect(engine.rm(['c2'])).rejects.toSatisfy((e) => hasCode(e, 'CONFLICT'));
      expect(await engine.rm(['c2'], { force: true })).toEqual(['c2']);
    } finally {
      await fd.close();
    }
    expect(await stat(containerDir(store.root, 'c2')).catch(() => undefined)).toBeUndefined();
    expect((await mountPoints()).has(root)).toBe(false);
    expect(await engine.rm(['sib'])).toEqual(['sib']);
    const c1 = (await engine.ps()).find((c) => c.name === 'c1')!;
    for (const d of containerLayerDirs(c1)) expect((await stat(d)).isDirectory()).toBe(true);
  });

  it('a layer whose diffID does not match is refused and nothing is kept', async () => {
    const bad = 'example.com/test/bad:1';
    const fake = `sha256:${'0'.repeat(64)}` as (typeof images.layers.sibling)['diffId'];
    await makeLayeredImage(store, bad, [images.layers.sibling], { diffIds: [fake] });
    await expect(engine.create(bad, { name: 'bad', driver: 'overlay' })).rejects.toSatisfy((e) =>
      hasCode(e, 'DIGEST_MISMATCH'),
    );
    expect(await stat(join(layersDir(store.root), '0'.repeat(64))).catch(() => undefined)).toBeUndefined();
    expect((await readdir(layersDir(store.root))).filter((n) => n.startsWith('.'))).toEqual([]);
    expect(await stat(containerDir(store.root, 'bad')).catch(() => undefined)).toBeUndefined();
    await store.deleteRef(bad);
  });
});

describe('vfs containers', () => {
  it('the root is a plain directory with the same tree as umoci unpack', async () => {
    const rec = await engine.create(images.layered, { name: 'v1', driver: 'vfs' });
    expect(rec.driver).toBe('vfs');
    expect(rec.work).toBeUndefined();
    expect(rec.upper).toBe(join(containerDir(store.root, 'v1'), 'rootfs'));
    expect(rec.merged).toBe(rec.upper);
    expect(await engine.mount('v1')).toBe(rec.merged);
    expect(await snapshotTree(rec.merged)).toEqual(expected);
    // The last layer's dir is the full lower tree.
    expect(await snapshotTree(rec.layers[2]!.dir)).toEqual(expected);
    await unlink(join(rec.merged, 'etc/passwd'));
    expect(await readFile(join(rec.layers[0]!.dir, 'etc/passwd'), 'utf8')).toContain('root:x');
    const v2 = await engine.create(images.layered, { name: 'v2', driver: 'vfs' });
    expect(await snapshotTree(v2.merged)).toEqual(expected);
    expect(await engine.rm(['v1', 'v2'])).toEqual(['v1', 'v2']);
  });
});

describe('layer cache pruning', () => {
  it('keeps the layers of images and containers, deletes the rest', async () => {
    const c1 = (await engine.ps()).find((c) => c.name === 'c1')!;
    await engine.create(images.sibling, { name: 'sib2', driver: 'overlay' });
    const sibTop = chainIds([images.layers.base.diffId, images.layers.sibling.diffId])[1]!.slice(7);
    // Nothing unused yet.
    expect(await pruneLayerCache(store, { graceMs: 0 })).toMatchObject({ removed: [] });
    await store.deleteRef(images.sibling);
    // sib2 still uses the sibling layer.
    expect(await pruneLayerCache(store, { graceMs: 0 })).toMatchObject({ removed: [] });
    await engine.rm(['sib2']);
    const result = await pruneLayerCache(store, { graceMs: 0 });
    expect(result.removed.map((d) => d.slice(7)).filter((h) => h === sibTop)).toHaveLength(1);
    expect(await stat(join(layersDir(store.root), sibTop)).catch(() => undefined)).toBeUndefined();
    for (const d of containerLayerDirs(c1)) expect((await stat(d)).isDirectory()).toBe(true);
    // The layered image's layers stay even without containers (the image still uses them).
    await engine.rm(['c1']);
    await pruneLayerCache(store, { graceMs: 0 });
    for (const d of containerLayerDirs(c1)) expect((await stat(d)).isDirectory()).toBe(true);
  });
});
