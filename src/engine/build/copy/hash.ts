/**
 * The cache-key digest of a COPY/ADD: what the copy would copy (after `.dockerignore` and globs) and how.
 * Never mtimes, so a fresh checkout of the same files hits the cache.
 */
import { createHash } from 'node:crypto';
import { closeSync, constants, openSync, readSync } from 'node:fs';
import type { Digest } from '../../oci/digest.js';
import { AbortedError, throwIfAborted } from '../../errors.js';
import type { FileDigestCache } from './digest-cache.js';
import { turnEvery } from '../../util/yield.js';
import { openNoFollow, readBufferSize } from './paths.js';
import { planCopy, type SourceEntry } from './sources.js';
import type { HashSources } from './types.js';

/** Event-loop turns of the synchronous small-file hashing. */
const tick = turnEvery();

/** Files hashed at once: enough to keep the thread pool busy, few enough to bound open files and buffers. */
const HASH_CONCURRENCY = 8;
/** Files up to this size are read with plain reads into one buffer; larger ones are streamed. */
const SMALL_FILE = 1 << 20;

async function fileDigest(host: string, size: number, signal: AbortSignal | undefined): Promise<string> {
  const h = createHash('sha256');
  if (size <= SMALL_FILE) {
    // No stream for a small file: one buffer and a few synchronous reads (a thread-pool round trip per call costs
    // more than the read, see util/yield.ts), to EOF, so that a file that grew is hashed whole.
    throwIfAborted(signal);
    const fd = openSync(host, constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      const buf = Buffer.allocUnsafe(readBufferSize(size));
      for (;;) {
        const bytesRead = readSync(fd, buf, 0, buf.length, null);
        if (bytesRead === 0) break;
        h.update(buf.subarray(0, bytesRead));
      }
    } finally {
      closeSync(fd);
    }
    return h.digest('hex');
  }
  const stream = await openNoFollow(host, size);
  const onAbort = (): void => {
    stream.destroy(new AbortedError('hashing COPY sources aborted'));
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    for await (const chunk of stream) h.update(chunk as Buffer);
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  return h.digest('hex');
}

/**
 * The content digests of `entries`' regular files (undefined for the others), by index, computed
 * {@link HASH_CONCURRENCY} at a time; the first failure stops the rest and is thrown.
 */
async function fileDigests(
  entries: readonly SourceEntry[],
  signal: AbortSignal | undefined,
  cache: FileDigestCache | undefined,
): Promise<(string | undefined)[]> {
  const out: (string | undefined)[] = new Array<string | undefined>(entries.length);
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed && next < entries.length) {
      const i = next++;
      const e = entries[i]!;
      if (e.kind !== 'file') continue;
      try {
        throwIfAborted(signal);
        // Small files are read synchronously: the event loop (abort, progress) gets a turn every so often.
        await tick();
        const known = cache?.lookup(e);
        if (known !== undefined) {
          out[i] = known;
          continue;
        }
        const started = Date.now();
        const digest = await fileDigest(e.host, e.size, signal);
        cache?.record(e, digest, started);
        out[i] = digest;
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  const workers = Array.from({ length: Math.min(HASH_CONCURRENCY, entries.length) }, worker);
  const settled = await Promise.allSettled(workers);
  const rejected = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (rejected) throw rejected.reason;
  return out;
}

/**
 * {@link HashSources}: a `sha256:` digest over the request's instruction, destination (resolved against the
 * workdir), chown, chmod, unpack flag and URL checksum, and per source its entries in walk order: relative path,
 * type, mode, owner (`--from` roots only; context files count as 0:0), link target, device numbers, and the
 * content's sha256 (read, or taken from `request.digestCache` while the file's identity is unchanged). A URL source counts as its checksum when given, else as the URL itself (the
 * content is not fetched). Throws exactly as the copy would, before reading any content.
 */
export const hashSources: HashSources = async (request) => {
  const plan = await planCopy(request);
  const h = createHash('sha256');
  const put = (record: unknown[]): void => {
    h.update(`${JSON.stringify(record)}\n`);
  };
  put([
    'strata-copy-v1',
    request.instruction,
    plan.destRel,
    plan.destIsDir,
    request.chown ? [request.chown.uid, request.chown.gid] : null,
    request.chmod ?? null,
    request.instruction === 'ADD' ? request.unpack !== false : null,
  ]);
  const entry = (e: SourceEntry, digest: string | undefined): void => {
    const owner = plan.fromContext ? [0, 0] : [e.uid, e.gid];
    const content = e.kind === 'file' ? digest : null;
    put([
      'entry',
      e.rel,
      e.kind,
      e.mode,
      owner,
      e.linkTarget ?? null,
      e.kind === 'char' || e.kind === 'block' ? e.rdev : null,
      content,
    ]);
  };
  for (const s of plan.sources) {
    if (s.kind === 'url') put(['url', request.checksum ?? s.url.href]);
    else if (s.kind === 'inline') put(['inline', s.name, s.content]);
    else {
      put(['source', s.name, s.item.kind]);
      const digests = await fileDigests(s.entries, request.signal, request.digestCache);
      s.entries.forEach((e, i) => entry(e, digests[i]));
    }
  }
  return `sha256:${h.digest('hex')}` as Digest;
};
