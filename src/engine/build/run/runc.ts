import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants, readFileSync, statSync } from 'node:fs';
import { mkdtemp, open, realpath, rm, writeFile } from 'node:fs/promises';
import { constants as osConstants, tmpdir } from 'node:os';
import { delimiter, join, relative, isAbsolute } from 'node:path';
import { AbortedError, TerminalError, throwIfAborted } from '../../errors.js';
import { CHROOT, SafeRoot } from '../../union/safe-path.js';
import { DEFAULT_NOFILE, runtimeConfig } from './config.js';
import { prepareMountPoints, type MountPointRequest } from './mount-points.js';
import type { RunResult, RunSpec, StepRunner } from './types.js';
import { ensureWorkdir } from './workdir.js';

/** Options of {@link createRuncRunner}. */
export interface RuncRunnerOptions {
  /** Path of the runc binary (default: `runc` found on PATH, then /usr/sbin and /usr/bin). */
  readonly runc?: string;
  /** runc's state directory (`runc --root`), default `/run/strata-runc`. */
  readonly stateRoot?: string;
  /** Where per-step bundle directories are made (default `os.tmpdir()`); must be outside every rootfs. */
  readonly bundleDir?: string;
  /** Host resolv.conf bound into `host`-network steps (default `/etc/resolv.conf`). */
  readonly resolvConf?: string;
  /** Host hosts file bound into `host`-network steps (default `/etc/hosts`). */
  readonly hostsFile?: string;
  /** How long runc's own kill/delete calls may take (default 10 s). */
  readonly commandTimeoutMs?: number;
}

/** The most combined output kept for {@link RunResult.tail}. */
export const TAIL_BYTES = 4096;

/** The hosts file of a `none`-network step: loopback only. */
const NONE_HOSTS = (hostname: string): string =>
  `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.0.1\t${hostname}\n`;

/**
 * A {@link StepRunner} that runs each step as a runc container (`runc run`, foreground, no terminal, stdio piped)
 * over the caller's root. Throws `TerminalError('RUNTIME_UNAVAILABLE')` here when runc is missing or the process
 * is not root. Each step gets its own bundle directory (outside the root, removed afterwards) and a unique
 * container id; the container is always deleted, and mount points the runner had to create are removed.
 */
export function createRuncRunner(options: RuncRunnerOptions = {}): StepRunner {
  const runc = options.runc ?? findRunc();
  try {
    accessSync(runc, constants.X_OK);
  } catch {
    throw new TerminalError(
      'RUNTIME_UNAVAILABLE',
      `RUN steps need runc, and ${runc} is not an executable; install Debian's runc (apt-get install runc)`,
    );
  }
  if (process.getuid?.() !== 0)
    throw new TerminalError(
      'RUNTIME_UNAVAILABLE',
      'RUN steps need root (runc creates namespaces and mounts); run the build as root',
    );
  const ctx: RunContext = {
    runc,
    stateRoot: options.stateRoot ?? '/run/strata-runc',
    bundleDir: options.bundleDir ?? tmpdir(),
    resolvConf: options.resolvConf ?? '/etc/resolv.conf',
    hostsFile: options.hostsFile ?? '/etc/hosts',
    timeoutMs: options.commandTimeoutMs ?? 10_000,
  };
  return (spec) => runStep(ctx, spec);
}

interface RunContext {
  readonly runc: string;
  readonly stateRoot: string;
  readonly bundleDir: string;
  readonly resolvConf: string;
  readonly hostsFile: string;
  readonly timeoutMs: number;
}

/** runc from PATH, else where Debian puts it (root's PATH may lack sbin under some service managers). */
function findRunc(): string {
  const dirs = [
    ...(process.env.PATH ?? '').split(delimiter).filter(Boolean),
    '/usr/sbin',
    '/usr/bin',
    '/sbin',
  ];
  for (const d of dirs) {
    const p = join(d, 'runc');
    try {
      accessSync(p, constants.X_OK);
      if (statSync(p).isFile()) return p;
    } catch {
      // not here
    }
  }
  return 'runc (not found on PATH)';
}

