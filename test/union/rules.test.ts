import { describe, expect, it } from 'vitest';
import { walkParents, type NodeKind } from '../../src/engine/union/safe-path.js';
import { quoteRestorePath, restoreDump } from '../../src/engine/union/special-files.js';
import { chooseCompression } from '../../src/engine/union/decompress.js';
import {
  ancestorsOf,
  classifyEntry,
  fromOverlayForm,
  normalizeEntryPath,
  toOverlayForm,
  whiteoutPathFor,
  opaqueMarkerFor,
} from '../../src/engine/union/whiteouts.js';

describe('normalizeEntryPath', () => {
  it.each([
    ['./etc/passwd', 'etc/passwd'],
    ['/etc/passwd', 'etc/passwd'],
    ['etc/', 'etc'],
    ['./', ''],
    ['/', ''],
    ['.', ''],
    ['a//b/./c', 'a/b/c'],
    ['a/b/../c', 'a/c'],
    ['a/..', ''],
  ])('%j → %j', (input, want) => {
    expect(normalizeEntryPath(input)).toEqual({ ok: true, path: want });
  });

  it.each(['..', '../x', './../x', 'a/../../x', '/../etc', 'a\0b'])('%j is refused', (input) => {
    expect(normalizeEntryPath(input).ok).toBe(false);
  });
});

describe('classifyEntry', () => {
  it.each([
    ['etc/passwd', { kind: 'entry', path: 'etc/passwd' }],
    ['', { kind: 'entry', path: '' }],
    ['etc/.wh.passwd', { kind: 'whiteout', dir: 'etc', name: 'passwd', target: 'etc/passwd' }],
    ['.wh.etc', { kind: 'whiteout', dir: '', name: 'etc', target: 'etc' }],
    ['a/.wh..hidden', { kind: 'whiteout', dir: 'a', name: '.hidden', target: 'a/.hidden' }],
    ['a/b/.wh..wh..opq', { kind: 'opaque', dir: 'a/b' }],
    ['.wh..wh..opq', { kind: 'opaque', dir: '' }],
    ['.wh..wh.plnk/123', { kind: 'invalid' }],
    ['a/.wh..wh.plnk', { kind: 'meta', path: 'a/.wh..wh.plnk' }],
    ['a/.wh.', { kind: 'invalid' }],
    ['a/.wh..', { kind: 'invalid' }],
    ['a/.wh...', { kind: 'invalid' }],
    ['a/.wh.b/c', { kind: 'invalid' }],
    ['a/x.wh.b', { kind: 'entry', path: 'a/x.wh.b' }],
  ])('%j', (path, want) => {
    expect(classifyEntry(path)).toMatchObject(want);
  });
});

describe('overlay form', () => {
  it('converts whiteouts and opaque markers both ways', () => {
    expect(toOverlayForm(classifyEntry('a/.wh.b'))).toEqual({
      kind: 'whiteout-device',
      path: 'a/b',
      major: 0,
      minor: 0,
    });
    expect(toOverlayForm(classifyEntry('a/.wh..wh..opq'))).toEqual({
      kind: 'opaque-xattr',
      path: 'a',
      xattr: 'trusted.overlay.opaque',
      value: 'y',
    });
    expect(toOverlayForm(classifyEntry('a/.wh..wh..opq'), { userxattr: true })).toMatchObject({
      xattr: 'user.overlay.opaque',
    });
    expect(toOverlayForm(classifyEntry('a/b'))).toBeUndefined();
    expect(fromOverlayForm({ path: 'a/b', type: 'char', major: 0, minor: 0 })).toEqual({
      whiteout: 'a/.wh.b',
    });
    expect(fromOverlayForm({ path: 'dev/null', type: 'char', major: 1, minor: 3 })).toEqual({});
    expect(
      fromOverlayForm({
        path: 'a',
        type: 'directory',
        xattrs: { 'trusted.overlay.opaque': Buffer.from('y') },
      }),
    ).toEqual({ opaqueMarker: 'a/.wh..wh..opq' });
    expect(fromOverlayForm({ path: 'a', type: 'directory', xattrs: { 'user.overlay.opaque': 'y' } })).toEqual(
      {
        opaqueMarker: 'a/.wh..wh..opq',
      },
    );
    expect(whiteoutPathFor('x')).toBe('.wh.x');
    expect(opaqueMarkerFor('')).toBe('.wh..wh..opq');
    expect(ancestorsOf('a/b/c')).toEqual(['a', 'a/b']);
  });
});

