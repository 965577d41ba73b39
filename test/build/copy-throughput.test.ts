import { lstat, mkdir, readFile, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { hashSources } from '../../src/engine/build/copy/hash.js';
import { hasCode } from '../../src/engine/errors.js';
import { openNoFollow, readBufferSize } from '../../src/engine/build/copy/paths.js';
import { tempDir } from '../support/images.js';
import { fromContext } from './copy-support.js';

const copy = fromContext('COPY');

async function readAll(host: string, hint?: number): Promise<{ data: Buffer; hwm: number }> {
  const stream = await openNoFollow(host, hint);
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return { data: Buffer.concat(chunks), hwm: stream.readableHighWaterMark };
}

describe('COPY throughput: read buffers, concurrent hashing and writing', () => {
  it('sizes the buffer from the listed size, within one page and 1 MiB', () => {
    expect(readBufferSize(0)).toBe(4096);
    expect(readBufferSize(100)).toBe(4096);
    expect(readBufferSize(10_000)).toBe(10_001);
    expect(readBufferSize(5 << 20)).toBe(1 << 20);
    expect(readBufferSize(undefined)).toBe(1 << 20);
    expect(readBufferSize(-1)).toBe(1 << 20);
    expect(readBufferSize(Number.NaN)).toBe(1 << 20);
  });

  it('reads the whole file even when it grew past the size it was listed with', async () => {
    const dir = await tempDir('strata-readbuf-');
    const file = join(dir, 'f');
    const content = Buffer.alloc(300_000, 'x');
    content.write('head', 0);
    content.write('tail', content.length - 4);
    await writeFile(file, content);
    const small = await readAll(file, 10);
    expect(small.hwm).toBe(4096);
    expect(small.data.equals(content)).toBe(true);
    const exact = await readAll(file, content.length);
    expect(exact.hwm).toBe(content.length + 1);
    expect(exact.data.equals(content)).toBe(true);
  });

  it('still refuses to read through a final symlink', async () => {
    const dir = await tempDir('strata-readbuf-');
    await writeFile(join(dir, 'real'), 'secret');
    await symlink('real', join(dir, 'link'));
    await expect(openNoFollow(join(dir, 'link'), 6)).rejects.toMatchObject({ code: 'ELOOP' });
  });

  it('hashes many files concurrently yet sees every byte of small and streamed (over 1 MiB) files', async () => {
    const dir = await tempDir('strata-readbuf-');
    const big = Buffer.alloc((1 << 20) + 12_345, 'b');
    for (let i = 0; i < 40; i++) {
      await mkdir(join(dir, `d${i % 4}`), { recursive: true });
      await writeFile(join(dir, `d${i % 4}`, `f${i}`), i === 17 ? big : `file ${i}\n`.repeat(i * 37));
    }
    const hash = () =>
      hashSources({
        instruction: 'COPY',
        from: { dir, isContext: true, ignorePatterns: [] },
        sources: ['.'],
        destination: '/app/',
        workdir: '/',
      });
    const before = await hash();
    expect(await hash()).toBe(before);
    const changed = Buffer.from(big);
    changed[changed.length - 1] = 0x63; // the streamed file's very last byte
    await writeFile(join(dir, 'd1', 'f17'), changed);
    const afterBig = await hash();
    expect(afterBig).not.toBe(before);
    await writeFile(join(dir, 'd1', 'f17'), big);
    expect(await hash()).toBe(before);
    await writeFile(join(dir, 'd3', 'f39'), `file 39\n`.repeat(39 * 37 - 1) + 'file 3X\n');
    expect(await hash()).not.toBe(before);
  });

  it('copies a directory of many files (written several at a time) byte for byte, with modes and times', async () => {
    const src = await tempDir('strata-readbuf-src-');
    const want = new Map<string, Buffer>();
    for (let i = 0; i < 300; i++) {
      const rel = `d${i % 7}/s${i % 3}/f${i}`;
      await mkdir(join(src, rel, '..'), { recursive: true });
      // f0 is over the small-file limit (streamed); the rest are read whole.
      const data = Buffer.alloc(i === 0 ? 600_000 : (i * 7919) % 70_000, String.fromCharCode(97 + (i % 26)));
      await writeFile(join(src, rel), data, { mode: i % 2 ? 0o640 : 0o755 });
      await utimes(join(src, rel), 1_000_000 + i, 1_000_000 + i);
      want.set(rel, data);
    }
    const dst = await tempDir('strata-readbuf-dst-');
    const res = await copy(src, dst, { sources: ['.'], destination: '/app/' });
    expect(res.bytes).toBe([...want.values()].reduce((n, b) => n + b.length, 0));
    for (const [rel, data] of want) {
      const host = join(dst, 'app', rel);
      expect((await readFile(host)).equals(data)).toBe(true);
      const st = await lstat(host);
      const i = Number(rel.slice(rel.lastIndexOf('f') + 1));
      expect(st.mode & 0o777).toBe(i % 2 ? 0o640 : 0o755);
      expect(st.mtimeMs).toBe((1_000_000 + i) * 1000);
    }
  });

  it('stops a directory copy at the first failing file and reports it', async () => {
    const src = await tempDir('strata-readbuf-src-');
    await mkdir(join(src, 'd'), { recursive: true });
    for (let i = 0; i < 50; i++) await writeFile(join(src, 'd', `f${String(i).padStart(2, '0')}`), `x${i}`);
    const dst = await tempDir('strata-readbuf-dst-');
    await mkdir(join(dst, 'app', 'd', 'f20'), { recursive: true }); // a directory where a file must go
    const err = await copy(src, dst, { sources: ['.'], destination: '/app/' }).catch((e: unknown) => e);
    expect(hasCode(err, 'CONFLICT')).toBe(true);
    expect(String((err as Error).message)).toContain('/app/d/f20');
  });
});
