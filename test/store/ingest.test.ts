import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { describe, expect, it } from 'vitest';
import { AbortedError, StrataError, VerificationError } from '../../src/engine/errors.js';
import { digestOf, type Digest } from '../../src/engine/oci/digest.js';
import { FsStore } from '../../src/engine/store/index.js';
import { generated, names, tempDir } from './helpers.js';

async function expectEmpty(store: FsStore): Promise<void> {
  expect(await names(join(store.root, 'blobs', 'sha256'))).toEqual([]);
  expect(await names(join(store.root, 'ingest'))).toEqual([]);
}

async function rejection(p: Promise<unknown>): Promise<StrataError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(StrataError);
  return err as StrataError;
}

describe('FsStore.ingest', () => {
  it('stores a verified blob at blobs/<alg>/<hex> and reports progress', async () => {
    const store = await FsStore.open(await tempDir());
    const data = Buffer.from('hello, layers');
    const digest = digestOf(data);
    const seen: number[] = [];
    const res = await store.ingest(
      Readable.from([data.subarray(0, 5), data.subarray(5)]),
      { digest, size: data.length },
      {
        onProgress: (n) => seen.push(n),
      },
    );
    expect(res).toEqual({ digest, size: data.length, existed: false });
    expect(await readFile(join(store.root, 'blobs', 'sha256', digest.slice(7)))).toEqual(data);
    expect(seen.at(-1)).toBe(data.length); // writes are batched, so a small blob reports once
    expect([...seen].sort((x, y) => x - y)).toEqual(seen);
    expect(await store.stat(digest)).toEqual({ size: data.length });
    expect(await store.has(digest)).toBe(true);
    expect(await names(join(store.root, 'ingest'))).toEqual([]);
  });

  it('computes the digest when none is expected', async () => {
    const store = await FsStore.open(await tempDir());
    const res = await store.ingest(Readable.from([Buffer.from('abc')]), {});
    expect(res).toEqual({ digest: digestOf('abc'), size: 3, existed: false });
    const again = await store.ingest(Readable.from([Buffer.from('abc')]), {});
    expect(again.existed).toBe(true);
    expect(await names(join(store.root, 'ingest'))).toEqual([]);
  });

  it('rejects a wrong digest with DIGEST_MISMATCH naming the content, leaving nothing', async () => {
    const store = await FsStore.open(await tempDir());
    const wrong = digestOf('something else');
    const err = await rejection(
      store.ingest(Readable.from([Buffer.from('abc')]), { digest: wrong, what: 'layer X of ex/app:1' }),
    );
    expect(err).toBeInstanceOf(VerificationError);
    expect(err.code).toBe('DIGEST_MISMATCH');
    expect(err.message).toContain('layer X of ex/app:1');
    expect(err.message).toContain(wrong);
    expect(err.message).toContain(digestOf('abc'));
    await expectEmpty(store);
  });

  it('fails early with SIZE_MISMATCH when the source sends more than expected', async () => {
    const store = await FsStore.open(await tempDir());
    const counter = { pulled: 0 };
    const err = await rejection(store.ingest(generated(1000, 1024, counter), { size: 2048 }));
    expect(err.code).toBe('SIZE_MISMATCH');
    expect(counter.pulled).toBeLessThan(10); // stopped as soon as the limit was crossed, not after 1000 chunks
    await expectEmpty(store);
  });

  it('fails with SIZE_MISMATCH when the source sends fewer bytes than expected', async () => {
    const store = await FsStore.open(await tempDir());
    const data = Buffer.from('short');
    const err = await rejection(
      store.ingest(Readable.from([data]), { digest: digestOf(data), size: 100, what: 'config' }),
    );
    expect(err.code).toBe('SIZE_MISMATCH');
    expect(err.message).toMatch(/^config: size mismatch: expected 100 bytes, got 5/);
    await expectEmpty(store);
  });

  it('does not read the source when the expected blob already exists', async () => {
    const store = await FsStore.open(await tempDir());
    const data = Buffer.from('already here');
    const digest = digestOf(data);
    await store.putBytes(data);
    let reads = 0;
    const source = new Readable({
      read() {
        reads++;
        this.push(data);
        this.push(null);
      },
    });
    const res = await store.ingest(source, { digest, size: data.length });
    expect(res).toEqual({ digest, size: data.length, existed: true });
    expect(reads).toBe(0);
    expect(source.destroyed).toBe(true);
    // A generator source is finished (its finally runs) without being pulled.
    let finished = false;
    let pulled = 0;
    const gen = (async function* () {
      try {
        pulled++;
        yield data;
      } finally {
        finished = true;
      }
    })();
    await gen.next().then(() => undefined); // started, suspended at its yield
    expect((await store.ingest(gen, { digest })).existed).toBe(true);
    expect(finished).toBe(true);
    expect(pulled).toBe(1);
  });

  it('rejects SIZE_MISMATCH when the blob exists but the expected size is wrong', async () => {
    const store = await FsStore.open(await tempDir());
    const data = Buffer.from('twelve bytes');
    await store.putBytes(data);
    const err = await rejection(store.ingest(Readable.from([data]), { digest: digestOf(data), size: 13 }));
    expect(err.code).toBe('SIZE_MISMATCH');
  });

  it('leaves nothing when aborted mid-stream', async () => {
    const store = await FsStore.open(await tempDir());
    const ac = new AbortController();
    let n = 0;
    const source = (async function* () {
      for (;;) {
        if (++n === 5) ac.abort(new Error('user cancelled'));
        yield Buffer.alloc(64 * 1024, 1);
        await new Promise((r) => setImmediate(r));
      }
    })();
    const err = await rejection(store.ingest(source, { size: 100 * 1024 * 1024 }, { signal: ac.signal }));
    expect(err).toBeInstanceOf(AbortedError);
    expect(err.code).toBe('ABORTED');
    await expectEmpty(store);
  });

  it('rejects at once, without touching the source, when the signal is already aborted', async () => {
    const store = await FsStore.open(await tempDir());
    const source = Readable.from([Buffer.from('x')]);
    const err = await rejection(store.ingest(source, {}, { signal: AbortSignal.abort() }));
    expect(err.code).toBe('ABORTED');
    expect(source.destroyed).toBe(true);
    await expectEmpty(store);
  });

  it('leaves nothing when the source fails mid-way, and passes its error on', async () => {
    const store = await FsStore.open(await tempDir());
    const boom = new StrataError('NETWORK', 'connection reset', { retryable: true });
    const source = (async function* () {
      yield Buffer.alloc(1024 * 1024, 7);
      yield Buffer.alloc(1024 * 1024, 8);
      throw boom;
    })();
    const err = await rejection(store.ingest(source, { size: 4 * 1024 * 1024 }));
    expect(err).toBe(boom);
    await expectEmpty(store);
  });

  it('streams a 64 MiB generated source chunk by chunk to the right file, size and digest', async () => {
    const store = await FsStore.open(await tempDir());
    const chunks = 64;
    const chunk = 1024 * 1024;
    const expectedHash = createHash('sha256');
    for (let i = 0; i < chunks; i++) expectedHash.update(Buffer.alloc(chunk, i % 251));
    const digest = `sha256:${expectedHash.digest('hex')}` as Digest;
    const counter = { pulled: 0 };
    let maxAhead = 0;
    let written = 0;
    const res = await store.ingest(
      generated(chunks, chunk, counter),
      { digest, size: chunks * chunk },
      {
        onProgress: (bytes) => {
          written = bytes;
          // The generator is pulled lazily: it never runs far ahead of what has been written.
          maxAhead = Math.max(maxAhead, counter.pulled * chunk - written);
        },
      },
    );
    expect(res).toEqual({ digest, size: chunks * chunk, existed: false });
    expect(await store.stat(digest)).toEqual({ size: chunks * chunk });
    expect(maxAhead).toBeLessThanOrEqual(8 * chunk);
  });

  it('putBytes is idempotent and verifies what it is told', async () => {
    const store = await FsStore.open(await tempDir());
    const bytes = new TextEncoder().encode('{"a":1}');
    expect((await store.putBytes(bytes)).existed).toBe(false);
    expect((await store.putBytes(bytes)).existed).toBe(true);
    const err = await rejection(store.putBytes(bytes, { size: 3 }));
    expect(err.code).toBe('SIZE_MISMATCH');
    const bad = await rejection(
      store.putBytes(new TextEncoder().encode('{"b":2}'), { digest: digestOf('nope') }),
    );
    expect(bad.code).toBe('DIGEST_MISMATCH');
    await expect(store.putBytes(bytes, { digest: 'sha256:xyz' as Digest })).rejects.toMatchObject({
      code: 'INVALID_DIGEST',
    });
  });
});

