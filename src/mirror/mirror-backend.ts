/**
 * The pull-through backend: names routed to an upstream are served from the store when cached and fetched from the
 * upstream (verified, then cached) when not; hosted names go to the wrapped hosted backend unchanged.
 */
import type { Readable } from 'node:stream';
import { hasCode, StrataError } from '../engine/errors.js';
import { isDigest, type Digest } from '../engine/oci/digest.js';
import type { ImageReference } from '../engine/oci/reference.js';
import { MAX_MANIFEST_BYTES, type Descriptor, type ManifestDocument } from '../engine/oci/types.js';
import type { ContentStore } from '../engine/store/types.js';
import type { PutManifestResult, RegistryBackend, StoredManifest } from './backend.js';
import { BlobFills } from './blob-fill.js';
import { CacheIndex } from './cache-index.js';
import { CacheEvictor } from './eviction.js';
import { RepositoryMetadata } from './repository-metadata.js';
import { DistributionError } from './errors.js';
import type { Upstream } from './upstream-client.js';
import type { Router } from './upstreams.js';

/** Options of {@link MirrorBackend}. */
export interface MirrorBackendOptions {
  readonly store: ContentStore;
  readonly router: Router;
  /** The client of each upstream, by its configured name. */
  readonly upstreams: ReadonlyMap<string, Upstream>;
  /** Where hosted repositories live (the embedded registry's backend). */
  readonly hosted: RegistryBackend;
  /** A tag is revalidated with a HEAD upstream when its last check is older (default 5 min). */
  readonly tagTtlMs?: number;
  readonly now?: () => number;
  /** Poll interval of readers following another process's fill (default 25 ms). */
  readonly pollMs?: number;
  /** Told about notable events (stale answers, fills) for logs and metrics. */
  readonly onEvent?: (event: MirrorEvent) => void;
  /** Size limit of the cached content: least-recently-used content beyond it is evicted (default: none). */
  readonly maxBytes?: number;
  /** How often the size is checked besides after each fill (default 60 s). */
  readonly evictIntervalMs?: number;
}

/** What the backend reports. */
export type MirrorEvent =
  | { readonly type: 'stale'; readonly name: string; readonly tag: string; readonly reason: string }
  | { readonly type: 'fill'; readonly digest: Digest; readonly ok: boolean; readonly existed: boolean }
  | { readonly type: 'cache'; readonly kind: 'manifest' | 'blob'; readonly hit: boolean }
  | { readonly type: 'evict'; readonly digests: readonly Digest[]; readonly bytes: number };

type UpstreamDest = { readonly upstream: Upstream; readonly name: string; readonly repository: string };

/** How many (repository, blob) pairs are remembered as known to exist upstream. */
const MAX_VISIBLE = 200_000;
const STALE_WARNING = '110 - "Response is Stale"';

/** The mirror's {@link RegistryBackend}. */
export class MirrorBackend implements RegistryBackend {
  readonly fills: BlobFills;
  readonly index: CacheIndex;
  private readonly store: ContentStore;
  private readonly tagTtlMs: number;
  private readonly now: () => number;
  /** `name:tag` → when the tag was last confirmed upstream. */
  private readonly checked = new Map<string, number>();
  /** `name@digest` → size, for blobs a manifest of that repository references or the upstream confirmed. */
  private readonly visible = new Map<string, number>();
  /** Upstream requests in flight, shared by concurrent callers. */
  private readonly inflight = new Map<string, Promise<unknown>>();
  /** Blobs being streamed to clients by this process, with their reader counts (never evicted meanwhile). */
  private readonly reading = new Map<Digest, number>();
  /** The cache's gc roots, use times and size limit. */
  readonly evictor: CacheEvictor;
  /** The evictor's start (it moves older versions' markers), awaited on close. */
  private readonly started: Promise<void>;