async function runStep(ctx: RunContext, spec: RunSpec): Promise<RunResult> {
  throwIfAborted(spec.signal);
  if (!spec.cwd.startsWith('/'))
    throw new TerminalError('INVALID_ARGUMENT', `the working directory must be absolute, got ${spec.cwd}`);
  if (spec.args.length === 0) throw new TerminalError('INVALID_ARGUMENT', 'a RUN step needs a command');
  const rootfs = await realpath(spec.rootfs);
  const bundleParent = await realpath(ctx.bundleDir);
  const rel = relative(rootfs, bundleParent);
  if (rel === '' || (!rel.startsWith('..') && !isAbsolute(rel)))
    throw new TerminalError(
      'INVALID_ARGUMENT',
      `the bundle directory ${ctx.bundleDir} is inside the root ${rootfs}`,
    );

  const root = await SafeRoot.open(rootfs, undefined, CHROOT);
  await ensureWorkdir(root, spec.cwd, spec.user);

  const id = `strata-build-${randomBytes(8).toString('hex')}`;
  const hostname = spec.hostname ?? randomBytes(6).toString('hex');
  // It lands in a hosts file and in sethostname(2): one DNS label-ish word, nothing that could add a line.
  if (!/^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$/.test(hostname))
    throw new TerminalError('INVALID_ARGUMENT', `invalid hostname ${JSON.stringify(hostname)}`);
  const bundle = await mkdtemp(join(bundleParent, 'strata-bundle-'));
  let mounts: Awaited<ReturnType<typeof prepareMountPoints>> | undefined;
  try {
    let hostsFile = ctx.hostsFile;
    if (spec.network === 'none') {
      hostsFile = join(bundle, 'hosts');
      await writeFile(hostsFile, NONE_HOSTS(hostname), { mode: 0o644 });
    }
    const requests: MountPointRequest[] = [
      { path: '/proc', kind: 'dir', followFinal: false },
      { path: '/dev', kind: 'dir', followFinal: false },
      { path: '/sys', kind: 'dir', followFinal: false },
      { path: '/etc/hosts', kind: 'file', followFinal: true },
      ...(spec.network === 'host'
        ? [{ path: '/etc/resolv.conf', kind: 'file' as const, followFinal: true }]
        : []),
      ...(spec.binds ?? []).map((b) => ({
        path: b.destination,
        kind: bindKind(b.source),
        followFinal: true,
      })),
    ];
    mounts = await prepareMountPoints(root, requests);
    const config = runtimeConfig(spec, {
      rootfs,
      hostname,
      hostsFile,
      ...(spec.network === 'host' ? { resolvConf: ctx.resolvConf } : {}),
      destinations: mounts.destinations,
      nofile: Math.min(DEFAULT_NOFILE, ownHardNofile()),
    });
    await writeFile(join(bundle, 'config.json'), JSON.stringify(config, null, 2));
    throwIfAborted(spec.signal); // a listener added after the abort would never fire
    return await runContainer(ctx, id, bundle, spec);
  } finally {
    await runcQuiet(ctx, ['delete', '--force', id]);
    await mounts?.cleanup();
    await rm(bundle, { recursive: true, force: true });
  }
}

/** Whether a bind's host source is a directory (mount point: directory) or anything else (mount point: file). */
function bindKind(source: string): 'dir' | 'file' {
  const st = statSync(source, { throwIfNoEntry: false });
  if (!st) throw new TerminalError('INVALID_ARGUMENT', `the bind source ${source} does not exist`);
  return st.isDirectory() ? 'dir' : 'file';
}

/** This process's hard RLIMIT_NOFILE (Node has no getrlimit): runc's child inherits it and cannot go above it. */
export function ownHardNofile(): number {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const hard = line?.trim().split(/\s+/)[4];
    if (hard === 'unlimited') return Number.MAX_SAFE_INTEGER;
    const n = Number(hard);
    return Number.isSafeInteger(n) && n > 0 ? n : DEFAULT_NOFILE;
  } catch {
    return DEFAULT_NOFILE;
  }
}

