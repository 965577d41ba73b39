import { randomBytes } from 'node:crypto';
import { mkdir, readlink, realpath, rename, rm, symlink } from 'node:fs/promises';
import { isAbsolute, join, relative } from 'node:path';
import { TerminalError } from '../errors.js';
import type { LocalImage } from '../image/local.js';
import { digestHex } from '../oci/digest.js';
import type { ContentStore } from '../store/types.js';
import { ensureOverlayLayers, layerDiffDir, strataDir } from './layer-cache.js';
import {
  ContainerBusyError,
  mountPoints,
  run,
  type PrepareOptions,
  type Snapshot,
  type Snapshotter,
} from './snapshotter.js';

/**
 * The overlay option string goes to the kernel in one page (4096 bytes, terminating NUL included). We keep well
 * under it: the lower dirs are named by short relative symlinks (`l/<16 hex of the chainID>`, 19 bytes each with
 * the separator) and mount(8) runs with its working directory at `<storeRoot>/strata`, which the kernel resolves
 * relative paths against (as docker's overlay2 does). That fits about 200 layers; overlayfs itself allows 500.
 */
const MAX_OPTIONS = 4000;

/** Length of the short link names under `strata/l/`. */
const SHORT = 16;

/** Resolves a path through symlinks of its existing parents (mountinfo shows canonical paths). */
async function canonical(path: string): Promise<string> {
  return realpath(path).catch(() => path);
}

/**
 * The `overlay` driver: a container root is an overlayfs mount of the image's cached layer dirs (read-only,
 * shared, top-most first), a fresh `upper` dir and a `work` dir, at `merged`. Needs root and overlayfs.
 * Whiteouts in the layer dirs and in `upper` are char devices 0:0; opaque dirs carry `trusted.overlay.opaque=y`.
 */
export class OverlaySnapshotter implements Snapshotter {
  readonly driver = 'overlay' as const;
  private readonly base: string;

  constructor(private readonly store: ContentStore) {
    this.base = strataDir(store.root);
  }

  async prepare(dir: string, image: LocalImage, options: PrepareOptions = {}): Promise<Snapshot> {
    const layers = await ensureOverlayLayers(this.store, image, options);
    const upper = join(dir, 'upper');
    const work = join(dir, 'work');
    const merged = join(dir, 'merged');
    for (const d of [upper, work, merged]) await mkdir(d, { recursive: true });
    return { driver: 'overlay', layers, upper, work, merged };
  }

  async isMounted(snapshot: Snapshot): Promise<boolean> {
    return (await mountPoints()).has(await canonical(snapshot.merged));
  }

  async mount(snapshot: Snapshot): Promise<string> {
    if (await this.isMounted(snapshot)) return snapshot.merged;
    if (!snapshot.work)
      throw new TerminalError('STORE_CORRUPT', `${snapshot.merged}: overlay snapshot without a work dir`);
    const lowers: string[] = [];
    for (const layer of [...snapshot.layers].reverse())
      lowers.push(await this.shortLink(layer.chainId, layer.dir));
    if (lowers.length === 0) {
      // overlayfs needs at least one lower dir: an image without layers gets an empty one.
      await mkdir(join(this.base, 'empty'), { recursive: true });
      lowers.push('empty');
    }
    const rel = (p: string): string => {
      const r = relative(this.base, p);
      return r.startsWith('..') || isAbsolute(r) ? p : r;
    };
    const options = `lowerdir=${lowers.join(':')},upperdir=${rel(snapshot.upper)},workdir=${rel(snapshot.work)},index=off`;
    if (options.length > MAX_OPTIONS)
      throw new TerminalError(
        'INVALID_ARGUMENT',
        `${snapshot.merged}: ${snapshot.layers.length} layers make an overlay option string of ${options.length} bytes (limit ${MAX_OPTIONS}); use the vfs driver`,
      );
    try {
      await run('mount', ['-t', 'overlay', 'overlay', '-o', options, snapshot.merged], {
        cwd: this.base,
        what: `mount overlay at ${snapshot.merged}`,
      });
    } catch (err) {
      if (await this.isMounted(snapshot)) return snapshot.merged; // a concurrent mount won
      throw err;
    }
    return snapshot.merged;
  }

  async unmount(snapshot: Snapshot, options: { force?: boolean } = {}): Promise<void> {
    // Loop: a mount raced twice onto the same point stacks; take every layer off.
    for (let i = 0; i < 8 && (await this.isMounted(snapshot)); i++) {
      try {
        await run('umount', [snapshot.merged], { what: `unmount ${snapshot.merged}` });
      } catch (err) {
        if (!(await this.isMounted(snapshot))) return;
        if (!options.force)
          throw new ContainerBusyError(
            `${snapshot.merged} is busy (a process uses it); stop its users or force the removal`,
            err,
          );
        await run('umount', ['-l', snapshot.merged], { what: `lazy unmount ${snapshot.merged}` });
      }
    }
  }

  async remove(
    dir: string,
    snapshot: Snapshot | undefined,
    options: { force?: boolean } = {},
  ): Promise<void> {
    if (snapshot) {
      await this.unmount(snapshot, options);
      if (await this.isMounted(snapshot))
        throw new ContainerBusyError(`${snapshot.merged} is still mounted; not deleting ${dir}`);
    } else if ((await mountPoints()).has(await canonical(join(dir, 'merged')))) {
      throw new ContainerBusyError(`${join(dir, 'merged')} is mounted; not deleting ${dir}`);
    }
    await rm(dir, { recursive: true, force: true });
  }

  /** `l/<short>` → `../layers/<hex>/diff`, created atomically if missing; the full dir when the name is taken. */
  private async shortLink(chainId: Snapshot['layers'][number]['chainId'], dir: string): Promise<string> {
    const hex = digestHex(chainId);
    const name = join('l', hex.slice(0, SHORT));
    const link = join(this.base, name);
    const target = relative(join(this.base, 'l'), layerDiffDir(this.store.root, chainId));
    const current = await readlink(link).catch(() => undefined);
    if (current === target) return name;
    if (current !== undefined) return relative(this.base, dir); // a 64-bit prefix collision: use the long path
    await mkdir(join(this.base, 'l'), { recursive: true });
    const tmp = `${link}.tmp-${randomBytes(4).toString('hex')}`;
    await symlink(target, tmp);
    await rename(tmp, link).catch(async (err: unknown) => {
      await rm(tmp, { force: true });
      throw err;
    });
    return name;
  }
}
