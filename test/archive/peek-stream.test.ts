/** `peekStream`: looking at an archive's first bytes never loses or reorders any of the stream's data. */
import { readFile, rm } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { loadArchive } from '../../src/engine/archive/load.js';
import { peekStream } from '../../src/engine/archive/tar.js';
import { findLocalRef } from '../../src/engine/image/local.js';
import { dirs, freshStore, makeLayeredImage, saveTo } from './helpers.js';

afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

/** Everything a stream yields, as one string. */
async function rest(s: Readable): Promise<string> {
  const out: Buffer[] = [];
  for await (const c of s as AsyncIterable<unknown>)
    out.push(typeof c === 'string' ? Buffer.from(c) : Buffer.from(c as Uint8Array));
  return Buffer.concat(out).toString();
}

/** A byte stream with an encoding set: it yields strings. */
function encoded(parts: string[]): Readable {
  const r = new Readable({ read() {} });
  r.setEncoding('utf8');
  for (const p of parts) r.push(p);
  r.push(null);
  return r;
}

describe('peekStream', () => {
  const cases: Array<[string, () => Readable]> = [
    ['object mode, one chunk (the whole input)', () => Readable.from([Buffer.from('abcdefgh')])],
    ['object mode, small chunks', () => Readable.from(['ab', 'c', 'def', 'gh'].map((s) => Buffer.from(s)))],
    ['object mode, strings', () => Readable.from(['ab', 'cdefgh'])],
    ['object mode, an empty chunk first', () => Readable.from([Buffer.alloc(0), Buffer.from('abcdefgh')])],
    ['object mode, Uint8Arrays', () => Readable.from([new Uint8Array([97, 98, 99]), Buffer.from('defgh')])],
    ['byte mode', () => Readable.from([Buffer.from('abc'), Buffer.from('defgh')], { objectMode: false })],
    ['byte mode with an encoding', () => encoded(['abcd', 'efgh'])],
  ];
  for (const [name, make] of cases)
    it(`${name}: the first 6 bytes, then the whole stream in order`, async () => {
      const s = make();
      const head = await peekStream(s, 6);
      expect(Buffer.isBuffer(head)).toBe(true);
      expect(head.toString()).toBe('abcdef');
      expect(await rest(s)).toBe('abcdefgh');
    });

  it('a tiny input gives what there is and stays readable', async () => {
    const s = Readable.from([Buffer.from('ab')]);
    expect((await peekStream(s, 6)).toString()).toBe('ab');
    expect(await rest(s)).toBe('ab');
  });

  it('an empty input gives no bytes', async () => {
    expect((await peekStream(Readable.from([]), 6)).length).toBe(0);
    expect((await peekStream(Readable.from([Buffer.alloc(0)]), 6)).length).toBe(0);
  });

  it('a stream of non-byte objects is refused with INVALID_ARGUMENT', async () => {
    await expect(peekStream(Readable.from([{ a: 1 }]), 6)).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
    });
  });

  it('the error of the stream is the error of the peek', async () => {
    const s = new Readable({ read() {} });
    const p = peekStream(s, 6);
    s.destroy(new Error('disk gone'));
    await expect(p).rejects.toThrow('disk gone');
  });
});

describe('load reads an archive from an object-mode stream', () => {
  for (const gzip of [false, true])
    it(`a whole ${gzip ? 'gzip ' : ''}archive as one object-mode chunk is loaded, not taken for empty`, async () => {
      const src = await freshStore();
      await makeLayeredImage(src, 'example.com/peek:1', [{ 'etc/a': 'a' }]);
      const { file } = await saveTo(src, ['example.com/peek:1']);
      const bytes = await readFile(file);
      const dst = await freshStore();
      const result = await loadArchive(dst, Readable.from([gzip ? gzipSync(bytes) : bytes]));
      expect(result.images).toHaveLength(1);
      await expect(findLocalRef(dst, 'example.com/peek:1')).resolves.toBeDefined();
    });
});
