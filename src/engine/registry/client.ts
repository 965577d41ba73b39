/**
 * The Distribution API client: pull, push, cross-repo mount, chunked upload with resume, tag listing, with auth and
 * retries. One HTTP transport (keep-alive agents) and one token cache per client; no process-global state.
 */
import { Readable, Transform, pipeline } from 'node:stream';
import { DEFAULT_CERTS_DIRS, tlsSettingsFor } from './certs.js';
import { drainBody, HttpTransport, type ExchangeSummary, type TlsSettings } from './http.js';
import { AbortedError, RegistryError, StrataError, TerminalError, VerificationError } from '../errors.js';
import { silentObserver, type EngineEvent, type Observer } from '../observe.js';
import {
  DigestingStream,
  digestAlgorithm,
  digestOf,
  isDigest,
  parseDigest,
  type Digest,
} from '../oci/digest.js';
import { MANIFEST_ACCEPT, stripParams } from '../oci/media-types.js';
import { formatReference, manifestIdentifier, type ImageReference } from '../oci/reference.js';
import { MAX_MANIFEST_BYTES, parseManifest, type Descriptor, type ManifestDocument } from '../oci/types.js';
import { Authenticator, repositoryScope, type TokenHttp } from './auth.js';
import type { CredentialProvider } from './credentials.js';
import {
  exhaustedError,
  rephrased,
  isAbortError,
  isRetryableStatus,
  readBounded,
  readErrorBody,
  registryErrorFor,
  tlsErrorFor,
  toStrataError,
  type ErrorContext,
} from './errors.js';
import {
  abortableSleep,
  parseRetryAfter,
  retryDelay,
  retryPolicy,
  type RetryPolicy,
  type SleepFn,
} from './retry.js';
import { COMMIT_HEADERS_FACTOR, httpTimeouts, type HttpTimeouts } from './timeouts.js';
import type { BlobReadOptions, CallOptions, RegistryApi, RepositoryRef, UploadOptions } from './types.js';
import {
  matchesRegistry,
  parseContentRange,
  parseLinkNext,
  parseUploadRangeEnd,
  registryBaseUrl,
} from './wire.js';

/** Blobs up to this size are uploaded in one PUT; larger ones in PATCH chunks of this size. */
export const DEFAULT_CHUNK_SIZE = 32 * 1024 * 1024;

/** Tag lists larger than this (per page) are refused. */
const MAX_TAGS_PAGE_BYTES = 16 * 1024 * 1024;
const MAX_REDIRECTS = 10;
const OCTET = 'application/octet-stream';
/**
 * A resumed blob download counts as progress (resetting its attempt count) only after this many bytes: a server
 * that trickles or cuts every response short still runs out of attempts.
 */
const RESUME_PROGRESS_BYTES = 1024 * 1024;

/** Options of a {@link RegistryClient}; every field has a sensible default. */
export interface RegistryClientOptions {
  /** Where credentials come from; anonymous when absent. */
  readonly credentials?: CredentialProvider;
  /**
   * Insecure registries (`host:port` or host), docker's meaning: HTTPS without certificate verification, and plain
   * HTTP when HTTPS fails at the TLS/transport level (remembered for the client's life).
   */
  readonly insecureRegistries?: readonly string[];
  /** Loopback hosts (`localhost`, `127.0.0.0/8`, `::1`) are reached over plain HTTP. Default true. */
  readonly plainHttpLoopback?: boolean;
  /** Registries (`host:port` or host) always reached over plain HTTP (e.g. a mirror's `http://` upstream). */
  readonly plainHttpRegistries?: readonly string[];
  /**
   * certs.d directories: `<dir>/<host[:port]>/*.crt` are extra CAs, `*.cert` + `*.key` a client certificate.
   * The first directory that has the host wins. Default `/etc/containers/certs.d`, `/etc/docker/certs.d`.
   */
  readonly certsDirs?: readonly string[];
  /** The User-Agent header. */
  readonly userAgent?: string;
  /** Retry policy for transient failures (408/429/5xx/network): defaults 4 retries, 200 ms base, 10 s cap. */
  readonly retry?: {
    readonly retries?: number;
    readonly baseDelayMs?: number;
    readonly maxDelayMs?: number;
    readonly maxRetryAfterMs?: number;
  };
  /** The delay function (injectable to observe or skip delays in tests); must reject when `signal` aborts. */
  readonly sleep?: SleepFn;
  /** Concurrent connections per registry origin (requests beyond queue up). Default 16. */
  readonly maxConcurrentRequests?: number;
  /** Monolithic upload threshold and PATCH chunk size. Default 32 MiB (fewer round trips per large layer). */
  readonly chunkSize?: number;
  /** Clock in ms, for token expiry and `Retry-After` dates. */
  readonly now?: () => number;
  /** Random source in [0,1) for backoff jitter. */
  readonly random?: () => number;
  /**
   * Connect, response-headers and idle (read-stall) timeouts; defaults 30 s, 30 s, 60 s. A timeout is a NETWORK
   * error naming the host, the phase and the limit, retried like other network errors.
   */
  readonly timeouts?: Partial<HttpTimeouts>;
  /**
   * Receives an `http-request` event per HTTP exchange (never credentials, tokens or query strings) and a `retry`
   * event before each retry sleep. Silent by default; listener failures never break a request.
   */
  readonly observer?: Observer;
}

/** Options of {@link RegistryClient.listTags}. */
export interface ListTagsOptions extends CallOptions {
  /** Page size asked of the registry (`n=`); the registry's default when absent. */
  readonly pageSize?: number;
}

type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
type Headers = Record<string, string | string[] | undefined>;

interface HttpRequest {
  readonly method: Method;
  readonly url: URL;
  /** The registry the request is for (auth and token cache key); undefined for unauthenticated side requests. */
  readonly registry?: string;
  readonly scopes?: readonly string[];
  readonly headers?: Record<string, string>;
  /** Produces the body; called once per attempt. */
  readonly body?: () => Promise<Buffer | Readable | string> | Buffer | Readable | string;
  /** Whether the body can be produced again (after a 401 the request is re-sent with fresh credentials). */
  readonly replayable?: boolean;
  /** The request completes a blob upload: the registry may verify or move the blob before answering. */
  readonly commitsUpload?: boolean;
  /** Statuses handed back to the caller; others become errors. */
  readonly ok: (status: number) => boolean;
  readonly ctx: ErrorContext;
  readonly signal?: AbortSignal | undefined;
}

