/**
 * After an overlay commit, the container's upper directory already is the new layer in overlay form (whiteouts
 * as char devices 0:0, opaque dirs by xattr): copying it into the layer cache under the layer's chain ID lets
 * the next `create` of the committed image (the next step of a build) mount it without unpacking the blob.
 * After a vfs commit, the container's rootfs already is the full tree of the new chain: it becomes the vfs
 * snapshot of that chain ID, copied, or moved when the container is thrown away right after.
 */
import { spawn } from 'node:child_process';
import { lstatSync } from 'node:fs';
import { rename } from 'node:fs/promises';
import { join } from 'node:path';
import { throwIfAborted } from '../errors.js';
import { digestHex, type Digest } from '../oci/digest.js';
import type { ContentStore } from '../store/types.js';
import { ensureEntry, layersDir, vfsSnapshotsDir } from '../union/layer-cache.js';
import { run } from '../union/snapshotter.js';
import { OVERLAY_OPAQUE_USER_XATTR, OVERLAY_OPAQUE_XATTR } from '../union/whiteouts.js';
import { readXattrTree } from './xattrs.js';

/** The layer a commit wrote, as the cache keys it. */
export interface CommittedLayer {
  readonly digest: Digest;
  readonly diffId: Digest;
  readonly chainId: Digest;
}

/**
 * Makes `<store>/strata/layers/<chainID>/diff` a copy of `upper` (`cp -a`: owners, modes, times, xattrs, device
 * nodes and hardlinks kept), minus overlayfs' own bookkeeping attributes (`origin`, `impure`, … — everything
 * `*.overlay.*` but the opaque marker) and sockets, which a tar of the layer does not carry either. An entry
 * already there (same chain ID) is kept. Needs root, as the overlay driver does. With `move` (a build step's
 * container, removed right after) `upper` is renamed into the cache instead of copied — no second copy of the
 * layer's data — and is gone afterwards unless the entry existed already (or the rename crossed filesystems).
 * `socketFree`: the caller knows `upper` holds no socket (its layer tar skipped none).
 */
export async function cacheCommittedLayer(
  store: ContentStore,
  upper: string,
  layer: CommittedLayer,
  options: { signal?: AbortSignal; move?: boolean; socketFree?: boolean } = {},
): Promise<void> {
  throwIfAborted(options.signal);
  await ensureEntry(
    layersDir(store.root),
    digestHex(layer.chainId),
    async (tmp) => {
      const diff = join(tmp, 'diff');
      const what = `caching layer ${layer.digest}`;
      await moveOrCopy(upper, diff, options.move === true, what);
      // The layer writer skips sockets (a tar cannot hold them): the cached tree must not have them either. A caller
      // whose layer tar skipped none (`socketFree`) spares the sweep (one process less per build step).
      if (options.socketFree !== true) await run('find', [diff, '-type', 's', '-delete'], { what });
      await dropOverlayBookkeeping(diff, options.signal);
    },
    {
      digest: layer.digest,
      diffId: layer.diffId,
      chainId: layer.chainId,
      format: 'overlay',
      source: 'commit',
    },
  );
}

/**
 * Makes `<store>/strata/vfs/<chainID>/rootfs` the tree of a vfs container's `rootfs` just committed as `layer`: the
 * parent chain's tree with the container's changes is exactly what applying the new layer to it gives (sockets
 * aside, which the layer writer skips and this removes). `move` renames the rootfs into the cache instead of
 * copying it (the container is unusable afterwards: only for a container removed right after, as a build step's
 * is); across filesystems it falls back to a copy. An entry already there (same chain ID) is kept.
 */
export async function cacheCommittedVfsTree(
  store: ContentStore,
  rootfs: string,
  layer: CommittedLayer,
  options: { signal?: AbortSignal; move?: boolean } = {},
): Promise<void> {
  throwIfAborted(options.signal);
  await ensureEntry(
    vfsSnapshotsDir(store.root),
    digestHex(layer.chainId),
    async (tmp) => {
      const tree = join(tmp, 'rootfs');
      const what = `caching the tree of layer ${layer.digest}`;
      await moveOrCopy(rootfs, tree, options.move === true, what);
      await run('find', [tree, '-type', 's', '-delete'], { what });
    },
    {
      digest: layer.digest,
      diffId: layer.diffId,
      chainId: layer.chainId,
      format: 'vfs',
      source: 'commit',
    },
  );
}

/** Removes `trusted.overlay.*`/`user.overlay.*` attributes other than the opaque marker under `root`. */
async function dropOverlayBookkeeping(root: string, signal?: AbortSignal): Promise<void> {
  const tree = await readXattrTree(root, {
    ...(signal ? { signal } : {}),
    match: '^(trusted|user)\\.overlay\\.',
  });
  // One path per inode and attribute: hard links share their attributes, so removing one through a path removes it
  // for all, and setfattr would then fail on the next path ("No such attribute").
  const byName = new Map<string, string[]>();
  const seen = new Set<string>();
  for (const [rel, attrs] of tree) {
    const names = Object.keys(attrs).filter(
      (name) => name !== OVERLAY_OPAQUE_XATTR && name !== OVERLAY_OPAQUE_USER_XATTR,
    );
    if (names.length === 0) continue;
    const path = rel === '' ? root : join(root, rel);
    const st = lstatSync(path);
    for (const name of names) {
      const id = `${name}\0${st.dev}:${st.ino}`;
      if (st.nlink > 1 && seen.has(id)) continue;
      seen.add(id);
      let paths = byName.get(name);
      if (!paths) byName.set(name, (paths = []));
      paths.push(path);
    }
  }
  // One xargs run per attribute name (a handful: origin, impure, …), each setfattr taking as many paths as fit: a
  // build step can copy up thousands of files and directories, each with an `origin`.
  for (const [name, paths] of byName) {
    throwIfAborted(signal);
    await new Promise<void>((resolve, reject) => {
      const child = spawn('xargs', ['-0', 'setfattr', '-h', '-x', name, '--'], {
        stdio: ['pipe', 'ignore', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-2000)));
      child.on('error', reject);
      child.on('close', (code) =>
        code === 0 ? resolve() : reject(new Error(`setfattr -x ${name} failed (${code}): ${stderr.trim()}`)),
      );
      child.stdin.end(Buffer.from(`${paths.join('\0')}\0`));
    });
  }
}

/**
 * `from` becomes `to`: renamed when `move` allows and the rename works, else copied (`cp -a`, reflinks where the
 * filesystem has them). Any failed rename falls back to the copy — EXDEV across filesystems, EBUSY and the like —
 * and the copy reports what is really wrong (a missing source, a full disk) in its own words.
 */
async function moveOrCopy(from: string, to: string, move: boolean, what: string): Promise<void> {
  const moved =
    move &&
    (await rename(from, to).then(
      () => true,
      () => false,
    ));
  if (!moved) await run('cp', ['-a', '--reflink=auto', '--', from, to], { what });
}