  constructor(private readonly options: MirrorBackendOptions) {
    this.store = options.store;
    this.tagTtlMs = options.tagTtlMs ?? 5 * 60 * 1000;
    this.now = options.now ?? Date.now;
    this.index = new CacheIndex(options.store.root);
    const metadata = new RepositoryMetadata(options.store);
    this.evictor = new CacheEvictor(options.store, {
      ...(options.maxBytes !== undefined ? { maxBytes: options.maxBytes } : {}),
      pinned: (d) => this.reading.has(d) || this.fills.has(d),
      extraRoots: () => metadata.listManifestRoots(),
      ...(options.evictIntervalMs !== undefined ? { intervalMs: options.evictIntervalMs } : {}),
      ...(options.now ? { now: options.now } : {}),
      onEvict: (digests, bytes) => options.onEvent?.({ type: 'evict', digests, bytes }),
    });
    this.fills = new BlobFills(options.store, {
      ...(options.pollMs !== undefined ? { pollMs: options.pollMs } : {}),
      // A gc root from before the first byte (so no lease is needed), and for good: `strata gc` keeps the cache.
      keep: async (digest) => {
        await this.evictor.mark(digest);
        return {
          release: async (stored) => {
            if (!stored && !(await this.store.has(digest))) await this.evictor.unmark(digest);
          },
        };
      },
      onFillEnd: (digest, error, existed) => {
        if (error === undefined) this.added();
        options.onEvent?.({ type: 'fill', digest, ok: error === undefined, existed });
      },
    });
    this.started = this.evictor.start().catch(() => undefined);
  }

  /** Newly cached content (already marked): the size limit enforced, in the background. */
  private added(): void {
    void this.evictor.evict().catch(() => undefined);
  }

  /** Counts a reader of `digest` until its stream closes. */
  private pin(digest: Digest, stream: Readable): Readable {
    this.reading.set(digest, (this.reading.get(digest) ?? 0) + 1);
    this.evictor.touch(digest);
    stream.once('close', () => {
      const n = (this.reading.get(digest) ?? 1) - 1;
      if (n <= 0) this.reading.delete(digest);
      else this.reading.set(digest, n);
    });
    return stream;
  }

  /** Lets the fills in flight finish for up to `graceMs`, then aborts them (the server is closing). */
  async close(graceMs?: number): Promise<void> {
    this.evictor.stop();
    await this.fills.close(graceMs);
    await this.started;
    await this.evictor.evict().catch(() => undefined);
  }

  // ---- blobs ----

  async statBlob(name: string, digest: Digest, signal?: AbortSignal): Promise<{ size: number } | undefined> {
    const d = this.dest(name);
    if (!d) return this.options.hosted.statBlob(name, digest, signal);
    const size = await this.blobSize(d, digest);
    return size === undefined ? undefined : { size };
  }

  async openBlob(
    name: string,
    digest: Digest,
    range?: { start: number; end: number },
    signal?: AbortSignal,
  ): Promise<Readable> {
    const d = this.dest(name);
    if (!d) return this.options.hosted.openBlob(name, digest, range, signal);
    const size = await this.blobSize(d, digest);
    if (size === undefined) throw blobUnknown(name, digest);
    if (!this.fills.has(digest)) {
      try {
        const stream = this.pin(digest, await this.store.openBlob(digest, range));
        this.options.onEvent?.({ type: 'cache', kind: 'blob', hit: true });
        return stream;
      } catch (err) {
        if (!hasCode(err, 'BLOB_UNKNOWN')) throw err;
      }
    }
    this.options.onEvent?.({ type: 'cache', kind: 'blob', hit: false });
    const source = async (): Promise<Readable> =>
      d.upstream.client.openBlob(
        { registry: d.upstream.registry, repository: d.repository },
        { mediaType: 'application/octet-stream', digest, size },
        { verify: false }, // the store's ingest verifies digest and size
      );
    const what = `blob ${digest} of ${d.upstream.config.name}/${d.repository}`;
    try {
      return this.pin(digest, await this.fills.read(digest, size, source, what, range));
    } catch (err) {
      throw upstreamError(d, err);
    }
  }

  /** A blob's size when the repository may serve it: known from its manifests, or confirmed by the upstream. */
  private async blobSize(d: UpstreamDest, digest: Digest): Promise<number | undefined> {
    const key = `${d.name}@${digest}`;
    const known = this.visible.get(key);
    if (known !== undefined) return known;
    const found = await this.shared(`head ${key}`, async () => {
      try {
        return await d.upstream.client.blobExists(
          { registry: d.upstream.registry, repository: d.repository },
          digest,
        ); // no client's signal: concurrent callers share this request
      } catch (err) {
        // The upstream cannot confirm it: a blob of one of the repository's cached images is still served (e.g. a
        // client resuming a pull after a restart of the mirror while the upstream is down).
        if (isUpstreamDown(err) && (await this.learnCachedImages(d.name), this.visible.has(key)))
          return { size: this.visible.get(key)! };
        throw upstreamError(d, err);
      }
    });
    if (!found) return undefined;
    const stored = await this.store.stat(digest);
    const size = stored?.size ?? found.size;
    this.remember(key, size);
    return size;
  }