/** A fake tree for the walk: dirs, symlinks (path → target) and other files. */
function tree(spec: { dirs?: string[]; links?: Record<string, string>; files?: string[] }) {
  return (rel: string): NodeKind => {
    if (spec.dirs?.includes(rel)) return { kind: 'dir' };
    const t = spec.links?.[rel];
    if (t !== undefined) return { kind: 'symlink', target: t };
    if (spec.files?.includes(rel)) return { kind: 'other' };
    return { kind: 'missing' };
  };
}

describe('walkParents (chroot-like resolution)', () => {
  const fs = tree({
    dirs: ['usr', 'usr/lib', 'etc', 'run', 'var'],
    links: {
      lib: 'usr/lib',
      abs: '/usr/lib',
      'var/run': '/run',
      up: '../../..',
      evil: '/tmp/outside',
      loop1: 'loop2',
      loop2: 'loop1',
      'usr/rel': '../etc',
      tofile: 'etc/passwd',
    },
    files: ['etc/passwd'],
  });

  it.each([
    ['usr/lib/x', 'usr/lib/x'],
    ['lib/x', 'usr/lib/x'],
    ['abs/x', 'usr/lib/x'],
    ['var/run/x', 'run/x'],
    ['usr/rel/x', 'etc/x'],
    ['lib', 'lib'], // the final component is never followed
    ['evil', 'evil'],
    ['', ''],
  ])('%j resolves to %j', async (path, rel) => {
    expect(await walkParents(path, fs)).toEqual({ status: 'ok', rel });
  });

  it.each([
    ['up/etc/passwd', /outside the root/],
    ['evil/pwned', /does not exist/],
    ['loop1/x', /too many levels/],
    ['etc/passwd/x', /not a directory/],
    ['tofile/x', /not a directory/],
  ])('%j is refused', async (path, reason) => {
    const r = await walkParents(path, fs);
    expect(r.status).toBe('refused');
    expect(r.status === 'refused' && r.reason).toMatch(reason);
  });

  it.each([
    ['up/etc/x', 'etc/x'],
    ['usr/rel/../../../x', 'x'],
    ['var/run/../../../run/x', 'run/x'],
    ['../../x', 'x'],
  ])(
    "with aboveRoot 'stay', %j resolves to %j (.. at the root stays there, as in chroot)",
    async (path, rel) => {
      expect(await walkParents(path, fs, { aboveRoot: 'stay' })).toEqual({ status: 'ok', rel });
    },
  );

  it("with aboveRoot 'stay', still refuses dangling, looping and non-directory parents", async () => {
    for (const path of ['evil/pwned', 'loop1/x', 'tofile/x'])
      expect((await walkParents(path, fs, { aboveRoot: 'stay' })).status).toBe('refused');
  });

  it('names the path, never "undefined", when a .. climbs above the root without a symlink', async () => {
    const r = await walkParents('../etc/x', fs);
    expect(r).toEqual({ status: 'refused', reason: '"../etc/x" climbs above the root' });
  });

  it('reports missing parents, or creates them when asked', async () => {
    expect(await walkParents('new/dir/x', fs)).toEqual({ status: 'missing', rel: 'new' });
    const made: string[] = [];
    expect(await walkParents('new/dir/x', fs, { create: (rel) => void made.push(rel) })).toEqual({
      status: 'ok',
      rel: 'new/dir/x',
    });
    expect(made).toEqual(['new', 'new/dir']);
  });

  it('refuses symlinks altogether when re-checking a recorded path', async () => {
    expect((await walkParents('lib/x', fs, { followSymlinks: false })).status).toBe('refused');
    expect(await walkParents('usr/lib/x', fs, { followSymlinks: false })).toEqual({
      status: 'ok',
      rel: 'usr/lib/x',
    });
  });
});

describe('setfattr restore dump and compression choice', () => {
  it('quotes paths and hex-encodes values', () => {
    expect(quoteRestorePath('/a b/c\nd\\é')).toBe('/a\\040b/c\\012d\\134\\303\\251');
    expect(restoreDump([{ host: '/x', name: 'user.a', value: Buffer.from([0, 255]) }])).toBe(
      '# file: /x\nuser.a=0x00ff\n\n',
    );
  });

  it('trusts magic bytes over the media type', () => {
    const gz = Buffer.from([0x1f, 0x8b, 8, 0]);
    const zst = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);
    const tar = Buffer.from('etc/');
    expect(chooseCompression('application/vnd.oci.image.layer.v1.tar', gz)).toBe('gzip');
    expect(chooseCompression('application/vnd.oci.image.layer.v1.tar+gzip', zst)).toBe('zstd');
    expect(chooseCompression('application/vnd.oci.image.layer.v1.tar+gzip', tar)).toBe('none');
    expect(chooseCompression('application/octet-stream', zst)).toBe('zstd');
  });
});
