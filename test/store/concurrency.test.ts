import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Digest } from '../../src/engine/oci/digest.js';
import { FsStore } from '../../src/engine/store/index.js';
import { child, requireFreshStoreBuild } from './child.js';
import { names, tempDir } from './helpers.js';

beforeAll(requireFreshStoreBuild);

describe('FsStore across processes', () => {
  it('two processes setting 50 refs each at once: all 100 land, and readers never see a partial index.json', async () => {
    const root = await tempDir();
    await FsStore.open(root);
    const goAt = Date.now() + 500;
    const writer = `
      const store = await FsStore.open(args.root);
      for (let i = 0; i < 50; i++) {
        const hex = (args.who + i).toString(16).padStart(64, '0');
        await store.setRef('example.com/p' + args.who + '/img:' + i,
          { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: 'sha256:' + hex, size: i });
      }
    `;
    const reader = `
      const { readFile } = await import('node:fs/promises');
      let reads = 0, bad = 0, max = 0;
      const until = Date.now() + 60000;
      while (max < 100 && Date.now() < until) {
        try {
          const doc = JSON.parse(await readFile(args.root + '/index.json', 'utf8'));
          max = Math.max(max, doc.manifests.length);
        } catch (err) { bad++; }
        reads++;
      }
      process.stdout.write(JSON.stringify({ reads, bad, max }));
    `;
    const [, , readOut] = await Promise.all([
      child(writer, { root, who: 1000, goAt }),
      child(writer, { root, who: 2000, goAt }),
      child(reader, { root, goAt }),
    ]);
    const raw = JSON.parse(await readFile(join(root, 'index.json'), 'utf8')) as { manifests: unknown[] };
    expect(raw.manifests).toHaveLength(100);
    const refs = await (await FsStore.open(root)).listRefs();
    expect(new Set(refs.map((r) => r.name)).size).toBe(100);
    const seen = JSON.parse(readOut) as { reads: number; bad: number; max: number };
    expect(seen.bad).toBe(0);
    expect(seen.reads).toBeGreaterThan(0);
    expect(await names(root)).toEqual(['blobs', 'index.json', 'ingest', 'oci-layout', 'strata']); // no lock or temp left
  });

  it('two processes ingesting the same blob at once both succeed', async () => {
    const root = await tempDir();
    const store = await FsStore.open(root);
    const goAt = Date.now() + 500;
    // 16 MiB sent in 256 KiB chunks with pauses, so the two writes overlap in time.
    const writer = `
      const { createHash } = await import('node:crypto');
      const chunk = (i) => Buffer.alloc(256 * 1024, i % 251);
      const h = createHash('sha256');
      for (let i = 0; i < 64; i++) h.update(chunk(i));
      const digest = 'sha256:' + h.digest('hex');
      const source = (async function* () {
        for (let i = 0; i < 64; i++) {
          if (i % 8 === 0) await new Promise((r) => setTimeout(r, 5));
          yield chunk(i);
        }
      })();
      const store = await FsStore.open(args.root);
      const res = await store.ingest(source, { digest, size: 64 * 256 * 1024, what: 'shared layer' });
      process.stdout.write(JSON.stringify(res));
    `;
    const outs = await Promise.all([child(writer, { root, goAt }), child(writer, { root, goAt })]);
    const [a, b] = outs.map((o) => JSON.parse(o) as { digest: string; size: number; existed: boolean });
    expect(a!.digest).toBe(b!.digest);
    expect(a!.size).toBe(16 * 1024 * 1024);
    const blobs = [];
    for await (const blob of store.listBlobs()) blobs.push(blob);
    expect(blobs).toEqual([{ digest: a!.digest, size: 16 * 1024 * 1024 }]);
    expect(await names(join(root, 'ingest'))).toEqual([]);
    // The stored bytes verify.
    const hash = createHash('sha256');
    await pipeline(await store.openBlob(a!.digest as Digest), hash);
    expect(`sha256:${hash.digest('hex')}`).toBe(a!.digest);
  });
});
