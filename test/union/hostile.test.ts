/**
 * Hostile layers: each case applies a crafted tar into a fresh root inside a sandbox that also holds an
 * "outside" directory with sentinel files, then checks that nothing outside the root was created, changed or
 * deleted, and that the refusal is a TerminalError naming the layer and the entry.
 */
import { execFileSync } from 'node:child_process';
import { lstat, mkdir, readFile, readdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { TerminalError } from '../../src/engine/errors.js';
import { applyLayer, type ApplyOptions } from '../../src/engine/union/apply.js';
import { decompressedStream } from '../../src/engine/union/decompress.js';
import { makeTar, readableOf, snapshot, tempDir, type TarEntrySpec } from './helpers.js';

const LAYER = 'sha256:hostile0000000000000000000000000000000000000000000000000000000000';

interface Sandbox {
  dir: string;
  root: string;
  outside: string;
  before: string;
}

async function sandbox(): Promise<Sandbox> {
  const dir = await tempDir('strata-hostile-');
  const root = join(dir, 'root');
  const outside = join(dir, 'outside');
  await mkdir(root);
  await mkdir(join(outside, 'sub'), { recursive: true });
  await writeFile(join(outside, 'sentinel'), 'keep me');
  await writeFile(join(outside, 'sub', 'sentinel2'), 'keep me too');
  await writeFile(join(dir, 'sibling'), 'next to the root');
  return { dir, root, outside, before: await state(dir, root) };
}

/** Everything in the sandbox except the root's own contents: names, types, modes, owners, hashes, mtimes. */
async function state(dir: string, root: string): Promise<string> {
  const snap = await snapshot(dir, { mtimes: true });
  const rootRel = root.slice(dir.length + 1);
  const rows = [...snap].filter(([p]) => p !== rootRel && !p.startsWith(`${rootRel}/`));
  const rootInfo = await lstat(root);
  return JSON.stringify({ rows, rootIsDir: rootInfo.isDirectory() });
}

async function expectUntouched(s: Sandbox): Promise<void> {
  expect(await state(s.dir, s.root)).toBe(s.before);
  expect(await readFile(join(s.outside, 'sentinel'), 'utf8')).toBe('keep me');
}

type Entry = TarEntrySpec;

async function apply(s: Sandbox, entries: Entry[], options: Partial<ApplyOptions> = {}) {
  const tar = await makeTar(entries);
  return applyLayer(readableOf(tar), s.root, { format: 'vfs', layerName: LAYER, ...options });
}

async function expectRefused(s: Sandbox, entries: Entry[], entry: string, reason: RegExp): Promise<void> {
  const err = await apply(s, entries).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TerminalError);
  const e = err as TerminalError;
  expect(e.code).toBe('LAYER_INVALID');
  expect(e.message).toContain(LAYER);
  expect(e.message).toContain(JSON.stringify(entry));
  expect(e.message).toMatch(reason);
  await expectUntouched(s);
}

