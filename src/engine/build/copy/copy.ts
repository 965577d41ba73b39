/**
 * COPY and ADD into a step's root with docker's rules (see README "copy"): the sources are planned first
 * (`sources.ts`, shared with the cache-key hash), then written through {@link DestWriter}, which never leaves
 * the root.
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, constants, createWriteStream, openSync, readSync } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  AbortedError,
  classifySystemError,
  StrataError,
  TerminalError,
  throwIfAborted,
} from '../../errors.js';
import { readXattrTree, publicXattrs } from '../../commit/xattrs.js';
import { detectArchive, extractArchive } from './archive.js';
import { DestWriter, splitDev, type EntryMeta } from './dest.js';
import { fetchUrl, urlFileName } from './fetch.js';
import { fileNameOf, joinRel, openNoFollow } from './paths.js';
import { planCopy, type CopyPlan, type PlannedSource, type SourceEntry } from './sources.js';
import type { CopyIntoRoot, CopyRequest } from './types.js';
import { turnEvery } from '../../util/yield.js';

/** Event-loop turns of the synchronous small-file copies. */
const tick = turnEvery();

/** Regular files of a directory source written at once (each holds one read buffer of at most 1 MiB). */
const COPY_CONCURRENCY = 8;

/** Attributes never copied: SELinux labels belong to the host's policy. */
function copyableXattr(name: string): boolean {
  return name !== 'security.selinux';
}

interface Ctx {
  readonly request: CopyRequest;
  readonly plan: CopyPlan;
  readonly w: DestWriter;
  /** Whether `plan.destRel` is an existing directory (or a symlink to one) in the root. */
  readonly destExistsAsDir: boolean;
  /** Hard links between copied files: source `dev:ino` → host path written. */
  readonly links: Map<string, string>;
  destDir?: string;
}

/** The canonical destination directory, made on first use. */
async function destDir(ctx: Ctx): Promise<string> {
  ctx.destDir ??= await ctx.w.ensureDir(ctx.plan.destRel);
  return ctx.destDir;
}

/** Where a single named item goes: inside the destination directory, or the destination itself. */
async function fileTarget(ctx: Ctx, name: string, what: string): Promise<string> {
  if (ctx.plan.destIsDir || ctx.destExistsAsDir) {
    if (name === '')
      throw new TerminalError(
        'DOCKERFILE_INVALID',
        `${ctx.request.instruction}: cannot determine a file name for ${what}; give a destination file name`,
      );
    return joinRel(await destDir(ctx), name);
  }
  return ctx.plan.destRel;
}

function metaOf(ctx: Ctx, e: SourceEntry): EntryMeta {
  const { chown, chmod } = ctx.request;
  // Context files become 0:0; `--from` roots keep their owners (BuildKit), `--chown` wins over both.
  const owner = chown ?? (ctx.plan.fromContext ? { uid: 0, gid: 0 } : { uid: e.uid, gid: e.gid });
  const mode = chmod !== undefined && (e.kind === 'file' || e.kind === 'dir') ? chmod : e.mode;
  return { uid: owner.uid, gid: owner.gid, mode, atime: e.atimeMs / 1000, mtime: e.mtimeMs / 1000 };
}

/** Files up to this size are read into memory whole and written in one call (no streams per file). */
const SMALL_FILE = 256 * 1024;

/**
 * The bytes of a small source file listed with `size` bytes (O_NOFOLLOW, as {@link openNoFollow}); undefined when
 * it grew since it was listed — the caller then streams it, so memory stays bounded by the listed size.
 */
async function readSmall(host: string, size: number): Promise<Buffer | undefined> {
  await Promise.resolve();
  // Synchronous reads: a small file is a few microseconds of syscalls, a thread-pool round trip each costs more
  // (see util/yield.ts).
  const fd = openSync(host, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const buf = Buffer.allocUnsafe(size + 1);
    let got = 0;
    for (;;) {
      const bytesRead = readSync(fd, buf, got, buf.length - got, null);
      if (bytesRead === 0) return buf.subarray(0, got);
      got += bytesRead;
      if (got > size) return undefined;
    }
  } finally {
    closeSync(fd);
  }
}

