import { randomBytes } from 'node:crypto';
import {
  link,
  mkdir,
  open,
  opendir,
  readdir,
  readFile,
  rename,
  stat,
  unlink,
  utimes,
  type FileHandle,
} from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import {
  classifySystemError,
  StrataError,
  TerminalError,
  throwIfAborted,
  VerificationError,
} from '../errors.js';
import { digestAlgorithm, digestHex, digestOf, isDigest, parseDigest, type Digest } from '../oci/digest.js';
import { MediaType } from '../oci/media-types.js';
import { MAX_MANIFEST_BYTES, validateDescriptor, type Descriptor } from '../oci/types.js';
import { discard, fsyncDir, sweepIngests, unlinkQuiet, writeNamedIngest, type IngestHost } from './ingest.js';
import { LeasedStore } from './leased-store.js';
import { LeaseTable, type Lease, type LeaseOptions } from './leases.js';
import { acquireLock, type HeldLock } from './lock.js';
import { ensureReserve, releaseReserve } from './reserve.js';
import { allRootDigests } from './roots.js';
import { silentObserver, type Observer } from '../observe.js';
import type {
  ContentStore,
  ExpectedContent,
  GcResult,
  IngestOptions,
  IngestResult,
  IngestSource,
  RefEntry,
} from './types.js';
import { childrenOf, kindOf } from './walk.js';

/** The annotation that names a ref in an OCI layout's `index.json`. */
export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';

/** Directory inside the root that holds blobs being written (same filesystem, so rename into place is atomic). */
export const INGEST_DIR = 'ingest';

/** Default `readBlob` limit: manifests and configs, never layers. */
export const DEFAULT_READ_LIMIT = 4 * 1024 * 1024;

const OCI_LAYOUT_FILE = 'oci-layout';
const INDEX_FILE = 'index.json';
const LOCK_FILE = 'index.json.lock';
const LAYOUT_VERSION = '1.0.0';
const IO_CHUNK = 1024 * 1024;
const DEFAULT_LOCK_TIMEOUT_MS = 30_000;
const DEFAULT_TEMP_GRACE_MS = 60 * 60 * 1000;
// An update whose lock was broken under it is redone this many times before giving up (retryable).
const LOST_LOCK_ATTEMPTS = 3;
const DEFAULT_INGEST_WAIT_MS = 30 * 60 * 1000;
// The character set of OCI `org.opencontainers.image.ref.name` (annotations.md). Its full grammar is only a SHOULD
// and is stricter than Docker tags (which may end in '.' or '-') and repository names ('__'), so only the set is
// enforced: every full reference and every tag users can push still fits.
const REF_NAME_RE = /^[A-Za-z0-9._:@/+-]+$/;
// Our own temp files at the root (index rewrites, layout creation); swept by gc after the grace period.
const ROOT_TEMP_RE = /^(?:index\.json|oci-layout)\.tmp-[0-9a-f]+$/;

/** Options of {@link FsStore.open}. */
export interface FsStoreOptions {
  /** How long an `index.json` update waits for the lock held by another writer (default 30 s). */
  readonly lockTimeoutMs?: number;
  /**
   * Age below which gc keeps temp files and unreferenced blobs (default 1 h): they may belong to a write in flight
   * whose ref is not set yet.
   */
  readonly tempGraceMs?: number;
  /** Clock in ms since the epoch, compared with file mtimes by gc (injectable for tests). */
  readonly now?: () => number;
  /** A lock not refreshed for this long is stale and broken (default 60 s). */
  readonly staleLockMs?: number;
  /**
   * How long a blob write waits for another writer of the same blob (in any process) before LOCK_TIMEOUT
   * (default 30 min: the other writer is alive, so it is downloading).
   */
  readonly ingestWaitMs?: number;
  /** Where `lease` and `lock-wait` events go (default: nowhere). */
  readonly observer?: Observer;
}

/** The raw `index.json`: we own entries with a ref name we set, and preserve every other field and entry. */
interface IndexFile {
  schemaVersion?: unknown;
  mediaType?: unknown;
  manifests: Record<string, unknown>[];
  [extra: string]: unknown;
}

