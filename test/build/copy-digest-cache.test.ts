import { lstat, readFile, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileDigestCache, RACY_MS } from '../../src/engine/build/copy/digest-cache.js';
import { hashSources } from '../../src/engine/build/copy/hash.js';
import { entryOfStats, type SourceEntry } from '../../src/engine/build/copy/sources.js';
import { tempDir } from '../support/images.js';

async function entryOf(host: string): Promise<SourceEntry> {
  return entryOfStats('f', host, await lstat(host))!;
}

const later = () => Date.now() + RACY_MS + 1_000;
const D1 = 'a'.repeat(64);

describe('COPY source digest cache', () => {
  it('answers only while dev, inode, size, mtime and ctime are unchanged', async () => {
    const dir = await tempDir('strata-digests-');
    const f = join(dir, 'f');
    await writeFile(f, 'one');
    await utimes(f, 1_000_000, 1_000_000); // whole seconds: utimes can put them back exactly
    const cache = FileDigestCache.inMemory();
    const e = await entryOf(f);
    cache.record(e, D1, later());
    expect(cache.lookup(await entryOf(f))).toBe(D1);
    // Same size, mtime put back: only ctime tells the change (a user cannot set it back).
    await new Promise((r) => setTimeout(r, 20));
    await writeFile(f, 'two');
    await utimes(f, 1_000_000, 1_000_000);
    const changed = await entryOf(f);
    expect(changed.mtimeMs).toBe(e.mtimeMs);
    expect(changed.size).toBe(e.size);
    expect(cache.lookup(changed)).toBeUndefined();
  });

  it('does not record a file changed just before it was hashed (racily clean)', async () => {
    const dir = await tempDir('strata-digests-');
    const f = join(dir, 'f');
    await writeFile(f, 'fresh');
    const cache = FileDigestCache.inMemory();
    cache.record(await entryOf(f), D1, Date.now());
    expect(cache.size).toBe(0);
    expect(cache.lookup(await entryOf(f))).toBeUndefined();
  });

  it('saves and loads atomically; a corrupt or foreign file is an empty cache', async () => {
    const dir = await tempDir('strata-digests-');
    const f = join(dir, 'f');
    await writeFile(f, 'x');
    const file = join(dir, 'cache', 'file-digests.json');
    const a = await FileDigestCache.load(file);
    a.record(await entryOf(f), D1, later());
    await a.save();
    const b = await FileDigestCache.load(file);
    expect(b.lookup(await entryOf(f))).toBe(D1);
    await writeFile(file, '{"/x": [1, 2, "not a row"], "/y": "nope"');
    expect((await FileDigestCache.load(file)).size).toBe(0);
    await writeFile(file, JSON.stringify({ '/x': [1, 2, 3, 4, 5, 'zz'] }));
    expect((await FileDigestCache.load(file)).size).toBe(0);
  });

  it('hashSources gives the same key from the cache as from reading, and a changed file changes it', async () => {
    const dir = await tempDir('strata-digests-');
    for (let i = 0; i < 20; i++) {
      await writeFile(join(dir, `f${i}`), `content ${i}\n`.repeat(i + 1));
      await utimes(join(dir, `f${i}`), 1_000_000, 1_000_000);
    }
    const request = (digestCache?: FileDigestCache) => ({
      instruction: 'COPY' as const,
      from: { dir, isContext: true, ignorePatterns: [] },
      sources: ['.'],
      destination: '/app/',
      workdir: '/',
      ...(digestCache ? { digestCache } : {}),
    });
    const plain = await hashSources(request());
    // Files this fresh are not recorded: age them by recording as if hashed later, through a real hash run.
    const cache = FileDigestCache.inMemory();
    const realNow = Date.now;
    Date.now = () => realNow() + RACY_MS + 1_000;
    try {
      expect(await hashSources(request(cache))).toBe(plain);
    } finally {
      Date.now = realNow;
    }
    expect(cache.size).toBe(20);
    expect(await hashSources(request(cache))).toBe(plain);
    // Poison one recorded digest's file: the cache must not hide a real change.
    const before = await lstat(join(dir, 'f3'));
    const old = await readFile(join(dir, 'f3'), 'utf8');
    await writeFile(join(dir, 'f3'), old.replace('content 3', 'content X'));
    await utimes(join(dir, 'f3'), 1_000_000, 1_000_000);
    expect((await lstat(join(dir, 'f3'))).size).toBe(before.size);
    const changed = await hashSources(request(cache));
    expect(changed).not.toBe(plain);
    expect(changed).toBe(await hashSources(request()));
  });
});
