import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { digestOf, type Digest } from '../../src/engine/oci/digest.js';
import { MediaType } from '../../src/engine/oci/media-types.js';
import { RegistryClient } from '../../src/engine/registry/index.js';
import type { Descriptor } from '../../src/engine/oci/types.js';
import { requirePeer } from '../support/peers.js';

const run = promisify(execFile);

/** Runs skopeo (a missing peer fails the test) and returns stdout. */
export async function skopeo(args: string[]): Promise<string> {
  const bin = requirePeer('skopeo');
  try {
    const { stdout } = await run(bin, ['--insecure-policy', ...args], { timeout: 60_000 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`skopeo ${args.join(' ')} failed: ${e.stderr ?? e.message}`);
  }
}

/** An image pushed with the engine's client: one random (non-tar) layer of `layerBytes`, a config, a manifest. */
export interface PushedImage {
  readonly manifest: Descriptor;
  readonly layer: Descriptor;
  readonly layerBytes: Buffer;
}

/**
 * Pushes a synthetic image `repository:tag` to the registry at `host` (loopback: plain HTTP) with `via`, or with a
 * client of its own.
 */
export async function pushRandomImage(
  host: string,
  repository: string,
  tag: string,
  layerBytes: number,
  via?: RegistryClient,
): Promise<PushedImage> {
  const client = via ?? new RegistryClient({ retry: { retries: 0 } });
  try {
    const repo = { registry: host, repository };
    const data = randomBytes(layerBytes);
    const layer: Descriptor = {
      mediaType: MediaType.OciLayerGzip,
      digest: digestOf(data),
      size: data.length,
    };
    const config = Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        rootfs: { type: 'layers', diff_ids: [layer.digest] },
      }),
    );
    const configDesc: Descriptor = {
      mediaType: MediaType.OciConfig,
      digest: digestOf(config),
      size: config.length,
    };
    for (const [d, bytes] of [
      [layer, data],
      [configDesc, config],
    ] as const)
      await client.uploadBlob(repo, d, async () => Readable.from([bytes]));
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        config: configDesc,
        layers: [layer],
      }),
    );
    const digest = await client.putManifest(
      { registry: host, repository, tag } as never,
      manifest,
      MediaType.OciManifest,
    );
    return {
      manifest: { mediaType: MediaType.OciManifest, digest: digest as Digest, size: manifest.length },
      layer,
      layerBytes: data,
    };
  } finally {
    if (!via) await client.close();
  }
}
