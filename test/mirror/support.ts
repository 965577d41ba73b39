import { createHash } from 'node:crypto';
import { request } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { expect } from 'vitest';
import type { Digest } from '../../src/engine/oci/digest.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import {
  startRegistryServer,
  type RegistryServer,
  type RegistryServerOptions,
} from '../../src/mirror/index.js';

/** sha256 digest of bytes. */
export function sha(data: Uint8Array | string): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}` as Digest;
}

/** A temp directory removed by the returned cleanup. */
export async function tempDir(prefix = 'strata-mirror-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

/** A log destination for pino that parses each JSON line it is given into `lines`, for tests to read. */
export function logLines(): { readonly lines: Array<Record<string, unknown>>; readonly sink: Writable } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n'))
        if (line.trim()) lines.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  return { lines, sink };
}

/** A registry on 127.0.0.1 over a fresh FsStore in `root` (a new temp dir when absent). */
export interface Harness {
  readonly root: string;
  readonly store: FsStore;
  readonly server: RegistryServer;
  /** Absolute URL of a path on the server. */
  url(path: string): string;
  fetch(path: string, init?: RequestInit): Promise<Response>;
  /** Restarts the server on a newly opened store over the same root. */
  restart(extra?: Partial<RegistryServerOptions>): Promise<Harness>;
  close(removeRoot?: boolean): Promise<void>;
}

/** Starts a server on a real FsStore in `root` (or a new temp dir). */
export async function startHarness(
  extra: Partial<RegistryServerOptions> = {},
  root?: string,
): Promise<Harness> {
  const dir = root ?? (await tempDir());
  const store = await FsStore.open(join(dir, 'store'));
  const server = await startRegistryServer({ store, ...extra });
  const h: Harness = {
    root: dir,
    store,
    server,
    url: (path) => new URL(path, server.url).toString(),
    fetch: (path, init) => fetch(new URL(path, server.url), init),
    async restart(more = {}) {
      await server.close();
      return startHarness({ ...extra, ...more }, dir);
    },
    async close(removeRoot = true) {
      await server.close();
      if (removeRoot) await rm(dir, { recursive: true, force: true });
    },
  };
  return h;
}

/** Uploads a blob monolithically into `repo` and asserts 201. */
export async function pushBlob(h: Harness, repo: string, data: Buffer | string): Promise<Digest> {
  const digest = sha(data);
  const res = await h.fetch(`/v2/${repo}/blobs/uploads/?digest=${digest}`, {
    method: 'POST',
    body: typeof data === 'string' ? Buffer.from(data) : data,
    headers: { 'Content-Type': 'application/octet-stream' },
  });
  expect(res.status, await res.clone().text()).toBe(201);
  return digest;
}

/** PUTs manifest bytes; returns the response. */
export function putManifest(
  h: Harness,
  repo: string,
  reference: string,
  bytes: Buffer | string,
  mediaType: string,
): Promise<Response> {
  return h.fetch(`/v2/${repo}/manifests/${reference}`, {
    method: 'PUT',
    body: typeof bytes === 'string' ? Buffer.from(bytes) : bytes,
    headers: { 'Content-Type': mediaType },
  });
}

/** The first OCI error of a response body, asserting the error JSON shape. */
export async function ociError(res: Response): Promise<{ code: string; message: string; detail?: unknown }> {
  expect(res.headers.get('content-type')).toBe('application/json');
  const body = (await res.json()) as { errors: Array<{ code: string; message: string; detail?: unknown }> };
  expect(Array.isArray(body.errors)).toBe(true);
  expect(body.errors).toHaveLength(1);
  const e = body.errors[0]!;
  expect(typeof e.code).toBe('string');
  expect(typeof e.message).toBe('string');
  return e;
}

/** A small image in a repository: config + layers pushed, manifest bytes ready (not pushed). */
export async function prepareImage(
  h: Harness,
  repo: string,
  opts: { mediaType?: string; layers?: string[]; arch?: string; pretty?: boolean } = {},
): Promise<{ bytes: Buffer; digest: Digest; mediaType: string; layers: Digest[]; config: Digest }> {
  const docker = opts.mediaType === 'application/vnd.docker.distribution.manifest.v2+json';
  const configBytes = JSON.stringify({
    architecture: opts.arch ?? 'amd64',
    os: 'linux',
    rootfs: { type: 'layers', diff_ids: [] },
  });
  const config = await pushBlob(h, repo, configBytes);
  const layerData = opts.layers ?? [`layer of ${repo} ${opts.arch ?? 'amd64'}`];
  const layers: Digest[] = [];
  for (const l of layerData) layers.push(await pushBlob(h, repo, l));
  const mediaType = opts.mediaType ?? 'application/vnd.oci.image.manifest.v1+json';
  const doc = {
    schemaVersion: 2,
    mediaType,
    config: {
      mediaType: docker
        ? 'application/vnd.docker.container.image.v1+json'
        : 'application/vnd.oci.image.config.v1+json',
      digest: config,
      size: Buffer.byteLength(configBytes),
    },
    layers: layers.map((d, i) => ({
      mediaType: docker
        ? 'application/vnd.docker.image.rootfs.diff.tar.gzip'
        : 'application/vnd.oci.image.layer.v1.tar+gzip',
      digest: d,
      size: Buffer.byteLength(layerData[i]!),
    })),
  };
  // Unusual formatting on purpose: the registry must serve the exact bytes, not a re-serialization.
  const bytes = Buffer.from(
    opts.pretty === false ? JSON.stringify(doc) : `${JSON.stringify(doc, null, 3)}\n`,
  );
  return { bytes, digest: sha(bytes), mediaType, layers, config };
}

/** What {@link rawRequest} got back. */
export interface RawResponse {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Buffer;
}

/**
 * One HTTP request through node:http, with the path sent exactly as given (fetch would resolve `..` and `.`
 * segments first), an optional source address (a second loopback client) and a body sent whole or as
 * `Transfer-Encoding: chunked` pieces. Fails after `timeoutMs`.
 */
export function rawRequest(
  baseUrl: string,
  options: {
    method?: string;
    path: string;
    headers?: Record<string, string>;
    body?: Buffer | Buffer[];
    localAddress?: string;
    timeoutMs?: number;
  },
): Promise<RawResponse> {
  const base = new URL(baseUrl);
  return new Promise<RawResponse>((resolve, reject) => {
    const req = request(
      {
        host: base.hostname,
        port: base.port,
        method: options.method ?? 'GET',
        path: options.path,
        // A whole body gets its Content-Length, as Go's client sends it (node:http would send a GET's body bare).
        headers:
          Buffer.isBuffer(options.body) && !options.headers?.['Content-Length']
            ? { ...options.headers, 'Content-Length': String(options.body.length) }
            : options.headers,
        agent: false,
        ...(options.localAddress ? { localAddress: options.localAddress } : {}),
        signal: AbortSignal.timeout(options.timeoutMs ?? 20_000),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
        );
      },
    );
    req.on('error', reject);
    const body = options.body;
    if (Array.isArray(body)) {
      // Written piece by piece with back-pressure: node:http sends them as chunked transfer encoding.
      let i = 0;
      const next = (): void => {
        while (i < body.length) {
          if (!req.write(body[i++]!)) {
            req.once('drain', next);
            return;
          }
        }
        req.end();
      };
      next();
    } else {
      req.end(body);
    }
  });
}

/** The OCI error code of a raw response body (undefined when it has none, e.g. for HEAD). */
export function rawErrorCode(res: RawResponse): string | undefined {
  if (res.body.length === 0) return undefined;
  return (JSON.parse(res.body.toString('utf8')) as { errors: Array<{ code: string }> }).errors[0]?.code;
}
