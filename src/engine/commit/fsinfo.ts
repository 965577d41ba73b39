/**
 * Reading file metadata into {@link FileInfo} values, and the pure predicates over them. The reads are synchronous
 * syscalls on purpose: a layer's walk makes one per entry, and through the thread pool each would be a round trip
 * between threads (see `util/yield.ts`); callers get an event-loop turn every few hundred entries.
 */
import { constants, lstatSync, readdirSync, readlinkSync, type BigIntStats } from 'node:fs';
import { turnEvery } from '../util/yield.js';
import type { FileInfo, FileType } from './types.js';

/** The type of a stat result. */
export function fileTypeOf(mode: number): FileType {
  switch (mode & constants.S_IFMT) {
    case constants.S_IFDIR:
      return 'dir';
    case constants.S_IFLNK:
      return 'symlink';
    case constants.S_IFCHR:
      return 'char';
    case constants.S_IFBLK:
      return 'block';
    case constants.S_IFIFO:
      return 'fifo';
    case constants.S_IFSOCK:
      return 'socket';
    default:
      return 'file';
  }
}

/** Linux `major()` and `minor()` of a dev_t. */
export function splitDevice(rdev: bigint): { major: number; minor: number } {
  const major = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
  const minor = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
  return { major, minor };
}

/** Builds a {@link FileInfo} from a bigint lstat result (nanosecond mtimes, 64-bit inodes). */
export function fileInfoFromStat(
  st: BigIntStats,
  extra: { linkname?: string; xattrs?: Readonly<Record<string, Buffer>> } = {},
): FileInfo {
  const mode = Number(st.mode);
  const type = fileTypeOf(mode);
  const ns = st.mtimeNs;
  const sec = ns >= 0n ? ns / 1_000_000_000n : -((-ns + 999_999_999n) / 1_000_000_000n);
  const base: FileInfo = {
    type,
    mode: mode & 0o7777,
    uid: Number(st.uid),
    gid: Number(st.gid),
    size: type === 'file' ? Number(st.size) : 0,
    mtimeSec: Number(sec),
    mtimeNsec: Number(ns - sec * 1_000_000_000n),
    dev: st.dev,
    ino: st.ino,
    nlink: Number(st.nlink),
  };
  const dev = type === 'char' || type === 'block' ? splitDevice(st.rdev) : undefined;
  return {
    ...base,
    ...(dev ? { devMajor: dev.major, devMinor: dev.minor } : {}),
    ...(extra.linkname !== undefined ? { linkname: extra.linkname } : {}),
    ...(extra.xattrs && Object.keys(extra.xattrs).length ? { xattrs: extra.xattrs } : {}),
  };
}

/** lstat + readlink of one path (synchronous); undefined when it does not exist. */
export function readFileInfoSync(
  abs: string,
  xattrs?: Readonly<Record<string, Buffer>>,
): FileInfo | undefined {
  let st: BigIntStats;
  try {
    st = lstatSync(abs, { bigint: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR')
      return undefined;
    throw err;
  }
  const linkname = fileTypeOf(Number(st.mode)) === 'symlink' ? readlinkSync(abs) : undefined;
  return fileInfoFromStat(st, {
    ...(linkname !== undefined ? { linkname } : {}),
    ...(xattrs ? { xattrs } : {}),
  });
}

/** lstat + readlink of one path; undefined when it does not exist. */
export async function readFileInfo(
  abs: string,
  xattrs?: Readonly<Record<string, Buffer>>,
): Promise<FileInfo | undefined> {
  await Promise.resolve();
  return readFileInfoSync(abs, xattrs);
}

/** The names in a directory, sorted (UTF-16 order, stable and deterministic). */
export async function sortedNames(dir: string): Promise<string[]> {
  await Promise.resolve();
  return readdirSync(dir).sort(compareNames);
}

/** Deterministic name order used everywhere a layer is written. */
export function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** True for an overlayfs whiteout: a character device 0:0. */
export function isWhiteoutDevice(info: FileInfo): boolean {
  return info.type === 'char' && (info.devMajor ?? 0) === 0 && (info.devMinor ?? 0) === 0;
}

/** The event-loop turns of every walk that reads infos (one counter: walks are sequential within a call). */
const tick = turnEvery();

/** lstat of many paths of one directory, keeping the order of `names` (synchronous, with event-loop turns). */
export async function readInfos(
  dir: string,
  names: readonly string[],
  xattrsOf: (name: string) => Readonly<Record<string, Buffer>> | undefined,
): Promise<Array<FileInfo | undefined>> {
  const out: Array<FileInfo | undefined> = [];
  for (const n of names) {
    out.push(readFileInfoSync(`${dir}/${n}`, xattrsOf(n)));
    await tick();
  }
  return out;
}
