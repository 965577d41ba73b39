/**
 * Uncompressed layer sizes, as `docker images` and `docker history` show them, without decompressing every
 * layer on every call: a layer's size is measured once (by streaming it through the decompressor and counting)
 * or recorded by whoever already knows it (commit), and kept in `<store>/strata/sizes/<digest-hex>` — a decimal
 * number. Content-addressed, so a record is never stale; records of deleted blobs are pruned by `gc`.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { throwIfAborted } from '../errors.js';
import { digestHex, type Digest } from '../oci/digest.js';
import type { Descriptor } from '../oci/types.js';
import type { ContentStore } from '../store/types.js';

/** Where the size records live (beside the layer cache, in the part of the store skopeo and umoci ignore). */
export function sizesDir(storeRoot: string): string {
  return join(storeRoot, 'strata', 'sizes');
}

const GZIP = [0x1f, 0x8b];
const ZSTD = [0x28, 0xb5, 0x2f, 0xfd];

function startsWith(head: Buffer, magic: readonly number[]): boolean {
  return magic.every((b, i) => head[i] === b);
}

async function readRecord(storeRoot: string, digest: Digest): Promise<number | undefined> {
  const text = await readFile(join(sizesDir(storeRoot), digestHex(digest)), 'utf8').catch(() => undefined);
  const n = text === undefined ? NaN : Number(text.trim());
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

/**
 * Records the uncompressed size of a layer blob (temp file + rename, so readers never see half a number). Best
 * effort: a read-only or full store just means the size is measured again next time.
 */
export async function recordUncompressedSize(storeRoot: string, digest: Digest, size: number): Promise<void> {
  const dir = sizesDir(storeRoot);
  const tmp = join(dir, `.tmp-${randomBytes(6).toString('hex')}`);
  try {
    await mkdir(dir, { recursive: true });
    await writeFile(tmp, `${size}\n`);
    await rename(tmp, join(dir, digestHex(digest)));
  } catch {
    await rm(tmp, { force: true }).catch(() => undefined);
  }
}

/** Streams a blob through its decompressor and counts the bytes (nothing is kept). */
async function measure(store: ContentStore, layer: Descriptor, signal?: AbortSignal): Promise<number> {
  const head = await store.openBlob(layer.digest, { start: 0, end: 3 });
  const chunks: Buffer[] = [];
  for await (const c of head) chunks.push(c as Buffer);
  const magic = Buffer.concat(chunks);
  // A plain tar is its own uncompressed size.
  if (!startsWith(magic, GZIP) && !startsWith(magic, ZSTD)) return layer.size;
  const { decompressedStream } = await import('../union/decompress.js');
  const tar = decompressedStream(await store.openBlob(layer.digest), layer.mediaType, {
    layerName: layer.digest,
  });
  let n = 0;
  try {
    for await (const c of tar) {
      throwIfAborted(signal);
      n += (c as Buffer).length;
    }
  } finally {
    tar.destroy();
  }
  return n;
}

/**
 * The uncompressed size of each layer, in order: a record if there is one, else measured once and recorded. A
 * layer that is not in the store (a foreign layer) or cannot be read counts with its compressed size.
 */
export async function uncompressedSizes(
  store: ContentStore,
  layers: readonly Descriptor[],
  options: { signal?: AbortSignal } = {},
): Promise<number[]> {
  const out: number[] = [];
  for (const l of layers) {
    const known = await readRecord(store.root, l.digest);
    if (known !== undefined) {
      out.push(known);
      continue;
    }
    throwIfAborted(options.signal);
    const measured = await measure(store, l, options.signal).catch((err: unknown) => {
      if (options.signal?.aborted) throw err;
      return undefined;
    });
    if (measured === undefined) {
      out.push(l.size);
      continue;
    }
    await recordUncompressedSize(store.root, l.digest, measured);
    out.push(measured);
  }
  return out;
}

/** Deletes the size records (and temp files) of blobs no longer in the store; returns how many went. */
export async function pruneSizeRecords(store: ContentStore): Promise<number> {
  const dir = sizesDir(store.root);
  let removed = 0;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const gone = /^[a-f0-9]{64}$/.test(name) ? !(await store.has(`sha256:${name}` as Digest)) : true;
    if (!gone) continue;
    await rm(join(dir, name), { force: true });
    removed++;
  }
  return removed;
}
