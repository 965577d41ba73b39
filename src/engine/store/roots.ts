/**
 * Root sets: digests a component keeps in the store for as long as it wants them, without a ref and without a
 * lease — a cache (the mirror's blobs and manifests) that must survive `gc` but is not an image of the node. One
 * empty file per digest, `strata/roots/<set>/<alg>/<hex>`; gc keeps every digest named there (the digest itself, not
 * what it references: each cached blob has its own entry). The file's mtime is the holder's to use (the mirror keeps
 * each entry's last use in it for its LRU eviction).
 *
 * Adding needs no lock: gc reads the sets under the index lock, so an entry added before a gc starts is honoured; an
 * entry added while a gc runs is covered by the grace rule for young blobs (or by the writer's lease).
 */
import { mkdir, readdir, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { StrataError } from '../errors.js';
import { digestAlgorithm, digestHex, isDigest, type Digest } from '../oci/digest.js';

/** Where root sets live inside a store root. */
export const ROOTS_DIR = join('strata', 'roots');

const SET_NAME_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;

/** One entry of a {@link RootSet}. */
export interface RootEntry {
  readonly digest: Digest;
  readonly path: string;
  /** The entry's mtime (ms since the epoch); 0 when it vanished while listed. */
  readonly mtimeMs: number;
}

/** A named set of gc roots in a store. */
export class RootSet {
  readonly dir: string;

  constructor(storeRoot: string, name: string) {
    if (!SET_NAME_RE.test(name)) throw new StrataError('INVALID_ARGUMENT', `invalid root set name ${name}`);
    this.dir = join(storeRoot, ROOTS_DIR, name);
  }

  /** The entry file of `digest`. */
  path(digest: Digest): string {
    return join(this.dir, digestAlgorithm(digest), digestHex(digest));
  }

  /** Adds `digest` (or refreshes it), with `at` as its mtime (default now). */
  async add(digest: Digest, at: Date = new Date()): Promise<void> {
    const path = this.path(digest);
    try {
      await utimes(path, at, at);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, '');
    await utimes(path, at, at);
  }

  /** Removes `digest`; true when it was there. */
  async remove(digest: Digest): Promise<boolean> {
    try {
      await unlink(this.path(digest));
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }

  /** Every entry with its mtime. Files that are not digest-named are ignored. */
  async list(): Promise<RootEntry[]> {
    const found = await listDigests(this.dir);
    return Promise.all(
      found.map(async ({ digest, path }) => ({
        digest,
        path,
        mtimeMs: (await stat(path).catch(() => undefined))?.mtimeMs ?? 0,
      })),
    );
  }
}

/** Every digest of every root set of the store at `storeRoot` (what gc keeps besides refs and leases). */
export async function allRootDigests(storeRoot: string): Promise<Digest[]> {
  const base = join(storeRoot, ROOTS_DIR);
  const out: Digest[] = [];
  for (const set of await readdirQuiet(base)) {
    if (SET_NAME_RE.test(set)) for (const { digest } of await listDigests(join(base, set))) out.push(digest);
  }
  return out;
}

async function listDigests(dir: string): Promise<Array<{ digest: Digest; path: string }>> {
  const out: Array<{ digest: Digest; path: string }> = [];
  for (const alg of await readdirQuiet(dir)) {
    for (const hex of await readdirQuiet(join(dir, alg))) {
      const digest = `${alg}:${hex}`;
      if (isDigest(digest)) out.push({ digest, path: join(dir, alg, hex) });
    }
  }
  return out;
}

async function readdirQuiet(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return [];
    throw err;
  }
}
