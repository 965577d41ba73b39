import { execFileSync } from 'node:child_process';
import { link, mkdir, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { treeChanges } from '../../src/engine/commit/changes.js';
import { readFileInfo } from '../../src/engine/commit/fsinfo.js';
import { writeLayer } from '../../src/engine/commit/layer-writer.js';
import type { Change } from '../../src/engine/commit/types.js';
import { silentLogger, type EngineEvent } from '../../src/engine/observe.js';
import { MediaType } from '../../src/engine/oci/media-types.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { tempDir } from '../support/images.js';
import { requirePeer } from '../support/peers.js';
import { readTarEntries } from './helpers.js';

let work: string;
let store: FsStore;
let src: string;
let changes: Change[];
const longName = `deep/${'d'.repeat(120)}/${'f'.repeat(120)}`;
const midName = `deep/${'d'.repeat(120)}/${'m'.repeat(60)}`;

beforeAll(async () => {
  work = await tempDir('strata-commit-lw-');
  store = await FsStore.open(join(work, 'store'));
  src = join(work, 'src');
  await mkdir(join(src, 'dir/sub'), { recursive: true });
  await mkdir(join(src, longName, '..'), { recursive: true });
  await writeFile(join(src, 'dir/a.txt'), 'alpha');
  await writeFile(join(src, 'dir/sub/b'), 'bravo');
  await writeFile(join(src, longName), 'long');
  await writeFile(join(src, midName), 'mid');
  await writeFile(join(src, 'dir/hl1'), 'same inode');
  await link(join(src, 'dir/hl1'), join(src, 'dir/hl2'));
  await symlink('../dir/a.txt', join(src, 'dir/sub/ln'));
  execFileSync('mkfifo', [join(src, 'dir/fifo')]);
  execFileSync('setfattr', ['-n', 'user.text', '-v', 'hello', join(src, 'dir/a.txt')]);
  execFileSync('setfattr', ['-n', 'user.bin', '-v', '0sAP+A', join(src, 'dir/a.txt')]);
  for (const p of ['dir/a.txt', 'dir/sub/b', longName]) await utimes(join(src, p), 5000, 5000);
  const all = await treeChanges(src);
  const whiteoutInfo = await readFileInfo(join(src, 'dir'));
  changes = [
    ...all,
    { kind: 'delete', path: 'dir/zz-gone' },
    { kind: 'delete', path: 'dir/sub/old' },
    { kind: 'opaque', path: 'dir/sub', info: whiteoutInfo! },
  ];
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('layer writer', () => {
  it('writes a sorted layer: whiteouts first, PAX long names and xattrs, hardlinks as typeflag 1', async () => {
    const layer = await writeLayer(store, changes, { sourceDateEpoch: 3000 });
    expect(layer.mediaType).toBe(MediaType.OciLayerGzip);
    expect(layer.stats.hardlinks).toBe(1);
    const entries = await readTarEntries(await store.openBlob(layer.digest), true);
    const names = entries.map((e) => e.name.replace(/\/$/, ''));
    expect(names).toEqual([
      'deep',
      `deep/${'d'.repeat(120)}`,
      longName,
      midName,
      'dir',
      'dir/.wh.zz-gone',
      'dir/a.txt',
      'dir/fifo',
      'dir/hl1',
      'dir/hl2',
      'dir/sub',
      'dir/sub/.wh..wh..opq',
      'dir/sub/.wh.old',
      'dir/sub/b',
      'dir/sub/ln',
    ]);
    const by = new Map(entries.map((e) => [e.name.replace(/\/$/, ''), e]));
    expect(by.get(longName)!.content.toString()).toBe('long');
    expect(by.get(longName)!.pax?.path).toBe(longName);
    expect(by.get(midName)!.content.toString()).toBe('mid'); // USTAR prefix split, no PAX
    expect(by.get(midName)!.pax).toBeNull();
    expect(by.get('dir/hl2')!.type).toBe('link');
    expect(by.get('dir/hl2')!.linkname).toBe('dir/hl1');
    expect(by.get('dir/sub/ln')!.type).toBe('symlink');
    expect(by.get('dir/sub/ln')!.linkname).toBe('../dir/a.txt');
    expect(by.get('dir/fifo')!.type).toBe('fifo');
    expect(by.get('dir/a.txt')!.pax?.['SCHILY.xattr.user.text']).toBe('hello');
    expect(by.get('dir/a.txt')!.mtime).toBe(3000); // clamped to SOURCE_DATE_EPOCH
    expect(by.get('dir/.wh.zz-gone')!.size).toBe(0);
    // GNU tar reads it too, binary xattrs intact.
    const listing = execFileSync('tar', ['-tvzf', store.blobPath(layer.digest)], { encoding: 'utf8' });
    expect(listing).toMatch(/dir\/hl2 link to dir\/hl1/);
    const x = join(work, 'x');
    await mkdir(x);
    execFileSync('tar', [
      '--xattrs',
      '--xattrs-include=user.*',
      '-xzf',
      store.blobPath(layer.digest),
      '-C',
      x,
    ]);
    const attrs = execFileSync(
      'getfattr',
      ['--absolute-names', '-d', '-e', 'hex', '-m', '-', join(x, 'dir/a.txt')],
      { encoding: 'utf8' },
    );
    expect(attrs).toMatch(/user\.bin=0x00ff80/);
    // diffID is the sha256 of the uncompressed tar.
    const raw = execFileSync('sh', ['-c', `gzip -dc ${store.blobPath(layer.digest)} | sha256sum`], {
      encoding: 'utf8',
    });
    expect(`sha256:${raw.split(' ')[0]}`).toBe(layer.diffId);
  });

  it('is deterministic: the same input gives the same digest twice', async () => {
    const a = await writeLayer(store, changes, { sourceDateEpoch: 3000 });
    const b = await writeLayer(store, [...changes].reverse(), { sourceDateEpoch: 3000 });
    expect(b.digest).toBe(a.digest);
    expect(b.diffId).toBe(a.diffId);
  });

  it('compresses with zstd (same diffID) and with pigz when asked', async () => {
    requirePeer('zstd');
    const gz = await writeLayer(store, changes, { sourceDateEpoch: 3000 });
    const zs = await writeLayer(store, changes, { sourceDateEpoch: 3000, compression: 'zstd' });
    expect(zs.mediaType).toBe(MediaType.OciLayerZstd);
    expect(zs.diffId).toBe(gz.diffId);
    const raw = execFileSync('sh', ['-c', `zstd -dc ${store.blobPath(zs.digest)} | sha256sum`], {
      encoding: 'utf8',
    });
    expect(`sha256:${raw.split(' ')[0]}`).toBe(zs.diffId);
    requirePeer('pigz');
    const pz = await writeLayer(store, changes, { sourceDateEpoch: 3000, gzip: 'pigz' });
    expect(pz.compressor).toBe('pigz');
    expect(pz.diffId).toBe(gz.diffId);
  });

  it('refuses a bad compression level and docker media types with zstd', async () => {
    await expect(writeLayer(store, changes, { level: 42 })).rejects.toThrow(/level/);
    await expect(writeLayer(store, changes, { compression: 'zstd', mediaTypes: 'docker' })).rejects.toThrow(
      /gzip only/,
    );
  });

  it('writes whiteouts that share one inode (as overlayfs makes them) each as an empty file, never a hardlink', async () => {
    // overlayfs links every whiteout of an upper dir to one shared char device: same dev, ino and nlink > 1.
    const shared = { type: 'char', mode: 0, uid: 0, gid: 0, size: 0, mtimeSec: 7, mtimeNsec: 0 } as const;
    const info = { ...shared, devMajor: 0, devMinor: 0, dev: 5n, ino: 99n, nlink: 3 };
    const layer = await writeLayer(store, [
      { kind: 'delete', path: 'a/one', info },
      { kind: 'delete', path: 'a/two', info },
      { kind: 'delete', path: 'b/three', info },
    ]);
    const entries = await readTarEntries(await store.openBlob(layer.digest), true);
    expect(entries.map((e) => [e.name, e.type, e.size, e.linkname])).toEqual([
      ['a/.wh.one', 'file', 0, null],
      ['a/.wh.two', 'file', 0, null],
      ['b/.wh.three', 'file', 0, null],
    ]);
    expect(layer.stats).toMatchObject({ whiteouts: 3, hardlinks: 0 });
  });

  it('reports commit-progress to an observer, ending with done at the uncompressed size', async () => {
    const events: EngineEvent[] = [];
    const layer = await writeLayer(store, changes, {
      observer: { log: silentLogger, emit: (e) => events.push(e) },
    });
    const progress = events.filter((e) => e.type === 'commit-progress');
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.at(-1)).toEqual({
      type: 'commit-progress',
      entries: layer.stats.entries,
      bytes: layer.uncompressedSize,
      done: true,
      total: changes.length,
    });
    expect(progress.filter((e) => e.done)).toHaveLength(1);
  });
});