  // ---- manifests ----

  async getManifest(
    name: string,
    reference: string,
    signal?: AbortSignal,
  ): Promise<StoredManifest | undefined> {
    const d = this.dest(name);
    if (!d) return this.options.hosted.getManifest(name, reference, signal);
    if (isDigest(reference)) {
      const cached = await this.cachedManifest(d, reference);
      this.options.onEvent?.({ type: 'cache', kind: 'manifest', hit: cached !== undefined });
      if (cached) return cached;
      return this.shared(`manifest ${name}@${reference}`, () => this.fetchManifest(d, { digest: reference }));
    }
    const tag = reference;
    const entry = await this.index.getTag(name, tag);
    const cached = entry ? await this.cachedManifest(d, entry.digest) : undefined;
    const key = `${name}:${tag}`;
    if (cached && this.now() - (this.checked.get(key) ?? -Infinity) < this.tagTtlMs) {
      this.options.onEvent?.({ type: 'cache', kind: 'manifest', hit: true });
      return cached;
    }
    this.options.onEvent?.({ type: 'cache', kind: 'manifest', hit: false });
    return this.shared(`tag ${key}`, async () => {
      if (cached) {
        let head: Descriptor | undefined;
        try {
          head = await d.upstream.client.headManifest(this.ref(d, { tag }));
        } catch (err) {
          if (!isUpstreamDown(err)) throw upstreamError(d, err);
          this.options.onEvent?.({ type: 'stale', name, tag, reason: (err as Error).message });
          return { ...cached, headers: { Warning: STALE_WARNING } };
        }
        if (!head) {
          await this.index.deleteTag(name, tag); // the upstream deleted the tag
          this.checked.delete(key);
          return undefined;
        }
        if (head.digest === cached.descriptor.digest) {
          this.checked.set(key, this.now());
          return cached;
        }
      }
      try {
        return await this.fetchManifest(d, { tag });
      } catch (err) {
        if (cached && isUpstreamDown(err)) {
          this.options.onEvent?.({ type: 'stale', name, tag, reason: (err as Error).message });
          return { ...cached, headers: { Warning: STALE_WARNING } };
        }
        throw err;
      }
    });
  }

  /** A manifest cached for good (content-addressed), with its recorded media type; undefined when absent. */
  private async cachedManifest(d: UpstreamDest, digest: Digest): Promise<StoredManifest | undefined> {
    const mediaType = await this.index.manifestMediaType(digest);
    if (mediaType === undefined) return undefined;
    let bytes: Buffer;
    try {
      bytes = await this.store.readBlob(digest, MAX_MANIFEST_BYTES);
    } catch (err) {
      if (hasCode(err, 'BLOB_UNKNOWN')) return undefined; // collected or evicted: fetch again
      throw err;
    }
    this.rememberReferences(d.name, bytes);
    this.evictor.touch(digest);
    return { descriptor: { mediaType, digest, size: bytes.length }, bytes };
  }

  /** GETs a manifest upstream (verified by the client), stores it, records the tag, and returns it. */
  private async fetchManifest(
    d: UpstreamDest,
    at: { tag?: string; digest?: Digest },
  ): Promise<StoredManifest | undefined> {
    let doc: ManifestDocument;
    try {
      doc = await d.upstream.client.getManifest(this.ref(d, at));
    } catch (err) {
      if (hasCode(err, 'MANIFEST_UNKNOWN') || hasCode(err, 'NAME_UNKNOWN')) return undefined;
      throw upstreamError(d, err);
    }
    // Marked first (a young entry of an absent blob is kept), so no gc sees the manifest stored but not a root.
    await this.evictor.mark(doc.digest);
    await this.store.putBytes(doc.bytes, { digest: doc.digest, what: `manifest ${doc.digest}` });
    await this.index.setManifestMediaType(doc.digest, doc.mediaType);
    this.added();
    const descriptor: Descriptor = { mediaType: doc.mediaType, digest: doc.digest, size: doc.bytes.length };
    if (at.tag !== undefined) {
      await this.index.setTag(d.name, at.tag, descriptor);
      this.checked.set(`${d.name}:${at.tag}`, this.now());
    }
    this.rememberReferences(d.name, doc.bytes);
    return { descriptor, bytes: doc.bytes };
  }