/** Runs `runc run` in the foreground, streams output, and answers the exit; on abort kills the container. */
function runContainer(ctx: RunContext, id: string, bundle: string, spec: RunSpec): Promise<RunResult> {
  return new Promise<RunResult>((resolve, reject) => {
    const tail = new Tail(TAIL_BYTES);
    // runc's own messages go to a JSON log in the bundle, not into the step's stderr.
    const log = join(bundle, 'runc.log');
    const args = [
      '--root',
      ctx.stateRoot,
      '--log',
      log,
      '--log-format',
      'json',
      'run',
      '--bundle',
      bundle,
      id,
    ];
    const child = spawn(ctx.runc, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let aborted = false;
    let settled = false;
    const onAbort = (): void => {
      aborted = true;
      void killUntilGone(ctx, id, child);
    };
    spec.signal?.addEventListener('abort', onAbort, { once: true });
    // A consumer that throws must not crash the process from an event handler: the step is stopped instead and
    // the promise rejects with the consumer's error.
    let consumerError: { err: unknown } | undefined;
    const deliver = (cb: ((c: Buffer) => void) | undefined, c: Buffer): void => {
      tail.push(c);
      if (!cb || consumerError) return;
      try {
        cb(c);
      } catch (err) {
        consumerError = { err };
        void killUntilGone(ctx, id, child);
      }
    };
    child.stdout.on('data', (c: Buffer) => deliver(spec.onStdout, c));
    child.stderr.on('data', (c: Buffer) => deliver(spec.onStderr, c));
    child.on('error', (err) => {
      // The binary could not be started at all (it vanished since createRuncRunner looked).
      if (settled) return;
      settled = true;
      spec.signal?.removeEventListener('abort', onAbort);
      reject(
        new TerminalError('RUNTIME_UNAVAILABLE', `cannot start ${ctx.runc}: ${err.message}`, { cause: err }),
      );
    });

    child.on('close', (code, signal) => {
      spec.signal?.removeEventListener('abort', onAbort);
      if (settled) return;
      settled = true;
      if (aborted) {
        reject(new AbortedError(`RUN step aborted (container ${id} killed)`, spec.signal?.reason));
        return;
      }
      if (consumerError) {
        reject(consumerError.err);
        return;
      }
      // runc prints its fatal error to stderr too, so the tail already holds it.
      readRuncErrors(log).then((runtimeError) => {
        const result = resultOf(code, signal, tail.text());
        resolve(runtimeError === undefined || code === 0 ? result : { ...result, runtimeError });
      }, reject);
    });
  });
}

const osSignals = osConstants.signals as Record<string, number>;

/**
 * Turns runc's exit into a result. runc reports a process killed by signal N as 128+N (as shells and docker do), so
 * codes 129..159 carry the signal's name too; runc itself dying of a signal is reported the same way.
 */
export function resultOf(code: number | null, signal: NodeJS.Signals | null, tail: string): RunResult {
  if (code === null) {
    const n = signal ? (osSignals[signal] ?? 0) : 0;
    return { exitCode: 128 + n, ...(signal ? { signal } : {}), tail };
  }
  if (code > 128 && code < 160) {
    const name = Object.entries(osSignals).find(([, n]) => n === code - 128)?.[0];
    if (name) return { exitCode: code, signal: name, tail };
  }
  return { exitCode: code, tail };
}

/**
 * Kills the container until runc run exits: `runc kill ID KILL` kills the pid namespace's init, which takes every
 * process of the step with it; `--all` follows for a container still being created. If runc run itself hangs, it
 * is killed after a few seconds (the later `runc delete --force` removes what is left).
 */
async function killUntilGone(ctx: RunContext, id: string, child: ReturnType<typeof spawn>): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (child.exitCode === null && child.signalCode === null && Date.now() < deadline) {
    await runcQuiet(ctx, ['kill', id, 'KILL']);
    await runcQuiet(ctx, ['kill', '--all', id, 'KILL']);
    await new Promise((r) => setTimeout(r, 100));
  }
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}

/** The most of runc's log read back (its errors are a line or two; a huge log is cut, never read whole). */
const RUNC_LOG_MAX = 64 * 1024;

/** The error-level messages of runc's JSON log, joined, or undefined when runc logged none. */
export async function readRuncErrors(log: string): Promise<string | undefined> {
  let fh;
  try {
    fh = await open(log, 'r');
  } catch {
    return undefined; // runc never got far enough to log
  }
  try {
    const { size } = await fh.stat();
    const len = Math.min(size, RUNC_LOG_MAX);
    const buf = Buffer.alloc(len);
    await fh.read(buf, 0, len, size - len);
    const msgs: string[] = [];
    for (const line of buf.toString('utf8').split('\n')) {
      try {
        const rec = JSON.parse(line) as { level?: unknown; msg?: unknown };
        if (
          (rec.level === 'error' || rec.level === 'fatal') &&
          typeof rec.msg === 'string' &&
          !msgs.includes(rec.msg)
        )
          msgs.push(rec.msg);
      } catch {
        // an empty, cut or non-JSON line
      }
    }
    return msgs.length ? msgs.join('; ') : undefined;
  } finally {
    await fh.close();
  }
}

/** Runs a runc housekeeping command with a timeout, ignoring failure (the container may already be gone). */
function runcQuiet(ctx: RunContext, args: string[]): Promise<void> {
  return new Promise((resolve) => {
    execFile(ctx.runc, ['--root', ctx.stateRoot, ...args], { timeout: ctx.timeoutMs }, () => resolve());
  });
}

/** Keeps the last `max` bytes of a stream. */
class Tail {
  private chunks: Buffer[] = [];
  private size = 0;
  constructor(private readonly max: number) {}

  push(c: Buffer): void {
    this.chunks.push(c);
    this.size += c.length;
    while (this.size - this.chunks[0]!.length >= this.max) this.size -= this.chunks.shift()!.length;
  }

  text(): string {
    const all = Buffer.concat(this.chunks);
    const s = all.subarray(Math.max(0, all.length - this.max)).toString('utf8');
    return s.replace(/^\uFFFD+/, ''); // a multi-byte character cut at the start
  }
}