/**
 * A {@link ContentStore} on the local filesystem, laid out as an OCI image layout that skopeo, umoci and other
 * OCI tools read and write too. Blobs are written to `ingest/` while hashed, verified, fsynced and renamed into
 * `blobs/<alg>/<hex>`; refs are `index.json` entries annotated with `org.opencontainers.image.ref.name`, updated
 * under an exclusive lock file and replaced atomically, so several processes may share one store.
 */
export class FsStore implements ContentStore {
  private readonly lockTimeoutMs: number;
  private readonly tempGraceMs: number;
  private readonly staleLockMs: number | undefined;
  private readonly now: () => number;
  private readonly ingestWaitMs: number;
  private readonly observer: Observer;
  /** The store's leases (files under `strata/leases/`, changed under the index lock). */
  readonly leases: LeaseTable;

  private constructor(
    /** The layout's root directory. */
    readonly root: string,
    options: FsStoreOptions,
  ) {
    this.lockTimeoutMs = options.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
    this.tempGraceMs = options.tempGraceMs ?? DEFAULT_TEMP_GRACE_MS;
    this.staleLockMs = options.staleLockMs;
    this.now = options.now ?? Date.now;
    this.ingestWaitMs = options.ingestWaitMs ?? DEFAULT_INGEST_WAIT_MS;
    this.observer = options.observer ?? silentObserver;
    this.leases = new LeaseTable(root, (signal) => this.lock(signal), this.now, this.observer);
  }

  /**
   * Opens the OCI layout at `root` (resolved to an absolute path once), creating it (and `root`) when missing or
   * empty; opening a complete layout writes nothing, so it works on a full or read-only disk. Throws STORE_CORRUPT
   * when `root` holds something that is not an OCI layout, an unsupported layout version, or an unreadable
   * `index.json`; PERMISSION_DENIED or STORAGE_FULL when it cannot be created. Safe from several processes at once.
   */
  static async open(root: string, options: FsStoreOptions = {}): Promise<FsStore> {
    const abs = resolve(root);
    try {
      await ensureLayout(abs);
    } catch (err) {
      throw classifySystemError(err, `store ${abs}`);
    }
    const store = new FsStore(abs, options);
    await store.readIndex(); // validates index.json now rather than at the first ref operation
    return store;
  }

  /** Absolute path of a blob's file (whether or not it exists). Throws INVALID_DIGEST on a malformed digest. */
  blobPath(digest: Digest): string {
    const d = parseDigest(digest);
    return join(this.root, 'blobs', digestAlgorithm(d), digestHex(d));
  }

