import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { throwIfAborted } from '../errors.js';
import type { LocalImage } from '../image/local.js';
import { digestHex } from '../oci/digest.js';
import type { ContentStore } from '../store/types.js';
import {
  applyVerifiedLayer,
  ensureEntry,
  imageLayers,
  vfsSnapshotDir,
  vfsSnapshotsDir,
  type CachedLayer,
} from './layer-cache.js';
import { run, type PrepareOptions, type Snapshot, type Snapshotter } from './snapshotter.js';

/** Copies a tree with everything a rootfs needs (owners, modes, times, xattrs, hardlinks, devices). */
export async function copyTree(from: string, to: string): Promise<void> {
  // GNU cp: -a keeps owners, modes, times, xattrs, links and special files; reflinks when the filesystem can.
  await run('cp', ['-a', '--reflink=auto', '--', from, to], { what: `copy ${from}` });
}

/**
 * The `vfs` driver (docker's vfs, containerd's native snapshotter): no kernel support needed. Each chain of
 * layers 0..n is a FULL tree, `<storeRoot>/strata/vfs/<chainID-hex>/rootfs`, made once as a copy of the parent's
 * tree with layer n applied in vfs format (whiteouts as deletions); a container's root is a plain copy of the top
 * tree (`<container>/rootfs`). The lower tree of a container (for commit) is the last layer's `dir`.
 */
export class VfsSnapshotter implements Snapshotter {
  readonly driver = 'vfs' as const;

  constructor(private readonly store: ContentStore) {}

  async prepare(dir: string, image: LocalImage, options: PrepareOptions = {}): Promise<Snapshot> {
    const layers: CachedLayer[] = [];
    let parent: string | undefined;
    const all = imageLayers(image);
    for (const [index, l] of all.entries()) {
      throwIfAborted(options.signal);
      const from = parent;
      await ensureEntry(
        vfsSnapshotsDir(this.store.root),
        digestHex(l.chainId),
        async (tmp) => {
          const rootfs = join(tmp, 'rootfs');
          if (from) await copyTree(from, rootfs);
          else await mkdir(rootfs);
          await applyVerifiedLayer(this.store, l, rootfs, 'vfs', {
            ...options,
            index,
            count: all.length,
            what: `layer ${l.digest} of ${image.name}`,
          });
        },
        { digest: l.digest, diffId: l.diffId, chainId: l.chainId, format: 'vfs' },
      );
      parent = vfsSnapshotDir(this.store.root, l.chainId);
      layers.push({ digest: l.digest, diffId: l.diffId, chainId: l.chainId, dir: parent });
    }
    const rootfs = join(dir, 'rootfs');
    if (parent) await copyTree(parent, rootfs);
    else await mkdir(rootfs);
    return { driver: 'vfs', layers, upper: rootfs, merged: rootfs };
  }

  mount(snapshot: Snapshot): Promise<string> {
    return Promise.resolve(snapshot.merged);
  }

  isMounted(): Promise<boolean> {
    return Promise.resolve(true);
  }

  unmount(): Promise<void> {
    return Promise.resolve();
  }

  async remove(dir: string): Promise<void> {
    await rm(dir, { recursive: true, force: true });
  }
}