interface HttpResponse {
  readonly status: number;
  readonly headers: Headers;
  readonly body: Readable;
  /** The URL that answered (after redirects). */
  readonly url: URL;
}

function header(h: Headers, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

function isOk2xx(s: number): boolean {
  return s >= 200 && s <= 299;
}

function isRedirect(s: number): boolean {
  return s === 301 || s === 302 || s === 303 || s === 307 || s === 308;
}

/** Drains and discards a response body, never throwing. */
async function discard(body: Readable): Promise<void> {
  await drainBody(body);
}

function destroyBody(b: unknown): void {
  if (b instanceof Readable && !b.destroyed) {
    b.on('error', () => undefined);
    b.destroy();
  }
}

/** Hands out the blob's bytes in consecutive slices without buffering more than one source chunk. */
class ByteSlicer {
  private readonly iter: AsyncIterator<Buffer | string>;
  private leftover: Buffer | undefined;

  constructor(private readonly stream: Readable) {
    this.iter = (stream as AsyncIterable<Buffer | string>)[Symbol.asyncIterator]();
  }

  /** A stream of the next `n` bytes (fewer if the source ends early). */
  take(n: number, onBytes: (k: number) => void): Readable {
    return Readable.from(this.slice(n, onBytes), { objectMode: false });
  }

  private async *slice(n: number, onBytes: (k: number) => void): AsyncGenerator<Buffer> {
    let remaining = n;
    while (remaining > 0) {
      let buf = this.leftover ?? (await this.next());
      this.leftover = undefined;
      if (buf === undefined) return;
      if (buf.length > remaining) {
        this.leftover = buf.subarray(remaining);
        buf = buf.subarray(0, remaining);
      }
      remaining -= buf.length;
      onBytes(buf.length);
      yield buf;
    }
  }

  private async next(): Promise<Buffer | undefined> {
    const r = await this.iter.next();
    if (r.done) return undefined;
    return typeof r.value === 'string' ? Buffer.from(r.value) : r.value;
  }

  destroy(): void {
    this.stream.destroy();
  }
}

/**
 * A Distribution API client implementing {@link RegistryApi}, to the standard of crane and skopeo.
 * Plain HTTP for loopback, HTTPS otherwise (per-host CAs and client certificates from certs.d; `insecureRegistries`
 * skip verification and fall back to plain HTTP); `docker.io` is reached at registry-1.docker.io.
 * Call {@link RegistryClient.close} when done.
 */
export class RegistryClient implements RegistryApi {
  private readonly transport: HttpTransport;
  private readonly auth: Authenticator;
  private readonly insecure: readonly string[];
  private readonly plainHttpLoopback: boolean;
  private readonly plainHttpRegistries: readonly string[];
  private readonly certsDirs: readonly string[];
  /** TLS settings per `host[:port]`, read from certs.d once. */
  private readonly tlsByHost = new Map<string, Promise<TlsSettings | undefined>>();
  /** Insecure hosts whose HTTPS failed and that answered plain HTTP. */
  private readonly plainHttp = new Set<string>();
  private readonly userAgent: string;
  private readonly policy: RetryPolicy;
  private readonly sleep: SleepFn;
  private readonly chunkSize: number;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly timeouts: HttpTimeouts;
  private readonly observer: Observer;

  constructor(options: RegistryClientOptions = {}) {
    const connections = Math.max(1, Math.floor(options.maxConcurrentRequests ?? 16));
    this.timeouts = httpTimeouts(options.timeouts);
    this.observer = options.observer ?? silentObserver;
    this.transport = new HttpTransport({
      maxSockets: connections,
      keepAliveMs: 30_000,
      timeouts: this.timeouts,
    });
    this.insecure = options.insecureRegistries ?? [];
    this.plainHttpLoopback = options.plainHttpLoopback ?? true;
    this.plainHttpRegistries = options.plainHttpRegistries ?? [];
    this.certsDirs = options.certsDirs ?? DEFAULT_CERTS_DIRS;
    this.userAgent = options.userAgent ?? 'strata/0.1';
    this.policy = retryPolicy(options.retry);
    this.sleep = options.sleep ?? abortableSleep;
    this.chunkSize = Math.max(1, Math.floor(options.chunkSize ?? DEFAULT_CHUNK_SIZE));
    this.now = options.now ?? Date.now;
    this.random = options.random ?? Math.random;
    const tokenHttp: TokenHttp = (req, signal) => this.tokenRequest(req, signal);
    this.auth = new Authenticator({
      ...(options.credentials ? { credentials: options.credentials } : {}),
      http: tokenHttp,
      now: this.now,
    });
  }

  /** Destroys the client's connection pool; in-flight requests fail. The client cannot be used afterwards. */
  async close(): Promise<void> {
    this.transport.destroy();
  }

  /** `GET /v2/`, authenticating when the registry asks to. Throws UNAUTHORIZED, REGISTRY_ERROR or NETWORK. */
  async ping(registry: string, options: CallOptions = {}): Promise<void> {
    const ctx: ErrorContext = { op: 'ping', subject: registry };
    const res = await this.call({
      method: 'GET',
      url: new URL(`${this.base(registry)}/v2/`),
      registry,
      scopes: [],
      ok: isOk2xx,
      ctx,
      signal: options.signal,
    });
    await discard(res.body);
  }

  /**
   * Fetches a manifest or index by tag or digest (Accept: every manifest type). Refuses documents over 4 MiB
   * (SIZE_LIMIT, by Content-Length and while reading), verifies the digest when fetched by digest and the
   * registry's `Docker-Content-Digest` when it is sha256 (DIGEST_MISMATCH). MANIFEST_UNKNOWN if absent.
   */
  async getManifest(ref: ImageReference, options: CallOptions = {}): Promise<ManifestDocument> {
    const subject = formatReference(ref);
    const ctx: ErrorContext = { op: 'pull', subject, notFound: 'MANIFEST_UNKNOWN' };
    const url = this.repoUrl(ref, `manifests/${manifestIdentifier(ref)}`);
    const { bytes, headers } = await this.withRetry(ctx, options.signal, async () => {
      const res = await this.send({
        method: 'GET',
        url,
        registry: ref.registry,
        scopes: [repositoryScope(ref.repository, ['pull'])],
        headers: { accept: MANIFEST_ACCEPT },
        ok: (s) => s === 200,
        ctx,
        signal: options.signal,
      });
      const cl = Number(header(res.headers, 'content-length'));
      if (Number.isFinite(cl) && cl > MAX_MANIFEST_BYTES) {
        destroyBody(res.body);
        throw new TerminalError(
          'SIZE_LIMIT',
          `pull ${subject}: manifest of ${cl} bytes exceeds the ${MAX_MANIFEST_BYTES}-byte limit`,
          { detail: { limit: MAX_MANIFEST_BYTES, size: cl } },
        );
      }
      try {
        return {
          bytes: await readBounded(res.body, MAX_MANIFEST_BYTES, `pull ${subject}: manifest`),
          headers: res.headers,
        };
      } catch (err) {
        throw toStrataError(err, ctx, options.signal, res.url.host);
      }
    });
    const algorithm = ref.digest ? digestAlgorithm(ref.digest) : 'sha256';
    const digest = digestOf(bytes, algorithm);
    if (ref.digest && digest !== ref.digest) {
      throw new VerificationError(
        'DIGEST_MISMATCH',
        `pull ${subject}: manifest digest mismatch: got ${digest}`,
        {
          detail: { expected: ref.digest, actual: digest },
        },
      );
    }
    const announced = header(headers, 'docker-content-digest');
    if (announced && isDigest(announced) && digestAlgorithm(announced as Digest) === 'sha256') {
      const sha = algorithm === 'sha256' ? digest : digestOf(bytes);
      if (announced !== sha) {
        throw new VerificationError(
          'DIGEST_MISMATCH',
          `pull ${subject}: registry announced manifest digest ${announced}, content has ${sha}`,
          { detail: { expected: announced, actual: sha } },
        );
      }
    }
    const contentType = header(headers, 'content-type');
    return parseManifest(
      bytes,
      digest,
      contentType ? stripParams(contentType) : undefined,
      `pull ${subject}`,
    );
  }

  /**
   * HEADs a manifest: its descriptor (digest, size, media type), or undefined when the registry answers 404.
   * Falls back to a GET when the registry omits `Docker-Content-Digest`.
   */
  async headManifest(ref: ImageReference, options: CallOptions = {}): Promise<Descriptor | undefined> {
    const subject = formatReference(ref);
    const ctx: ErrorContext = { op: 'head', subject, notFound: 'MANIFEST_UNKNOWN' };
    const res = await this.call({
      method: 'HEAD',
      url: this.repoUrl(ref, `manifests/${manifestIdentifier(ref)}`),
      registry: ref.registry,
      scopes: [repositoryScope(ref.repository, ['pull'])],
      headers: { accept: MANIFEST_ACCEPT },
      ok: (s) => s === 200 || s === 404,
      ctx,
      signal: options.signal,
    });
    await discard(res.body);
    if (res.status === 404) return undefined;
    const announced = header(res.headers, 'docker-content-digest');
    const size = Number(header(res.headers, 'content-length'));
    const contentType = header(res.headers, 'content-type');
    if (!announced || !isDigest(announced) || !Number.isSafeInteger(size) || !contentType) {
      const doc = await this.getManifest(ref, options);
      return { mediaType: doc.mediaType, digest: doc.digest, size: doc.bytes.length };
    }
    if (
      ref.digest &&
      digestAlgorithm(ref.digest) === digestAlgorithm(announced as Digest) &&
      announced !== ref.digest
    ) {
      throw new VerificationError(
        'DIGEST_MISMATCH',
        `head ${subject}: registry announced digest ${announced}`,
        {
          detail: { expected: ref.digest, actual: announced },
        },
      );
    }
    return { mediaType: stripParams(contentType), digest: announced as Digest, size };
  }

  /**
   * PUTs manifest bytes exactly as given, with `mediaType` as Content-Type, under the tag (or the digest when the
   * reference has no tag). Returns the sha256 digest of the bytes.
   */
  async putManifest(
    ref: ImageReference,
    bytes: Uint8Array,
    mediaType: string,
    options: CallOptions = {},
  ): Promise<Digest> {
    const subject = formatReference(ref);
    const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const digest = digestOf(buf);
    if (ref.digest && digestOf(buf, digestAlgorithm(ref.digest)) !== ref.digest) {
      throw new TerminalError(
        'INVALID_ARGUMENT',
        `push ${subject}: the manifest bytes do not have the reference's digest`,
      );
    }
    const id = ref.tag ?? ref.digest ?? digest;
    const ctx: ErrorContext = { op: 'push', subject };
    const res = await this.call({
      method: 'PUT',
      url: this.repoUrl(ref, `manifests/${id}`),
      registry: ref.registry,
      scopes: [repositoryScope(ref.repository, ['pull', 'push'])],
      headers: { 'content-type': mediaType, 'content-length': String(buf.length) },
      body: () => buf,
      replayable: true,
      ok: isOk2xx,
      ctx,
      signal: options.signal,
    });
    await discard(res.body);
    const announced = header(res.headers, 'docker-content-digest');
    if (
      announced &&
      isDigest(announced) &&
      digestAlgorithm(announced as Digest) === 'sha256' &&
      announced !== digest
    ) {
      throw new VerificationError(
        'DIGEST_MISMATCH',
        `push ${subject}: registry stored digest ${announced}, sent ${digest}`,
        {
          detail: { expected: digest, actual: announced },
        },
      );
    }
    return digest;
  }

  /** HEADs a blob: `{ size }` when present, undefined on 404. */
  async blobExists(
    repo: RepositoryRef,
    digest: Digest,
    options: CallOptions = {},
  ): Promise<{ size: number } | undefined> {
    parseDigest(digest);
    const subject = `${repo.registry}/${repo.repository}@${digest}`;
    const ctx: ErrorContext = { op: 'head', subject, notFound: 'BLOB_UNKNOWN' };
    const res = await this.call({
      method: 'HEAD',
      url: this.repoUrl(repo, `blobs/${digest}`),
      registry: repo.registry,
      scopes: [repositoryScope(repo.repository, ['pull'])],
      ok: (s) => s === 200 || s === 404,
      ctx,
      signal: options.signal,
    });
    await discard(res.body);
    if (res.status === 404) return undefined;
    const size = Number(header(res.headers, 'content-length'));
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new RegistryError(
        'REGISTRY_ERROR',
        `head ${subject}: registry answered without a Content-Length`,
        { status: res.status },
      );
    }
    return { size };
  }

  /**
   * Opens a blob as a stream that verifies size and digest while streaming: it errors with a VerificationError
   * (SIZE_MISMATCH, DIGEST_MISMATCH) naming the repository and digest instead of ending. Follows redirects (no
   * Authorization to other hosts), resumes a broken body with `Range: bytes=N-` (a 200 answer is skipped forward),
   * and retries transient failures with backoff. Rejects (BLOB_UNKNOWN, …) when the first request fails.
   */
  async openBlob(
    repo: RepositoryRef,
    descriptor: Descriptor,
    options: BlobReadOptions = {},
  ): Promise<Readable> {
    const digest = parseDigest(descriptor.digest);
    const size = descriptor.size;
    const subject = `${repo.registry}/${repo.repository}@${digest}`;
    const ctx: ErrorContext = { op: 'pull', subject, notFound: 'BLOB_UNKNOWN' };
    const signal = options.signal;
    const fetchFrom = (offset: number): Promise<{ res: HttpResponse; skip: number }> =>
      this.withRetry(ctx, signal, async () => {
        const res = await this.send({
          method: 'GET',
          url: this.repoUrl(repo, `blobs/${digest}`),
          registry: repo.registry,
          scopes: [repositoryScope(repo.repository, ['pull'])],
          headers: offset > 0 ? { range: `bytes=${offset}-` } : {},
          ok: (s) => s === 200 || (s === 206 && offset > 0),
          ctx,
          signal,
        });
        try {
          return { res, skip: checkBlobResponse(res, offset, size, subject) };
        } catch (err) {
          destroyBody(res.body);
          throw err;
        }
      });
    const start = options.offset ?? 0;
    const first = await fetchFrom(start);
    const source = Readable.from(this.resumingBody(first, fetchFrom, size, ctx, signal, start), {
      objectMode: false,
      highWaterMark: 1 << 20,
    });
    if (options.verify === false || start > 0) return source; // a suffix cannot be hashed: the consumer verifies
    const verifier = new DigestingStream({ digest, size, what: `pull ${subject}` });
    pipeline(source, verifier, () => {
      // Errors reach the consumer through `verifier`; pipeline destroys both streams on failure.
    });
    return verifier;
  }

  /**
   * The bytes of a blob body from offset 0, resuming from the current offset after a broken or short body
   * (backoff between attempts; the attempt count resets whenever bytes arrived).
   */
  private async *resumingBody(
    first: { res: HttpResponse; skip: number },
    fetchFrom: (offset: number) => Promise<{ res: HttpResponse; skip: number }>,
    size: number,
    ctx: ErrorContext,
    signal: AbortSignal | undefined,
    start = 0,
  ): AsyncGenerator<Buffer> {
    let { res, skip } = first;
    let offset = start;
    let failures = 0;
    try {
      for (;;) {
        const startedAt = offset;
        let failure: StrataError | undefined;
        try {
          for await (const chunk of res.body as AsyncIterable<Buffer>) {
            let buf = chunk;
            if (skip > 0) {
              const drop = Math.min(skip, buf.length);
              skip -= drop;
              buf = buf.subarray(drop);
              if (buf.length === 0) continue;
            }
            offset += buf.length;
            yield buf;
          }
        } catch (err) {
          failure = toStrataError(err, ctx, signal, res.url.host);
        }
        if (!failure) {
          if (offset >= size) return;
          failure = new StrataError(
            'NETWORK',
            `${ctx.op} ${ctx.subject}: ${res.url.host} ended the response early`,
            { retryable: true, detail: { host: res.url.host } },
          );
        }
        if (failure.code === 'NETWORK') failure = withProgress(failure, offset, size);
        if (offset - startedAt >= RESUME_PROGRESS_BYTES) failures = 0;
        failures++;
        destroyBody(res.body);
        await this.backoff(failure, failures, ctx, signal);
        ({ res, skip } = await fetchFrom(offset));
      }
    } finally {
      destroyBody(res.body);
    }
  }

  /**
   * Tries a cross-repo mount (`POST ?mount=&from=`, asking for push on `repo` and pull on `from`): true on 201.
   * On 202 the registry opened an upload session instead; it is cancelled (best-effort DELETE) and false returned,
   * so the caller's next {@link uploadBlob} starts clean. Mounts across registries answer false without a request.
   */
  async mountBlob(
    repo: RepositoryRef,
    descriptor: Descriptor,
    from: RepositoryRef,
    options: UploadOptions = {},
  ): Promise<boolean> {
    const digest = parseDigest(descriptor.digest);
    if (from.registry !== repo.registry) return false;
    const subject = `${repo.registry}/${repo.repository}@${digest}`;
    const ctx: ErrorContext = { op: 'mount', subject: `${subject} from ${from.repository}` };
    const url = this.repoUrl(repo, 'blobs/uploads/');
    url.searchParams.set('mount', digest);
    url.searchParams.set('from', from.repository);
    const scopes = [repositoryScope(repo.repository, ['pull', 'push'])];
    if (from.repository !== repo.repository) scopes.push(repositoryScope(from.repository, ['pull']));
    const res = await this.call({
      method: 'POST',
      url,
      registry: repo.registry,
      scopes,
      headers: { 'content-length': '0' },
      ok: (s) => s === 201 || s === 202,
      ctx,
      signal: options.signal,
    });
    await discard(res.body);
    if (res.status === 201) {
      options.onProgress?.(descriptor.size);
      return true;
    }
    const location = header(res.headers, 'location');
    if (location) {
      try {
        const del = await this.send({
          method: 'DELETE',
          url: new URL(location, res.url),
          registry: repo.registry,
          scopes,
          ok: () => true,
          ctx,
          signal: options.signal,
        });
        await discard(del.body);
      } catch {
        // Best effort: registries purge abandoned upload sessions themselves.
      }
    }
    return false;
  }

  /**
   * Uploads a blob. Blobs up to `chunkSize` go in one streamed PUT (`POST` then `PUT ?digest=`, retried whole);
   * larger ones in streamed PATCH chunks with `Content-Range`, following each returned `Location`. After a failed
   * chunk or a 416 it asks the upload session for its committed offset (`GET <location>`) and resumes from there by
   * calling `open(offset)`; a lost session restarts from 0. Finishes with `PUT ?digest=`.
   */
  async uploadBlob(
    repo: RepositoryRef,
    descriptor: Descriptor,
    open: (offset: number) => Promise<Readable>,
    options: UploadOptions = {},
  ): Promise<void> {
    const digest = parseDigest(descriptor.digest);
    const size = descriptor.size;
    if (!Number.isSafeInteger(size) || size < 0)
      throw new TerminalError('INVALID_ARGUMENT', `push ${digest}: invalid size ${size}`);
    const subject = `${repo.registry}/${repo.repository}@${digest}`;
    const ctx: ErrorContext = { op: 'push', subject, notFound: 'BLOB_UNKNOWN' };
    const scopes = [repositoryScope(repo.repository, ['pull', 'push'])];
    if (size <= this.chunkSize) {
      await this.uploadMonolithic(repo, digest, size, open, scopes, ctx, options);
    } else {
      await this.uploadChunked(repo, digest, size, open, scopes, ctx, options);
    }
  }

  /** Lists a repository's tags, following `Link: <…>; rel="next"` pagination. NAME_UNKNOWN if absent. */
  async listTags(repo: RepositoryRef, options: ListTagsOptions = {}): Promise<string[]> {
    const subject = `${repo.registry}/${repo.repository}`;
    const url = this.repoUrl(repo, 'tags/list');
    if (options.pageSize !== undefined) url.searchParams.set('n', String(options.pageSize));
    const tags: string[] = [];
    await this.readPages(repo, url, {
      ctx: { op: 'list tags', subject, notFound: 'NAME_UNKNOWN' },
      maxBytes: MAX_TAGS_PAGE_BYTES,
      maxPages: 100_000,
      signal: options.signal,
      onPage: (json) => {
        const list = (json as { tags?: unknown } | null)?.tags;
        if (list === null || list === undefined) return;
        if (!Array.isArray(list))
          throw new RegistryError('REGISTRY_ERROR', `list tags ${subject}: tags is not an array`);
        for (const t of list) if (typeof t === 'string') tags.push(t);
      },
    });
    return tags;
  }

  /**
   * The referrers of `subject` by the Referrers API (`GET /v2/<name>/referrers/<digest>`, following pagination):
   * the descriptors of its index, or undefined when the registry has no such API (404), so the caller can fall back
   * to the referrers tag schema (`<alg>-<hex>`). Pages over 4 MiB are refused (SIZE_LIMIT).
   */
  async listReferrers(
    repo: RepositoryRef,
    subject: Digest,
    options: CallOptions = {},
  ): Promise<Descriptor[] | undefined> {
    parseDigest(subject);
    const what = `${repo.registry}/${repo.repository}@${subject}`;
    const out: Descriptor[] = [];
    const found = await this.readPages(repo, this.repoUrl(repo, `referrers/${subject}`), {
      ctx: { op: 'list referrers', subject: what },
      maxBytes: MAX_MANIFEST_BYTES,
      maxPages: 1000,
      accept: 'application/vnd.oci.image.index.v1+json',
      absentOn404: true,
      signal: options.signal,
      onPage: (json) => {
        const manifests = (json as { manifests?: unknown } | null)?.manifests;
        if (!Array.isArray(manifests))
          throw new RegistryError('REGISTRY_ERROR', `list referrers ${what}: manifests is not an array`);
        for (const d of manifests as Descriptor[])
          if (d && typeof d.digest === 'string' && isDigest(d.digest) && typeof d.mediaType === 'string')
            out.push(d);
      },
    });
    return found ? out : undefined;
  }

  /**
   * GETs `first` and every page after it (`Link: <…>; rel="next"`), each bounded to `maxBytes` and parsed as JSON
   * for `onPage`; a loop or more than `maxPages` pages is REGISTRY_ERROR. With `absentOn404`, a 404 on the first
   * page answers false (the API is absent) and one on a later page ends the listing.
   */
  private async readPages(
    repo: RepositoryRef,
    first: URL,
    o: {
      ctx: ErrorContext;
      maxBytes: number;
      maxPages: number;
      accept?: string;
      absentOn404?: boolean;
      signal: AbortSignal | undefined;
      onPage: (json: unknown) => void;
    },
  ): Promise<boolean> {
    const label = `${o.ctx.op} ${o.ctx.subject}`;
    let url: URL | undefined = first;
    const seen = new Set<string>();
    while (url) {
      if (seen.has(url.href) || seen.size > o.maxPages)
        throw new RegistryError('REGISTRY_ERROR', `${label}: pagination loops`);
      seen.add(url.href);
      const pageUrl: URL = url;
      const page = await this.withRetry(o.ctx, o.signal, async () => {
        const res = await this.send({
          method: 'GET',
          url: pageUrl,
          registry: repo.registry,
          scopes: [repositoryScope(repo.repository, ['pull'])],
          ...(o.accept ? { headers: { accept: o.accept } } : {}),
          ok: (s) => s === 200 || (o.absentOn404 === true && s === 404),
          ctx: o.ctx,
          signal: o.signal,
        });
        if (res.status === 404) {
          await discard(res.body);
          return undefined;
        }
        try {
          const body = await readBounded(res.body, o.maxBytes, label);
          return { body, link: header(res.headers, 'link'), url: res.url };
        } catch (err) {
          throw toStrataError(err, o.ctx, o.signal, res.url.host);
        }
      });
      if (!page) return seen.size > 1;
      let json: unknown;
      try {
        json = JSON.parse(page.body.toString('utf8'));
      } catch {
        throw new RegistryError('REGISTRY_ERROR', `${label}: response is not JSON`);
      }
      o.onPage(json);
      const next = parseLinkNext(page.link);
      url = next ? new URL(next, page.url) : undefined;
    }
    return true;
  }

  // ---- uploads ----

  private async startUpload(
    repo: RepositoryRef,
    scopes: readonly string[],
    ctx: ErrorContext,
    signal?: AbortSignal,
  ): Promise<URL> {
    const res = await this.call({
      method: 'POST',
      url: this.repoUrl(repo, 'blobs/uploads/'),
      registry: repo.registry,
      scopes,
      headers: { 'content-length': '0' },
      ok: (s) => s === 202,
      ctx,
      signal,
    });
    await discard(res.body);
    const location = header(res.headers, 'location');
    if (!location)
      throw new RegistryError(
        'REGISTRY_ERROR',
        `${ctx.op} ${ctx.subject}: upload started without a Location`,
        { status: res.status },
      );
    return new URL(location, res.url);
  }

  private async uploadMonolithic(
    repo: RepositoryRef,
    digest: Digest,
    size: number,
    open: (offset: number) => Promise<Readable>,
    scopes: readonly string[],
    ctx: ErrorContext,
    options: UploadOptions,
  ): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        const location = await this.startUpload(repo, scopes, ctx, options.signal);
        location.searchParams.set('digest', digest);
        let sent = 0;
        const res = await this.send({
          method: 'PUT',
          url: location,
          registry: repo.registry,
          scopes,
          headers: { 'content-type': OCTET, 'content-length': String(size) },
          body: async () => {
            sent = 0;
            const src = await open(0);
            const progress = options.onProgress;
            if (!progress) return src;
            const counter = new Transform({
              transform(chunk: Buffer, _enc, cb) {
                progress((sent += chunk.length));
                cb(null, chunk);
              },
            });
            pipeline(src, counter, () => {
              // Errors surface through `counter`, which the request consumes.
            });
            return counter;
          },
          replayable: true,
          commitsUpload: true,
          ok: isOk2xx,
          ctx,
          signal: options.signal,
        });
        await discard(res.body);
        return;
      } catch (e) {
        await this.backoff(toStrataError(e, ctx, options.signal), attempt, ctx, options.signal);
      }
    }
  }

  private async uploadChunked(
    repo: RepositoryRef,
    digest: Digest,
    size: number,
    open: (offset: number) => Promise<Readable>,
    scopes: readonly string[],
    ctx: ErrorContext,
    options: UploadOptions,
  ): Promise<void> {
    const signal = options.signal;
    let location = await this.startUpload(repo, scopes, ctx, signal);
    let offset = 0;
    let slicer: ByteSlicer | undefined;
    let failures = 0;
    try {
      while (offset < size) {
        slicer ??= new ByteSlicer(await open(offset));
        const src = slicer;
        const n = Math.min(this.chunkSize, size - offset);
        let sent = 0;
        const chunkStart = offset;
        let failure: StrataError | undefined;
        try {
          const res = await this.send({
            method: 'PATCH',
            url: location,
            registry: repo.registry,
            scopes,
            headers: {
              'content-type': OCTET,
              'content-length': String(n),
              'content-range': `${offset}-${offset + n - 1}`,
            },
            body: () => src.take(n, (k) => options.onProgress?.(chunkStart + (sent += k))),
            replayable: false,
            ok: (s) => s === 202 || s === 204,
            ctx,
            signal,
          });
          await discard(res.body);
          const loc = header(res.headers, 'location');
          if (loc) location = new URL(loc, res.url);
          const end = parseUploadRangeEnd(header(res.headers, 'range'));
          const committed = end === undefined ? offset + n : end + 1;
          if (committed !== offset + n) {
            // The registry kept a different amount than sent: reposition the source there.
            slicer.destroy();
            slicer = undefined;
          }
          offset = committed;
          failures = 0;
          continue;
        } catch (e) {
          failure = toStrataError(e, ctx, signal);
        }
        src.destroy();
        slicer = undefined;
        const is416 = failure instanceof RegistryError && failure.status === 416;
        failures++;
        // A 416 means we are out of step with the session: ask it where it is at once.
        await this.backoff(
          failure,
          failures,
          ctx,
          signal,
          is416 && failures <= this.policy.retries ? 0 : undefined,
        );
        try {
          const st = await this.uploadStatus(location, repo, scopes, ctx, signal);
          location = st.location;
          offset = st.offset;
        } catch (err) {
          if (err instanceof AbortedError) throw err;
          // The session is gone or unreadable (e.g. distribution cancels a session resumed at a stale offset).
          location = await this.startUpload(repo, scopes, ctx, signal);
          offset = 0;
        }
      }
    } finally {
      slicer?.destroy();
    }
    const final = new URL(location);
    final.searchParams.set('digest', digest);
    try {
      const res = await this.call({
        method: 'PUT',
        url: final,
        registry: repo.registry,
        scopes,
        headers: { 'content-length': '0' },
        commitsUpload: true,
        ok: isOk2xx,
        ctx,
        signal,
      });
      await discard(res.body);
    } catch (err) {
      // A retried final PUT fails when the first one committed but its answer was lost: the blob is there then.
      if (
        err instanceof RegistryError &&
        err.status === 404 &&
        (await this.blobExists(repo, digest, { signal }))?.size === size
      )
        return;
      throw err;
    }
  }

  private async uploadStatus(
    location: URL,
    repo: RepositoryRef,
    scopes: readonly string[],
    ctx: ErrorContext,
    signal?: AbortSignal,
  ): Promise<{ location: URL; offset: number }> {
    const res = await this.call({
      method: 'GET',
      url: location,
      registry: repo.registry,
      scopes,
      ok: (s) => s === 204 || s === 200,
      ctx,
      signal,
    });
    await discard(res.body);
    const loc = header(res.headers, 'location');
    const end = parseUploadRangeEnd(header(res.headers, 'range'));
    // `0-0` is ambiguous in distribution (0 or 1 byte); 0 is the safe reading.
    const offset = end === undefined || end === 0 ? 0 : end + 1;
    return { location: loc ? new URL(loc, res.url) : location, offset };
  }

  // ---- HTTP core ----

  private base(registry: string): string {
    return this.effectiveUrl(
      new URL(registryBaseUrl(registry, this.plainHttpRegistries, this.plainHttpLoopback)),
    ).origin;
  }

  /** `url`, switched to plain HTTP when its host is an insecure registry that fell back to it. */
  private effectiveUrl(url: URL): URL {
    if (url.protocol !== 'https:' || !this.plainHttp.has(url.host)) return url;
    const plain = new URL(url);
    plain.protocol = 'http:';
    return plain;
  }

  private tlsFor(host: string): Promise<TlsSettings | undefined> {
    let settings = this.tlsByHost.get(host);
    if (!settings) {
      settings = tlsSettingsFor(this.certsDirs, host, matchesRegistry(host, this.insecure));
      this.tlsByHost.set(host, settings);
    }
    return settings;
  }

  private repoUrl(repo: RepositoryRef, suffix: string): URL {
    return new URL(`${this.base(repo.registry)}/v2/${repo.repository}/${suffix}`);
  }

  /** Runs `fn` with the client's retry policy (retryable StrataErrors only). */
  private async withRetry<T>(
    ctx: ErrorContext,
    signal: AbortSignal | undefined,
    fn: () => Promise<T>,
  ): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (e) {
        await this.backoff(toStrataError(e, ctx, signal), attempt, ctx, signal);
      }
    }
  }

  /**
   * After failed attempt `attempt` of `ctx`: reports a `retry` event and sleeps the policy's delay (or `delayMs`)
   * when another attempt is allowed; otherwise throws `err`, saying how many attempts were made.
   */
  private async backoff(
    err: StrataError,
    attempt: number,
    ctx: ErrorContext,
    signal: AbortSignal | undefined,
    delayMs?: number,
  ): Promise<void> {
    const delay = delayMs ?? retryDelay(err, attempt, this.policy, this.random);
    if (delay === undefined || signal?.aborted) throw exhaustedError(err, attempt);
    this.emit({
      type: 'retry',
      what: `${ctx.op} ${ctx.subject}`,
      attempt,
      maxAttempts: this.policy.retries + 1,
      delayMs: delay,
      code: err.code,
      reason: err.message,
    });
    if (delay > 0) await this.sleep(delay, signal);
  }

  /** Emits an event; an observer that throws (one not made by createObserver) never breaks a request. */
  private emit(event: EngineEvent): void {
    try {
      this.observer.emit(event);
    } catch {
      // reporting is best effort
    }
  }

  /** Reports one finished exchange as an `http-request` event (no query string, no headers). */
  private reportExchange(
    method: Method,
    url: URL,
    startedMs: number,
    summary: ExchangeSummary,
    ctx: ErrorContext,
    signal: AbortSignal | undefined,
  ): void {
    const received = method === 'GET' || method === 'HEAD' || method === 'DELETE';
    this.emit({
      type: 'http-request',
      method,
      host: url.host,
      path: url.pathname,
      status: summary.status,
      bytes: received ? summary.bytesReceived : summary.bytesSent,
      durationMs: Math.round(performance.now() - startedMs),
      ...(summary.error === undefined
        ? {}
        : { error: toStrataError(summary.error, ctx, signal, url.host).code }),
    });
  }

  /** {@link send} with retries. */
  private call(req: HttpRequest): Promise<HttpResponse> {
    return this.withRetry(req.ctx, req.signal, () => this.send(req));
  }

  /**
   * One logical request: authorizes up front when the registry's challenge is known, answers one 401 by
   * re-authorizing (replayable bodies only), follows redirects for GET/HEAD (Authorization only to the registry's
   * origin). Statuses outside `req.ok` become RegistryErrors (retryable for 408/429/5xx, with Retry-After).
   */
  private async send(req: HttpRequest): Promise<HttpResponse> {
    const { registry, signal, ctx } = req;
    const scopes = req.scopes ?? [];
    // Credentials go to the registry's own origin only (never to redirect targets or foreign upload hosts).
    let url = this.effectiveUrl(req.url);
    let registryOrigin = registry === undefined ? url.origin : new URL(this.base(registry)).origin;
    let auth =
      registry === undefined
        ? undefined
        : await inContext(ctx, () => this.auth.authorize(registry, scopes, signal));
    let reauthorized = false;
    let redirects = 0;
    // Set while an insecure registry is retried over plain HTTP after its HTTPS attempt failed.
    let fellBack: string | undefined;
    let method: Method = req.method;
    let explicit: Record<string, string> = { ...req.headers };
    for (;;) {
      const headers: Record<string, string> = { 'user-agent': this.userAgent, ...explicit };
      if (auth && url.origin === registryOrigin) headers.authorization = auth;
      const body = req.body && method === req.method ? await req.body() : undefined;
      let res: Awaited<ReturnType<HttpTransport['request']>>;
      let tls: TlsSettings | undefined;
      try {
        tls = url.protocol === 'https:' ? await this.tlsFor(url.host) : undefined;
      } catch (err) {
        destroyBody(body);
        throw err;
      }
      const sentTo = url;
      const sentMethod = method;
      const startedMs = performance.now();
      try {
        res = await this.transport.request({
          origin: url.origin,
          path: `${url.pathname}${url.search}`,
          method,
          headers,
          body: body ?? null,
          signal,
          tls,
          ...(req.commitsUpload
            ? { responseHeadersMs: this.timeouts.responseHeadersMs * COMMIT_HEADERS_FACTOR }
            : {}),
          onEnd: (summary) => this.reportExchange(sentMethod, sentTo, startedMs, summary, ctx, signal),
        });
      } catch (err) {
        destroyBody(body);
        if (
          url.protocol === 'https:' &&
          matchesRegistry(url.host, this.insecure) &&
          !signal?.aborted &&
          !isAbortError(err) &&
          (req.body === undefined || req.replayable !== false)
        ) {
          // docker's insecure registries: HTTPS failed at the TLS/transport level, so try plain HTTP.
          const wasRegistry = url.origin === registryOrigin;
          fellBack = url.host;
          url = new URL(url);
          url.protocol = 'http:';
          if (wasRegistry) registryOrigin = url.origin;
          continue;
        }
        throw tlsErrorFor(err, ctx, url.host, this.certsDirs[0]) ?? toStrataError(err, ctx, signal, url.host);
      }
      if (fellBack !== undefined) {
        this.plainHttp.add(fellBack);
        fellBack = undefined;
      }
      const status = res.statusCode;
      const resHeaders = res.headers as Headers;
      if (status === 401 && registry !== undefined && url.origin === registryOrigin && !reauthorized) {
        const text = await readErrorBody(res.body);
        destroyBody(body);
        const next = await inContext(ctx, () =>
          this.auth.onUnauthorized(registry, scopes, resHeaders['www-authenticate'], auth, signal),
        );
        if (next !== undefined) {
          if (req.body && req.replayable === false) {
            // The body cannot be produced again: let the caller recover (the new credentials are cached now).
            const err = registryErrorFor(ctx, status, text);
            throw new RegistryError('UNAUTHORIZED', err.message, { status, retryable: true, cause: err });
          }
          auth = next;
          reauthorized = true;
          continue;
        }
        throw registryErrorFor(ctx, status, text);
      }
      if (
        isRedirect(status) &&
        (method === 'GET' || method === 'HEAD' || status === 303) &&
        !req.ok(status)
      ) {
        const location = header(resHeaders, 'location');
        await discard(res.body);
        if (location) {
          if (++redirects > MAX_REDIRECTS) {
            throw new RegistryError('REGISTRY_ERROR', `${ctx.op} ${ctx.subject}: too many redirects`, {
              status,
            });
          }
          const nextUrl = new URL(location, url);
          if (nextUrl.origin !== url.origin) {
            const { authorization: _dropped, ...rest } = explicit;
            explicit = rest;
          }
          if (status === 303 && method !== 'HEAD') method = 'GET';
          url = nextUrl;
          continue;
        }
      }
      if (req.ok(status)) {
        destroyBody(body);
        return { status, headers: resHeaders, body: res.body, url };
      }
      destroyBody(body);
      const text = await readErrorBody(res.body);
      const retryAfterMs = parseRetryAfter(header(resHeaders, 'retry-after'), this.now());
      throw registryErrorFor(ctx, status, text, retryAfterMs === undefined ? {} : { retryAfterMs });
    }
  }

  /**
   * Token realm requests: no registry auth, bounded body. Not retried here: every registry request that needs a
   * token runs inside a retry loop already, which would multiply the attempts.
   */
  private async tokenRequest(
    req: { method: 'GET' | 'POST'; url: URL; headers: Record<string, string>; body?: string },
    signal: AbortSignal | undefined,
  ): Promise<{ status: number; body: string }> {
    const ctx: ErrorContext = { op: 'auth', subject: `token realm ${req.url.host}` };
    const payload = req.body;
    const res = await this.send({
      method: req.method,
      url: req.url,
      headers:
        payload === undefined
          ? req.headers
          : { ...req.headers, 'content-length': String(Buffer.byteLength(payload)) },
      ...(payload === undefined ? {} : { body: () => payload, replayable: true }),
      ok: (s) => !isRetryableStatus(s),
      ctx,
      signal,
    });
    try {
      const body = await readBounded(res.body, 1024 * 1024, `auth ${req.url.host}`);
      return { status: res.status, body: body.toString('utf8') };
    } catch (err) {
      throw toStrataError(err, ctx, signal, req.url.host);
    }
  }
}