describe('FsStore reads', () => {
  it('readBlob enforces a size limit; openBlob serves ranges; absent blobs are BLOB_UNKNOWN', async () => {
    const store = await FsStore.open(await tempDir());
    const data = Buffer.from('0123456789');
    const { digest } = await store.putBytes(data);
    expect(await store.readBlob(digest)).toEqual(data);
    const limit = await rejection(store.readBlob(digest, 4));
    expect(limit.code).toBe('SIZE_LIMIT');
    expect(await text(await store.openBlob(digest))).toBe('0123456789');
    expect(await text(await store.openBlob(digest, { start: 2, end: 4 }))).toBe('234');
    expect(await text(await store.openBlob(digest, { start: 7 }))).toBe('789');
    expect(await text(await store.openBlob(digest, { end: 0 }))).toBe('0');
    expect(await text(await store.openBlob(digest, { start: 8, end: 100 }))).toBe('89');
    expect((await rejection(store.openBlob(digest, { start: 10 }))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(store.openBlob(digest, { start: 5, end: 4 }))).code).toBe('INVALID_ARGUMENT');

    const absent = digestOf('absent');
    // One call at a time: a second promise created up front would reject before anyone awaits it.
    for (const call of [() => store.readBlob(absent), () => store.openBlob(absent)]) {
      const err = await rejection(call());
      expect(err.code).toBe('BLOB_UNKNOWN');
      expect(err.retryable).toBe(false);
      expect(err.message).toContain(absent);
    }
    expect(await store.stat(absent)).toBeUndefined();
    expect(await store.has(absent)).toBe(false);
  });

  it('serves an empty blob', async () => {
    const store = await FsStore.open(await tempDir());
    const { digest, size } = await store.putBytes(new Uint8Array(0));
    expect(size).toBe(0);
    expect(await text(await store.openBlob(digest))).toBe('');
    expect((await store.readBlob(digest)).length).toBe(0);
  });

  it('deleteBlob and listBlobs, ignoring malformed names', async () => {
    const store = await FsStore.open(await tempDir());
    const a = await store.putBytes(Buffer.from('a'));
    const b = await store.putBytes(Buffer.from('bb'));
    await writeFile(join(store.root, 'blobs', 'sha256', 'not-a-digest'), 'x');
    await writeFile(join(store.root, 'blobs', 'sha256', 'A'.repeat(64)), 'x');
    await writeFile(join(store.root, 'blobs', 'stray-file'), 'x');
    const listed = [];
    for await (const blob of store.listBlobs()) listed.push(blob);
    expect(listed.sort((x, y) => x.size - y.size)).toEqual([
      { digest: a.digest, size: 1 },
      { digest: b.digest, size: 2 },
    ]);
    expect(await store.deleteBlob(a.digest)).toBe(true);
    expect(await store.deleteBlob(a.digest)).toBe(false);
    expect(await store.has(a.digest)).toBe(false);
    expect(() => store.blobPath('sha256:../../etc' as Digest)).toThrow(/invalid/);
  });
});