/** Copies one entry of a local source to canonical-or-not `rel`; answers the host path written, if any. */
async function copyEntry(ctx: Ctx, e: SourceEntry, rel: string): Promise<string | undefined> {
  const { w } = ctx;
  const meta = metaOf(ctx, e);
  switch (e.kind) {
    case 'dir': {
      const dir = await w.ensureDir(rel, meta);
      const host = w.root.host(dir);
      w.addDirTimes(host, meta.atime, meta.mtime);
      w.countFile();
      return host;
    }
    case 'file': {
      const key = `${e.dev}:${e.ino}`;
      const seen = e.nlink > 1 ? ctx.links.get(key) : undefined;
      if (seen) {
        await w.hardlink(rel, seen);
        return undefined;
      }
      const small = e.size <= SMALL_FILE ? await readSmall(e.host, e.size) : undefined;
      const host = small
        ? await w.writeFileBytes(rel, small, meta)
        : await w.writeFile(rel, await openNoFollow(e.host, e.size), meta);
      if (e.nlink > 1) ctx.links.set(key, host);
      return host;
    }
    case 'symlink':
      await w.writeSymlink(rel, e.linkTarget ?? '', meta);
      return undefined;
    default: {
      const { major, minor } = splitDev(e.rdev);
      await w.writeNode(rel, e.kind, major, minor, meta);
      return w.root.host(await w.place(rel));
    }
  }
}

async function copyLocal(ctx: Ctx, s: Extract<PlannedSource, { kind: 'local' }>): Promise<void> {
  const { request, w } = ctx;
  const xattrs = await readXattrTree(s.item.host, request.signal ? { signal: request.signal } : {});
  const keep = (host: string | undefined, rel: string): void => {
    const all = publicXattrs(xattrs.get(rel));
    if (!host || !all) return;
    w.addXattrs(
      host,
      Object.entries(all).filter(([k]) => copyableXattr(k)),
    );
  };
  if (s.item.kind === 'dir') {
    // A directory source copies its contents, not the directory itself (docker's rule).
    const dir = await destDir(ctx);
    // Entries come parents first, so a file's directory exists before the file is started: regular files (not
    // hard-linked, whose order matters) are written COPY_CONCURRENCY at a time; everything else in order.
    const inFlight = new Set<Promise<void>>();
    let failure: { err: unknown } | undefined;
    try {
      for (const e of s.entries) {
        // Small files are read and written synchronously: the event loop (abort, progress) gets a turn every so often.
        await tick();
        throwIfAborted(request.signal);
        if (failure) break;
        const rel = joinRel(dir, e.rel);
        if (e.kind !== 'file' || e.nlink > 1) {
          keep(await copyEntry(ctx, e, rel), e.rel);
          continue;
        }
        if (inFlight.size >= COPY_CONCURRENCY) await Promise.race(inFlight);
        const p: Promise<void> = copyEntry(ctx, e, rel).then(
          (host) => keep(host, e.rel),
          (err: unknown) => void (failure ??= { err }),
        );
        const tracked = p.finally(() => inFlight.delete(tracked));
        inFlight.add(tracked);
      }
    } finally {
      // Never return (or fail) with writes still going on in the root.
      await Promise.all(inFlight);
    }
    if (failure) throw failure.err;
    return;
  }
  if (request.instruction === 'ADD' && request.unpack !== false && s.item.kind === 'file') {
    const kind = await detectArchive(s.item.host, request.signal);
    if (kind !== undefined) {
      await extractArchive(w, s.item.host, kind, await destDir(ctx), {
        ...(request.chown ? { chown: request.chown } : {}),
        ...(request.chmod !== undefined ? { chmod: request.chmod } : {}),
        ...(request.signal ? { signal: request.signal } : {}),
      });
      return;
    }
  }
  const target = await fileTarget(ctx, s.name, JSON.stringify(s.spec));
  keep(await copyEntry(ctx, s.item, target), '');
}

