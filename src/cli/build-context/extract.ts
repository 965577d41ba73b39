import { createWriteStream } from 'node:fs';
import { link, lstat, lutimes, mkdir, chmod, symlink, utimes } from 'node:fs/promises';
import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { AbortedError, StrataError, TerminalError, throwIfAborted } from '../../engine/errors.js';
import { readTar, TarFormatError } from '../../engine/tar/reader.js';
import { decompressedStream } from '../../engine/union/decompress.js';
import { SafeRoot } from '../../engine/union/safe-path.js';

/** Limits of {@link extractContextTar}. */
export interface ExtractLimits {
  /** Cap on the uncompressed tar bytes (default 4 GiB). */
  readonly maxBytes?: number;
  /** Cap on the number of entries (default 200 000). */
  readonly maxEntries?: number;
}

/** Entry names are normalized like GNU tar does: leading `/` and `./` dropped; `..` never leaves the root. */
function entryPath(raw: string): string | undefined {
  const n = posix.normalize(raw.replace(/^\/+/, '')).replace(/\/+$/, '');
  if (n === '.' || n === '') return '';
  if (n === '..' || n.startsWith('../')) return undefined;
  return n;
}

/**
 * Extracts a build-context tar (plain, gzip or zstd, sniffed) into the existing directory `dest`. No entry may
 * leave it: names with `..` that climb out and hard links to outside are refused, parents are resolved with
 * {@link SafeRoot} (symlinks followed only inside `dest`), and a symlink is created as is but never written
 * through. Regular files, directories, symlinks and hard links are kept (mode bits without setuid/setgid,
 * mtimes); devices and fifos are skipped. Fails with BUILD_CONTEXT_INVALID naming the entry, or SIZE_LIMIT.
 */
export async function extractContextTar(
  source: Readable,
  dest: string,
  what: string,
  signal?: AbortSignal,
  limits: ExtractLimits = {},
): Promise<{ entries: number }> {
  const maxEntries = limits.maxEntries ?? 200_000;
  const root = await SafeRoot.open(dest);
  const tar = decompressedStream(source, '', {
    maxUncompressedBytes: limits.maxBytes ?? 4 * 1024 ** 3,
    layerName: what,
  });
  const onAbort = (): void => {
    tar.destroy(new AbortedError(`${what}: aborted`, signal?.reason));
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  const invalid = (entry: string, why: string): TerminalError =>
    new TerminalError('BUILD_CONTEXT_INVALID', `${what}: entry ${JSON.stringify(entry)} ${why}`, {
      detail: { entry },
    });
  let entries = 0;
  try {
    throwIfAborted(signal);
    for await (const { header, body } of readTar(tar, { maxHeaderBytes: 1024 * 1024 })) {
      if (++entries > maxEntries)
        throw new TerminalError('SIZE_LIMIT', `${what}: more than ${maxEntries} entries`);
      const rel = entryPath(header.name);
      if (rel === undefined) throw invalid(header.name, 'leaves the context');
      if (rel === '') continue; // the root itself
      const r = await root.resolve(rel, { create: true });
      if (r.status !== 'ok')
        throw invalid(header.name, r.status === 'refused' ? r.reason : 'has a missing parent');
      const host = root.host(r.rel);
      const existing = await lstat(host).catch(() => undefined);
      const mode = header.mode & 0o1777;
      if (header.type === 'directory') {
        if (existing?.isDirectory()) await chmod(host, mode | 0o700);
        else {
          if (existing) await root.remove(r.rel);
          await mkdir(host, { mode: mode | 0o700 });
          root.noteDir(r.rel);
        }
        continue;
      }
      // A later entry replaces an earlier one, as tar does.
      if (existing) await root.remove(r.rel);
      if (header.type === 'file') {
        await pipeline(body, createWriteStream(host, { flags: 'wx', mode: mode | 0o600 }));
        await chmod(host, mode | 0o600);
        await utimes(host, header.mtime, header.mtime);
      } else if (header.type === 'symlink') {
        await symlink(header.linkname, host);
        await lutimes(host, header.mtime, header.mtime).catch(() => undefined);
      } else if (header.type === 'link') {
        const target = entryPath(header.linkname);
        if (!target)
          throw invalid(header.name, `links to ${JSON.stringify(header.linkname)}, outside the context`);
        const t = await root.resolve(target);
        const tst = t.status === 'ok' ? await lstat(root.host(t.rel)).catch(() => undefined) : undefined;
        if (t.status !== 'ok' || !tst?.isFile())
          throw invalid(
            header.name,
            `links to ${JSON.stringify(header.linkname)}, which is no regular file in the context`,
          );
        await link(root.host(t.rel), host);
      }
      // Devices and fifos have no place in a build context: skipped.
    }
  } catch (err) {
    if (err instanceof StrataError && err.code === 'LAYER_INVALID')
      throw new TerminalError('BUILD_CONTEXT_INVALID', err.message, { cause: err });
    if (err instanceof StrataError) throw err;
    if (err instanceof TarFormatError)
      throw new TerminalError('BUILD_CONTEXT_INVALID', `${what}: not a valid tar archive: ${err.message}`, {
        cause: err,
      });
    throw err;
  } finally {
    signal?.removeEventListener('abort', onAbort);
    tar.destroy();
  }
  return { entries };
}
