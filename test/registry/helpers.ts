/** Test images made on the spot: a config JSON and gzip layers, with their descriptors and manifest. */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { digestOf, MediaType, type Descriptor, type Digest } from '../../src/engine/oci/index.js';
import type { RegistryClient, RepositoryRef } from '../../src/engine/registry/index.js';

/** A blob in memory with its descriptor. */
export interface TestBlob {
  readonly bytes: Buffer;
  readonly desc: Descriptor;
}

/** An image made for a test. */
export interface TestImage {
  readonly config: TestBlob;
  readonly layers: readonly TestBlob[];
  readonly manifest: Buffer;
  readonly manifestDigest: Digest;
  readonly mediaType: string;
}

/** A minimal tar with one regular file (ustar), enough to be a valid layer. */
export function tarWithFile(name: string, content: Buffer): Buffer {
  const header = Buffer.alloc(512);
  header.write(name, 0, 100, 'utf8');
  header.write('0000644\0', 100);
  header.write('0000000\0', 108);
  header.write('0000000\0', 116);
  header.write(content.length.toString(8).padStart(11, '0') + '\0', 124);
  header.write('00000000000\0', 136);
  header.write('        ', 148);
  header.write('0', 156);
  header.write('ustar\0', 257);
  header.write('00', 263);
  let sum = 0;
  for (const b of header) sum += b;
  header.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
  const pad = Buffer.alloc((512 - (content.length % 512)) % 512);
  return Buffer.concat([header, content, pad, Buffer.alloc(1024)]);
}

/** A gzip layer holding one file; `randomSize` bytes of random (incompressible) content. */
export function gzipLayer(name: string, randomSize: number): TestBlob & { diffId: Digest } {
  const tar = tarWithFile(name, randomBytes(randomSize));
  const bytes = gzipSync(tar);
  return {
    bytes,
    diffId: digestOf(tar),
    desc: { mediaType: MediaType.OciLayerGzip, digest: digestOf(bytes), size: bytes.length },
  };
}

/** Builds an OCI image with one layer per entry of `layerSizes` (random content sizes in bytes). */
export function makeImage(layerSizes: readonly number[] = [1024, 300 * 1024]): TestImage {
  const layers = layerSizes.map((n, i) => gzipLayer(`file${i}.bin`, n));
  const configJson = {
    architecture: 'amd64',
    os: 'linux',
    config: { Cmd: ['/bin/true'] },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: layers.map((_, i) => ({ created_by: `layer ${i}` })),
  };
  const cfgBytes = Buffer.from(JSON.stringify(configJson));
  const config: TestBlob = {
    bytes: cfgBytes,
    desc: { mediaType: MediaType.OciConfig, digest: digestOf(cfgBytes), size: cfgBytes.length },
  };
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      config: config.desc,
      layers: layers.map((l) => l.desc),
    }),
  );
  return {
    config,
    layers: layers.map(({ bytes, desc }) => ({ bytes, desc })),
    manifest,
    manifestDigest: digestOf(manifest),
    mediaType: MediaType.OciManifest,
  };
}

/** `open` for uploadBlob over an in-memory buffer, streamed in 16 KiB pieces; records the offsets asked for. */
export function opener(bytes: Buffer, offsets: number[] = []): (offset: number) => Promise<Readable> {
  return async (offset) => {
    offsets.push(offset);
    async function* gen(): AsyncGenerator<Buffer> {
      for (let i = offset; i < bytes.length; i += 16 * 1024)
        yield bytes.subarray(i, Math.min(bytes.length, i + 16 * 1024));
    }
    return Readable.from(gen(), { objectMode: false });
  };
}

/** Pushes every blob (skipping existing ones) and the manifest under `tag`. */
export async function pushImage(
  client: RegistryClient,
  repo: RepositoryRef,
  image: TestImage,
  tag: string,
): Promise<Digest> {
  for (const blob of [image.config, ...image.layers]) {
    if (await client.blobExists(repo, blob.desc.digest)) continue;
    await client.uploadBlob(repo, blob.desc, opener(blob.bytes));
  }
  return client.putManifest({ ...repo, tag }, image.manifest, image.mediaType);
}

/** Reads a stream to a buffer. */
export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

/** Resolves to the error a promise rejects with (fails if it resolves). */
export async function rejectionOf(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

/** A sleep that records the delays and returns at once. */
export function recordingSleep(): { delays: number[]; sleep: (ms: number) => Promise<void> } {
  const delays: number[] = [];
  return {
    delays,
    sleep: async (ms: number) => {
      delays.push(ms);
    },
  };
}
