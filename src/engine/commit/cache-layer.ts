/**
 * After an overlay commit, the container's upper directory already is the new layer in overlay form (whiteouts
 * as char devices 0:0, opaque dirs by xattr): copying it into the layer cache under the layer's chain ID lets
 * the next `create` of the committed image (the next step of a build) mount it without unpacking the blob.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { throwIfAborted } from '../errors.js';
import { digestHex, type Digest } from '../oci/digest.js';
import type { ContentStore } from '../store/types.js';
import { ensureEntry, layersDir } from '../union/layer-cache.js';
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
 * already there (same chain ID) is kept. Needs root, as the overlay driver does.
 */
export async function cacheCommittedLayer(
  store: ContentStore,
  upper: string,
  layer: CommittedLayer,
  options: { signal?: AbortSignal } = {},
): Promise<void> {
  throwIfAborted(options.signal);
  await ensureEntry(
    layersDir(store.root),
    digestHex(layer.chainId),
    async (tmp) => {
      const diff = join(tmp, 'diff');
      const what = `caching layer ${layer.digest}`;
      await run('cp', ['-a', '--reflink=auto', '--', upper, diff], { what });
      // The layer writer skips sockets (a tar cannot hold them): the cached tree must not have them either.
      await run('find', [diff, '-type', 's', '-delete'], { what });
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

/** Removes `trusted.overlay.*`/`user.overlay.*` attributes other than the opaque marker under `root`. */
async function dropOverlayBookkeeping(root: string, signal?: AbortSignal): Promise<void> {
  const tree = await readXattrTree(root, {
    ...(signal ? { signal } : {}),
    match: '^(trusted|user)\\.overlay\\.',
  });
  const args: string[] = [];
  for (const [rel, attrs] of tree)
    for (const name of Object.keys(attrs))
      if (name !== OVERLAY_OPAQUE_XATTR && name !== OVERLAY_OPAQUE_USER_XATTR)
        args.push(name, rel === '' ? root : join(root, rel));
  if (args.length === 0) return;
  // One xargs run for all of them: a build step can copy up thousands of files, each with an `origin`.
  await new Promise<void>((resolve, reject) => {
    const child = spawn('xargs', ['-0', '-n', '2', 'setfattr', '-h', '-x'], {
      stdio: ['pipe', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-2000)));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`setfattr -x failed (${code}): ${stderr.trim()}`)),
    );
    child.stdin.end(Buffer.from(`${args.join('\0')}\0`));
  });
}
