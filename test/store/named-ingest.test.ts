import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { StrataError } from '../../src/engine/errors.js';
import { digestOf } from '../../src/engine/oci/digest.js';
import { acquireLock, FsStore } from '../../src/engine/store/index.js';
import { ingestName } from '../../src/engine/store/ingest.js';
import { names, tempDir } from './helpers.js';

const MiB = 1024 * 1024;

/** A resumable source over `bytes` that records the offsets it was opened at; may fail after `failAfter` bytes. */
function source(bytes: Buffer, opened: number[], failAfter?: number) {
  return async (offset: number): Promise<Readable> => {
    opened.push(offset);
    const rest = bytes.subarray(offset);
    return Readable.from(
      (async function* () {
        for (let i = 0; i < rest.length; i += 64 * 1024) {
          if (failAfter !== undefined && offset + i >= failAfter)
            throw new StrataError('NETWORK', 'connection reset', { retryable: true });
          yield rest.subarray(i, i + 64 * 1024);
          await new Promise((r) => setImmediate(r));
        }
      })(),
    );
  };
}

describe('named ingests', () => {
  it('one writer per blob in a process: the second waits, then finds it present and opens nothing', async () => {
    const store = await FsStore.open(await tempDir());
    const bytes = randomBytes(4 * MiB);
    const expected = { digest: digestOf(bytes), size: bytes.length };
    const a: number[] = [];
    const b: number[] = [];
    const [ra, rb] = await Promise.all([
      store.ingest(source(bytes, a), expected),
      store.ingest(source(bytes, b), expected),
    ]);
    expect([ra.existed, rb.existed].sort()).toEqual([false, true]);
    expect(a.length + b.length).toBe(1);
    expect(await names(join(store.root, 'ingest'))).toEqual([]);
  });

  it('resumes a partial file from its end (re-hashing the prefix) and verifies the whole blob', async () => {
    const store = await FsStore.open(await tempDir());
    const bytes = randomBytes(3 * MiB);
    const digest = digestOf(bytes);
    const opened: number[] = [];
    // A first writer fails at 2 MiB with a network error: its partial is kept for the next writer.
    await expect(
      store.ingest(source(bytes, opened, 2 * MiB), { digest, size: bytes.length }),
    ).rejects.toMatchObject({ code: 'NETWORK' });
    const partial = join(store.root, 'ingest', ingestName(digest));
    expect((await stat(partial)).size).toBe(2 * MiB);
    const progress: number[] = [];
    const result = await store.ingest(
      source(bytes, opened),
      { digest, size: bytes.length },
      { onProgress: (n) => progress.push(n) },
    );
    expect(result).toEqual({ digest, size: bytes.length, existed: false });
    expect(opened).toEqual([0, 2 * MiB]);
    expect(progress.at(-1)).toBe(bytes.length);
    expect((await readFile(store.blobPath(digest))).equals(bytes)).toBe(true);
    expect(await names(join(store.root, 'ingest'))).toEqual([]);
  });

  it('a bad kept prefix is dropped and the blob fetched again from 0; a mismatch removes the partial', async () => {
    const store = await FsStore.open(await tempDir());
    const bytes = randomBytes(MiB);
    const digest = digestOf(bytes);
    await writeFile(join(store.root, 'ingest', ingestName(digest)), randomBytes(MiB / 2)); // garbage
    const opened: number[] = [];
    await store.ingest(source(bytes, opened), { digest, size: bytes.length });
    expect(opened).toEqual([MiB / 2, 0]);
    expect(digestOf(await readFile(store.blobPath(digest)))).toBe(digest);

    const other = randomBytes(MiB);
    const wrong = digestOf(randomBytes(8));
    await expect(store.ingest(source(other, []), { digest: wrong, size: MiB })).rejects.toMatchObject({
      code: 'DIGEST_MISMATCH',
    });
    expect(await names(join(store.root, 'ingest'))).toEqual([]);
  });

  it('an abort keeps a resumable partial; a plain stream that fails leaves nothing', async () => {
    const store = await FsStore.open(await tempDir());
    const bytes = randomBytes(4 * MiB);
    const digest = digestOf(bytes);
    const controller = new AbortController();
    const slow = async (offset: number): Promise<Readable> =>
      Readable.from(
        (async function* () {
          for (let i = offset; i < bytes.length; i += 256 * 1024) {
            if (i >= MiB) controller.abort();
            yield bytes.subarray(i, i + 256 * 1024);
            await new Promise((r) => setTimeout(r, 1));
          }
        })(),
      );
    await expect(
      store.ingest(slow, { digest, size: bytes.length }, { signal: controller.signal }),
    ).rejects.toMatchObject({ code: 'ABORTED' });
    expect((await stat(join(store.root, 'ingest', ingestName(digest)))).size).toBeGreaterThan(0);

    const failing = Readable.from(
      (async function* () {
        yield bytes.subarray(0, MiB);
        throw new StrataError('NETWORK', 'reset', { retryable: true });
      })(),
    );
    const d2 = digestOf(Buffer.from('other'));
    await expect(store.ingest(failing, { digest: d2 })).rejects.toMatchObject({ code: 'NETWORK' });
    expect(await names(join(store.root, 'ingest'))).toEqual([ingestName(digest)]);
  });

  it('gc removes ingests no live writer owns, whatever their age, and keeps owned ones', async () => {
    const store = await FsStore.open(await tempDir());
    const dir = join(store.root, 'ingest');
    const orphan = ingestName(digestOf('orphan'));
    const owned = ingestName(digestOf('owned'));
    await writeFile(join(dir, orphan), randomBytes(1000));
    await writeFile(join(dir, owned), randomBytes(1000));
    // A lock left by a dead writer: nobody refreshes it, so once older than the stale time it is judged stale
    // (ADR 0009: age decides; a pid only when provably in our PID namespace).
    const deadLock = join(dir, `${orphan}.lock`);
    await writeFile(
      deadLock,
      JSON.stringify({ pid: 4194305, host: (await import('node:os')).hostname(), token: 'dead', created: 0 }),
    );
    const longAgo = new Date(Date.now() - 3600_000);
    await utimes(deadLock, longAgo, longAgo);
    const held = await acquireLock(join(dir, `${owned}.lock`));
    try {
      const dry = await store.gc({ dryRun: true });
      expect(dry.bytesFreed).toBe(1000);
      expect(await names(dir)).toContain(orphan);
      const result = await store.gc();
      expect(result.bytesFreed).toBe(1000);
      expect(await names(dir)).toEqual([owned, `${owned}.lock`]);
    } finally {
      await held.release();
    }
    await store.gc();
    expect(await names(dir)).toEqual([]);
  });

  it('two processes writing one blob: one writes, the other waits and finds it present', async () => {
    const repo = fileURLToPath(new URL('../../', import.meta.url));
    const built = join(repo, 'dist', 'src', 'engine', 'store', 'index.js');
    if (!existsSync(built)) throw new Error(`${built} is missing: npm run build first`);
    const root = await tempDir();
    await FsStore.open(root);
    const size = 32 * MiB;
    const payload = Buffer.alloc(size, 7);
    const digest = digestOf(payload);
    const script = `
      import { FsStore } from ${JSON.stringify(pathToFileURL(built).href)};
      import { Readable } from 'node:stream';
      const store = await FsStore.open(process.env.ROOT);
      let opened = 0;
      const open = async (offset) => { opened++; return Readable.from((async function* () {
        for (let i = offset; i < ${size}; i += 1 << 20) { yield Buffer.alloc(1 << 20, 7); await new Promise((r) => setTimeout(r, 5)); }
      })()); };
      const r = await store.ingest(open, { digest: process.env.DIGEST, size: ${size} });
      process.stdout.write(JSON.stringify({ opened, existed: r.existed }));
    `;
    const runOne = (): Promise<{ opened: number; existed: boolean }> =>
      new Promise((resolve, reject) =>
        execFile(
          process.execPath,
          ['--input-type=module', '-e', script],
          { env: { ...process.env, ROOT: root, DIGEST: digest } },
          (err, stdout) =>
            err ? reject(err) : resolve(JSON.parse(stdout) as { opened: number; existed: boolean }),
        ),
      );
    const results = await Promise.all([runOne(), runOne(), runOne()]);
    expect(results.reduce((n, r) => n + r.opened, 0)).toBe(1);
    expect(results.filter((r) => !r.existed)).toHaveLength(1);
    expect(digestOf(await readFile(join(root, 'blobs', 'sha256', digest.slice(7))))).toBe(digest);
  });
});
