import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { EngineEvent } from '../../src/engine/observe.js';
import { createObserver } from '../../src/engine/observe.js';
import { digestOf } from '../../src/engine/oci/digest.js';
import { MediaType } from '../../src/engine/oci/media-types.js';
import { FsStore } from '../../src/engine/store/index.js';
import { LEASES_DIR } from '../../src/engine/store/leases.js';
import { tempDir } from './helpers.js';
import { addImage, addLayer } from './image.js';

const HOUR = 60 * 60 * 1000;

/** A store whose clock the test moves (gc compares it with mtimes; leases expire on it). */
async function clockedStore(): Promise<{
  store: FsStore;
  advance: (ms: number) => void;
  events: EngineEvent[];
}> {
  let offset = 0;
  const events: EngineEvent[] = [];
  const store = await FsStore.open(await tempDir(), {
    now: () => Date.now() + offset,
    observer: createObserver({ listeners: [(e) => events.push(e)] }),
  });
  return { store, advance: (ms) => (offset += ms), events };
}

describe('leases', () => {
  it('keep unreferenced content through gc past the grace period until released', async () => {
    const { store, advance, events } = await clockedStore();
    const lease = await store.createLease({ owner: 'test', ttlMs: 5 * HOUR });
    const held = await store.leased(lease).putBytes(Buffer.from('held'));
    const loose = await store.putBytes(Buffer.from('loose'));
    advance(2 * HOUR); // both are past the grace period now; only the lease protects `held`
    const first = await store.gc();
    expect(first.removed).toEqual([loose.digest]);
    expect(await store.has(held.digest)).toBe(true);
    await lease.release();
    expect((await store.gc()).removed).toEqual([held.digest]);
    expect(events.filter((e) => e.type === 'lease').map((e) => (e as { action: string }).action)).toEqual([
      'create',
      'release',
    ]);
  });

  it('protect what a manifest they hold references, and keep it from an rmi-style sweep (`only`)', async () => {
    const { store } = await clockedStore();
    const layer = await addLayer(store, { a: 'a' });
    const img = await addImage(store, [layer]);
    const lease = await store.createLease({ owner: 'test', ttlMs: HOUR });
    await lease.add({ digests: [img.manifest.digest] });
    const swept = await store.gc({ only: [img.manifest.digest, img.config.digest, layer.layer.digest] });
    expect(swept.removed).toEqual([]);
    await lease.release();
    const again = await store.gc({ only: [img.manifest.digest, img.config.digest, layer.layer.digest] });
    expect([...again.removed].sort()).toEqual(
      [img.manifest.digest, img.config.digest, layer.layer.digest].sort(),
    );
  });

  it('expire: gc drops an expired lease (event `expire`) and then collects its content; the holder is told', async () => {
    const { store, advance, events } = await clockedStore();
    const lease = await store.createLease({ owner: 'crashed', ttlMs: HOUR });
    const put = await store.leased(lease).putBytes(Buffer.from('orphan'));
    advance(HOUR / 2);
    expect((await store.gc()).removed).toEqual([]); // live lease, young blob
    advance(2 * HOUR);
    const result = await store.gc();
    expect(result.removed).toEqual([put.digest]);
    expect(events).toContainEqual({ type: 'lease', action: 'expire', id: lease.id, owner: 'crashed' });
    expect(await readdir(join(store.root, LEASES_DIR))).toEqual([]);
    await expect(lease.add({ digests: [digestOf('x')] })).rejects.toMatchObject({
      code: 'CONFLICT',
      retryable: true,
    });
  });

  it('extend moves the expiry; a dry run neither drops leases nor deletes', async () => {
    const { store, advance } = await clockedStore();
    const lease = await store.createLease({ owner: 'long', ttlMs: HOUR });
    const put = await store.leased(lease).putBytes(Buffer.from('kept'));
    advance(50 * 60 * 1000);
    await lease.extend();
    advance(50 * 60 * 1000); // 100 min after creation, 50 after the extension
    expect((await store.gc()).removed).toEqual([]);
    advance(2 * HOUR);
    expect((await store.gc({ dryRun: true })).removed).toEqual([put.digest]);
    expect(await store.has(put.digest)).toBe(true);
    expect(await readdir(join(store.root, LEASES_DIR))).toHaveLength(1);
  });

  it('the leased view adds what it claims, checks, ingests and puts; concurrent adds share writes', async () => {
    const { store, advance } = await clockedStore();
    const present = await store.putBytes(Buffer.from('present'));
    const lease = await store.createLease({ owner: 'view', ttlMs: 5 * HOUR });
    const view = store.leased(lease);
    expect(await view.claim(present.digest)).toEqual({ size: 7 });
    const unknown = await view.ingest(Readable.from([Buffer.from('no digest given')]), {});
    const many = await Promise.all(
      Array.from({ length: 20 }, (_, i) => view.putBytes(Buffer.from(`blob ${i}`))),
    );
    const checked = digestOf('not yet here');
    expect(await view.has(checked)).toBe(false);
    for (const d of [present.digest, unknown.digest, checked, ...many.map((m) => m.digest)])
      expect(lease.holds(d)).toBe(true);
    advance(2 * HOUR);
    expect((await store.gc()).removed).toEqual([]);
    const file = JSON.parse(await readFile(join(store.root, LEASES_DIR, `${lease.id}.json`), 'utf8')) as {
      digests: string[];
      owner: string;
    };
    expect(file.owner).toBe('view');
    expect(file.digests).toHaveLength(23);
  });

  it('setting a ref to the value it already has writes nothing', async () => {
    const { store } = await clockedStore();
    const put = await store.putBytes(Buffer.from('{}'));
    const d = { mediaType: MediaType.OciManifest, digest: put.digest, size: put.size };
    await store.setRef('example.com/a:1', d);
    const index = join(store.root, 'index.json');
    const before = await stat(index);
    await new Promise((r) => setTimeout(r, 20));
    await store.setRef('example.com/a:1', { ...d });
    const after = await stat(index);
    expect(after.mtimeMs).toBe(before.mtimeMs);
    expect(after.ino).toBe(before.ino); // not even rewritten in place by rename
    await store.setRef('example.com/a:1', { ...d, annotations: { x: 'y' } });
    expect((await stat(index)).ino).not.toBe(before.ino);
  });
});
