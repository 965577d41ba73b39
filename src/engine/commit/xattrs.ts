/**
 * Extended attributes of whole trees, read in one batch with `getfattr -R` (Debian package `attr`): Node has no
 * xattr API, and one process per tree is far cheaper than one per file. The dump parser is a pure function.
 */
import { execFile } from 'node:child_process';
import { access, constants } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { TerminalError } from '../errors.js';

/** Extended attributes of every file of a tree that has any, keyed by path relative to the root (`''` = root). */
export type XattrTree = ReadonlyMap<string, Readonly<Record<string, Buffer>>>;

/** Attributes overlayfs keeps for itself; they never go into a layer tar. */
export function isOverlayPrivateXattr(name: string): boolean {
  return name.startsWith('trusted.overlay.') || name.startsWith('user.overlay.');
}

/** True when an overlay directory's attributes mark it opaque (`trusted.overlay.opaque=y` or the userxattr form). */
export function isOpaqueDir(xattrs: Readonly<Record<string, Buffer>> | undefined): boolean {
  if (!xattrs) return false;
  const v = xattrs['trusted.overlay.opaque'] ?? xattrs['user.overlay.opaque'];
  return v !== undefined && v.toString('latin1') === 'y';
}

/** The attributes that go into a tar entry: everything but overlay's private ones; undefined when none. */
export function publicXattrs(
  xattrs: Readonly<Record<string, Buffer>> | undefined,
): Readonly<Record<string, Buffer>> | undefined {
  if (!xattrs) return undefined;
  let out: Record<string, Buffer> | undefined;
  for (const [k, v] of Object.entries(xattrs)) {
    if (isOverlayPrivateXattr(k)) continue;
    (out ??= {})[k] = v;
  }
  return out;
}

/** Decodes getfattr's escaping of file names (`\012`, `\\`). */
export function unescapeGetfattrName(s: string): string {
  if (!s.includes('\\')) return s;
  const bytes: number[] = [];
  const raw = Buffer.from(s, 'utf8');
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!;
    if (
      c === 0x5c &&
      i + 3 < raw.length &&
      /^[0-7]{3}$/.test(raw.subarray(i + 1, i + 4).toString('latin1'))
    ) {
      bytes.push(parseInt(raw.subarray(i + 1, i + 4).toString('latin1'), 8));
      i += 3;
    } else if (c === 0x5c && raw[i + 1] === 0x5c) {
      bytes.push(0x5c);
      i += 1;
    } else bytes.push(c);
  }
  return Buffer.from(bytes).toString('utf8');
}

/** Decodes one getfattr value as printed with `-e base64` (`0s…`), `-e hex` (`0x…`) or text (`"…"`). */
export function decodeGetfattrValue(v: string | undefined): Buffer {
  if (v === undefined || v === '' || v === '""') return Buffer.alloc(0);
  if (v.startsWith('0s')) return Buffer.from(v.slice(2), 'base64');
  if (v.startsWith('0x')) return Buffer.from(v.slice(2), 'hex');
  if (v.startsWith('"') && v.endsWith('"')) return Buffer.from(unescapeGetfattrName(v.slice(1, -1)), 'utf8');
  return Buffer.from(v, 'utf8');
}

/**
 * Parses `getfattr -R -h -d -m - -e base64 --absolute-names ROOT` output into a map keyed by path relative to
 * `root` (pure).
 */
export function parseGetfattrDump(output: string, root: string): Map<string, Record<string, Buffer>> {
  const out = new Map<string, Record<string, Buffer>>();
  const prefix = root.endsWith('/') ? root : `${root}/`;
  let current: Record<string, Buffer> | undefined;
  for (const line of output.split('\n')) {
    if (line.startsWith('# file: ')) {
      const abs = unescapeGetfattrName(line.slice(8));
      const rel =
        abs === root || abs === prefix ? '' : abs.startsWith(prefix) ? abs.slice(prefix.length) : undefined;
      current = rel === undefined ? undefined : {};
      if (current && rel !== undefined) out.set(rel, current);
      continue;
    }
    if (!current || line === '' || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    const name = eq < 0 ? line : line.slice(0, eq);
    current[name] = decodeGetfattrValue(eq < 0 ? undefined : line.slice(eq + 1));
  }
  return out;
}

let getfattrPath: Promise<string | undefined> | undefined;

/** Absolute path of a program found on PATH, or undefined. */
export async function findProgram(
  name: string,
  pathEnv = process.env.PATH ?? '',
): Promise<string | undefined> {
  for (const dir of pathEnv.split(delimiter).concat(['/usr/bin', '/bin', '/usr/sbin', '/sbin'])) {
    if (!dir) continue;
    const p = join(dir, name);
    try {
      await access(p, constants.X_OK);
      return p;
    } catch {
      // keep looking
    }
  }
  return undefined;
}

/**
 * Reads the extended attributes of every file under `root` (symlinks not followed) with one `getfattr -R`.
 * `required`: throw when getfattr is missing (overlay needs it for opaque dirs); else answer an empty map.
 */
export async function readXattrTree(
  root: string,
  options: { signal?: AbortSignal; required?: boolean; match?: string } = {},
): Promise<XattrTree> {
  getfattrPath ??= findProgram('getfattr');
  const bin = await getfattrPath;
  if (!bin) {
    if (options.required)
      throw new TerminalError(
        'INVALID_ARGUMENT',
        'reading overlay whiteouts and opaque directories needs getfattr (Debian package attr)',
      );
    return new Map();
  }
  const output = await new Promise<string>((resolve, reject) => {
    execFile(
      bin,
      ['-R', '-h', '-d', '-m', options.match ?? '-', '-e', 'base64', '--absolute-names', root],
      { maxBuffer: 1 << 30, encoding: 'utf8', ...(options.signal ? { signal: options.signal } : {}) },
      (err, stdout, stderr) => {
        // getfattr exits 1 when some file could not be read; what it printed is still good.
        if (err && !stdout)
          reject(new TerminalError('INTERNAL', `getfattr ${root}: ${stderr || err.message}`, { cause: err }));
        else resolve(stdout);
      },
    );
  });
  return parseGetfattrDump(output, root);
}
