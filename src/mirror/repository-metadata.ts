import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { digestAlgorithm, digestHex, isDigest, type Digest } from '../engine/oci/digest.js';
import type { Descriptor } from '../engine/oci/types.js';
import type { ContentStore } from '../engine/store/types.js';
import { isValidRepositoryName, isValidTag } from './routes.js';

/** Directory (inside the store root) holding the per-repository link files. */
export const REPOSITORIES_DIR = 'repositories';

/**
 * Per-repository metadata of the registry, persisted next to the shared content store:
 *
 * - `repositories/<name>/_blobs/<alg>/<hex>`: empty file, the blob is visible in `<name>`;
 * - `repositories/<name>/_manifests/<alg>/<hex>`: the manifest is in `<name>`; holds its media type;
 * - `repositories/<name>/_referrers/<alg>/<subject hex>/<alg>/<hex>`: the manifest `<hex>` has that subject;
 * - tags are store refs named `<name>:<tag>` (so the store reads as an OCI layout with `oci:ROOT:<name>:<tag>`).
 *
 * Link files are created atomically (temp file + rename); `_`-prefixed directories cannot clash with repository
 * path components, which start with a letter or digit.
 */
export class RepositoryMetadata {
  private readonly base: string;

  constructor(private readonly store: ContentStore) {
    this.base = join(store.root, REPOSITORIES_DIR);
  }

  private repoDir(name: string): string {
    if (!isValidRepositoryName(name)) throw new Error(`invalid repository name ${name}`);
    return join(this.base, ...name.split('/'));
  }

  private linkPath(name: string, kind: '_blobs' | '_manifests', digest: Digest): string {
    return join(this.repoDir(name), kind, digestAlgorithm(digest), digestHex(digest));
  }

  private referrerDir(name: string, subject: Digest): string {
    return join(this.repoDir(name), '_referrers', digestAlgorithm(subject), digestHex(subject));
  }

  /** True when the blob is linked into the repository. */
  async isBlobLinked(name: string, digest: Digest): Promise<boolean> {
    return (await readOptional(this.linkPath(name, '_blobs', digest))) !== undefined;
  }

  /** Links a blob into the repository (idempotent). */
  async linkBlob(name: string, digest: Digest): Promise<void> {
    await writeAtomic(this.linkPath(name, '_blobs', digest), '');
  }

  /** Removes a blob's link from the repository; true if it was linked. The blob itself stays in the store. */
  async unlinkBlob(name: string, digest: Digest): Promise<boolean> {
    return removeFile(this.linkPath(name, '_blobs', digest));
  }

  /** The media type recorded for a manifest linked into the repository, or undefined if it is not linked. */
  async manifestMediaType(name: string, digest: Digest): Promise<string | undefined> {
    return readOptional(this.linkPath(name, '_manifests', digest));
  }

  /** Links a manifest into the repository, recording its media type (idempotent; the last type wins). */
  async linkManifest(name: string, digest: Digest, mediaType: string): Promise<void> {
    await writeAtomic(this.linkPath(name, '_manifests', digest), mediaType);
  }

  /** Removes a manifest's link; true if it was linked. */
  async unlinkManifest(name: string, digest: Digest): Promise<boolean> {
    return removeFile(this.linkPath(name, '_manifests', digest));
  }

  /** Records that `manifest` (in repository `name`) refers to `subject`. */
  async addReferrer(name: string, subject: Digest, manifest: Digest): Promise<void> {
    await writeAtomic(
      join(this.referrerDir(name, subject), digestAlgorithm(manifest), digestHex(manifest)),
      '',
    );
  }

  /** Forgets that `manifest` refers to `subject`. */
  async removeReferrer(name: string, subject: Digest, manifest: Digest): Promise<void> {
    await removeFile(join(this.referrerDir(name, subject), digestAlgorithm(manifest), digestHex(manifest)));
  }

