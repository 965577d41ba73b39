/**
 * Progress events of the union room: `layer-apply` from unpack and from create's layer cache (both drivers), and
 * `commit-progress` from export, heard through the engine's listeners.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import type { EngineEvent } from '../../src/engine/observe.js';
import { MediaType } from '../../src/engine/oci/media-types.js';
import type { RegistryApi } from '../../src/engine/registry/types.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { requireRootAndOverlay, unmountAllUnder } from '../support/root.js';
import { diffIdOf, makeTar, storeImage, tempDir, type TarEntrySpec } from './helpers.js';

type LayerApply = Extract<EngineEvent, { type: 'layer-apply' }>;
type CommitProgress = Extract<EngineEvent, { type: 'commit-progress' }>;

/** An engine over a fresh store holding a three-layer image `x/img:1`; `events` collects what it emits. */
async function setup(): Promise<{ engine: Engine; events: EngineEvent[]; work: string; sizes: number[] }> {
  const work = await tempDir();
  const store = await FsStore.open(join(work, 'store'));
  const events: EngineEvent[] = [];
  const engine = new Engine({
    store,
    registry: {} as RegistryApi,
    // A listener that throws must not break anything: the second one still hears every event.
    listeners: [
      () => {
        throw new Error('broken listener');
      },
      (e) => events.push(e),
    ],
  });
  const layers: TarEntrySpec[][] = [
    [
      { name: 'big', type: 'directory', mode: 0o755 },
      ...Array.from({ length: 40 }, (_v, i) => ({ name: `big/f${i}`, content: randomBytes(32 * 1024) })),
    ],
    [
      { name: 'etc', type: 'directory', mode: 0o755 },
      { name: 'etc/conf', content: 'x' },
    ],
    [
      { name: 'etc/.wh.conf', content: '' },
      { name: 'etc/new', content: 'y' },
    ],
  ];
  const blobs = [];
  for (const entries of layers) {
    const tar = await makeTar(entries);
    blobs.push({ blob: gzipSync(tar), mediaType: MediaType.OciLayerGzip, diffId: diffIdOf(tar) });
  }
  await storeImage(store, 'x/img:1', blobs);
  return { engine, events, work, sizes: blobs.map((b) => b.blob.length) };
}

function applied(events: EngineEvent[]): LayerApply[] {
  return events.filter((e): e is LayerApply => e.type === 'layer-apply');
}

/** Checks one run over the three layers: in order, each ending with a done event whose bytes reach the blob size. */
function expectEveryLayer(events: LayerApply[], sizes: number[], entriesPerLayer: number[]): void {
  const done = events.filter((e) => e.done);
  expect(done.map((e) => e.index)).toEqual([0, 1, 2]);
  expect(done.map((e) => e.count)).toEqual([3, 3, 3]);
  expect(done.map((e) => e.bytes)).toEqual(sizes);
  expect(done.map((e) => e.size)).toEqual(sizes);
  expect(done.map((e) => e.entries)).toEqual(entriesPerLayer);
  for (const e of events) {
    expect(e.bytes).toBeLessThanOrEqual(e.size!);
    expect(e.layer).toMatch(/^sha256:[0-9a-f]{64}$/);
  }
  // Ordered: no event of a layer after the done event of a later one.
  const indices = events.map((e) => e.index);
  expect([...indices].sort((a, b) => a - b)).toEqual(indices);
}

describe('layer-apply events', () => {
  it('unpack reports each layer, ending with done at the blob size and the entries applied', async () => {
    const { engine, events, work, sizes } = await setup();
    const result = await engine.unpack('x/img:1', join(work, 'out'));
    expectEveryLayer(
      applied(events),
      sizes,
      result.layers.map((l) => l.stats.entries),
    );
    expect(result.layers.map((l) => l.stats.entries)).toEqual([41, 2, 2]);
  });

  it('create (vfs) reports the layers it unpacks into the cache, and nothing once they are cached', async () => {
    const { engine, events, sizes } = await setup();
    await engine.create('x/img:1', { name: 'ev-vfs', driver: 'vfs' });
    expectEveryLayer(applied(events), sizes, [41, 2, 2]);
    events.length = 0;
    await engine.create('x/img:1', { name: 'ev-vfs2', driver: 'vfs' });
    expect(applied(events)).toEqual([]);
  });

  describe('overlay (mounts for real)', () => {
    beforeAll(() => requireRootAndOverlay());

    it('create (overlay) reports the layers it unpacks into the cache', async () => {
      const { engine, events, sizes, work } = await setup();
      try {
        await engine.create('x/img:1', { name: 'ev-ovl', driver: 'overlay' });
        expectEveryLayer(applied(events), sizes, [41, 2, 2]);
      } finally {
        unmountAllUnder(work);
      }
    });
  });
});

describe('commit-progress events', () => {
  it('export reports the tar it writes, ending with done at the bytes written', async () => {
    const { engine, events } = await setup();
    await engine.create('x/img:1', { name: 'ev-exp', driver: 'vfs' });
    const out = new PassThrough();
    let written = 0;
    out.on('data', (c: Buffer) => (written += c.length));
    const result = await engine.export('ev-exp', out);
    const progress = events.filter((e): e is CommitProgress => e.type === 'commit-progress');
    const last = progress.at(-1)!;
    expect(last).toEqual({
      type: 'commit-progress',
      entries: result.stats.entries,
      bytes: written,
      done: true,
      total: result.stats.entries,
    });
    expect(progress.filter((e) => e.done)).toHaveLength(1);
    for (let i = 1; i < progress.length; i++)
      expect(progress[i]!.bytes).toBeGreaterThanOrEqual(progress[i - 1]!.bytes);
  });
});
