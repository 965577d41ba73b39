/**
 * End to end: a realistic three-layer image built with GNU tar (gzip, zstd and plain layers; whiteouts and an
 * opaque directory whose marker comes after the directory's new entries), unpacked by `Engine.unpack` and by
 * `umoci unpack`; both trees must match path for path. Also the overlay form of a whiteout layer.
 */
import { execFileSync } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { chmod, chown, link, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { TerminalError } from '../../src/engine/errors.js';
import { MediaType } from '../../src/engine/oci/media-types.js';
import { RegistryClient } from '../../src/engine/registry/client.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { applyLayer } from '../../src/engine/union/apply.js';
import { requirePeer } from '../support/peers.js';
import { diffIdOf, snapshot, storeImage, tempDir, type NodeInfo } from './helpers.js';

const LONG = `deep/${'d'.repeat(60)}/${'f'.repeat(70)}-long-name.txt`;

async function put(root: string, rel: string, content: string | Buffer, mode = 0o644, owner = [0, 0]) {
  const p = join(root, rel);
  await mkdir(join(p, '..'), { recursive: true });
  await writeFile(p, content);
  await chown(p, owner[0]!, owner[1]!);
  await chmod(p, mode);
}

/** Tars `dir` with GNU tar (PAX format, xattrs, numeric owners); `order` lists members explicitly, in order. */
function gnuTar(dir: string, out: string, order?: string[]): Buffer {
  const args = [
    '--format=posix',
    '--xattrs',
    '--xattrs-include=user.*',
    '--numeric-owner',
    '-cf',
    out,
    '-C',
    dir,
  ];
  if (order) execFileSync('tar', [...args, '--no-recursion', ...order]);
  else execFileSync('tar', [...args, '--sort=name', '.']);
  return execFileSync('cat', [out], { maxBuffer: 1 << 30 });
}

async function buildLayers(work: string): Promise<{ tars: Buffer[] }> {
  // Layer 1: the base.
  const l1 = join(work, 'l1');
  await mkdir(l1);
  await put(l1, 'etc/passwd', 'root:x:0:0:root:/root:/bin/sh\n');
  await put(l1, 'etc/hosts', '127.0.0.1 localhost\n');
  execFileSync('setfattr', ['-n', 'user.strata', '-v', 'hello', join(l1, 'etc/passwd')]);
  await put(l1, 'bin/tool', Buffer.alloc(200_000, 7), 0o755);
  await link(join(l1, 'bin/tool'), join(l1, 'bin/tool-hardlink'));
  await put(l1, 'bin/suid', '#!/bin/sh\n', 0o4755);
  execFileSync('setfattr', ['-n', 'user.bin', '-v', '0x00ff01', join(l1, 'bin/suid')]);
  await put(l1, 'bin/sgid', '#!/bin/sh\n', 0o2755);
  await put(l1, 'usr/lib/libx.so', Buffer.alloc(5000, 3), 0o755);
  await symlink('usr/lib', join(l1, 'lib'));
  await mkdir(join(l1, 'tmp'));
  await chmod(join(l1, 'tmp'), 0o1777);
  await put(l1, 'home/user/.profile', 'export A=1\n', 0o600, [1000, 1000]);
  await chown(join(l1, 'home/user'), 1000, 1000);
  await put(l1, 'var/cache/apt/pkg1.deb', 'one');
  await put(l1, 'var/cache/apt/sub/pkg2.deb', 'two');
  await put(l1, 'opt/removeme/file', 'gone soon');
  await put(l1, 'opt/keep', 'kept');
  await mkdir(join(l1, 'data'));
  execFileSync('mkfifo', [join(l1, 'data/fifo')]);
  await mkdir(join(l1, 'dev'));
  execFileSync('mknod', ['-m', '0666', join(l1, 'dev/null'), 'c', '1', '3']);
  await put(l1, LONG, 'a long name');
  await put(l1, 'usr/share/doc/readme', 'docs');

  // Layer 2: changes.
  const l2 = join(work, 'l2');
  await put(l2, 'etc/hosts', '127.0.0.1 localhost changed\n');
  await put(l2, 'bin/tool', Buffer.alloc(100_000, 9), 0o750, [0, 50]);
  await put(l2, 'usr/lib/libx.so.1', Buffer.alloc(7000, 4), 0o755);
  await link(join(l2, 'usr/lib/libx.so.1'), join(l2, 'usr/lib/libx.so.1.2'));
  await symlink('libx.so.1', join(l2, 'usr/lib/libx.so'));
  await put(l2, 'home/user/notes', 'hi', 0o640, [1000, 1000]);

  // Layer 3: whiteouts, an opaque dir whose marker comes after its new entries, a dir replaced by a file.
  const l3 = join(work, 'l3');
  await put(l3, 'opt/.wh.removeme', '');
  await put(l3, 'bin/.wh.sgid', '');
  await put(l3, 'var/cache/apt/new.deb', 'new');
  await put(l3, 'var/cache/apt/sub/own.deb', 'own');
  await put(l3, 'var/cache/apt/.wh..wh..opq', '');
  await put(l3, 'usr/share/doc', 'now a file');
  const order3 = [
    '.',
    './opt',
    './opt/.wh.removeme',
    './bin',
    './bin/.wh.sgid',
    './var',
    './var/cache',
    './var/cache/apt',
    './var/cache/apt/new.deb',
    './var/cache/apt/sub',
    './var/cache/apt/sub/own.deb',
    './var/cache/apt/.wh..wh..opq',
    './usr',
    './usr/share',
    './usr/share/doc',
  ];
  return {
    tars: [
      gnuTar(l1, join(work, 'l1.tar')),
      gnuTar(l2, join(work, 'l2.tar')),
      gnuTar(l3, join(work, 'l3.tar'), order3),
    ],
  };
}

/** Hardlink groups replace inode numbers so that two trees can be compared. */
function comparable(snap: Map<string, NodeInfo>): Record<string, unknown> {
  const groups = new Map<number, string[]>();
  for (const [p, n] of snap) if (n.type !== 'dir') groups.set(n.ino, [...(groups.get(n.ino) ?? []), p]);
  const out: Record<string, unknown> = {};
  for (const [p, n] of snap) {
    const { ino, ...rest } = n;
    const group = groups.get(ino) ?? [];
    out[p] = { ...rest, ...(group.length > 1 ? { hardlinks: group.sort().join(',') } : {}) };
  }
  return out;
}

describe('unpack', () => {
  it('gives the same tree as umoci unpack for a realistic image', async () => {
    const umoci = requirePeer('umoci');
    requirePeer('setfattr');
    requirePeer('zstd');
    const work = await tempDir('strata-unpack-');
    const { tars } = await buildLayers(work);
    const store = await FsStore.open(join(work, 'store'));
    const zst = execFileSync('zstd', ['-q', '-c', '-3'], { input: tars[1], maxBuffer: 1 << 30 });
    const { gzipSync } = await import('node:zlib');
    await storeImage(store, 'example.com/union/real:1', [
      { blob: gzipSync(tars[0]!), mediaType: MediaType.OciLayerGzip, diffId: diffIdOf(tars[0]!) },
      { blob: zst, mediaType: MediaType.OciLayerZstd, diffId: diffIdOf(tars[1]!) },
      // labelled gzip but plain: the magic bytes decide
      { blob: tars[2]!, mediaType: MediaType.OciLayerGzip, diffId: diffIdOf(tars[2]!) },
    ]);
    // umoci reads the store (an OCI layout); give it a gzip copy when it cannot read zstd or mislabels.
    await storeImage(store, 'example.com/union/real-umoci:1', [
      { blob: gzipSync(tars[0]!), mediaType: MediaType.OciLayerGzip, diffId: diffIdOf(tars[0]!) },
      { blob: gzipSync(tars[1]!), mediaType: MediaType.OciLayerGzip, diffId: diffIdOf(tars[1]!) },
      { blob: gzipSync(tars[2]!), mediaType: MediaType.OciLayerGzip, diffId: diffIdOf(tars[2]!) },
    ]);

    const engine = new Engine({ store, registry: new RegistryClient() });
    const ours = join(work, 'ours');
    const result = await engine.unpack('example.com/union/real:1', ours);
    expect(result.layers).toHaveLength(3);
    expect(result.total).toMatchObject({ whiteouts: 2, opaques: 1, hardlinks: 2, devicesSkipped: 0 });
    expect(result.total.xattrs).toBeGreaterThanOrEqual(1);

    const bundle = join(work, 'bundle');
    execFileSync(umoci, ['unpack', '--image', `${store.root}:example.com/union/real-umoci:1`, bundle]);

    const mine = comparable(await snapshot(ours, { mtimes: true }));
    const theirs = comparable(await snapshot(join(bundle, 'rootfs'), { mtimes: true }));
    expect(Object.keys(mine).sort()).toEqual(Object.keys(theirs).sort());
    for (const p of Object.keys(theirs))
      expect({ p, ...(mine[p] as object) }).toEqual({ p, ...(theirs[p] as object) });

    // Spot checks of the rules themselves.
    expect(mine['opt/removeme']).toBeUndefined();
    expect(mine['bin/sgid']).toBeUndefined();
    expect(mine['var/cache/apt/pkg1.deb']).toBeUndefined();
    expect(mine['var/cache/apt/sub/pkg2.deb']).toBeUndefined();
    expect(mine['var/cache/apt/new.deb']).toMatchObject({ type: 'file' });
    expect(mine['var/cache/apt/sub/own.deb']).toMatchObject({ type: 'file' });
    expect(mine['bin/suid']).toMatchObject({ mode: 0o4755 });
    expect(mine['tmp']).toMatchObject({ mode: 0o1777 });
    expect(mine['data/fifo']).toMatchObject({ type: 'fifo' });
    expect(mine['dev/null']).toMatchObject({ type: 'char', mode: 0o666 });
    expect(Object.keys(mine).length).toBeGreaterThan(30);
    expect(mine['usr/share/doc']).toMatchObject({ type: 'file' });
    expect(mine[LONG]).toMatchObject({ type: 'file' });
    expect(mine['home/user/notes']).toMatchObject({ uid: 1000, gid: 1000, mode: 0o640 });
    // xattrs (GNU tar's SCHILY.xattr records; a binary value too) match umoci's.
    const xattrs = (dir: string): string =>
      execFileSync('getfattr', ['-R', '-d', '-m', 'user\\.', '-e', 'hex', '.'], { cwd: dir }).toString();
    expect(xattrs(ours)).toContain('user.strata=0x68656c6c6f');
    expect(xattrs(ours)).toContain('user.bin=0x00ff01');
    expect(xattrs(ours)).toBe(xattrs(join(bundle, 'rootfs')));

    // A non-empty target is refused unless forced.
    await expect(engine.unpack('example.com/union/real:1', ours)).rejects.toMatchObject({
      code: 'ALREADY_EXISTS',
    });
    const again = await engine.unpack('example.com/union/real:1', ours, { force: true });
    expect(again.layers).toHaveLength(3);
  });

  it('writes whiteouts and opaque markers in overlay form', async () => {
    requirePeer('setfattr');
    const work = await tempDir('strata-overlay-form-');
    const { tars } = await buildLayers(work);
    const layerDir = join(work, 'layer3');
    await mkdir(layerDir);
    const { Readable } = await import('node:stream');
    const stats = await applyLayer(Readable.from([tars[2]!]), layerDir, {
      format: 'overlay',
      layerName: 'l3',
    });
    expect(stats).toMatchObject({ whiteouts: 2, opaques: 1 });
    const snap = await snapshot(layerDir);
    expect(snap.get('opt/removeme')).toMatchObject({ type: 'char', rdev: 0 });
    expect(snap.get('bin/sgid')).toMatchObject({ type: 'char', rdev: 0 });
    expect(snap.get('var/cache/apt/new.deb')).toMatchObject({ type: 'file' });
    expect([...snap.keys()].some((k) => k.includes('.wh.'))).toBe(false);
    const opaque = execFileSync('getfattr', [
      '-n',
      'trusted.overlay.opaque',
      '--only-values',
      join(layerDir, 'var/cache/apt'),
    ]).toString();
    expect(opaque).toBe('y');
  });

  it('reads a zstd layer streamed from a file and refuses garbage', async () => {
    requirePeer('zstd');
    const work = await tempDir('strata-zstd-');
    const { tars } = await buildLayers(work);
    const file = join(work, 'l1.tar.zst');
    execFileSync('zstd', ['-q', '-19', '-o', file, join(work, 'l1.tar')]);
    const { decompressedStream } = await import('../../src/engine/union/decompress.js');
    const root = join(work, 'z');
    await mkdir(root);
    const stats = await applyLayer(
      decompressedStream(createReadStream(file, { highWaterMark: 4096 }), MediaType.OciLayerZstd),
      root,
      { format: 'vfs', layerName: 'zst' },
    );
    expect(stats.bytes).toBeGreaterThan(200_000);
    expect(await readFile(join(root, 'etc/passwd'), 'utf8')).toMatch(/^root:/);
    const garbage = Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), Buffer.alloc(100, 0x55)]);
    const { Readable } = await import('node:stream');
    const err = await applyLayer(
      decompressedStream(Readable.from([garbage]), MediaType.OciLayerZstd, { layerName: 'bad' }),
      root,
      { format: 'vfs', layerName: 'bad' },
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TerminalError);
    expect(tars).toHaveLength(3);
  });
});