  /** Digests of the manifests in the repository whose `subject` is `subject`, sorted. */
  async listReferrers(name: string, subject: Digest): Promise<Digest[]> {
    const dir = this.referrerDir(name, subject);
    const out: Digest[] = [];
    for (const alg of await listDir(dir)) {
      for (const hex of await listDir(join(dir, alg))) {
        const d = `${alg}:${hex}`;
        if (isDigest(d)) out.push(d);
      }
    }
    return out.sort();
  }

  /** The descriptor a tag points at, or undefined. */
  async getTag(name: string, tag: string): Promise<Descriptor | undefined> {
    return this.store.getRef(tagRefName(name, tag));
  }

  /** Creates or moves a tag. */
  async setTag(name: string, tag: string, descriptor: Descriptor): Promise<void> {
    await this.store.setRef(tagRefName(name, tag), descriptor);
  }

  /** Removes a tag; true if it existed. */
  async deleteTag(name: string, tag: string): Promise<boolean> {
    return this.store.deleteRef(tagRefName(name, tag));
  }

  /** Every tag of the repository with its descriptor, sorted by tag. */
  async listTags(name: string): Promise<Array<{ tag: string; descriptor: Descriptor }>> {
    const prefix = `${name}:`;
    const out: Array<{ tag: string; descriptor: Descriptor }> = [];
    for (const ref of await this.store.listRefs()) {
      if (!ref.name.startsWith(prefix)) continue;
      const tag = ref.name.slice(prefix.length);
      if (isValidTag(tag)) out.push({ tag, descriptor: ref.descriptor });
    }
    return out.sort((a, b) => compare(a.tag, b.tag));
  }

  /** True when the repository has any link or tag. */
  async exists(name: string): Promise<boolean> {
    const entries = await listDir(this.repoDir(name));
    if (entries.includes('_blobs') || entries.includes('_manifests')) return true;
    return (await this.listTags(name)).length > 0;
  }

  /** Every repository that has links, sorted. */
  async listRepositories(): Promise<string[]> {
    const out: string[] = [];
    const walk = async (dir: string, prefix: string): Promise<void> => {
      const entries = await listDir(dir);
      if (prefix && (entries.includes('_blobs') || entries.includes('_manifests'))) out.push(prefix);
      for (const e of entries) {
        if (e.startsWith('_') || e.startsWith('.')) continue;
        await walk(join(dir, e), prefix ? `${prefix}/${e}` : e);
      }
    };
    await walk(this.base, '');
    return out.filter(isValidRepositoryName).sort(compare);
  }

  /**
   * Every manifest linked in any repository, deduplicated: the `extraRoots` to pass to `ContentStore.gc` so that
   * manifests pushed by digest only (and what they reference) survive a collection.
   */
  async listManifestRoots(): Promise<Digest[]> {
    const roots = new Set<Digest>();
    for (const name of await this.listRepositories()) {
      const dir = join(this.repoDir(name), '_manifests');
      for (const alg of await listDir(dir)) {
        for (const hex of await listDir(join(dir, alg))) {
          const d = `${alg}:${hex}`;
          if (isDigest(d)) roots.add(d);
        }
      }
    }
    return [...roots].sort();
  }
}

/** The store ref name of a tag: `<repository>:<tag>`. */
export function tagRefName(name: string, tag: string): string {
  return `${name}:${tag}`;
}

/** Byte-wise string order (what distribution sorts tags and repositories by). */
export function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

async function writeAtomic(path: string, content: string): Promise<void> {
  const dir = join(path, '..');
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `.tmp-${randomBytes(6).toString('hex')}`);
  try {
    await writeFile(tmp, content);
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

async function removeFile(path: string): Promise<boolean> {
  try {
    await unlink(path);
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

async function listDir(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).filter((e) => !e.startsWith('.tmp-'));
  } catch (err) {
    if (isNotFound(err)) return [];
    throw err;
  }
}

/** True for ENOENT / ENOTDIR. */
export function isNotFound(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}
