import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { collectRegistryGarbage } from '../../src/mirror/gc.js';
import { prepareImage, pushBlob, putManifest, startHarness, type Harness } from './support.js';

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

describe('registry gc', () => {
  it('keeps what tags and digest-only manifests reach; removes deleted images and orphan uploads', async () => {
    h = await startHarness();
    const tagged = await prepareImage(h, 'team/tagged', { layers: ['tagged layer'] });
    expect((await putManifest(h, 'team/tagged', '1', tagged.bytes, tagged.mediaType)).status).toBe(201);
    const byDigest = await prepareImage(h, 'team/bydigest', { layers: ['digest-only layer'] });
    expect(
      (await putManifest(h, 'team/bydigest', byDigest.digest, byDigest.bytes, byDigest.mediaType)).status,
    ).toBe(201);
    const deleted = await prepareImage(h, 'team/deleted', { layers: ['deleted layer'], arch: 'arm64' });
    expect((await putManifest(h, 'team/deleted', '1', deleted.bytes, deleted.mediaType)).status).toBe(201);
    expect((await h.fetch(`/v2/team/deleted/manifests/${deleted.digest}`, { method: 'DELETE' })).status).toBe(
      202,
    );
    const orphan = await pushBlob(h, 'team/orphan', 'an upload whose manifest never came');

    // Within the grace period nothing young is collected (an upload's manifest may still be on its way).
    const young = await collectRegistryGarbage(h.store);
    expect(young.removed).toEqual([]);

    const aged = await FsStore.open(join(h.root, 'store'), { tempGraceMs: 0 });
    const dry = await collectRegistryGarbage(aged, { dryRun: true });
    const result = await collectRegistryGarbage(aged);
    expect([...dry.removed].sort()).toEqual([...result.removed].sort());
    // The deleted image's own config (arm64) goes too; the amd64 config is shared by the two live images.
    expect([...result.removed].sort()).toEqual(
      [deleted.digest, deleted.config, ...deleted.layers, orphan].sort(),
    );
    for (const d of [
      tagged.digest,
      tagged.config,
      ...tagged.layers,
      byDigest.digest,
      byDigest.config,
      ...byDigest.layers,
    ]) {
      expect(await aged.has(d), d).toBe(true);
    }
    expect((await h.fetch(`/v2/team/bydigest/manifests/${byDigest.digest}`)).status).toBe(200);
    expect((await h.fetch(`/v2/team/tagged/blobs/${tagged.layers[0]}`)).status).toBe(200);
    expect((await h.fetch(`/v2/team/orphan/blobs/${orphan}`)).status).toBe(404);
  });
});
