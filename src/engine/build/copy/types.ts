/**
 * The contract between the build executor and `copy/`: COPY and ADD into a step's root with docker's rules, and
 * the content hash of their sources for the cache key. Change it only with both sides.
 */
import type { Digest } from '../../oci/digest.js';
import type { FileDigestCache } from './digest-cache.js';

/** Where COPY/ADD sources come from: the build context (with .dockerignore) or another root (`--from`). */
export interface CopySourceRoot {
  /** Absolute directory: the context directory, or a stage's / image's root filesystem for `--from`. */
  readonly dir: string;
  /** `.dockerignore` patterns as written (context only; none for `--from` roots). */
  readonly ignorePatterns?: readonly string[];
  /** `true` for the build context: sources may not leave `dir`, and symlinks are copied as links, never followed out. */
  readonly isContext: boolean;
}

/** One COPY or ADD after variable expansion. */
export interface CopyRequest {
  readonly instruction: 'COPY' | 'ADD';
  readonly from: CopySourceRoot;
  /** Sources as expanded (globs with Go's filepath.Match rules; for ADD also http(s) URLs). */
  readonly sources: readonly string[];
  /** Heredoc sources (`COPY <<EOF /dst`): name and content, already expanded when the delimiter was unquoted. */
  readonly inline?: ReadonlyArray<{ readonly name: string; readonly content: string }>;
  /** The destination as expanded; relative destinations are resolved against `workdir`. */
  readonly destination: string;
  /** The stage's WORKDIR in effect (absolute). */
  readonly workdir: string;
  /** The step's mounted root to copy into (the container's merged dir). Nothing may be written outside it. */
  readonly destRoot: string;
  /** `--chown` resolved to numbers by the executor (through the destination root's passwd/group); default 0:0. */
  readonly chown?: { readonly uid: number; readonly gid: number };
  /** `--chmod` as an octal mode, applied to files and directories copied. */
  readonly chmod?: number;
  /** ADD only: `--checksum=sha256:…` for a URL source. */
  readonly checksum?: Digest;
  /** ADD only: `--keep-git-dir` etc. are not supported; `--unpack` false keeps local archives as files (BuildKit). */
  readonly unpack?: boolean;
  /** Mtime to stamp on files fetched from URLs (and clamp to, when reproducible): seconds since the epoch. */
  readonly sourceDateEpoch?: number;
  /** ADD only: limits of URL fetches (timeouts, size); defaults in `copy/fetch.ts`. */
  readonly fetch?: {
    readonly connectTimeoutMs?: number;
    readonly idleTimeoutMs?: number;
    readonly maxBytes?: number;
    readonly maxRedirects?: number;
  };
  readonly signal?: AbortSignal;
  /**
   * Content digests of source files known from earlier builds (`hashSources` looks there before reading a file
   * and records what it hashed); absent: every file is read.
   */
  readonly digestCache?: FileDigestCache;
  /** Progress, once per file or per MiB copied. */
  readonly onProgress?: (copied: { files: number; bytes: number }) => void;
}

/** What a copy did. */
export interface CopyResult {
  readonly files: number;
  readonly bytes: number;
}

/**
 * The cache-key part of a COPY/ADD: a digest over the matched sources after .dockerignore — names, types, modes,
 * owners (for `--from` roots), link targets and contents, never mtimes — plus chown/chmod/destination. Fails like the
 * copy would (missing source, escaping source) so a bad step fails before any work.
 */
export type HashSources = (request: Omit<CopyRequest, 'destRoot' | 'onProgress'>) => Promise<Digest>;
export type CopyIntoRoot = (request: CopyRequest) => Promise<CopyResult>;
