/**
 * Regression tests for the union/commit interop faults found from outside (issue 11, section 0): overlay whiteouts
 * committed as hardlinks to one another, a vfs commit of a new hardlink to an unchanged lower file, and overlay
 * `create` of an image whose layer hardlinks to a file of a lower layer. Overlay cases mount for real: they fail
 * (never skip) without root and overlayfs.
 */
import { execFileSync } from 'node:child_process';
import { link, lstat, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { getContainer } from '../../src/engine/container/containers.js';
import { StrataError } from '../../src/engine/errors.js';
import { MediaType } from '../../src/engine/oci/media-types.js';
import type { RegistryApi } from '../../src/engine/registry/types.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { lookupInLayers } from '../../src/engine/union/lower-lookup.js';
import { readTarEntries } from '../commit/helpers.js';
import { requireRootAndOverlay, unmountAllUnder } from '../support/root.js';
import { diffIdOf, makeTar, snapshot, storeImage, tempDir, type TarEntrySpec } from './helpers.js';

async function engineIn(dir: string): Promise<{ engine: Engine; store: FsStore }> {
  const store = await FsStore.open(join(dir, 'store'));
  return { engine: new Engine({ store, registry: {} as RegistryApi }), store };
}

/** Stores an image whose layers are tars of these entries (the first gzip, the others plain). */
async function image(store: FsStore, name: string, layers: TarEntrySpec[][]): Promise<void> {
  const blobs = [];
  for (const [i, entries] of layers.entries()) {
    const tar = await makeTar(entries);
    blobs.push(
      i === 0
        ? { blob: gzipSync(tar), mediaType: MediaType.OciLayerGzip, diffId: diffIdOf(tar) }
        : { blob: tar, mediaType: MediaType.OciLayer, diffId: diffIdOf(tar) },
    );
  }
  await storeImage(store, name, blobs);
}

/** The tree without inode numbers and link counts (they differ between an overlay mount and a plain copy). */
async function tree(root: string): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of await snapshot(root)) {
    const { ino: _i, nlink: _n, ...rest } = v;
    out[k] = rest;
  }
  return out;
}

const base: TarEntrySpec[] = [
  { name: 'etc', type: 'directory', mode: 0o755 },
  { name: 'etc/a', content: 'alpha', mode: 0o644 },
  { name: 'etc/b', content: 'bravo', mode: 0o644 },
  { name: 'srv', type: 'directory', mode: 0o750, uid: 42, gid: 43, mtime: new Date(1_000_000_000_000) },
  {
    name: 'srv/data',
    content: 'the data',
    mode: 0o640,
    uid: 42,
    gid: 43,
    mtime: new Date(1_200_000_000_000),
  },
  { name: 'srv/c', content: 'charlie', mode: 0o644 },
];

describe('overlay (mounts for real)', () => {
  beforeAll(() => requireRootAndOverlay());

  it('commit writes every whiteout as its own empty regular file, never as a hardlink', async () => {
    const work = await tempDir();
    const { engine, store } = await engineIn(work);
    await image(store, 'x/base:1', [base]);
    try {
      await engine.create('x/base:1', { name: 'wh-ovl', driver: 'overlay' });
      const merged = await engine.mount('wh-ovl');
      for (const p of ['etc/a', 'etc/b', 'srv/c']) await rm(join(merged, p));
      const result = await engine.commit('wh-ovl', 'x/deleted:1');
      const entries = await readTarEntries(await store.openBlob(result.layer!.digest), true);
      const whiteouts = entries.filter((e) => e.name.split('/').pop()!.startsWith('.wh.'));
      expect(whiteouts.map((e) => e.name).sort()).toEqual(['etc/.wh.a', 'etc/.wh.b', 'srv/.wh.c']);
      for (const w of whiteouts)
        expect({ name: w.name, type: w.type, size: w.size, mode: w.mode }).toEqual({
          name: w.name,
          type: 'file',
          size: 0,
          mode: 0o600,
        });
      expect(entries.filter((e) => e.type === 'link')).toEqual([]);
      expect(result.layer!.stats.hardlinks).toBe(0);
      // The committed image shows exactly the deletions.
      const out = join(work, 'out');
      await engine.unpack('x/deleted:1', out);
      expect(Object.keys(await tree(out)).sort()).toEqual(['.', 'etc', 'srv', 'srv/data']);
    } finally {
      unmountAllUnder(work);
    }
  });

  it('create copies a hardlink target of a lower layer up into the layer that links to it', async () => {
    const work = await tempDir();
    const { engine, store } = await engineIn(work);
    await image(store, 'x/links:1', [
      base,
      [
        { name: 'top-link', type: 'link', linkname: 'srv/data' },
        { name: 'newdir', type: 'directory', mode: 0o700 },
        { name: 'newdir/second-link', type: 'link', linkname: 'etc/a' },
      ],
    ]);
    try {
      const record = await engine.create('x/links:1', { name: 'hl-ovl', driver: 'overlay' });
      const merged = await engine.mount('hl-ovl');
      expect(await readFile(join(merged, 'top-link'), 'utf8')).toBe('the data');
      expect(await readFile(join(merged, 'newdir/second-link'), 'utf8')).toBe('alpha');
      // The link and its copied-up target are one inode of the top layer directory.
      const layerDir = record.layers.at(-1)!.dir;
      const [link1, target1] = await Promise.all([
        lstat(join(layerDir, 'top-link')),
        lstat(join(layerDir, 'srv/data')),
      ]);
      expect(link1.ino).toBe(target1.ino);
      // The merged view is the image as a flat unpack gives it: copied-up parents keep owner, mode and times.
      const flat = join(work, 'flat');
      await engine.unpack('x/links:1', flat);
      expect(await tree(merged)).toEqual(await tree(flat));
      expect((await lstat(join(layerDir, 'srv'))).mtimeMs).toBe(1_000_000_000_000);
    } finally {
      unmountAllUnder(work);
    }
  });

  it('a target this layer whites out first still does not exist (whiteouts apply first)', async () => {
    const work = await tempDir();
    const { engine, store } = await engineIn(work);
    await image(store, 'x/gone:1', [
      base,
      [
        { name: 'srv/.wh.data', content: '' },
        { name: 'late-link', type: 'link', linkname: 'srv/data' },
      ],
    ]);
    const err = await engine
      .create('x/gone:1', { name: 'gone-ovl', driver: 'overlay' })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StrataError);
    expect((err as StrataError).code).toBe('LAYER_INVALID');
    expect((err as StrataError).detail).toMatchObject({ entry: 'late-link' });
  });
});

