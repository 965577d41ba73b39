import { describe, expect, it } from 'vitest';
import { applyConfigChanges, splitWords } from '../../src/engine/commit/changes-parser.js';
import { compareFileInfo, overlayEntryChanges } from '../../src/engine/commit/changes.js';
import { clampMtime, layerEntries } from '../../src/engine/commit/order.js';
import { encodeHeader, paxRecord, splitUstarName } from '../../src/engine/tar/header.js';
import type { Change, FileInfo } from '../../src/engine/commit/types.js';
import { parseGetfattrDump } from '../../src/engine/commit/xattrs.js';
import { hasCode } from '../../src/engine/errors.js';

const file = (over: Partial<FileInfo> = {}): FileInfo => ({
  type: 'file',
  mode: 0o644,
  uid: 0,
  gid: 0,
  size: 3,
  mtimeSec: 1000,
  mtimeNsec: 5,
  ...over,
});
const dir = (over: Partial<FileInfo> = {}): FileInfo => file({ type: 'dir', mode: 0o755, size: 0, ...over });

describe('-c changes parser', () => {
  const base = { Env: ['PATH=/usr/bin', 'A=1'], Cmd: ['sh'], WorkingDir: '/srv' };
  const cases: Array<[string, string[], Record<string, unknown>]> = [
    ['CMD exec form', ['CMD ["nginx","-g","daemon off;"]'], { Cmd: ['nginx', '-g', 'daemon off;'] }],
    ['CMD shell form', ['CMD echo hi'], { Cmd: ['/bin/sh', '-c', 'echo hi'] }],
    ['cmd lowercase keyword', ['cmd ["a"]'], { Cmd: ['a'] }],
    ['ENTRYPOINT resets inherited CMD', ['ENTRYPOINT ["/e"]'], { Entrypoint: ['/e'], Cmd: null }],
    [
      'ENTRYPOINT keeps CMD set before',
      ['CMD ["x"]', 'ENTRYPOINT /e'],
      { Entrypoint: ['/bin/sh', '-c', '/e'], Cmd: ['x'] },
    ],
    [
      'ENV k=v multiple, quotes',
      ['ENV B=2 C="two words"'],
      { Env: ['PATH=/usr/bin', 'A=1', 'B=2', 'C=two words'] },
    ],
    ['ENV replaces and expands', ['ENV PATH=$PATH:/opt/bin'], { Env: ['PATH=/usr/bin:/opt/bin', 'A=1'] }],
    [
      'ENV legacy form',
      ['ENV GREETING hello  world'],
      { Env: ['PATH=/usr/bin', 'A=1', 'GREETING=hello world'] },
    ],
    [
      'ENV ${VAR:-default}',
      ['ENV X=${NOPE:-dflt} Y=${A:+set}'],
      { Env: ['PATH=/usr/bin', 'A=1', 'X=dflt', 'Y=set'] },
    ],
    ['ENV single quotes are literal', ["ENV Q='$A'"], { Env: ['PATH=/usr/bin', 'A=1', 'Q=$A'] }],
    ['WORKDIR relative joins', ['WORKDIR app'], { WorkingDir: '/srv/app' }],
    ['WORKDIR absolute', ['WORKDIR /x/../y'], { WorkingDir: '/y' }],
    ['USER', ['USER 1000:1000'], { User: '1000:1000' }],
    [
      'EXPOSE ports and ranges',
      ['EXPOSE 80 53/udp 8000-8001'],
      { ExposedPorts: { '80/tcp': {}, '53/udp': {}, '8000/tcp': {}, '8001/tcp': {} } },
    ],
    ['LABEL multiple with quotes', ['LABEL a=1 "b c"="d e"'], { Labels: { a: '1', 'b c': 'd e' } }],
    ['VOLUME json', ['VOLUME ["/data", "/logs"]'], { Volumes: { '/data': {}, '/logs': {} } }],
    ['VOLUME list', ['VOLUME /a /b'], { Volumes: { '/a': {}, '/b': {} } }],
    ['STOPSIGNAL', ['STOPSIGNAL SIGQUIT'], { StopSignal: 'SIGQUIT' }],
  ];
  for (const [name, instrs, want] of cases) {
    it(name, () => {
      const out = applyConfigChanges(base, instrs);
      for (const [k, v] of Object.entries(want)) expect(out[k], k).toEqual(v);
      expect(base.Env).toEqual(['PATH=/usr/bin', 'A=1']); // input untouched
    });
  }
  const bad: Array<[string, string]> = [
    ['unknown instruction', 'RUN apt-get update'],
    ['empty', '   '],
    ['bad port', 'EXPOSE http'],
    ['port out of range', 'EXPOSE 70000'],
    ['ENV without value', 'ENV JUSTKEY'],
    ['unterminated quote', 'ENV A="x'],
    ['bad signal', 'STOPSIGNAL $$$'],
  ];
  for (const [name, instr] of bad) {
    it(`rejects ${name} with INVALID_ARGUMENT`, () => {
      let err: unknown;
      try {
        applyConfigChanges(base, [instr]);
      } catch (e) {
        err = e;
      }
      expect(hasCode(err, 'INVALID_ARGUMENT')).toBe(true);
    });
  }
  it('names the unknown instruction', () => {
    expect(() => applyConfigChanges({}, ['FROB x'])).toThrow(/FROB/);
  });
  it('splits words like the Dockerfile parser', () => {
    expect(splitWords(`a "b c" 'd e' f\\ g`, [])).toEqual(['a', 'b c', 'd e', 'f g']);
  });
});

