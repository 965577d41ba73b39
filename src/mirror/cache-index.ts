/**
 * The mirror's own small records inside the store root (`strata/mirror/`), apart from the engine's refs so that a
 * cached `docker.io/library/nginx:latest` never moves the image ref a `strata pull` set in a shared store:
 *
 * - `strata/mirror/tags/<backend name>/_tags/<tag>` — the descriptor (JSON) a tag last resolved to upstream;
 * - `strata/mirror/manifests/<alg>/<hex>` — the media type a cached manifest was served with.
 *
 * Names and tags are grammar-checked before they get here (`_tags` cannot be a repository component, and a tag
 * cannot be `.` or `..`), so no path escapes the directory. Files are written atomically (temp + rename).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { digestAlgorithm, digestHex, isDigest, type Digest } from '../engine/oci/digest.js';
import type { Descriptor } from '../engine/oci/types.js';
import { isValidRepositoryName, isValidTag } from './routes.js';

/** Where the records live, relative to the store root. */
export const MIRROR_DIR = join('strata', 'mirror');

/** Cached tags and manifest media types of a mirror. */
export class CacheIndex {
  readonly dir: string;

  constructor(storeRoot: string) {
    this.dir = join(storeRoot, MIRROR_DIR);
  }

  /** The descriptor `name:tag` last resolved to, or undefined. */
  async getTag(name: string, tag: string): Promise<Descriptor | undefined> {
    const text = await readQuiet(this.tagPath(name, tag));
    if (text === undefined) return undefined;
    try {
      const d = JSON.parse(text) as Partial<Descriptor>;
      if (typeof d.digest === 'string' && isDigest(d.digest) && typeof d.mediaType === 'string')
        return { mediaType: d.mediaType, digest: d.digest, size: Number(d.size) || 0 };
    } catch {
      // unreadable: as good as absent
    }
    return undefined;
  }

  /** Records what `name:tag` resolves to. */
  async setTag(name: string, tag: string, descriptor: Descriptor): Promise<void> {
    const { mediaType, digest, size } = descriptor;
    await writeAtomic(this.tagPath(name, tag), JSON.stringify({ mediaType, digest, size }));
  }

  /** Forgets a tag (the upstream deleted it). */
  async deleteTag(name: string, tag: string): Promise<void> {
    await unlink(this.tagPath(name, tag)).catch(() => undefined);
  }

  /** The cached tags of `name`, sorted. */
  async listTags(name: string): Promise<string[]> {
    const dir = dirname(this.tagPath(name, 'x'));
    const names = await readdir(dir).catch(() => [] as string[]);
    return names.filter((t) => isValidTag(t)).sort();
  }

  /** The media type a cached manifest was served with, or undefined when it was never cached. */
  async manifestMediaType(digest: Digest): Promise<string | undefined> {
    return readQuiet(this.manifestPath(digest));
  }

  /** Records a cached manifest's media type. */
  async setManifestMediaType(digest: Digest, mediaType: string): Promise<void> {
    if ((await this.manifestMediaType(digest)) === mediaType) return;
    await writeAtomic(this.manifestPath(digest), mediaType);
  }

  private tagPath(name: string, tag: string): string {
    // Callers validated both; checked again because a path is built from them.
    if (!isValidRepositoryName(name) || !isValidTag(tag)) throw new Error(`invalid tag ${name}:${tag}`);
    return join(this.dir, 'tags', ...name.split('/'), '_tags', tag);
  }

  private manifestPath(digest: Digest): string {
    return join(this.dir, 'manifests', digestAlgorithm(digest), digestHex(digest));
  }
}

async function readQuiet(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw err;
  }
}

async function writeAtomic(path: string, text: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  // A leading dot: never a valid tag, so listings skip a temp file.
  const tmp = join(dirname(path), `.tmp-${randomBytes(6).toString('hex')}`);
  try {
    await writeFile(tmp, text);
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}
