/**
 * Regression: the diffID check of a cached layer must not depend on timing. The tar reader stops at the
 * end-of-archive marker and ends its source; when the trailing blocks of the blob had not gone through the
 * hasher yet, that ended the hasher itself and the layer failed with AbortError ("The operation was aborted")
 * instead of being drained and verified (seen once layer apply made fewer event-loop turns).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { MediaType } from '../../src/engine/oci/media-types.js';
import type { Digest } from '../../src/engine/oci/digest.js';
import type { ContentStore } from '../../src/engine/store/types.js';
import { applyVerifiedLayer } from '../../src/engine/union/layer-cache.js';
import { diffIdOf, makeTar, tempDir } from './helpers.js';

/** A store whose only blob arrives in two parts: the entries and the first zero block, then (later) the rest. */
function slowTailStore(tar: Buffer, cut: number): ContentStore {
  return {
    openBlob: async () =>
      Readable.from(
        (async function* () {
          yield tar.subarray(0, cut);
          await sleep(20);
          yield tar.subarray(cut);
        })(),
        { objectMode: false },
      ),
  } as unknown as ContentStore;
}

describe('applyVerifiedLayer', () => {
  it('drains what follows the end-of-archive marker and verifies the diffID', async () => {
    const tar = await makeTar([{ name: 'etc/hostname', content: 'box\n' }]);
    // makeTar's archive ends with zero blocks; cut right after the first one.
    const lastData = tar.length - 1 - [...tar].reverse().findIndex((b) => b !== 0);
    const cut = Math.ceil((lastData + 1) / 512) * 512 + 512;
    expect(cut).toBeLessThan(tar.length);
    const root = await tempDir();
    await applyVerifiedLayer(
      slowTailStore(tar, cut),
      {
        descriptor: {
          mediaType: MediaType.OciLayer,
          digest: `sha256:${'1'.repeat(64)}` as Digest,
          size: tar.length,
        },
        diffId: diffIdOf(tar) as Digest,
      },
      root,
      'overlay',
    );
    expect(await readFile(join(root, 'etc', 'hostname'), 'utf8')).toBe('box\n');
  });

  it('still refuses a layer whose bytes do not hash to the diffID', async () => {
    const tar = await makeTar([{ name: 'a', content: 'x' }]);
    const root = await tempDir();
    await expect(
      applyVerifiedLayer(
        slowTailStore(tar, 1024),
        {
          descriptor: {
            mediaType: MediaType.OciLayer,
            digest: `sha256:${'1'.repeat(64)}` as Digest,
            size: tar.length,
          },
          diffId: `sha256:${'0'.repeat(64)}` as Digest,
        },
        root,
        'overlay',
      ),
    ).rejects.toMatchObject({ code: 'DIGEST_MISMATCH' });
  });
});
