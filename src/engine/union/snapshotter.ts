import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { release } from 'node:os';
import { join } from 'node:path';
import { StrataError, TerminalError } from '../errors.js';
import type { LocalImage } from '../image/local.js';
import type { Observer } from '../observe.js';
import type { ContentStore } from '../store/types.js';
import type { CachedLayer } from './layer-cache.js';
import { strataDir } from './layer-cache.js';

/** The union drivers. */
export type DriverName = 'overlay' | 'vfs';

/** The filesystem of one container as a driver prepared it (the dirs part of the container record). */
export interface Snapshot {
  readonly driver: DriverName;
  /** The image's layers, base first, with the driver's directory of each (see each driver). */
  readonly layers: readonly CachedLayer[];
  /** overlay: the upper (writable) dir; vfs: the rootfs dir. */
  readonly upper: string;
  /** overlay only: the overlayfs work dir. */
  readonly work?: string;
  /** overlay: the mount point of the merged view; vfs: the rootfs dir. */
  readonly merged: string;
}

/** Options of {@link Snapshotter.prepare}. */
export interface PrepareOptions {
  readonly signal?: AbortSignal;
  /** Receives `layer-apply` events for the layers unpacked into the cache. */
  readonly observer?: Observer;
  /** Cap on each layer's uncompressed bytes (default 64 GiB): beyond it the unpack fails with SIZE_LIMIT. */
  readonly maxUncompressedBytes?: number;
}

/**
 * containerd's snapshotter model, reduced to what a container needs: `prepare` makes a writable root over an
 * image's read-only layers (unpacking each layer once into the shared cache), `mount` makes it visible (idempotent),
 * `unmount` and `remove` undo that. Committing the writable layer into a new image layer is `engine/commit`'s job:
 * it reads the {@link Snapshot} (overlay: walk `upper`; vfs: compare `upper` with the last layer's full tree).
 */
export interface Snapshotter {
  readonly driver: DriverName;
  /** Creates `dir` (must not exist) holding the container's writable dirs over `image`'s layers. */
  prepare(dir: string, image: LocalImage, options?: PrepareOptions): Promise<Snapshot>;
  /** Makes the merged root available and returns its path; a no-op returning the path when already mounted. */
  mount(snapshot: Snapshot): Promise<string>;
  /** True when the merged root is currently available. */
  isMounted(snapshot: Snapshot): Promise<boolean>;
  /** Unmounts (if mounted). Throws BUSY-like {@link ContainerBusyError} when in use, unless `force` (lazy detach). */
  unmount(snapshot: Snapshot, options?: { force?: boolean }): Promise<void>;
  /** Unmounts and deletes the container's dirs (the shared layer dirs stay). */
  remove(dir: string, snapshot: Snapshot | undefined, options?: { force?: boolean }): Promise<void>;
}

/** The merged root is in use (umount said EBUSY); stop its users, or force a lazy unmount. */
export class ContainerBusyError extends StrataError {
  constructor(message: string, cause?: unknown) {
    super('CONFLICT', message, { retryable: true, cause, detail: { reason: 'busy' } });
  }
}

/** Runs a command; resolves with stdout, rejects with a StrataError carrying its stderr. */
export function run(
  command: string,
  args: readonly string[],
  options: { cwd?: string; what: string },
): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, [...args], { cwd: options.cwd, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      const code = (err as NodeJS.ErrnoException).code;
      reject(
        new StrataError(
          'INTERNAL',
          `${options.what}: ${command} ${code === 'ENOENT' ? 'is not installed' : `failed: ${(stderr || err.message).trim()}`}`,
          { cause: err, detail: { command, args } },
        ),
      );
    });
  });
}

/** Unescapes the octal escapes (`\040`) of /proc/self/mountinfo fields. */
function unescapeMountinfo(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Mount points (absolute paths) of this process's mount namespace, with their filesystem types. */
export async function mountPoints(): Promise<Map<string, string>> {
  const text = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    const sep = fields.indexOf('-');
    if (fields.length < 5 || sep < 0) continue;
    out.set(unescapeMountinfo(fields[4]!), fields[sep + 1] ?? '');
  }
  return out;
}

let overlayProbe: Promise<boolean> | undefined;

