/**
 * The tar room on its own: the archive writer read back by GNU tar, tar-stream (an independent codec) and our own
 * reader; size promises enforced; and archive reading that tells a broken tar from the caller's own failures.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readArchiveEntries } from '../../src/engine/archive/tar.js';
import { StrataError } from '../../src/engine/errors.js';
import { encodeHeader, END_OF_ARCHIVE } from '../../src/engine/tar/header.js';
import { readTar, TarFormatError } from '../../src/engine/tar/reader.js';
import { TarWriter } from '../../src/engine/tar/writer.js';
import { readTarEntries } from '../commit/helpers.js';

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'strata-tar-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** Runs `fill` against a TarWriter and answers the bytes it wrote. */
async function archive(fill: (w: TarWriter) => Promise<void>): Promise<Buffer> {
  const out = new PassThrough();
  const chunks: Buffer[] = [];
  out.on('data', (c: Buffer) => chunks.push(c));
  const w = new TarWriter(out);
  await fill(w);
  await w.finish();
  return Buffer.concat(chunks);
}

const big = randomBytes(3 * 1024 * 1024 + 17);

async function sample(w: TarWriter): Promise<void> {
  await w.directory('blobs');
  await w.directory('blobs/sha256');
  await w.stream(
    `blobs/sha256/${'a'.repeat(64)}`,
    big.length,
    Readable.from([big.subarray(0, 1000), big.subarray(1000)]),
  );
  await w.file('index.json', Buffer.from('{"x":1}\n'));
  await w.file('empty', Buffer.alloc(0));
}

describe('TarWriter (archives)', () => {
  it('writes a tar GNU tar, tar-stream and our reader agree on, byte-identical from run to run', async () => {
    const bytes = await archive(sample);
    expect(bytes.equals(await archive(sample))).toBe(true);
    expect(bytes.length % 512).toBe(0);
    const file = join(work, 'a.tar');
    await writeFile(file, bytes);
    const listing = execFileSync('tar', ['--numeric-owner', '-tvf', file], { encoding: 'utf8' });
    expect(listing.trim().split('\n')).toEqual([
      'drwxr-xr-x 0/0               0 1970-01-01 00:00 blobs/',
      'drwxr-xr-x 0/0               0 1970-01-01 00:00 blobs/sha256/',
      `-rw-r--r-- 0/0         ${big.length} 1970-01-01 00:00 blobs/sha256/${'a'.repeat(64)}`,
      '-rw-r--r-- 0/0               8 1970-01-01 00:00 index.json',
      '-rw-r--r-- 0/0               0 1970-01-01 00:00 empty',
    ]);
    const independent = await readTarEntries(Readable.from([bytes]));
    expect(independent.map((e) => [e.name, e.type, e.size, e.mode, e.uid, e.mtime])).toEqual([
      ['blobs/', 'directory', 0, 0o755, 0, 0],
      ['blobs/sha256/', 'directory', 0, 0o755, 0, 0],
      [`blobs/sha256/${'a'.repeat(64)}`, 'file', big.length, 0o644, 0, 0],
      ['index.json', 'file', 8, 0o644, 0, 0],
      ['empty', 'file', 0, 0o644, 0, 0],
    ]);
    expect(independent[2]!.content.equals(big)).toBe(true);
    const ours: string[] = [];
    for await (const { header, body } of readTar(Readable.from([bytes]), { maxHeaderBytes: 1 << 20 })) {
      const parts: Buffer[] = [];
      for await (const c of body) parts.push(c);
      ours.push(`${header.type} ${header.name} ${Buffer.concat(parts).length}`);
    }
    expect(ours).toEqual([
      'directory blobs/ 0',
      'directory blobs/sha256/ 0',
      `file blobs/sha256/${'a'.repeat(64)} ${big.length}`,
      'file index.json 8',
      'file empty 0',
    ]);
  });

  it('refuses a source that gives more or fewer bytes than announced', async () => {
    const short = archive((w) => w.stream('x', 10, Readable.from([Buffer.alloc(9)])));
    await expect(short).rejects.toMatchObject({ code: 'INTERNAL', detail: { member: 'x' } });
    const long = archive((w) => w.stream('y', 10, Readable.from([Buffer.alloc(11)])));
    await expect(long).rejects.toMatchObject({ code: 'INTERNAL', detail: { member: 'y' } });
  });

  it('stops on an aborted signal and on a destroyed output', async () => {
    const ac = new AbortController();
    const w = new TarWriter(new PassThrough(), ac.signal);
    await w.directory('a');
    ac.abort();
    await expect(w.file('b', Buffer.from('b'))).rejects.toMatchObject({ code: 'ABORTED' });
    const out = new PassThrough();
    const w2 = new TarWriter(out);
    out.destroy();
    await expect(w2.file('c', Buffer.from('c'))).rejects.toThrow(/closed/);
  });

  it('waits for a slow output instead of buffering the archive', async () => {
    const out = new PassThrough({ highWaterMark: 1024 });
    const w = new TarWriter(out);
    let settled = false;
    const pending = w.stream('big', big.length, [big]).then(() => (settled = true));
    await new Promise((r) => setTimeout(r, 50));
    expect(settled).toBe(false); // nothing reads: the write waits for drain
    out.resume();
    await pending;
    expect(settled).toBe(true);
  });
});

