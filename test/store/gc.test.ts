import { readdir, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { digestOf, type Digest } from '../../src/engine/oci/digest.js';
import { MediaType } from '../../src/engine/oci/media-types.js';
import type { Descriptor } from '../../src/engine/oci/types.js';
import { FsStore, RootSet } from '../../src/engine/store/index.js';
import { names, tempDir } from './helpers.js';
import { addImage, addIndex, addLayer } from './image.js';

const HOUR = 60 * 60 * 1000;

/** Makes every file under blobs/, ingest/ and the root's temp files look 3 h old, except `keepYoung`. */
async function ageAll(root: string, keepYoung: readonly string[] = []): Promise<void> {
  const old = new Date(Date.now() - 3 * HOUR);
  const dirs = [join(root, 'blobs', 'sha256'), join(root, 'ingest'), root];
  for (const dir of dirs) {
    for (const name of await readdir(dir)) {
      const path = join(dir, name);
      if (keepYoung.includes(path) || (dir === root && !name.includes('.tmp-'))) continue;
      await utimes(path, old, old);
    }
  }
}

async function blobSet(store: FsStore): Promise<Set<string>> {
  const out = new Set<string>();
  for await (const b of store.listBlobs()) out.add(b.digest);
  return out;
}

describe('FsStore.gc', () => {
  it('keeps everything reachable, sweeps the rest and old temp files; dryRun deletes nothing', async () => {
    const store = await FsStore.open(await tempDir());
    const base = await addLayer(store, { 'etc/base': 'base' });
    const app1 = await addLayer(store, { app: 'one' });
    const app2 = await addLayer(store, { app: 'two' });
    const img1 = await addImage(store, [base, app1], 'one');
    const img2 = await addImage(store, [base, app2], 'two');
    const other = await store.putBytes(Buffer.from('an attestation or something else'));
    const idx = await addIndex(store, [
      { ...img1.manifest, platform: { architecture: 'amd64', os: 'linux' } },
      // A platform that was never pulled: reachable but absent is fine.
      {
        ...img1.manifest,
        digest: digestOf('arm64 manifest, not pulled'),
        platform: { architecture: 'arm64', os: 'linux' },
      },
      { mediaType: 'application/vnd.example.unknown+json', digest: other.digest, size: other.size },
    ]);
    await store.setRef('ex.com/one:1', idx);
    await store.setRef('ex.com/two:1', img2.manifest);
    const reachable = [
      idx,
      img1.manifest,
      img1.config,
      img2.manifest,
      img2.config,
      base.layer,
      app1.layer,
      app2.layer,
    ].map((d) => d.digest);
    reachable.push(other.digest);

    const garbage = await store.putBytes(Buffer.from('garbage'));
    const young = await store.putBytes(Buffer.from('young garbage'));
    await writeFile(join(store.root, 'ingest', 'old-part'), 'x'.repeat(100));
    await writeFile(join(store.root, 'ingest', 'young-part'), 'y');
    await writeFile(join(store.root, 'index.json.tmp-0123abcd'), 'z'.repeat(10));
    await ageAll(store.root, [store.blobPath(young.digest), join(store.root, 'ingest', 'young-part')]);

    const before = await blobSet(store);
    const dry = await store.gc({ dryRun: true });
    expect(dry).toEqual({
      removed: [garbage.digest],
      bytesFreed: garbage.size + 110,
      kept: reachable.length + 1,
    });
    expect(await blobSet(store)).toEqual(before);
    expect(await names(join(store.root, 'ingest'))).toEqual(['old-part', 'young-part']);

    const res = await store.gc();
    expect(res).toEqual(dry);
    const after = await blobSet(store);
    expect([...after].sort()).toEqual([...reachable, young.digest].sort());
    expect(await names(join(store.root, 'ingest'))).toEqual(['young-part']);
    expect(await names(store.root)).toEqual(['blobs', 'index.json', 'ingest', 'oci-layout', 'strata']);

    // Remove one of the two images sharing the base layer: the shared layer survives.
    expect(await store.deleteRef('ex.com/one:1')).toBe(true);
    await ageAll(store.root);
    const second = await store.gc();
    expect(new Set(second.removed)).toEqual(
      new Set([
        idx.digest,
        img1.manifest.digest,
        img1.config.digest,
        app1.layer.digest,
        other.digest,
        young.digest,
      ]),
    );
    expect([...(await blobSet(store))].sort()).toEqual(
      [img2.manifest.digest, img2.config.digest, base.layer.digest, app2.layer.digest].sort(),
    );
    expect(second.kept).toBe(4);
  });

  it('walks Docker media types and subjects, keeps extraRoots by sniffing, and treats unnamed entries as roots', async () => {
    const store = await FsStore.open(await tempDir());
    const layer = await addLayer(store, { f: 'docker' });
    const cfg = await store.putBytes(Buffer.from('{"rootfs":{"type":"layers","diff_ids":[]}}'));
    const dockerManifest = await store.putBytes(
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MediaType.DockerManifest,
          config: { mediaType: MediaType.DockerConfig, digest: cfg.digest, size: cfg.size },
          layers: [{ mediaType: MediaType.DockerLayer, digest: layer.layer.digest, size: layer.layer.size }],
        }),
      ),
    );
    const list = await store.putBytes(
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MediaType.DockerManifestList,
          manifests: [
            { mediaType: MediaType.DockerManifest, digest: dockerManifest.digest, size: dockerManifest.size },
          ],
        }),
      ),
    );
    // A signature-like manifest whose subject is an otherwise unreferenced manifest.
    const subjectTarget = await addImage(store, [], 'subject');
    const sigLayer = await store.putBytes(Buffer.from('signature'));
    const sig = await store.putBytes(
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MediaType.OciManifest,
          config: { mediaType: MediaType.OciEmpty, digest: digestOf('{}'), size: 2 },
          layers: [
            { mediaType: 'application/vnd.example.sig', digest: sigLayer.digest, size: sigLayer.size },
          ],
          subject: subjectTarget.manifest,
        }),
      ),
    );
    const garbage = await store.putBytes(Buffer.from('garbage'));
    // An entry without a ref name, as `skopeo copy … oci:DIR` (no tag) writes it.
    await writeFile(
      join(store.root, 'index.json'),
      JSON.stringify({
        schemaVersion: 2,
        manifests: [{ mediaType: MediaType.DockerManifestList, digest: list.digest, size: list.size }],
      }),
    );
    await ageAll(store.root);
    const res = await store.gc({ extraRoots: [sig.digest as Digest] });
    expect(res.removed).toEqual([garbage.digest]);
    const left = await blobSet(store);
    for (const d of [
      layer.layer.digest,
      cfg.digest,
      dockerManifest.digest,
      list.digest,
      sig.digest,
      sigLayer.digest,
    ]) {
      expect(left.has(d)).toBe(true);
    }
    expect(left.has(subjectTarget.manifest.digest)).toBe(true);
    expect(left.has(subjectTarget.config.digest)).toBe(true);
  });

  it('keeps an old unreferenced blob that an ingest just found present (the grace rule covers dedup hits)', async () => {
    const store = await FsStore.open(await tempDir());
    const data = Buffer.from('shared layer about to be referenced again');
    const { digest } = await store.putBytes(data);
    await ageAll(store.root);
    const res = await store.ingest(Readable.from([data]), { digest, size: data.length });
    expect(res.existed).toBe(true);
    expect((await store.gc()).removed).toEqual([]);
    // With the grace period over (injected clock), it goes.
    const later = await FsStore.open(store.root, { now: () => Date.now() + 2 * HOUR });
    expect((await later.gc()).removed).toEqual([digest]);
  });

  it('keeps the entries of root sets (each blob itself, not walked), with or without only, until removed', async () => {
    const store = await FsStore.open(await tempDir(), { tempGraceMs: 0 });
    const { layer } = await addLayer(store, { cached: 'layer' });
    const img = await addImage(store, [{ layer, diffId: layer.digest }], 'cached');
    const loose = (await store.putBytes(Buffer.from('nobody keeps this'))).digest;
    const cache = new RootSet(store.root, 'mirror');
    await cache.add(img.manifest.digest);
    await cache.add(layer.digest);
    expect(new Set((await cache.list()).map((e) => e.digest))).toEqual(
      new Set([img.manifest.digest, layer.digest]),
    );
    // The manifest and the layer stay; the config (named by the manifest, not in the set) goes: no walk.
    const first = await store.gc();
    expect(new Set(first.removed)).toEqual(new Set([loose, img.config.digest]));
    expect((await store.gc({ only: [layer.digest] })).removed).toEqual([]);
    expect(await cache.remove(layer.digest)).toBe(true);
    expect(await cache.remove(layer.digest)).toBe(false);
    expect((await store.gc()).removed).toEqual([layer.digest]);
    expect(() => new RootSet(store.root, '../escape')).toThrow(/invalid root set name/);
  });

  it('does not lose refs set concurrently with gc, and keeps the fresh blobs of images being tagged', async () => {
    const store = await FsStore.open(await tempDir());
    const images: Descriptor[] = [];
    for (let i = 0; i < 5; i++)
      images.push((await addImage(store, [await addLayer(store, { n: String(i) })], `i${i}`)).manifest);
    // The images are not referenced yet when gc may run: only the grace rule (young mtimes) protects them.
    await Promise.all([store.gc(), ...images.map((m, i) => store.setRef(`ex.com/img:${i}`, m)), store.gc()]);
    expect((await store.listRefs()).map((r) => r.name).sort()).toEqual(
      [0, 1, 2, 3, 4].map((i) => `ex.com/img:${i}`),
    );
    const later = await FsStore.open(store.root, { now: () => Date.now() + 2 * HOUR });
    expect((await later.gc()).removed).toEqual([]);
    for (const m of images) expect(await store.has(m.digest)).toBe(true);
  });
});
