import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { digestOf, type Digest } from '../../src/engine/oci/digest.js';
import { MediaType } from '../../src/engine/oci/media-types.js';
import { RegistryClient } from '../../src/engine/registry/index.js';
import type { Descriptor } from '../../src/engine/oci/types.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { startMirrorServer, type MirrorServer, type MirrorServerOptions } from '../../src/mirror/index.js';
import { startDockerRegistry, type DockerRegistry } from '../support/docker-registry.js';
import { tempDir } from '../support/images.js';
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

/** Mirror options that put the registry at `url` where Docker Hub would be: the upstream `docker.io`, the default. */
export function hubUpstream(url: string): Pick<MirrorServerOptions, 'upstreams' | 'defaultUpstream'> {
  return { upstreams: [{ name: 'docker.io', url }], defaultUpstream: 'docker.io' };
}

/** A test file's world: a work directory, Debian's docker-registry as the upstream, the mirror's store in `work`. */
export interface Hub {
  readonly work: string;
  readonly upstream: DockerRegistry;
  readonly store: FsStore;
  /** A mirror on the store, the upstream as `docker.io` (see {@link hubUpstream}), with `options` besides. */
  startMirror(options?: Omit<MirrorServerOptions, 'store' | 'upstreams'>): Promise<MirrorServer>;
  /** Closes `mirror` (when given), stops the upstream and removes the work directory. */
  stop(mirror?: MirrorServer): Promise<void>;
}

/**
 * Makes a {@link Hub} in a new temp directory named `prefix…`: `seed(upstream, work)` pushes the file's images before
 * the store (`work/store`) is opened. A failing step stops what was started before it.
 */
export async function startHub(
  prefix: string,
  seed?: (upstream: DockerRegistry, work: string) => Promise<void>,
): Promise<Hub> {
  const work = await tempDir(prefix);
  let upstream: DockerRegistry | undefined;
  const stop = async (mirror?: MirrorServer): Promise<void> => {
    await mirror?.close();
    await upstream?.stop();
    await rm(work, { recursive: true, force: true });
  };
  try {
    upstream = await startDockerRegistry();
    await seed?.(upstream, work);
    const store = await FsStore.open(join(work, 'store'));
    const url = upstream.url;
    return {
      work,
      upstream,
      store,
      startMirror: (options = {}) => startMirrorServer({ store, ...hubUpstream(url), ...options }),
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