  /** Remembers the blobs of every image cached under a tag of the repository (indexes: their cached children). */
  private async learnCachedImages(name: string): Promise<void> {
    for (const tag of (await this.index.listTags(name)).slice(0, 1000)) {
      const entry = await this.index.getTag(name, tag);
      const bytes = entry && (await this.readCached(entry.digest));
      if (!bytes) continue;
      this.rememberReferences(name, bytes);
      let children: unknown;
      try {
        children = (JSON.parse(bytes.toString('utf8')) as { manifests?: unknown }).manifests;
      } catch {
        continue;
      }
      if (!Array.isArray(children)) continue;
      for (const c of children as Array<{ digest?: unknown }>) {
        const child =
          typeof c?.digest === 'string' && isDigest(c.digest) ? await this.readCached(c.digest) : undefined;
        if (child) this.rememberReferences(name, child);
      }
    }
  }

  /** A cached manifest's bytes, or undefined. */
  private async readCached(digest: Digest): Promise<Buffer | undefined> {
    try {
      return await this.store.readBlob(digest, MAX_MANIFEST_BYTES);
    } catch (err) {
      if (hasCode(err, 'BLOB_UNKNOWN')) return undefined;
      throw err;
    }
  }

  /** Blobs an image manifest references are visible in its repository (sizes from the descriptors). */
  private rememberReferences(name: string, bytes: Buffer): void {
    let doc: { config?: Descriptor; layers?: Descriptor[] };
    try {
      doc = JSON.parse(bytes.toString('utf8')) as typeof doc;
    } catch {
      return;
    }
    for (const desc of [doc.config, ...(Array.isArray(doc.layers) ? doc.layers : [])]) {
      if (
        desc &&
        typeof desc.digest === 'string' &&
        isDigest(desc.digest) &&
        Number.isSafeInteger(desc.size) &&
        desc.size >= 0
      )
        this.remember(`${name}@${desc.digest}`, desc.size);
    }
  }

  private remember(key: string, size: number): void {
    this.visible.delete(key);
    this.visible.set(key, size);
    if (this.visible.size > MAX_VISIBLE) this.visible.delete(this.visible.keys().next().value!);
  }

  // ---- listings ----

  async listTags(name: string, signal?: AbortSignal): Promise<string[] | undefined> {
    const d = this.dest(name);
    if (!d) return this.options.hosted.listTags(name, signal);
    try {
      const tags = await d.upstream.client.listTags(
        { registry: d.upstream.registry, repository: d.repository },
        signal ? { signal } : {},
      );
      return [...new Set(tags)].sort();
    } catch (err) {
      if (hasCode(err, 'NAME_UNKNOWN')) return undefined;
      if (isUpstreamDown(err)) {
        const cached = await this.index.listTags(name);
        if (cached.length > 0) return cached;
      }
      throw upstreamError(d, err);
    }
  }

  async listReferrers(name: string, subject: Digest, signal?: AbortSignal): Promise<Descriptor[]> {
    const d = this.dest(name);
    if (!d) return this.options.hosted.listReferrers(name, subject, signal);
    const repo = { registry: d.upstream.registry, repository: d.repository };
    try {
      const listed = await d.upstream.client.listReferrers(repo, subject, signal ? { signal } : {});
      if (listed) return listed;
      // No Referrers API upstream: the OCI fallback is an index tagged `<alg>-<hex>`.
      const doc = await d.upstream.client.getManifest(
        this.ref(d, { tag: subject.replace(':', '-') }),
        signal ? { signal } : {},
      );
      return doc.kind === 'index' ? [...doc.index.manifests] : [];
    } catch (err) {
      if (hasCode(err, 'MANIFEST_UNKNOWN') || hasCode(err, 'NAME_UNKNOWN')) return [];
      throw upstreamError(d, err);
    }
  }

  listRepositories(signal?: AbortSignal): Promise<string[]> {
    return this.options.hosted.listRepositories(signal);
  }

  // ---- writes: hosted only ----

  /**
   * Refuses a write to a mirrored repository (before an upload session is opened): 405 UNSUPPORTED, as
   * distribution's proxy answers, which the conformance suite's teardown accepts.
   */
  assertWritable(name: string): void {
    const d = this.dest(name);
    if (d)
      throw new DistributionError(
        'UNSUPPORTED',
        `repository ${name} is mirrored from ${d.upstream.config.name}: it is read-only here`,
        { status: 405, headers: { Allow: 'GET, HEAD' }, detail: { name, upstream: d.upstream.config.name } },
      );
  }