/**
 * The file remembering a successful test mount: `strata/overlay-ok`, holding the kernel release and the device of
 * the store's `strata/` dir it was made with. Every CLI call is a new process, and the test mount (two child
 * processes, mount(8) and umount(8)) cost about 15 ms of the ~0.1 s that `create` may take; a verdict that
 * holds for this kernel and this filesystem need not be probed again. Only success is remembered: a failing
 * probe (module not loaded yet, a filesystem overlayfs cannot use) is retried by the next process.
 */
export const OVERLAY_PROBE_FILE = 'overlay-ok';

interface ProbeVerdict {
  readonly kernel: string;
  readonly dev: number;
}

async function probeKey(storeRoot: string): Promise<ProbeVerdict | undefined> {
  const st = await stat(strataDir(storeRoot)).catch(() => undefined);
  return st ? { kernel: release(), dev: st.dev } : undefined;
}

async function rememberedOk(storeRoot: string): Promise<boolean> {
  const key = await probeKey(storeRoot);
  if (!key) return false;
  try {
    const v = JSON.parse(
      await readFile(join(strataDir(storeRoot), OVERLAY_PROBE_FILE), 'utf8'),
    ) as ProbeVerdict;
    return v.kernel === key.kernel && v.dev === key.dev;
  } catch {
    return false; // missing or unreadable (e.g. half-written by a concurrent process): probe
  }
}

/**
 * True when overlayfs mounts work here: running as root, `overlay` in /proc/filesystems, and a test mount under
 * the store's `strata/` dir succeeds (so the store's filesystem can hold upper dirs). Probed once per process, and
 * a success is remembered in the store for later processes (same kernel, same filesystem: {@link OVERLAY_PROBE_FILE}).
 */
export function overlaySupported(storeRoot: string): Promise<boolean> {
  overlayProbe ??= (async () => {
    if (process.platform !== 'linux' || process.getuid?.() !== 0) return false;
    const fss = await readFile('/proc/filesystems', 'utf8').catch(() => '');
    if (!/\boverlay\b/.test(fss)) return false;
    if (await rememberedOk(storeRoot)) return true;
    const dir = join(strataDir(storeRoot), `.probe-${randomBytes(6).toString('hex')}`);
    try {
      for (const d of ['lower', 'upper', 'work', 'merged']) await mkdir(join(dir, d), { recursive: true });
      await run(
        'mount',
        ['-t', 'overlay', 'overlay', '-o', 'lowerdir=lower,upperdir=upper,workdir=work,index=off', 'merged'],
        { cwd: dir, what: 'overlay probe' },
      );
      await run('umount', [join(dir, 'merged')], { what: 'overlay probe' });
    } catch {
      return false;
    } finally {
      await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    }
    const key = await probeKey(storeRoot);
    if (key)
      await writeFile(join(strataDir(storeRoot), OVERLAY_PROBE_FILE), `${JSON.stringify(key)}\n`).catch(
        () => undefined, // only an optimisation
      );
    return true;
  })();
  return overlayProbe;
}

/** The driver to use: the one asked for (checked), else overlay when it works here, else vfs. */
export async function chooseDriver(store: ContentStore, wanted?: DriverName): Promise<DriverName> {
  if (wanted !== undefined && wanted !== 'overlay' && wanted !== 'vfs')
    throw new TerminalError(
      'INVALID_ARGUMENT',
      `unknown driver ${JSON.stringify(wanted)}: use overlay or vfs`,
    );
  if (wanted === 'vfs') return 'vfs';
  const ok = await overlaySupported(store.root);
  if (wanted === 'overlay' && !ok)
    throw new TerminalError(
      'INVALID_ARGUMENT',
      'the overlay driver needs root and a kernel with overlayfs (a test mount failed); use --driver vfs',
    );
  return ok ? 'overlay' : 'vfs';
}

/** The snapshotter of a driver over a store. */
export async function snapshotterFor(store: ContentStore, driver: DriverName): Promise<Snapshotter> {
  if (driver === 'overlay') {
    const { OverlaySnapshotter } = await import('./overlay.js');
    return new OverlaySnapshotter(store);
  }
  const { VfsSnapshotter } = await import('./vfs-driver.js');
  return new VfsSnapshotter(store);
}
