import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { importTarball } from '../../src/engine/archive/import.js';
import { LayerModel, type CheckedHeader } from '../../src/engine/archive/layer-check.js';
import { StrataError } from '../../src/engine/errors.js';
import type { EngineEvent } from '../../src/engine/observe.js';
import { buildTar, dirs, freshStore, type TarMember } from './helpers.js';

afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

const f = (name: string): CheckedHeader => ({ name, type: 'file', linkname: '' });
const d = (name: string): CheckedHeader => ({ name, type: 'directory', linkname: '' });
const sym = (name: string, target: string): CheckedHeader => ({ name, type: 'symlink', linkname: target });
const hard = (name: string, target: string): CheckedHeader => ({ name, type: 'link', linkname: target });

describe('LayerModel: the apply rules over a model of the tree', () => {
  const cases: Array<{ name: string; entries: CheckedHeader[]; refused?: RegExp }> = [
    { name: 'plain files and dirs', entries: [d('etc'), f('etc/a'), f('usr/bin/x')] },
    { name: 'absolute names are taken inside the root', entries: [f('/etc/passwd')] },
    { name: '.. that stays inside', entries: [d('a'), f('a/../b')] },
    { name: '.. climbing out', entries: [f('../escape')], refused: /escapes the root/ },
    { name: 'a .. deeper out', entries: [f('a/../../x')], refused: /escapes the root/ },
    { name: 'a NUL byte', entries: [f('a\0b')], refused: /NUL/ },
    { name: 'a bare whiteout', entries: [f('dir/.wh.')], refused: /names nothing/ },
    { name: 'a whiteout parent component', entries: [f('.wh.x/y')], refused: /whiteout name/ },
    {
      name: 'a symlink parent pointing outside',
      entries: [sym('up', '../..'), f('up/etc/passwd')],
      refused: /outside the root/,
    },
    {
      name: 'an absolute symlink parent is followed inside the root',
      entries: [d('real'), sym('link', '/real'), f('link/file')],
    },
    {
      name: 'a symlink parent to nothing',
      entries: [sym('gone', '/nowhere'), f('gone/x')],
      refused: /does not exist/,
    },
    {
      name: 'a symlink parent to a file',
      entries: [f('file'), sym('l', 'file'), f('l/x')],
      refused: /not a directory/,
    },
    { name: 'a symlink loop', entries: [sym('a', 'b'), sym('b', 'a'), f('a/x')], refused: /too many levels/ },
    { name: 'a hardlink to an earlier file', entries: [f('a'), hard('b', 'a')] },
    {
      name: 'a hardlink to nothing',
      entries: [hard('b', 'missing')],
      refused: /does not exist in the image/,
    },
    {
      name: 'a hardlink out of the root',
      entries: [hard('b', '../../etc/shadow')],
      refused: /escapes the root/,
    },
    { name: 'a hardlink to a directory', entries: [d('dir'), hard('b', 'dir')], refused: /is a directory/ },
    {
      name: 'a hardlink to a whited-out file',
      entries: [f('a'), f('.wh.a'), hard('b', 'a')],
      refused: /does not exist/,
    },
    {
      name: 'a hardlink into a whited-out directory',
      entries: [d('a'), f('a/x'), f('.wh.a'), hard('b', 'a/x')],
      refused: /does not exist/,
    },
    { name: 'a replaced file keeps its siblings', entries: [f('a'), f('ab'), f('a'), hard('c', 'ab')] },
    {
      name: 'a hardlink after its target became a dir',
      entries: [f('a'), d('a'), hard('b', 'a')],
      refused: /directory/,
    },
    { name: 'the root as a file', entries: [f('./')], refused: /root can only be a directory/ },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      const model = new LayerModel();
      let why: string | undefined;
      for (const e of c.entries) {
        why = await model.entry(e);
        if (why) break;
      }
      if (c.refused) expect(why).toMatch(c.refused);
      else expect(why).toBeUndefined();
    });
  }
});

async function refusedImport(bytes: Buffer | string, code: string, message: RegExp): Promise<StrataError> {
  const store = await freshStore();
  const source = typeof bytes === 'string' ? createReadStream(bytes) : Readable.from([bytes]);
  const err = await importTarball(store, source, 'example.com/bad:1', { source: 'bad.tar' }).catch(
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(StrataError);
  expect((err as StrataError).code).toBe(code);
  expect((err as StrataError).message).toMatch(message);
  expect(await store.listRefs()).toEqual([]); // nothing tagged
  const blobs: unknown[] = [];
  for await (const b of store.listBlobs()) blobs.push(b);
  expect(blobs).toEqual([]); // and no layer blob left behind
  return err as StrataError;
}

describe('import refuses what unpack would refuse, before tagging anything', () => {
  it('random bytes: LAYER_INVALID', async () => {
    await refusedImport(randomBytes(8192), 'LAYER_INVALID', /layer bad\.tar: .*checksum/);
  });

  it('gzip of random bytes: LAYER_INVALID', async () => {
    await refusedImport(gzipSync(randomBytes(8192)), 'LAYER_INVALID', /layer bad\.tar/);
  });

  const hostile: Array<[string, TarMember[], RegExp]> = [
    [
      'an escaping name',
      [
        { name: 'ok', data: 'x' },
        { name: '../../etc/cron.d/evil', data: 'x' },
      ],
      /"\.\.\/\.\.\/etc\/cron\.d\/evil": .*escapes/,
    ],
    [
      'a symlink parent leading out',
      [
        { name: 'up', symlink: '../../..' },
        { name: 'up/tmp/x', data: 'x' },
      ],
      /"up\/tmp\/x": .*outside the root/,
    ],
    [
      'a hardlink to a missing file',
      [{ name: 'b', hardlink: 'nothing' }],
      /"b": hardlink target "nothing" does not exist/,
    ],
  ];
  for (const [what, members, message] of hostile) {
    it(`${what}: LAYER_INVALID naming the entry (plain and gzip)`, async () => {
      const file = await buildTar(members);
      const err = await refusedImport(file, 'LAYER_INVALID', message);
      expect(err.detail).toMatchObject({ layer: 'bad.tar' });
      await refusedImport(gzipSync(await readFile(file)), 'LAYER_INVALID', message);
    });
  }

  it('a tar without entries is refused', async () => {
    await refusedImport(Buffer.alloc(1024), 'LAYER_INVALID', /not a tar archive with entries/);
  });

  it('an empty input is INVALID_ARGUMENT', async () => {
    await refusedImport(Buffer.alloc(0), 'INVALID_ARGUMENT', /bad\.tar is empty/);
  });

  it('a sound tarball imports, with progress events', async () => {
    const file = await buildTar([
      { name: 'etc/', dir: true },
      { name: 'etc/hostname', data: 'box\n' },
      { name: 'bin/busybox', data: randomBytes(5 << 20) },
      { name: 'bin/sh', symlink: 'busybox' },
      { name: 'bin/ash', hardlink: 'bin/busybox' },
    ]);
    const store = await freshStore();
    const events: EngineEvent[] = [];
    const result = await importTarball(store, createReadStream(file), 'example.com/ok:1', {
      observer: { log: console, emit: (e) => events.push(e) },
    });
    expect(await store.getRef('example.com/ok:1')).toMatchObject({ digest: result.digest });
    const progress = events.filter((e) => e.type === 'archive-progress');
    expect(progress.length).toBeGreaterThanOrEqual(2);
    expect(progress.at(-1)).toMatchObject({ operation: 'import', entries: 5, done: true });
  });
});