async function copyUrl(ctx: Ctx, s: Extract<PlannedSource, { kind: 'url' }>): Promise<void> {
  const { request, w } = ctx;
  const target = await fileTarget(ctx, urlFileName(s.url), s.url.href);
  const canon = await w.place(target);
  const limits = request.fetch ?? {};
  const maxBytes = limits.maxBytes ?? 8 * 1024 ** 3;
  const fetched = await fetchUrl(s.url, { ...limits, ...(request.signal ? { signal: request.signal } : {}) });
  // Download next to the target, then rename: a failed or mismatching download leaves nothing behind.
  const parent = canon.includes('/') ? canon.slice(0, canon.lastIndexOf('/')) : '';
  const temp = w.root.host(joinRel(parent, `.strata-add-${randomBytes(6).toString('hex')}`));
  const hash = createHash('sha256');
  let size = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      size += chunk.length;
      if (size > maxBytes) {
        cb(new TerminalError('SIZE_LIMIT', `ADD ${s.url.href}: more than ${maxBytes} bytes`));
        return;
      }
      hash.update(chunk);
      w.countBytes(chunk.length);
      cb(null, chunk);
    },
  });
  try {
    await pipeline(fetched.body, meter, createWriteStream(temp, { flags: 'wx', mode: 0o600 }), {
      ...(request.signal ? { signal: request.signal } : {}),
    });
    const got = `sha256:${hash.digest('hex')}`;
    if (request.checksum !== undefined && got !== request.checksum)
      throw new TerminalError(
        'DIGEST_MISMATCH',
        `ADD ${s.url.href}: checksum mismatch: expected ${request.checksum}, got ${got}`,
        { detail: { url: s.url.href, expected: request.checksum, actual: got } },
      );
    const mtime = fetched.lastModified ?? request.sourceDateEpoch ?? 0;
    const owner = request.chown ?? { uid: 0, gid: 0 };
    await w.moveInto(temp, target, { ...owner, mode: request.chmod ?? 0o600, atime: mtime, mtime });
  } catch (err) {
    await unlink(temp).catch(() => {});
    if (request.signal?.aborted) throw new AbortedError(`ADD ${s.url.href} aborted`, err);
    if (err instanceof StrataError) throw err;
    throw new StrataError('NETWORK', `ADD ${s.url.href}: ${(err as Error).message}`, {
      retryable: true,
      cause: err,
    });
  } finally {
    fetched.close();
  }
}

async function copyInline(ctx: Ctx, s: Extract<PlannedSource, { kind: 'inline' }>): Promise<void> {
  const target = await fileTarget(ctx, fileNameOf(s.name), `heredoc ${s.name}`);
  const owner = ctx.request.chown ?? { uid: 0, gid: 0 };
  const now = ctx.request.sourceDateEpoch ?? Math.floor(Date.now() / 1000);
  await ctx.w.writeFile(target, Readable.from([Buffer.from(s.content, 'utf8')]), {
    ...owner,
    mode: ctx.request.chmod ?? 0o644,
    atime: now,
    mtime: now,
  });
}

/**
 * {@link CopyIntoRoot}: copies the request's sources into `destRoot` with docker's rules and answers the
 * number of entries and bytes written. Fails before writing when a source is missing, escapes its root, or
 * several sources meet a destination without a trailing `/`.
 */
export const copyIntoRoot: CopyIntoRoot = async (request) => {
  const plan = await planCopy(request);
  const w = await DestWriter.open(request.destRoot, {
    parentOwner: request.chown ?? { uid: 0, gid: 0 },
    ...(request.signal ? { signal: request.signal } : {}),
    ...(request.onProgress ? { onProgress: request.onProgress } : {}),
  });
  let destExistsAsDir = plan.destRel === '';
  if (!destExistsAsDir) {
    const r = await w.root.resolve(plan.destRel);
    if (r.status === 'ok') destExistsAsDir = (await w.follow(r.rel)).st?.isDirectory() ?? false;
  }
  const ctx: Ctx = { request, plan, w, destExistsAsDir, links: new Map() };
  try {
    for (const s of plan.sources) {
      throwIfAborted(request.signal);
      if (s.kind === 'local') await copyLocal(ctx, s);
      else if (s.kind === 'url') await copyUrl(ctx, s);
      else await copyInline(ctx, s);
    }
    await w.finish();
  } catch (err) {
    if (request.signal?.aborted && !(err instanceof AbortedError))
      throw new AbortedError('copy aborted', err);
    throw classifySystemError(err, `${request.instruction} into ${request.destRoot}`);
  }
  return { files: w.files, bytes: w.bytes };
};