describe('lookupInLayers (overlay-form layer dirs, no mount)', () => {
  beforeAll(() => requireRootAndOverlay()); // whiteouts are char devices 0:0: mknod needs root

  it('finds what the merged view shows: top layer first, whiteouts, opaque dirs and non-dirs hide below', async () => {
    const work = await tempDir();
    const [l0, l1, l2] = ['l0', 'l1', 'l2'].map((n) => join(work, n)) as [string, string, string];
    const files: Record<string, string> = {
      'l0/a/x': 'x0',
      'l0/a/y': 'y0',
      'l0/b/z': 'z0',
      'l0/c/w': 'w0',
      'l0/d/v': 'v0',
      'l1/a/x': 'x1',
      'l1/b/keep': 'k1',
      'l2/c': 'a file over a directory',
    };
    for (const [p, content] of Object.entries(files)) {
      await mkdir(join(work, p, '..'), { recursive: true });
      await writeFile(join(work, p), content);
    }
    execFileSync('mknod', [join(l1, 'a/y'), 'c', '0', '0']);
    await symlink('a', join(l2, 'd'));
    const opaque = new Set([join(l1, 'b')]);
    const isOpaque = (dir: string): Promise<boolean> => Promise.resolve(opaque.has(dir));
    const layers = [l2, l1, l0];
    const found = async (p: string): Promise<string | undefined> =>
      (await lookupInLayers(layers, p, isOpaque))?.host;
    expect(await found('a/x')).toBe(join(l1, 'a/x'));
    expect((await lookupInLayers(layers, 'a/x', isOpaque))!.parents.map((d) => d.host)).toEqual([
      join(l1, 'a'),
    ]);
    expect(await found('a/y')).toBeUndefined(); // whited out in l1
    expect(await found('b/z')).toBeUndefined(); // l1's b is opaque
    expect(await found('b/keep')).toBe(join(l1, 'b/keep'));
    expect(await found('c/w')).toBeUndefined(); // l2's file c hides l0's directory
    expect(await found('d/v')).toBeUndefined(); // l2's symlink d is not followed
    expect(await found('nothing')).toBeUndefined();
    // The default opaque test reads the real xattr.
    execFileSync('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', join(l1, 'b')]);
    expect((await lookupInLayers(layers, 'b/z'))?.host).toBeUndefined();
    expect((await lookupInLayers(layers, 'a/x'))?.host).toBe(join(l1, 'a/x'));
  });
});

describe('vfs', () => {
  it('commit keeps a new hardlink to an unchanged lower file, with its content', async () => {
    const work = await tempDir();
    const { engine, store } = await engineIn(work);
    await image(store, 'x/base:1', [base, [{ name: 'srv/c', content: 'charlie 2', mode: 0o644 }]]);
    await engine.create('x/base:1', { name: 'hl-vfs', driver: 'vfs' });
    const record = await getContainer(store, 'hl-vfs');
    await link(join(record.merged, 'srv/data'), join(record.merged, 'etc/data-link'));
    await link(join(record.merged, 'etc/a'), join(record.merged, 'etc/a-link'));
    await link(join(record.merged, 'etc/a'), join(record.merged, 'etc/a-link2'));
    const result = await engine.commit('hl-vfs', 'x/linked:1');
    const entries = await readTarEntries(await store.openBlob(result.layer!.digest), true);
    const byName = new Map(entries.map((e) => [e.name.replace(/\/$/, ''), e]));
    // The unchanged targets are not in the layer; the first new link carries the content, the next one links to it.
    expect([...byName.keys()].sort()).toEqual(['etc', 'etc/a-link', 'etc/a-link2', 'etc/data-link']);
    expect(byName.get('etc/data-link')).toMatchObject({ type: 'file', mode: 0o640, uid: 42, gid: 43 });
    expect(byName.get('etc/data-link')!.content.toString()).toBe('the data');
    expect(byName.get('etc/a-link')!.content.toString()).toBe('alpha');
    expect(byName.get('etc/a-link2')).toMatchObject({ type: 'link', linkname: 'etc/a-link' });
    const out = join(work, 'out');
    await engine.unpack('x/linked:1', out);
    expect(await readFile(join(out, 'etc/data-link'), 'utf8')).toBe('the data');
    expect(await readFile(join(out, 'etc/a-link2'), 'utf8')).toBe('alpha');
    expect(await tree(out)).toEqual(await tree(record.merged));
  });
});