describe('hostile layers never touch anything outside the root', () => {
  it('refuses a ".." escape', async () => {
    const s = await sandbox();
    await expectRefused(
      s,
      [{ name: '../outside/sentinel', content: 'pwned' }],
      '../outside/sentinel',
      /escapes the root/,
    );
    await expectRefused(s, [{ name: 'a/../../escape', content: 'x' }], 'a/../../escape', /escapes/);
  });

  it('takes an absolute entry path relative to the root (as GNU tar, Docker and umoci do)', async () => {
    const s = await sandbox();
    const abs = join(s.outside, 'sentinel');
    await apply(s, [{ name: abs, content: 'inside' }]);
    await expectUntouched(s);
    expect(await readFile(join(s.root, abs), 'utf8')).toBe('inside');
  });

  it('refuses a file through a symlink that points outside (absolute target)', async () => {
    const s = await sandbox();
    await expectRefused(
      s,
      [
        { name: 'evil', type: 'symlink', linkname: s.outside },
        { name: 'evil/pwned', content: 'pwned' },
      ],
      'evil/pwned',
      /symlink "evil".*does not exist/,
    );
  });

  it('refuses a path through a "../../.." symlink chain', async () => {
    const s = await sandbox();
    const up = '../'.repeat(s.root.split('/').length + 2);
    await expectRefused(
      s,
      [
        { name: 'a', type: 'directory' },
        { name: 'a/up', type: 'symlink', linkname: up },
        { name: 'b', type: 'symlink', linkname: 'a/up' },
        { name: `b${s.outside}/sentinel`, content: 'pwned' },
      ],
      `b${s.outside}/sentinel`,
      /points outside the root/,
    );
    await expectRefused(
      s,
      [
        { name: 'rel', type: 'symlink', linkname: '../outside' },
        { name: 'rel/sentinel', content: 'pwned' },
      ],
      'rel/sentinel',
      /outside the root/,
    );
  });

  it('replaces a symlink at the final component instead of writing through it', async () => {
    const s = await sandbox();
    const stats = await apply(s, [
      { name: 'link', type: 'symlink', linkname: join(s.outside, 'sentinel') },
      { name: 'link', content: 'replaced' },
      { name: 'dirlink', type: 'symlink', linkname: s.outside },
      { name: 'dirlink', type: 'directory', mode: 0o700 },
      { name: 'hl', type: 'symlink', linkname: join(s.outside, 'sentinel') },
      { name: 'hl2', type: 'link', linkname: 'hl' },
    ]);
    await expectUntouched(s);
    expect(await readFile(join(s.root, 'link'), 'utf8')).toBe('replaced');
    expect((await lstat(join(s.root, 'dirlink'))).isDirectory()).toBe(true);
    // a hardlink to a symlink links the symlink itself
    expect((await lstat(join(s.root, 'hl2'))).isSymbolicLink()).toBe(true);
    expect(stats).toMatchObject({ files: 1, symlinks: 3, hardlinks: 1, dirs: 1 });
  });

  it('refuses hardlinks to outside or to missing targets', async () => {
    const s = await sandbox();
    await expectRefused(
      s,
      [{ name: 'passwd', type: 'link', linkname: '/etc/passwd' }],
      'passwd',
      /hardlink target "\/etc\/passwd" does not exist in the image/,
    );
    await expectRefused(
      s,
      [{ name: 'h', type: 'link', linkname: '../outside/sentinel' }],
      'h',
      /escapes the root/,
    );
    await expectRefused(
      s,
      [
        { name: 'evil', type: 'symlink', linkname: s.outside },
        { name: 'h', type: 'link', linkname: 'evil/sentinel' },
      ],
      'h',
      /does not exist/,
    );
    await expectRefused(s, [{ name: 'h', type: 'link', linkname: 'missing' }], 'h', /does not exist/);
  });

  it('refuses whiteouts that escape or go through a symlink to outside', async () => {
    const s = await sandbox();
    await expectRefused(s, [{ name: '../../.wh.sentinel' }], '../../.wh.sentinel', /escapes/);
    await expectRefused(s, [{ name: '.wh...' }], '.wh...', /parent or the root/);
    await expectRefused(s, [{ name: 'a/.wh.' }], 'a/.wh.', /bare/);
    await symlink(s.outside, join(s.root, 'evil'));
    await symlink('../outside', join(s.root, 'rel'));
    s.before = await state(s.dir, s.root);
    await expectRefused(s, [{ name: 'evil/.wh.sentinel' }], 'evil/.wh.sentinel', /does not exist/);
    await expectRefused(s, [{ name: 'rel/.wh.sentinel' }], 'rel/.wh.sentinel', /outside the root/);
    await expectRefused(s, [{ name: 'rel/.wh..wh..opq' }], 'rel/.wh..wh..opq', /outside the root/);
    // A whiteout of the symlink itself deletes the link, not its target.
    await apply(s, [{ name: '.wh.evil' }]);
    expect(await readdir(s.root)).toEqual(['rel']);
    expect(await readdir(s.outside)).toContain('sentinel');
  });

  it('skips device nodes when devices are not allowed, and counts them', async () => {
    const s = await sandbox();
    const stats = await apply(
      s,
      [
        { name: 'dev', type: 'directory' },
        { name: 'dev/sda', type: 'block-device', devmajor: 8, devminor: 0 },
        { name: 'dev/mem', type: 'character-device', devmajor: 1, devminor: 1 },
      ],
      { allowDevices: false },
    );
    expect(stats.devicesSkipped).toBe(2);
    expect(stats.warnings.join('\n')).toMatch(/dev\/sda/);
    expect(await readdir(join(s.root, 'dev'))).toEqual([]);
    await expectUntouched(s);
  });

  it('refuses a huge PAX header before buffering it', async () => {
    const s = await sandbox();
    const err = await apply(s, [
      { name: 'ok', content: 'fine' },
      { name: 'big', content: 'x', pax: { comment: 'x'.repeat(2 * 1024 * 1024) } },
    ]).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TerminalError);
    expect((err as TerminalError).code).toBe('LAYER_INVALID');
    expect((err as Error).message).toContain(LAYER);
    expect((err as Error).message).toMatch(/PaxHeader.*extended header of \d+ bytes exceeds the limit/);
    await expectUntouched(s);
  });

  it('stops a gzip bomb at the uncompressed-size cap', async () => {
    const s = await sandbox();
    const tar = await makeTar([{ name: 'zeros', content: Buffer.alloc(16 * 1024 * 1024) }]);
    const bomb = gzipSync(tar, { level: 9 });
    expect(bomb.length).toBeLessThan(64 * 1024);
    const stream = decompressedStream(readableOf(bomb), 'application/vnd.oci.image.layer.v1.tar+gzip', {
      layerName: LAYER,
      maxUncompressedBytes: 1024 * 1024,
    });
    const err = await applyLayer(stream, s.root, { format: 'vfs', layerName: LAYER }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TerminalError);
    expect((err as TerminalError).code).toBe('SIZE_LIMIT');
    expect((err as Error).message).toContain(LAYER);
    await expectUntouched(s);
    // What was written stays below the cap.
    expect((await lstat(join(s.root, 'zeros'))).size).toBeLessThanOrEqual(1024 * 1024);
    // The same with zstd (fzstd decodes whole chunks synchronously: the cap is checked inside).
    const zbomb = execFileSync('zstd', ['-q', '-19', '-c'], { input: tar });
    const zerr = await applyLayer(
      decompressedStream(readableOf(zbomb), 'application/vnd.oci.image.layer.v1.tar+zstd', {
        layerName: LAYER,
        maxUncompressedBytes: 1024 * 1024,
      }),
      join(s.root),
      { format: 'vfs', layerName: LAYER },
    ).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(zerr).toMatchObject({ code: 'SIZE_LIMIT' });
    expect((zerr as Error).message).toContain(LAYER);
    await expectUntouched(s);
  });

  it('refuses a truncated tar and a bad checksum', async () => {
    const s = await sandbox();
    const tar = await makeTar([{ name: 'f', content: Buffer.alloc(10_000, 1) }]);
    const cut = applyLayer(readableOf(tar.subarray(0, 4096)), s.root, { format: 'vfs', layerName: LAYER });
    await expect(cut).rejects.toThrow(/the tar ends inside the data of the entry/);
    const bad = Buffer.from(tar);
    bad[0] = 0x41;
    await expect(applyLayer(readableOf(bad), s.root, { format: 'vfs', layerName: LAYER })).rejects.toThrow(
      /checksum/,
    );
    await expectUntouched(s);
  });
});