describe('readArchiveEntries', () => {
  it('yields members with their data and reports nothing for a sound tar', async () => {
    const bytes = await archive(sample);
    const errors: unknown[] = [];
    const seen: string[] = [];
    for await (const entry of readArchiveEntries(Readable.from([bytes]), (e) => errors.push(e))) {
      if (entry.header.name === 'index.json') {
        const parts: Buffer[] = [];
        for await (const c of entry) parts.push(c);
        seen.push(Buffer.concat(parts).toString());
      } else seen.push(entry.header.name); // unread data is skipped
    }
    expect(seen).toEqual(['blobs/', 'blobs/sha256/', `blobs/sha256/${'a'.repeat(64)}`, '{"x":1}\n', 'empty']);
    expect(errors).toEqual([]);
  });

  it("reports a truncated member and a bad header to onTarError, but not the caller's own errors", async () => {
    const bytes = await archive(sample);
    const cut = bytes.subarray(0, 3 * 512 + 5000); // inside the big member
    const errors: unknown[] = [];
    const read = async (input: Buffer): Promise<unknown> => {
      try {
        for await (const entry of readArchiveEntries(Readable.from([input]), (e) => errors.push(e)))
          for await (const _c of entry) void _c;
      } catch (err) {
        return err;
      }
      return undefined;
    };
    expect(await read(cut)).toBeInstanceOf(TarFormatError);
    expect(errors).toHaveLength(1);
    const garbled = Buffer.from(bytes);
    garbled[0] = 0x41; // checksum no longer matches
    expect(await read(garbled)).toBeInstanceOf(TarFormatError);
    expect(errors).toHaveLength(2);
    // The caller's own failure while consuming is not the tar's.
    const own = new StrataError('INTERNAL', 'mine');
    await expect(
      (async () => {
        for await (const _e of readArchiveEntries(Readable.from([bytes]), (e) => errors.push(e))) throw own;
      })(),
    ).rejects.toBe(own);
    expect(errors).toHaveLength(2);
  });

  it("refuses an oversized PAX header at the cap and reports it as the tar's", async () => {
    const header = encodeHeader({
      name: 'x',
      typeflag: '0',
      mode: 0o644,
      uid: 0,
      gid: 0,
      size: 0,
      mtime: 0,
      xattrs: { 'user.big': Buffer.alloc(2 * 1024 * 1024) },
    });
    const errors: unknown[] = [];
    const run = async (): Promise<void> => {
      for await (const _e of readArchiveEntries(Readable.from([header, END_OF_ARCHIVE]), (e) =>
        errors.push(e),
      ))
        void _e;
    };
    await expect(run()).rejects.toThrow(/exceeds the limit/);
    expect(errors).toHaveLength(1);
  });
});