  /** Size of the blob if present, else undefined. */
  async stat(digest: Digest): Promise<{ size: number } | undefined> {
    try {
      const st = await stat(this.blobPath(digest));
      return st.isFile() ? { size: st.size } : undefined;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /** True when the blob is present. */
  async has(digest: Digest): Promise<boolean> {
    return (await this.stat(digest)) !== undefined;
  }

  /**
   * A read stream of a present blob, optionally a byte range with an inclusive `end` (clamped to the blob's last
   * byte, as HTTP ranges are). Throws BLOB_UNKNOWN when absent and INVALID_ARGUMENT for an unsatisfiable range.
   */
  async openBlob(digest: Digest, range?: { start?: number; end?: number }): Promise<Readable> {
    const fh = await this.openExisting(digest);
    try {
      const { size } = await fh.stat();
      const start = range?.start ?? 0;
      const end = Math.min(range?.end ?? size - 1, size - 1); // an end past the blob is clamped, as in HTTP
      const valid = (n: number | undefined): boolean =>
        n === undefined || (Number.isSafeInteger(n) && n >= 0);
      if (!valid(range?.start) || !valid(range?.end) || (range?.end !== undefined && range.end < start)) {
        throw new TerminalError(
          'INVALID_ARGUMENT',
          `blob ${digest}: invalid range ${JSON.stringify(range)}`,
          { detail: { size } },
        );
      }
      if (start > 0 && start >= size) {
        throw new TerminalError(
          'INVALID_ARGUMENT',
          `blob ${digest}: range start ${start} is beyond its ${size} bytes`,
          {
            detail: { size, start },
          },
        );
      }
      if (end < start) {
        await fh.close(); // an empty blob: nothing to read
        return Readable.from([]);
      }
      // The stream owns the handle from here (autoClose), so a blob deleted meanwhile still reads from its inode.
      return fh.createReadStream({ start, end, highWaterMark: IO_CHUNK });
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /** Reads a small blob (a manifest or config) whole; throws SIZE_LIMIT above `maxBytes` (default 4 MiB). */
  async readBlob(digest: Digest, maxBytes = DEFAULT_READ_LIMIT): Promise<Buffer> {
    const fh = await this.openExisting(digest);
    try {
      const { size } = await fh.stat();
      if (size > maxBytes) {
        throw new TerminalError(
          'SIZE_LIMIT',
          `blob ${digest}: ${size} bytes exceeds the ${maxBytes}-byte read limit`,
          {
            detail: { size, maxBytes },
          },
        );
      }
      return await fh.readFile();
    } finally {
      await fh.close();
    }
  }

  /**
   * Streams `source` into the store while hashing it, enforcing `expected.size` as bytes flow (failing as soon as it
   * is exceeded) and verifying digest and size at the end; then fsyncs the file, renames it into `blobs/` and
   * fsyncs the directory. When `expected.digest` is already present the source is destroyed unread and `existed`
   * is true. A known digest is written through its named ingest (see ingest.ts): concurrent writers of one blob, in
   * any process, wait for the first and find the blob present; with a resumable `source` (a function of the byte
   * offset) a partial file left by a killed writer is continued. Verification failures and a full disk
   * (STORAGE_FULL) leave nothing partial.
   */
  async ingest(
    source: IngestSource,
    expected: ExpectedContent,
    options: IngestOptions = {},
  ): Promise<IngestResult> {
    const { signal } = options;
    const what = expected.what ?? (expected.digest ? `blob ${expected.digest}` : 'blob');
    try {
      throwIfAborted(signal);
      if (expected.digest !== undefined) parseDigest(expected.digest);
      if (expected.size !== undefined && (!Number.isSafeInteger(expected.size) || expected.size < 0)) {
        throw new TerminalError('INVALID_ARGUMENT', `${what}: invalid expected size ${expected.size}`);
      }
      if (expected.digest !== undefined) {
        const present = await this.claimExisting(expected.digest, expected.size, what);
        if (present) {
          if (typeof source !== 'function') await discard(source);
          return { digest: expected.digest, size: present.size, existed: true };
        }
      }
    } catch (err) {
      if (typeof source !== 'function') await discard(source);
      throw err;
    }
    return writeNamedIngest(this.ingestHost, source, { ...expected, what }, options);
  }

  /** Writes a small in-memory blob (manifest, config), verifying `expected` when given; idempotent. */
  async putBytes(bytes: Uint8Array, expected: ExpectedContent = {}): Promise<IngestResult> {
    const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    // Knowing the digest up front lets an existing blob short-circuit; the digest is still verified by ingest.
    const digest = expected.digest ?? digestOf(buf);
    return this.ingest(Readable.from([buf]), { ...expected, digest });
  }

  /** See {@link ContentStore.claim}: `stat` plus a size check and an mtime refresh that gc's grace rule honours. */
  claim(
    digest: Digest,
    expectedSize?: number,
    options: { signal?: AbortSignal } = {},
  ): Promise<{ size: number } | undefined> {
    throwIfAborted(options.signal);
    return this.claimExisting(digest, expectedSize, `blob ${digest}`);
  }

  /**
   * Creates a lease (see leases.ts): content added to it — directly or through {@link leased} — is kept by gc,
   * `rmi` and layer-cache pruning until the lease is released or expires.
   */
  createLease(options: LeaseOptions): Promise<Lease> {
    return this.leases.create(options);
  }

  /** A view of this store whose claims, presence checks and writes add what they touch to `lease`. */
  leased(lease: Lease): ContentStore {
    return new LeasedStore(this, lease);
  }

  /** Blobs and layer-cache entries held by live leases (read without the lock: a snapshot). */
  leasedContent(): Promise<{ digests: Set<Digest>; chainIds: Set<Digest> }> {
    return this.leases.liveContent();
  }

  /** Removes a blob; true if it existed. Does not check whether a ref still needs it (that is gc's job). */
  async deleteBlob(digest: Digest): Promise<boolean> {
    try {
      await unlink(this.blobPath(digest));
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  /** Every blob under `blobs/<alg>/<hex>` with its size; files whose names are not valid digests are ignored. */
  async *listBlobs(): AsyncIterable<{ digest: Digest; size: number }> {
    for await (const b of this.scanBlobs()) yield { digest: b.digest, size: b.size };
  }

  /** All refs in `index.json`, in file order; each descriptor is as stored, minus the ref-name annotation. */
  async listRefs(): Promise<RefEntry[]> {
    const index = await this.readIndex();
    const out: RefEntry[] = [];
    index.manifests.forEach((entry, i) => {
      const name = refNameOf(entry);
      if (name !== undefined)
        out.push({ name, descriptor: toDescriptor(entry, `${this.indexPath}: manifests[${i}]`) });
    });
    return out;
  }

  /** The descriptor a ref names (as stored, minus the ref-name annotation), or undefined. */
  async getRef(name: string): Promise<Descriptor | undefined> {
    const index = await this.readIndex();
    const i = index.manifests.findIndex((e) => refNameOf(e) === name);
    const entry = index.manifests[i];
    return entry ? toDescriptor(entry, `${this.indexPath}: manifests[${i}]`) : undefined;
  }

  /**
   * Creates or moves a ref atomically: the entry with this ref name is replaced in place (any duplicates removed),
   * else appended. Every other entry and field of `index.json` is kept. Throws INVALID_REFERENCE for a name outside
   * the OCI ref-name character set, MANIFEST_INVALID for a malformed descriptor.
   */
  async setRef(name: string, descriptor: Descriptor, options: { signal?: AbortSignal } = {}): Promise<void> {
    checkRefName(name);
    validateDescriptor(descriptor, `ref ${name}`);
    const entry: Record<string, unknown> = {
      ...descriptor,
      annotations: { ...descriptor.annotations, [REF_NAME_ANNOTATION]: name },
    };
    // Already so: no lock, no write (the answer is as of this read, which is all a lock would give too).
    if (isOnlyEntry(await this.readIndex(), name, entry)) return;
    await this.updateIndex((index) => {
      // Already exactly so (one entry, same content): write nothing, so index.json and its mtime stay as they are.
      if (isOnlyEntry(index, name, entry)) return false;
      // Replace the first entry of this name in place (keeping file order), drop duplicates, else append.
      let placed = false;
      index.manifests = index.manifests.flatMap((e) => {
        if (refNameOf(e) !== name) return [e];
        if (placed) return [];
        placed = true;
        return [entry];
      });
      if (!placed) index.manifests.push(entry);
      return true;
    }, options.signal);
  }

  /** Removes a ref; true if it existed. Blobs stay until gc. */
  async deleteRef(name: string, options: { signal?: AbortSignal } = {}): Promise<boolean> {
    let existed = false;
    await this.updateIndex((index) => {
      const kept = index.manifests.filter((e) => refNameOf(e) !== name);
      existed = kept.length !== index.manifests.length;
      index.manifests = kept;
      return existed;
    }, options.signal);
    return existed;
  }

  /**
   * Mark and sweep under the index lock (so no ref can be set meanwhile). Roots are every entry of `index.json`
   * (named or not: entries other tools wrote count too), `extraRoots`, live leases and the entries of the root sets
   * (`roots.ts`; kept as they are, not walked). Indexes are walked into their manifests,
   * manifests into config, layers and subject; blobs of unknown media types are kept but not descended into;
   * reachable digests that are absent (a partial, single-platform pull) are fine. Every other blob is removed, as are
   * temp files, except those whose mtime is younger than `tempGraceMs`: an ingest in flight has no ref yet, so
   * young blobs are kept too (ingest refreshes the mtime of a blob it found present for the same reason).
   * `bytesFreed` counts removed blobs and temp files; `kept` counts blobs left. `dryRun` reports without deleting.
   * With `only`, just those blobs are candidates, and the grace rule does not protect them: the caller knows it
   * released them (`rmi` of an image it just untagged).
   */
  async gc(
    options: {
      signal?: AbortSignal;
      dryRun?: boolean;
      extraRoots?: readonly Digest[];
      only?: readonly Digest[];
    } = {},
  ): Promise<GcResult> {
    const { signal, dryRun = false } = options;
    const lock = await this.lock(signal);
    try {
      const index = await this.readIndex();
      // Leases are read (and the expired ones dropped) under the lock that every lease change takes: content a
      // holder added before this point is kept, and a holder adding after it waits for this gc to finish.
      const leased = (await this.leases.sweep(dryRun)).flatMap((l) => l.digests);
      const reachable = await this.mark(index, [...(options.extraRoots ?? []), ...leased], signal);
      // Root sets (caches such as the mirror's) keep each named blob itself, without walking into it.
      for (const d of await allRootDigests(this.root)) reachable.add(d);
      const cutoff = this.now() - this.tempGraceMs;
      const removed: Digest[] = [];
      let bytesFreed = 0;
      let kept = 0;
      const only = options.only ? new Set(options.only) : undefined;
      for await (const blob of this.scanBlobs()) {
        throwIfAborted(signal);
        if (only && !only.has(blob.digest)) continue;
        if (reachable.has(blob.digest) || (!only && blob.mtimeMs > cutoff)) {
          kept++;
          continue;
        }
        if (!dryRun && !(await this.deleteBlob(blob.digest))) continue;
        removed.push(blob.digest);
        bytesFreed += blob.size;
      }
      if (!only) bytesFreed += await this.sweepTemps(cutoff, dryRun, signal);
      if (!dryRun && bytesFreed > 0) await ensureReserve(this.root, 0); // a full disk freed: take the reserve back
      return { removed, bytesFreed, kept };
    } finally {
      await lock.release();
    }
  }

  // ---- internals ----

  private get indexPath(): string {
    return join(this.root, INDEX_FILE);
  }

  private async openExisting(digest: Digest): Promise<FileHandle> {
    try {
      return await open(this.blobPath(digest), 'r');
    } catch (err) {
      if (isNotFound(err)) {
        throw new TerminalError('BLOB_UNKNOWN', `blob ${digest} is not in the store at ${this.root}`, {
          detail: { digest },
        });
      }
      throw err;
    }
  }

  /**
   * If the blob is present: checks the expected size against it and refreshes its mtime, so a gc running before the
   * caller sets a ref treats it as young (the grace rule) rather than sweeping it. Returns its size, or undefined.
   */
  private async claimExisting(
    digest: Digest,
    expectedSize: number | undefined,
    what: string,
  ): Promise<{ size: number } | undefined> {
    const present = await this.stat(digest);
    if (!present) return undefined;
    if (expectedSize !== undefined && expectedSize !== present.size) {
      throw new VerificationError(
        'SIZE_MISMATCH',
        `${what}: size mismatch: expected ${expectedSize} bytes, but the stored blob with this digest has ${present.size}`,
        { detail: { expected: expectedSize, actual: present.size } },
      );
    }
    const t = new Date();
    await utimes(this.blobPath(digest), t, t).catch(() => undefined);
    return present;
  }

  private async *scanBlobs(): AsyncGenerator<{ digest: Digest; size: number; mtimeMs: number }> {
    const blobs = join(this.root, 'blobs');
    let algs: string[];
    try {
      algs = await readdir(blobs);
    } catch (err) {
      if (isNotFound(err)) return;
      throw err;
    }
    for (const alg of algs.sort()) {
      let dir;
      try {
        dir = await opendir(join(blobs, alg), { bufferSize: 256 });
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') continue;
        throw err;
      }
      for await (const ent of dir) {
        const digest = `${alg}:${ent.name}`;
        if (!isDigest(digest)) continue;
        try {
          const st = await stat(join(blobs, alg, ent.name));
          if (st.isFile()) yield { digest, size: st.size, mtimeMs: st.mtimeMs };
        } catch (err) {
          if (!isNotFound(err)) throw err; // deleted while we listed: not a blob any more
        }
      }
    }
  }

  private async mark(
    index: IndexFile,
    extraRoots: readonly Digest[],
    signal: AbortSignal | undefined,
  ): Promise<Set<Digest>> {
    const reachable = new Set<Digest>();
    const queue: { digest: Digest; mediaType: string | undefined }[] = [];
    const push = (digest: Digest, mediaType: string | undefined): void => {
      if (!reachable.has(digest)) {
        reachable.add(digest);
        queue.push({ digest, mediaType });
      }
    };
    for (const entry of index.manifests) {
      if (typeof entry.digest === 'string' && isDigest(entry.digest)) {
        push(entry.digest, typeof entry.mediaType === 'string' ? entry.mediaType : undefined);
      }
    }
    for (const d of extraRoots) push(parseDigest(d), undefined);
    for (let item = queue.shift(); item; item = queue.shift()) {
      throwIfAborted(signal);
      const kind = kindOf(item.mediaType);
      if (kind === 'opaque') continue;
      const doc = await this.readJsonQuiet(item.digest);
      if (doc === undefined) continue;
      for (const child of childrenOf(doc, kind) ?? []) push(child.digest, child.mediaType);
    }
    return reachable;
  }

  /** A small JSON blob, or undefined when absent, too large or not JSON (gc keeps it regardless). */
  private async readJsonQuiet(digest: Digest): Promise<unknown> {
    let bytes: Buffer;
    try {
      bytes = await this.readBlob(digest, MAX_MANIFEST_BYTES);
    } catch (err) {
      if (err instanceof StrataError && (err.code === 'BLOB_UNKNOWN' || err.code === 'SIZE_LIMIT'))
        return undefined;
      throw err;
    }
    try {
      return JSON.parse(bytes.toString('utf8')) as unknown;
    } catch {
      return undefined;
    }
  }

  private async sweepTemps(
    cutoff: number,
    dryRun: boolean,
    signal: AbortSignal | undefined,
  ): Promise<number> {
    let freed = 0;
    const sweepDir = async (dir: string, match: (name: string) => boolean): Promise<void> => {
      let names: string[];
      try {
        names = await readdir(dir);
      } catch (err) {
        if (isNotFound(err)) return;
        throw err;
      }
      for (const name of names) {
        throwIfAborted(signal);
        if (!match(name)) continue;
        const path = join(dir, name);
        try {
          const st = await stat(path);
          if (!st.isFile() || st.mtimeMs > cutoff) continue;
          if (!dryRun) await unlink(path);
          freed += st.size;
        } catch (err) {
          if (!isNotFound(err)) throw err;
        }
      }
    };
    // Ingests go when no live writer owns them (whatever their age); a live writer's are kept.
    freed += await sweepIngests(this.ingestHost, { dryRun, cutoff, ...(signal ? { signal } : {}) });
    await sweepDir(this.root, (name) => ROOT_TEMP_RE.test(name));
    return freed;
  }

  private get ingestHost(): IngestHost {
    return {
      dir: join(this.root, INGEST_DIR),
      blobPath: (d) => this.blobPath(d),
      claimExisting: (d, size, what) => this.claimExisting(d, size, what),
      waitMs: this.ingestWaitMs,
      staleMs: this.staleLockMs,
      observer: this.observer,
    };
  }

  private async lock(signal: AbortSignal | undefined): Promise<HeldLock> {
    try {
      return await acquireLock(join(this.root, LOCK_FILE), {
        timeoutMs: this.lockTimeoutMs,
        ...(this.staleLockMs !== undefined ? { staleMs: this.staleLockMs } : {}),
        ...(signal ? { signal } : {}),
        observer: this.observer,
        what: `store ${this.root}`,
      });
    } catch (err) {
      throw classifySystemError(err, `store ${this.root}: taking the index lock`);
    }
  }

  /** Reads `index.json`; throws STORE_CORRUPT when it is not a JSON object with a `manifests` array. */
  private async readIndex(): Promise<IndexFile> {
    let text: string;
    try {
      text = await readFile(this.indexPath, 'utf8');
    } catch (err) {
      const classified = classifySystemError(err, `store ${this.root}: reading ${INDEX_FILE}`);
      if (classified !== err) throw classified;
      throw new TerminalError('STORE_CORRUPT', `${this.indexPath}: cannot read the layout index`, {
        cause: err,
      });
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new TerminalError('STORE_CORRUPT', `${this.indexPath}: not valid JSON`, { cause: err });
    }
    if (typeof json !== 'object' || json === null || Array.isArray(json)) {
      throw new TerminalError('STORE_CORRUPT', `${this.indexPath}: not a JSON object`);
    }
    const index = json as IndexFile;
    if (index.manifests === undefined || index.manifests === null) index.manifests = [];
    if (
      !Array.isArray(index.manifests) ||
      index.manifests.some((m) => typeof m !== 'object' || m === null || Array.isArray(m))
    ) {
      throw new TerminalError(
        'STORE_CORRUPT',
        `${this.indexPath}: "manifests" is not an array of descriptors`,
      );
    }
    return index;
  }

  /**
   * Read-modify-write of `index.json` under the lock; the new file replaces the old by rename, never partially.
   * `change` may run more than once: when our lock was broken while we worked (a stall past the stale time), the
   * write is dropped and the whole update redone on the new index rather than clobbering the other holder's.
   */
  private async updateIndex(
    change: (index: IndexFile) => boolean,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const lock = await this.lock(signal);
      try {
        const index = await this.readIndex();
        if (!change(index)) return;
        if (await this.writeIndex(`${JSON.stringify(index)}\n`, lock)) return;
      } finally {
        await lock.release();
      }
      if (attempt >= LOST_LOCK_ATTEMPTS) {
        throw new StrataError(
          'LOCK_TIMEOUT',
          `store ${this.root}: lost the index lock ${LOST_LOCK_ATTEMPTS} times while updating ${INDEX_FILE} (is the event loop stalling longer than the stale-lock time?); retry later`,
          { retryable: true, detail: { root: this.root } },
        );
      }
    }
  }

  /**
   * Replaces `index.json` (lock held), unless the lock turned out lost (false). On ENOSPC/EDQUOT the store's
   * reserve is released and the write retried once, so untagging works on a full disk; errors become STORAGE_FULL
   * or PERMISSION_DENIED with no temp file left. After a write the reserve is re-created when there is room.
   */
  private async writeIndex(content: string, lock: HeldLock): Promise<boolean> {
    for (let retried = false; ; retried = true) {
      try {
        if (!(await writeFileAtomic(this.root, INDEX_FILE, content, () => lock.verify()))) return false;
        break;
      } catch (err) {
        if (!retried && isNoSpace(err) && (await releaseReserve(this.root))) continue;
        throw classifySystemError(err, `store ${this.root}: writing ${INDEX_FILE}`);
      }
    }
    await ensureReserve(this.root, 2 * Buffer.byteLength(content));
    return true;
  }
}

/** Creates the layout files that are missing, or checks the ones present; a complete layout is only read. */
async function ensureLayout(root: string): Promise<void> {
  try {
    const st = await stat(root);
    if (!st.isDirectory())
      throw new TerminalError(
        'STORE_CORRUPT',
        `${root} is not a directory, so it cannot be an OCI image layout`,
      );
  } catch (err) {
    if (!isNotFound(err)) throw err;
    await mkdirIfAbsent(root);
  }
  const layoutPath = join(root, OCI_LAYOUT_FILE);
  let layoutText: string | undefined;
  try {
    layoutText = await readFile(layoutPath, 'utf8');
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  if (layoutText === undefined) {
    // Refuse to turn a directory of other things into a store; our own leftovers (another opener racing) are fine.
    const others = (await readdir(root)).filter((n) => !ROOT_TEMP_RE.test(n));
    if (others.length > 0) {
      // A concurrent opener may have created the layout since we looked: then it is a layout, not "other things".
      layoutText = await readFile(layoutPath, 'utf8').catch(() => undefined);
      if (layoutText === undefined) {
        throw new TerminalError(
          'STORE_CORRUPT',
          `${root} is not an OCI image layout (no ${OCI_LAYOUT_FILE} file) and is not empty; refusing to use it as a store`,
          { detail: { root, entries: others.slice(0, 5) } },
        );
      }
    }
  }
  if (layoutText === undefined) {
    // oci-layout goes first: a concurrent opener that sees it treats the directory as a layout and completes it.
    await writeFileAtomic(root, OCI_LAYOUT_FILE, JSON.stringify({ imageLayoutVersion: LAYOUT_VERSION }));
  } else {
    let version: unknown;
    try {
      version = (JSON.parse(layoutText) as { imageLayoutVersion?: unknown }).imageLayoutVersion;
    } catch (err) {
      throw new TerminalError('STORE_CORRUPT', `${layoutPath}: not valid JSON`, { cause: err });
    }
    if (typeof version !== 'string' || !/^1\.\d+\.\d+$/.test(version)) {
      throw new TerminalError(
        'STORE_CORRUPT',
        `${layoutPath}: unsupported imageLayoutVersion ${JSON.stringify(version)} (want 1.x)`,
      );
    }
  }
  await mkdirIfAbsent(join(root, 'blobs', 'sha256'));
  await mkdirIfAbsent(join(root, INGEST_DIR));
  if (!(await exists(join(root, INDEX_FILE)))) {
    await createIfAbsent(
      root,
      INDEX_FILE,
      `${JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] })}\n`,
    );
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

/**
 * `mkdir -p`, but only when missing (even creating an existing directory fails on some read-only mounts), and
 * reporting the real error: Node's recursive mkdir says ENOENT where the kernel said EROFS.
 */
async function mkdirIfAbsent(dir: string): Promise<void> {
  if (await exists(dir)) return;
  try {
    await mkdir(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return;
    if (code !== 'ENOENT' || dirname(dir) === dir) throw err;
    await mkdirIfAbsent(dirname(dir));
    await mkdirIfAbsent(dir);
  }
}

/**
 * Writes `root/name` through a temp file, fsync and rename, then fsyncs the directory. When `guard` is given it
 * runs right before the rename; if it says no, the temp file is removed, nothing is replaced, and false returned.
 */
async function writeFileAtomic(
  root: string,
  name: string,
  content: string,
  guard?: () => Promise<boolean>,
): Promise<boolean> {
  const tmp = join(root, `${name}.tmp-${randomBytes(8).toString('hex')}`);
  try {
    await writeDurable(tmp, content);
    if (guard && !(await guard())) {
      await unlinkQuiet(tmp);
      return false;
    }
    await rename(tmp, join(root, name));
  } catch (err) {
    await unlinkQuiet(tmp).catch(() => undefined);
    throw err;
  }
  await fsyncDir(root);
  return true;
}

/** Creates `root/name` with `content` only if it does not exist (link fails on EEXIST), never clobbering. */
async function createIfAbsent(root: string, name: string, content: string): Promise<void> {
  const tmp = join(root, `${name}.tmp-${randomBytes(8).toString('hex')}`);
  try {
    await writeDurable(tmp, content);
    await link(tmp, join(root, name));
    await fsyncDir(root);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    await unlinkQuiet(tmp).catch(() => undefined);
  }
}

async function writeDurable(path: string, content: string): Promise<void> {
  const fh = await open(path, 'wx');
  try {
    await fh.writeFile(content);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function refNameOf(entry: Record<string, unknown>): string | undefined {
  const ann = entry.annotations;
  if (typeof ann !== 'object' || ann === null) return undefined;
  const name = (ann as Record<string, unknown>)[REF_NAME_ANNOTATION];
  return typeof name === 'string' ? name : undefined;
}

function toDescriptor(entry: Record<string, unknown>, what: string): Descriptor {
  let d: Descriptor;
  try {
    d = validateDescriptor(entry, what);
  } catch (err) {
    throw new TerminalError('STORE_CORRUPT', (err as Error).message, { cause: err });
  }
  const { [REF_NAME_ANNOTATION]: _name, ...rest } = d.annotations ?? {};
  const { annotations: _ann, ...base } = d;
  return Object.keys(rest).length > 0 ? { ...base, annotations: rest } : base;
}

/** True when `entry` is the one and only entry named `name`. */
function isOnlyEntry(index: IndexFile, name: string, entry: Record<string, unknown>): boolean {
  const same = index.manifests.filter((e) => refNameOf(e) === name);
  return same.length === 1 && sameJson(same[0], entry);
}

/** Deep equality of two JSON values, ignoring key order. */
function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a).filter((k) => (a as Record<string, unknown>)[k] !== undefined);
  const kb = Object.keys(b).filter((k) => (b as Record<string, unknown>)[k] !== undefined);
  return (
    ka.length === kb.length &&
    ka.every((k) => sameJson((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]))
  );
}

function checkRefName(name: string): void {
  if (!REF_NAME_RE.test(name)) {
    throw new TerminalError(
      'INVALID_REFERENCE',
      `invalid ref name ${JSON.stringify(name)}: want letters, digits and -._:@/+ only`,
    );
  }
}

function isNoSpace(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
}