/**
 * Checks a blob GET response against the descriptor and the requested offset; returns how many leading bytes to
 * skip (a 200 answer to a ranged request). A registry announcing another size fails with SIZE_MISMATCH.
 */
function checkBlobResponse(res: HttpResponse, offset: number, size: number, subject: string): number {
  if (res.status === 206) {
    const cr = parseContentRange(header(res.headers, 'content-range'));
    if (!cr || cr.start !== offset) {
      throw new RegistryError(
        'REGISTRY_ERROR',
        `pull ${subject}: registry answered a Range request with a wrong Content-Range`,
        {
          status: 206,
          retryable: true,
        },
      );
    }
    if (cr.total !== undefined && cr.total !== size) {
      throw new VerificationError(
        'SIZE_MISMATCH',
        `pull ${subject}: registry announced ${cr.total} bytes, expected ${size}`,
        {
          detail: { expected: size, actual: cr.total },
        },
      );
    }
    return 0;
  }
  const cl = header(res.headers, 'content-length');
  if (cl !== undefined && Number(cl) !== size) {
    throw new VerificationError(
      'SIZE_MISMATCH',
      `pull ${subject}: registry announced ${cl} bytes, expected ${size}`,
      {
        detail: { expected: size, actual: Number(cl) },
      },
    );
  }
  return offset;
}

/**
 * Runs an auth step of a request, prefixing its failures with what the request was for, so a token realm that
 * does not answer reads `pull host/app:1: auth token realm …: …`. Aborts pass through unchanged.
 */
async function inContext<T>(ctx: ErrorContext, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const prefix = `${ctx.op} ${ctx.subject}: `;
    if (!(err instanceof StrataError) || err.code === 'ABORTED' || err.message.startsWith(prefix)) throw err;
    throw rephrased(err, `${prefix}${err.message}`);
  }
}

/** A NETWORK failure of a blob body, saying how far the download got: `…; received 0 of 2048 bytes`. */
function withProgress(err: StrataError, received: number, size: number): StrataError {
  return rephrased(err, `${err.message}; received ${received} of ${size} bytes`, { received, size });
}
