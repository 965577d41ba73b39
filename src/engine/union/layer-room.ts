import { noRoomError, spaceBound, type SpaceBound } from '../disk-space.js';
import type { Descriptor } from '../oci/types.js';
import type { ContentStore } from '../store/types.js';
import { sniffCompression } from './decompress.js';

/**
 * A lower bound on a stored layer's uncompressed size, read without decompressing: a plain tar is its own size; a
 * gzip stream ends with ISIZE, the last member's size mod 2^32, which never exceeds the whole. Undefined for zstd
 * or what cannot be read.
 */
export async function uncompressedAtLeast(
  store: ContentStore,
  layer: Descriptor,
): Promise<number | undefined> {
  if (layer.size < 8) return undefined;
  const head = await readRange(store, layer, 0, 3);
  const kind = sniffCompression(head);
  if (kind === undefined) return layer.size; // no magic: an uncompressed tar
  if (kind !== 'gzip') return undefined;
  const tail = await readRange(store, layer, layer.size - 4, layer.size - 1);
  return tail.length === 4 ? tail.readUInt32LE(0) : undefined;
}

/**
 * The free space under `dir` for unpacking `layer`, after checking that the layer can fit: fails before writing
 * anything (STORAGE_FULL, naming the layer) when it provably cannot. Pass the result to `decompressedStream`.
 */
export async function roomForLayer(
  store: ContentStore,
  layer: Descriptor,
  dir: string,
): Promise<SpaceBound | undefined> {
  const space = await spaceBound(dir);
  if (space === undefined) return undefined;
  const atLeast = await uncompressedAtLeast(store, layer).catch(() => undefined);
  if (atLeast !== undefined && atLeast > space.bytes)
    throw noRoomError(`layer ${layer.digest}: ${atLeast} bytes uncompressed`, space);
  return space;
}

async function readRange(
  store: ContentStore,
  layer: Descriptor,
  start: number,
  end: number,
): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of await store.openBlob(layer.digest, { start, end })) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}
