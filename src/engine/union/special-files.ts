import { spawn } from 'node:child_process';
import { TerminalError } from '../errors.js';

/**
 * What Node's fs API lacks, done by batching the Debian tools: device nodes and FIFOs (`mknod`, coreutils) and
 * extended attributes (`setfattr`, Debian package `attr`). One child process serves many paths; the callers pass
 * host paths whose parents they have verified, and both tools never follow a symlink at the final component
 * (`mknod` fails on an existing name; `setfattr -h`).
 */

/** A device node or FIFO to create. */
export interface NodeSpec {
  readonly host: string;
  readonly type: 'char' | 'block' | 'fifo';
  readonly major: number;
  readonly minor: number;
  /** Permission bits, set by `mknod -m` regardless of the umask; setuid/setgid/sticky are left to the caller. */
  readonly mode: number;
}

/** One extended attribute to set. */
export interface XattrSpec {
  readonly host: string;
  readonly name: string;
  readonly value: Buffer;
}

const MKNOD_SCRIPT = `while [ $# -gt 0 ]; do
  if [ "$3" = p ]; then mknod -m "$1" -- "$2" p || exit 1; else mknod -m "$1" -- "$2" "$3" "$4" "$5" || exit 1; fi
  shift 5
done`;

function run(
  command: string,
  args: readonly string[],
  input: string | undefined,
  what: string,
  pkg: string,
  signal: AbortSignal | undefined,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'ignore', 'pipe'], ...(signal ? { signal } : {}) });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => {
      if (stderr.length < 4096) stderr += d;
    });
    child.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT')
        reject(
          new TerminalError(
            'INTERNAL',
            `${what}: the ${command} tool is missing (install the Debian package ${pkg})`,
            {
              cause: err,
            },
          ),
        );
      else reject(err);
    });
    child.on('close', (code) => {
      if (code === 0) resolve();
      else
        reject(new TerminalError('INTERNAL', `${what}: ${command} failed (exit ${code}): ${stderr.trim()}`));
    });
    child.stdin.on('error', () => {}); // a failing child closes its stdin early; the exit code reports it
    child.stdin.end(input ?? '');
  });
}

/** Creates device nodes and FIFOs in as few `mknod` runs as the argument limit allows. */
export async function makeNodes(nodes: readonly NodeSpec[], signal?: AbortSignal): Promise<void> {
  let args: string[] = [];
  let bytes = 0;
  const flush = async (): Promise<void> => {
    if (args.length === 0) return;
    const batch = args;
    args = [];
    bytes = 0;
    await run(
      'sh',
      ['-c', MKNOD_SCRIPT, 'strata-mknod', ...batch],
      undefined,
      'creating device nodes',
      'coreutils',
      signal,
    );
  };
  for (const n of nodes) {
    const t = n.type === 'char' ? 'c' : n.type === 'block' ? 'b' : 'p';
    const item = [
      // GNU mknod -m refuses setuid/setgid/sticky ("mode must specify only file permission bits"): the caller
      // sets those with chmod afterwards.
      (n.mode & 0o777).toString(8).padStart(4, '0'),
      n.host,
      t,
      String(n.major),
      String(n.minor),
    ];
    args.push(...item);
    bytes += n.host.length + 32;
    if (bytes > 96 * 1024) await flush();
  }
  await flush();
}

/** Escapes a path for a `setfattr --restore` dump (`\ooo` for anything but printable ASCII). */
export function quoteRestorePath(path: string): string {
  let out = '';
  for (const b of Buffer.from(path, 'utf8')) {
    out +=
      b <= 0x20 || b >= 0x7f || b === 0x5c || b === 0x3d
        ? `\\${b.toString(8).padStart(3, '0')}`
        : String.fromCharCode(b);
  }
  return out;
}

/** The `setfattr --restore` dump that sets the given xattrs (values hex-encoded, so any bytes pass). */
export function restoreDump(xattrs: readonly XattrSpec[]): string {
  const lines: string[] = [];
  let last: string | undefined;
  for (const x of xattrs) {
    if (x.host !== last) {
      if (last !== undefined) lines.push('');
      lines.push(`# file: ${quoteRestorePath(x.host)}`);
      last = x.host;
    }
    lines.push(`${x.name}=0x${x.value.toString('hex')}`);
  }
  lines.push('', '');
  return lines.join('\n');
}

/** True when an xattr name can be passed to `setfattr` (no newline, `=`, NUL or space; a namespace prefix). */
export function validXattrName(name: string): boolean {
  return /^[a-z]+\.[^\s=\0]+$/.test(name) && Buffer.byteLength(name) <= 255;
}

/** Sets xattrs with one `setfattr -h --restore=-` run (never following a final symlink). */
export async function setXattrs(xattrs: readonly XattrSpec[], signal?: AbortSignal): Promise<void> {
  if (xattrs.length === 0) return;
  await run(
    'setfattr',
    ['-h', '--restore=-'],
    restoreDump(xattrs),
    'setting extended attributes',
    'attr',
    signal,
  );
}

let setfattrPresent: Promise<boolean> | undefined;

/** Whether `setfattr` can be run (checked once per process). */
export function haveSetfattr(): Promise<boolean> {
  setfattrPresent ??= new Promise((resolve) => {
    const child = spawn('setfattr', ['--version'], { stdio: 'ignore' });
    child.on('error', () => resolve(false));
    child.on('close', (code) => resolve(code === 0));
  });
  return setfattrPresent;
}