  commitBlob(name: string, file: string, digest: Digest, signal?: AbortSignal): Promise<{ size: number }> {
    this.assertWritable(name);
    return this.options.hosted.commitBlob(name, file, digest, signal);
  }

  async mountBlob(name: string, from: string, digest: Digest): Promise<boolean> {
    this.assertWritable(name);
    if (this.dest(from)) return false;
    return this.options.hosted.mountBlob(name, from, digest);
  }

  async deleteBlob(name: string, digest: Digest): Promise<boolean> {
    this.assertWritable(name);
    return this.options.hosted.deleteBlob(name, digest);
  }

  async putManifest(
    name: string,
    reference: string,
    bytes: Buffer,
    contentType: string | undefined,
  ): Promise<PutManifestResult> {
    this.assertWritable(name);
    return this.options.hosted.putManifest(name, reference, bytes, contentType);
  }

  async deleteManifest(name: string, reference: string): Promise<boolean> {
    this.assertWritable(name);
    return this.options.hosted.deleteManifest(name, reference);
  }

  // ---- helpers ----

  private dest(name: string): UpstreamDest | undefined {
    const d = this.options.router.destination(name);
    if (d.kind === 'hosted') return undefined;
    const upstream = this.options.upstreams.get(d.upstream.name);
    if (!upstream) throw new Error(`no client for upstream ${d.upstream.name}`);
    return { upstream, name, repository: d.repository };
  }

  private ref(d: UpstreamDest, at: { tag?: string; digest?: Digest }): ImageReference {
    return {
      registry: d.upstream.registry,
      repository: d.repository,
      ...(at.tag !== undefined ? { tag: at.tag } : {}),
      ...(at.digest !== undefined ? { digest: at.digest } : {}),
    } as ImageReference;
  }

  /** Runs `fn` once for concurrent callers with the same key. */
  private shared<T>(key: string, fn: () => Promise<T>): Promise<T> {
    let p = this.inflight.get(key) as Promise<T> | undefined;
    if (!p) {
      p = fn().finally(() => this.inflight.delete(key));
      this.inflight.set(key, p);
    }
    return p;
  }
}

function blobUnknown(name: string, digest: Digest): DistributionError {
  return new DistributionError('BLOB_UNKNOWN', `blob ${digest} is unknown to repository ${name}`, {
    detail: { digest },
  });
}

/** True for failures that make a stale answer better than none: unreachable, 5xx, rate-limited. */
export function isUpstreamDown(err: unknown): boolean {
  if (!(err instanceof StrataError)) return false;
  if (err.code === 'NETWORK' || err.code === 'TOO_MANY_REQUESTS') return true;
  const status = (err as { status?: unknown }).status;
  return err.code === 'REGISTRY_ERROR' && (typeof status !== 'number' || status >= 500);
}

/**
 * What a client sees of an upstream failure: 429 stays 429; an upstream that lies (wrong digest or size) or fails is
 * a 502 naming the upstream; upstream authentication problems are the mirror's, never the client's (no 401 that
 * would make it send credentials here).
 */
function upstreamError(d: UpstreamDest, err: unknown): Error {
  if (!(err instanceof StrataError) || !UPSTREAM_FAILURES.has(err.code)) return err as Error; // ours: 500, logged
  if (err.code === 'TOO_MANY_REQUESTS')
    return new DistributionError('TOOMANYREQUESTS', `upstream ${d.upstream.config.name}: ${err.message}`, {
      cause: err,
    });
  return new DistributionError('UNKNOWN', `upstream ${d.upstream.config.name}: ${err.message}`, {
    status: 502,
    detail: { upstream: d.upstream.config.name, code: err.code },
    cause: err,
  });
}

/** Engine error codes that describe what an upstream did (anything else is the mirror's own failure). */
const UPSTREAM_FAILURES = new Set<string>([
  'NETWORK',
  'REGISTRY_ERROR',
  'UNAUTHORIZED',
  'DENIED',
  'TOO_MANY_REQUESTS',
  'DIGEST_MISMATCH',
  'SIZE_MISMATCH',
  'SIZE_LIMIT',
  'MANIFEST_INVALID',
  'UNSUPPORTED_MEDIA_TYPE',
]);
