/**
 * Resolves an ImageBuild's `spec.context` and `spec.dockerfile` to a local directory and the Dockerfile text,
 * for `strata build --spec`. It lives at the CLI (the composition root) because it joins the API types with the
 * engine's tar reader, decompressor and safe path resolution; the engine knows nothing of the API.
 */
import { mkdir, mkdtemp, open, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { TerminalError, throwIfAborted } from '../../engine/errors.js';
import type { ImageBuildSpec } from '../../api/v1alpha1/imagebuild.js';
import { configMapKeyFile, copyConfigMapKeys } from './configmap.js';
import { extractContextTar } from './extract.js';
import { cloneGitContext } from './git.js';
import { resolveInside } from './inside.js';
import { openTarball } from './tarball.js';

/** Largest Dockerfile read from a context. */
export const MAX_DOCKERFILE_BYTES = 1024 * 1024;

/** Options of {@link resolveBuildContext}. */
export interface ResolveContextOptions {
  /** Directory relative `dir` and `tarball` paths are resolved against: the YAML file's directory. */
  readonly baseDir: string;
  /** Where temporary directories for tarball and git contexts are made. */
  readonly workDir: string;
  readonly signal?: AbortSignal;
  /** Cap on a tarball's compressed bytes (default 1 GiB). */
  readonly maxTarballBytes?: number;
  /** Cap on a tarball's uncompressed bytes (default 4 GiB). */
  readonly maxContextBytes?: number;
  /** Timeout of a tarball download and of each git command (default 5 minutes). */
  readonly timeoutMs?: number;
  /**
   * Where the cluster mounted a `configMap` context (the build pod's volume). Without it a configMap context is
   * refused: a local run has no cluster to read it from.
   */
  readonly configMapMount?: string;
}

/** A context ready to build from. */
export interface ResolvedContext {
  /** The context root directory. */
  readonly dir: string;
  /** The Dockerfile's text. */
  readonly dockerfile: string;
  /** Host path of the Dockerfile, or undefined when it was given inline. */
  readonly dockerfilePath: string | undefined;
  /** Removes what resolution created (temp directories); a no-op for a `dir` context. Safe to call twice. */
  cleanup(): Promise<void>;
}

async function readDockerfile(path: string, what: string): Promise<string> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    if (size > MAX_DOCKERFILE_BYTES)
      throw new TerminalError(
        'BUILD_CONTEXT_INVALID',
        `${what}: ${size} bytes, more than ${MAX_DOCKERFILE_BYTES}`,
      );
    return await fh.readFile('utf8');
  } finally {
    await fh.close();
  }
}

/**
 * Makes `spec.context` a local directory: `dir` as is (resolved against `baseDir`), `tarball` (local path or
 * http(s) URL) extracted safely into a temp directory under `workDir`, `git` cloned there (`subPath` must stay
 * inside the clone), `configMap` read from `configMapMount` (keys as files, or `key` as a tarball) and refused
 * without it. Then reads the Dockerfile: inline, or
 * `dockerfile.path` resolved inside the context (symlinks followed only within it). Errors are
 * BUILD_CONTEXT_INVALID (what is missing or escapes), SIZE_LIMIT, NETWORK, RUNTIME_UNAVAILABLE (no git), ABORTED.
 */
export async function resolveBuildContext(
  spec: Pick<ImageBuildSpec, 'context' | 'dockerfile'>,
  options: ResolveContextOptions,
): Promise<ResolvedContext> {
  throwIfAborted(options.signal);
  const ctx = spec.context;
  let temp: string | undefined;
  const cleanup = async (): Promise<void> => {
    if (temp) await rm(temp, { recursive: true, force: true });
    temp = undefined;
  };
  try {
    let dir: string;
    if (ctx.dir !== undefined) {
      dir = resolve(options.baseDir, ctx.dir);
      const st = await stat(dir).catch(() => undefined);
      if (!st?.isDirectory())
        throw new TerminalError(
          'BUILD_CONTEXT_INVALID',
          `context dir ${dir}: ${st ? 'is not a directory' : 'does not exist'}`,
        );
    } else if (
      ctx.tarball !== undefined ||
      (ctx.configMap?.key !== undefined && options.configMapMount !== undefined)
    ) {
      // A configMap key holds a tarball: the same safe extraction as any other tarball.
      const tarball = ctx.tarball ?? (await configMapKeyFile(options.configMapMount!, ctx.configMap!.key!));
      await mkdir(options.workDir, { recursive: true });
      temp = await mkdtemp(join(options.workDir, 'context-'));
      dir = join(temp, 'root');
      await mkdir(dir);
      const { stream, what } = await openTarball(tarball, {
        baseDir: options.baseDir,
        ...(options.signal ? { signal: options.signal } : {}),
        ...(options.maxTarballBytes !== undefined ? { maxBytes: options.maxTarballBytes } : {}),
        ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
      });
      await extractContextTar(stream, dir, what, options.signal, {
        ...(options.maxContextBytes !== undefined ? { maxBytes: options.maxContextBytes } : {}),
      });
    } else if (ctx.git !== undefined) {
      await mkdir(options.workDir, { recursive: true });
      temp = await mkdtemp(join(options.workDir, 'context-'));
      const clone = join(temp, 'repo');
      await cloneGitContext(ctx.git, clone, {
        ...(options.signal ? { signal: options.signal } : {}),
        ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
      });
      dir = ctx.git.subPath
        ? (await resolveInside(clone, ctx.git.subPath, 'dir', 'git subPath')).host
        : clone;
    } else if (ctx.configMap !== undefined && options.configMapMount !== undefined) {
      await mkdir(options.workDir, { recursive: true });
      temp = await mkdtemp(join(options.workDir, 'context-'));
      dir = join(temp, 'root');
      await mkdir(dir);
      await copyConfigMapKeys(options.configMapMount, dir, options.signal);
    } else {
      throw new TerminalError(
        'BUILD_CONTEXT_INVALID',
        'a configMap context is resolved by the cluster; use dir, tarball or git to build locally',
      );
    }
    throwIfAborted(options.signal);
    if (spec.dockerfile.inline !== undefined)
      return { dir, dockerfile: spec.dockerfile.inline, dockerfilePath: undefined, cleanup };
    const found = await resolveInside(dir, spec.dockerfile.path, 'file', 'dockerfile path');
    const dockerfile = await readDockerfile(found.host, `dockerfile ${found.host}`);
    return { dir, dockerfile, dockerfilePath: found.host, cleanup };
  } catch (err) {
    await cleanup();
    throw err;
  }
}
