import { execFile } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { AbortedError, StrataError, TerminalError } from '../../engine/errors.js';
import type { GitContextSpec } from '../../api/v1alpha1/imagebuild.js';
import { redactUrl } from './tarball.js';

/** Options of {@link cloneGitContext}. */
export interface GitOptions {
  readonly signal?: AbortSignal;
  /** Timeout of each git command, default 5 minutes. */
  readonly timeoutMs?: number;
  /** The git binary, default `git` on PATH (Debian's). */
  readonly git?: string;
}

const FULL_SHA = /^([0-9a-f]{40}|[0-9a-f]{64})$/;

// Transports a spec may use; `ext::` (runs commands) and others are refused by git itself with this list.
const ALLOWED_PROTOCOLS = 'http:https:ssh:git:file';

/** Removes credentials from anything git printed about the URL. */
function redact(text: string, url: string): string {
  const safe = redactUrl(url);
  return (safe === url ? text : text.split(url).join(safe)).replace(/(https?:\/\/)[^/@\s]*@/gi, '$1***@');
}

function run(args: readonly string[], cwd: string, url: string, options: GitOptions): Promise<void> {
  const timeoutMs = options.timeoutMs ?? 5 * 60_000;
  return new Promise((resolveRun, reject) => {
    execFile(
      options.git ?? 'git',
      [
        '-c',
        'protocol.ext.allow=never',
        '-c',
        'core.hooksPath=/dev/null',
        '-c',
        'advice.detachedHead=false',
        ...args,
      ],
      {
        cwd,
        timeout: timeoutMs,
        killSignal: 'SIGKILL',
        maxBuffer: 4 * 1024 * 1024,
        ...(options.signal ? { signal: options.signal } : {}),
        env: {
          ...process.env,
          GIT_TERMINAL_PROMPT: '0', // never wait for a password on a terminal
          GIT_ASKPASS: 'true',
          SSH_ASKPASS: 'true',
          GIT_SSH_COMMAND: process.env.GIT_SSH_COMMAND ?? 'ssh -oBatchMode=yes',
          GIT_ALLOW_PROTOCOL: ALLOWED_PROTOCOLS,
          GIT_LFS_SKIP_SMUDGE: '1',
        },
      },
      (err, _stdout, stderr) => {
        if (!err) return resolveRun();
        if (options.signal?.aborted)
          return reject(new AbortedError(`git ${args[0]}: aborted`, options.signal.reason));
        const e = err as NodeJS.ErrnoException & { killed?: boolean };
        if (e.code === 'ENOENT')
          return reject(
            new TerminalError('RUNTIME_UNAVAILABLE', 'git is not installed (Debian package git)', {
              cause: err,
            }),
          );
        const what = `git ${args[0]} ${redactUrl(url)}`;
        if (e.killed)
          return reject(
            new StrataError('NETWORK', `${what}: no result within ${timeoutMs} ms`, { retryable: true }),
          );
        const lines = redact(String(stderr), url).trim().split('\n').slice(-3).join(' / ');
        reject(new StrataError('BUILD_CONTEXT_INVALID', `${what}: ${lines || e.message}`));
      },
    );
  });
}

/**
 * Checks out `spec` into the new directory `dest` (must not exist; its parent must): a branch or tag with
 * `git clone --depth 1 --branch`, a full commit SHA by a shallow fetch of that commit (a full fetch when the
 * server refuses to serve an unadvertised commit), no ref the remote's default branch. Prompts are disabled,
 * only http(s), ssh, git and file transports are allowed, credentials in the URL never appear in errors.
 * The `.git` directory is removed: it is not part of the context.
 */
export async function cloneGitContext(
  spec: GitContextSpec,
  dest: string,
  options: GitOptions = {},
): Promise<void> {
  const { url, ref } = spec;
  const parent = join(dest, '..');
  if (ref !== undefined && FULL_SHA.test(ref)) {
    await run(['init', '-q', dest], parent, url, options);
    await run(['remote', 'add', 'origin', url], dest, url, options);
    try {
      await run(['fetch', '-q', '--depth', '1', 'origin', ref], dest, url, options);
    } catch (err) {
      if (!(err instanceof StrataError) || err.code !== 'BUILD_CONTEXT_INVALID') throw err;
      await run(['fetch', '-q', 'origin'], dest, url, options);
    }
    await run(['checkout', '-q', '--detach', ref], dest, url, options);
  } else {
    await run(
      [
        'clone',
        '-q',
        '--depth',
        '1',
        '--no-tags',
        ...(ref !== undefined ? ['--branch', ref] : []),
        '--',
        url,
        dest,
      ],
      parent,
      url,
      options,
    );
  }
  await rm(join(dest, '.git'), { recursive: true, force: true });
}
