/**
 * The read-only lower tree of a container, seen through its unpacked layer directories (overlay form: whiteouts
 * are char devices 0:0, opaque directories carry `trusted.overlay.opaque=y`) merged virtually, as overlayfs would
 * merge them — without mounting anything. Used by the vfs diff and to tell adds from modifies.
 */
import { resolve } from 'node:path';
import { isWhiteoutDevice, readInfos, sortedNames } from './fsinfo.js';
import type { FileInfo } from './types.js';
import { isOpaqueDir, publicXattrs, readXattrTree, type XattrTree } from './xattrs.js';

/** A directory of the merged lower tree: its path and the layers (indices, top first) that contribute to it. */
export interface LowerDir {
  readonly path: string;
  readonly layers: readonly number[];
}

/** One visible entry of the merged lower tree. */
export interface LowerEntry {
  readonly name: string;
  readonly path: string;
  /** Absolute path of the file in the layer that provides it. */
  readonly abs: string;
  readonly info: FileInfo;
  /** For directories: where to list its children. */
  readonly dir?: LowerDir;
}

/** The merged view of overlay-form layer directories (listed base first). */
export class LowerTree {
  private constructor(
    private readonly dirs: readonly string[],
    private readonly xattrs: readonly XattrTree[],
  ) {}

  /** Opens the tree, reading each layer's extended attributes once (one `getfattr -R` per layer). */
  static async open(
    layerDirs: readonly string[],
    options: { signal?: AbortSignal } = {},
  ): Promise<LowerTree> {
    const dirs = layerDirs.map((d) => resolve(d));
    const xattrs = await Promise.all(dirs.map((d) => readXattrTree(d, { ...options, required: true })));
    return new LowerTree(dirs, xattrs);
  }

  /** The root directory (every layer down to the first whose root is opaque). */
  root(): LowerDir {
    const layers: number[] = [];
    for (let i = this.dirs.length - 1; i >= 0; i--) {
      layers.push(i);
      if (isOpaqueDir(this.xattrs[i]!.get(''))) break;
    }
    return { path: '', layers };
  }

  private rel(dir: string, name: string): string {
    return dir === '' ? name : `${dir}/${name}`;
  }

  /** The visible children of a merged directory, by name (whiteouts applied, upper layers winning). */
  async list(dir: LowerDir): Promise<Map<string, LowerEntry>> {
    const out = new Map<string, LowerEntry>();
    const hidden = new Set<string>();
    for (let li = 0; li < dir.layers.length; li++) {
      const layer = dir.layers[li]!;
      const base = dir.path === '' ? this.dirs[layer]! : `${this.dirs[layer]}/${dir.path}`;
      let names: string[];
      try {
        names = await sortedNames(base);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') continue;
        throw err;
      }
      const fresh = names.filter((n) => !out.has(n) && !hidden.has(n));
      const tree = this.xattrs[layer]!;
      const infos = await readInfos(base, fresh, (n) => publicXattrs(tree.get(this.rel(dir.path, n))));
      for (let i = 0; i < fresh.length; i++) {
        const name = fresh[i]!;
        const info = infos[i];
        if (!info) continue;
        if (isWhiteoutDevice(info)) {
          hidden.add(name);
          continue;
        }
        const path = this.rel(dir.path, name);
        const entry: LowerEntry = { name, path, abs: `${base}/${name}`, info };
        out.set(
          name,
          info.type === 'dir' ? { ...entry, dir: await this.subdir(path, dir.layers.slice(li)) } : entry,
        );
      }
    }
    return out;
  }

  /** The layers contributing to directory `path`, given the (top-first) layers of its parent from where it was found. */
  private async subdir(path: string, candidates: readonly number[]): Promise<LowerDir> {
    const layers: number[] = [];
    for (let i = 0; i < candidates.length; i++) {
      const layer = candidates[i]!;
      if (i > 0) {
        const [info] = await readInfos(this.dirs[layer]!, [path], () => undefined);
        if (!info) continue;
        if (info.type !== 'dir') break; // a whiteout or a non-directory hides everything below
      }
      layers.push(layer);
      if (isOpaqueDir(this.xattrs[layer]!.get(path))) break;
    }
    return { path, layers };
  }

  /** Looks one path up in the merged tree (listing each ancestor directory; cached per directory). */
  async lookup(
    path: string,
    cache = new Map<string, Map<string, LowerEntry>>(),
  ): Promise<LowerEntry | undefined> {
    let dir: LowerDir | undefined = this.root();
    let entry: LowerEntry | undefined;
    for (const part of path.split('/')) {
      if (!dir) return undefined;
      let listing = cache.get(dir.path);
      if (!listing) {
        listing = await this.list(dir);
        cache.set(dir.path, listing);
      }
      entry = listing.get(part);
      if (!entry) return undefined;
      dir = entry.dir;
    }
    return entry;
  }
}