describe('layer entry order', () => {
  const c = (kind: Change['kind'], path: string): Change => ({
    kind,
    path,
    info: kind === 'delete' ? undefined : file(),
  });
  const cases: Array<[string, Change[], string[]]> = [
    [
      'component-wise, not string order',
      [c('add', 'a.b'), c('add', 'a/b'), c('add', 'a')],
      ['a', 'a/b', 'a.b'],
    ],
    ['root whiteouts first', [c('add', 'etc'), c('delete', 'zzz')], ['.wh.zzz', 'etc']],
  ];
  it.each(cases)('%s', (_n, changes, want) => {
    expect(layerEntries(changes).map((e) => e.name)).toEqual(want);
  });
  it('whiteouts before siblings, opaque first, dirs before children', () => {
    const changes = [
      c('add', 'b'),
      c('add', 'a/z'),
      c('delete', 'a/y'),
      c('add', 'a'),
      c('opaque', 'a'),
      c('add', 'a/.x'),
      c('delete', 'c'),
    ];
    expect(layerEntries(changes).map((e) => e.name)).toEqual([
      '.wh.c',
      'a',
      'a/.wh..wh..opq',
      'a/.wh.y',
      'a/.x',
      'a/z',
      'b',
    ]);
  });
  it('refuses duplicates, unclean paths and .wh. names', () => {
    expect(() => layerEntries([c('add', 'a'), c('modify', 'a')])).toThrow(/twice/);
    expect(() => layerEntries([c('add', 'a/../b')])).toThrow(/clean/);
    expect(() => layerEntries([c('add', '/abs')])).toThrow(/clean/);
    expect(() => layerEntries([c('add', 'x/.wh.y')])).toThrow(/reserved/);
  });
});

describe('SOURCE_DATE_EPOCH clamp', () => {
  it.each([
    [2000, 1500, 1500],
    [1000, 1500, 1000],
    [1500, 1500, 1500],
    [2000, undefined, 2000],
    [0, 0, 0],
  ])('mtime %d with epoch %s → %d', (mtime, epoch, want) => {
    expect(clampMtime(mtime, epoch)).toBe(want);
  });
});

describe('vfs compare rules', () => {
  const cases: Array<[string, FileInfo, FileInfo, string]> = [
    ['identical', file(), file(), 'same'],
    ['mode', file(), file({ mode: 0o755 }), 'modify'],
    ['owner', file(), file({ uid: 1 }), 'modify'],
    ['size', file(), file({ size: 4 }), 'modify'],
    ['mtime ns', file(), file({ mtimeNsec: 6 }), 'modify'],
    ['no ns: compare content', file({ mtimeNsec: 0 }), file({ mtimeNsec: 0 }), 'compare-content'],
    [
      'same inode',
      file({ mtimeNsec: 0, dev: 1n, ino: 2n }),
      file({ mtimeNsec: 0, dev: 1n, ino: 2n }),
      'same',
    ],
    ['type', file(), dir(), 'modify'],
    ['dir mtime ignored', dir(), dir({ mtimeSec: 5 }), 'same'],
    ['dir mode', dir(), dir({ mode: 0o700 }), 'modify'],
    [
      'symlink target',
      file({ type: 'symlink', size: 0, linkname: 'a' }),
      file({ type: 'symlink', size: 0, linkname: 'b' }),
      'modify',
    ],
    [
      'device numbers',
      file({ type: 'char', size: 0, devMajor: 1, devMinor: 3 }),
      file({ type: 'char', size: 0, devMajor: 1, devMinor: 5 }),
      'modify',
    ],
    [
      'xattr value',
      file({ xattrs: { 'user.a': Buffer.from('1') } }),
      file({ xattrs: { 'user.a': Buffer.from('2') } }),
      'modify',
    ],
    ['xattr added', file(), file({ xattrs: { 'security.capability': Buffer.from([1, 0]) } }), 'modify'],
  ];
  it.each(cases)('%s', (_n, lower, upper, want) => {
    expect(compareFileInfo(lower, upper)).toBe(want);
  });
});

