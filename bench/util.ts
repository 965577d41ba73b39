/**
 * Small helpers shared by the benchmark: running commands with a bounded output tail, finding
 * tools, streaming hashes. The benchmark stands alone: it imports nothing from src/ (except
 * bench/engine-worker.ts, which exists to time the built engine itself).
 */
import { spawn, type SpawnOptions } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { access, constants, readdir } from 'node:fs/promises';
import path from 'node:path';

/** A failure the benchmark cannot go on from; `detail` (e.g. a stderr tail) is printed as is. */
export class BenchError extends Error {
  constructor(
    message: string,
    readonly detail = '',
  ) {
    super(message);
    this.name = 'BenchError';
  }
}

/** Keeps only the last `max` bytes written to it (a command's output tail). */
export class Tail {
  private chunks: Buffer[] = [];
  private size = 0;
  constructor(private readonly max = 16 * 1024) {}
  push(b: Buffer): void {
    this.chunks.push(b);
    this.size += b.length;
    while (this.size - (this.chunks[0]?.length ?? 0) >= this.max && this.chunks.length > 1) {
      this.size -= this.chunks.shift()!.length;
    }
  }
  text(lines = 30): string {
    const all = Buffer.concat(this.chunks).toString('utf8');
    return all.trimEnd().split('\n').slice(-lines).join('\n');
  }
}

export interface CaptureOptions extends SpawnOptions {
  /** Kill the command's process group (SIGTERM, then SIGKILL) after this many ms; `timedOut` is set. */
  timeoutMs?: number;
}

/** Process groups of commands running with a timeout, killed by killRunningSync() on exit paths. */
const groups = new Set<number>();

/** SIGTERM to every timed command still running (they run in their own process group). */
export function killRunningSync(): void {
  for (const pgid of groups) {
    try {
      process.kill(-pgid, 'SIGTERM');
    } catch {
      // already gone
    }
  }
}

export interface RunResult {
  code: number;
  /** Combined stdout+stderr tail. */
  tail: Tail;
  timedOut: boolean;
}

/**
 * Runs argv to completion, capturing a bounded tail of its output; never throws on a non-zero exit.
 * With `timeoutMs` the command runs in its own process group, so that the whole group (e.g.
 * /usr/bin/time and the command under it) can be ended when it overruns.
 */
export function runCapture(argv: readonly string[], opts: CaptureOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const [cmd, ...args] = argv;
    if (cmd === undefined) return reject(new Error('empty command'));
    const { timeoutMs, ...spawnOpts } = opts;
    const tail = new Tail();
    const child = spawn(cmd, args, {
      ...spawnOpts,
      detached: timeoutMs !== undefined,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const pgid = timeoutMs !== undefined ? child.pid : undefined;
    if (pgid !== undefined) groups.add(pgid);
    let timedOut = false;
    let killTimer: NodeJS.Timeout | undefined;
    const timer =
      timeoutMs === undefined || pgid === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            tail.push(
              Buffer.from(`\n[bench] timed out after ${timeoutMs / 1000} s: killing process group ${pgid}\n`),
            );
            try {
              process.kill(-pgid, 'SIGTERM');
            } catch {
              // already gone
            }
            killTimer = setTimeout(() => {
              try {
                process.kill(-pgid, 'SIGKILL');
              } catch {
                // already gone
              }
            }, 5_000);
          }, timeoutMs);
    child.stdout?.on('data', (b: Buffer) => tail.push(b));
    child.stderr?.on('data', (b: Buffer) => tail.push(b));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      clearTimeout(killTimer);
      if (pgid !== undefined) groups.delete(pgid);
      resolve({ code: code ?? (signal ? 128 : 1), tail, timedOut });
    });
  });
}

/** Runs argv and throws a BenchError carrying its output tail when it fails. */
export async function run(argv: readonly string[], opts: SpawnOptions = {}): Promise<string> {
  const r = await runCapture(argv, opts);
  if (r.code !== 0) {
    throw new BenchError(`command failed (exit ${r.code}): ${argv.join(' ')}`, r.tail.text());
  }
  return r.tail.text(1000);
}

/** Full path of an executable found on PATH (or the absolute path itself), else undefined. */
export async function which(name: string): Promise<string | undefined> {
  const candidates = name.includes('/')
    ? [name]
    : (process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin')
        .split(':')
        .filter(Boolean)
        .map((d) => path.join(d, name));
  for (const c of candidates) {
    try {
      await access(c, constants.X_OK);
      return c;
    } catch {
      // try the next one
    }
  }
  return undefined;
}

/** Like which(), but fails with a message naming the Debian package that provides the tool. */
export async function requireTool(name: string, debianPackage: string): Promise<string> {
  const found = (await which(name)) ?? (name.includes('/') ? undefined : await which(`/usr/sbin/${name}`));
  if (!found) {
    throw new BenchError(
      `${name} not found: install the Debian package "${debianPackage}" ` +
        `(apt-get install ${debianPackage}, or run scripts/bench-deps.sh as root)`,
    );
  }
  return found;
}

/** sha256 hex of a file, streamed. */
export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Entries of a directory sorted by byte order (as GNU tar --sort=name does). */
export async function sortedEntries(dir: string): Promise<string[]> {
  const names = await readdir(dir);
  return names.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export const MiB = 1024 * 1024;

export function fmtBytes(n: number): string {
  if (n >= 1024 * MiB) return `${(n / 1024 / MiB).toFixed(2)} GiB`;
  if (n >= MiB) return `${(n / MiB).toFixed(1)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${n} B`;
}

/** Progress line to stderr (stdout carries the results table). */
export function log(msg: string): void {
  process.stderr.write(`[bench] ${msg}\n`);
}