describe('overlay upper rules', () => {
  it('a char device 0:0 is a delete', () => {
    const out = overlayEntryChanges(
      'a/b',
      file({ type: 'char', size: 0, devMajor: 0, devMinor: 0 }),
      undefined,
      '/u/a/b',
    );
    expect(out.map((c) => [c.kind, c.path])).toEqual([['delete', 'a/b']]);
  });
  it('an opaque dir is the dir plus an opaque marker, overlay xattrs dropped', () => {
    const x = { 'trusted.overlay.opaque': Buffer.from('y'), 'user.keep': Buffer.from('1') };
    const out = overlayEntryChanges('d', dir(), x, '/u/d');
    expect(out.map((c) => c.kind)).toEqual(['add', 'opaque']);
    expect(Object.keys(out[0]!.info!.xattrs!)).toEqual(['user.keep']);
  });
  it('a real char device stays an entry', () => {
    const out = overlayEntryChanges(
      'dev/null',
      file({ type: 'char', size: 0, devMajor: 1, devMinor: 3 }),
      undefined,
      '/u',
    );
    expect(out[0]!.kind).toBe('add');
  });
  it('refuses redirect_dir and metacopy', () => {
    expect(() =>
      overlayEntryChanges('d', dir(), { 'trusted.overlay.redirect': Buffer.from('/x') }, '/u/d'),
    ).toThrow(/redirect_dir/);
    expect(() =>
      overlayEntryChanges('f', file(), { 'trusted.overlay.metacopy': Buffer.alloc(0) }, '/u/f'),
    ).toThrow(/metacopy/);
  });
});

describe('tar header encoding', () => {
  it('PAX record length counts itself', () => {
    expect(paxRecord('path', 'a').toString()).toBe('9 path=a\n');
    const long = paxRecord('path', 'x'.repeat(95));
    expect(long.length).toBe(Number(long.toString().split(' ')[0]));
  });
  it('splits long names into prefix/name, refuses what cannot fit', () => {
    const n = `${'d'.repeat(120)}/${'f'.repeat(50)}`;
    expect(splitUstarName(n)).toEqual({ prefix: 'd'.repeat(120), name: 'f'.repeat(50) });
    expect(splitUstarName('f'.repeat(101))).toBeUndefined();
    expect(splitUstarName('é')).toBeUndefined();
  });
  it('emits a PAX header for a long name and binary xattrs', () => {
    const h = encodeHeader({
      name: 'n'.repeat(150),
      typeflag: '0',
      mode: 0o644,
      uid: 0,
      gid: 0,
      size: 0,
      mtime: 1,
      xattrs: { 'security.capability': Buffer.from([0, 0xff, 0x80]) },
    });
    expect(h.length).toBe(512 * 3);
    expect(String.fromCharCode(h[156]!)).toBe('x');
    expect(h.subarray(512, 1024).includes(Buffer.from([0, 0xff, 0x80]))).toBe(true);
  });
});

describe('getfattr dump parsing', () => {
  it('decodes escaped names and base64 values relative to the root', () => {
    const dump = [
      '# file: /r/a/b',
      'trusted.overlay.opaque=0seQ==',
      '',
      '# file: /r/we ird\\012name',
      'user.x=0saGVsbG8=',
      'user.empty',
      '',
    ].join('\n');
    const m = parseGetfattrDump(dump, '/r');
    expect(m.get('a/b')!['trusted.overlay.opaque']!.toString()).toBe('y');
    expect(m.get('we ird\nname')!['user.x']!.toString()).toBe('hello');
    expect(m.get('we ird\nname')!['user.empty']!.length).toBe(0);
  });
});
