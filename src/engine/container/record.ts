import { randomBytes } from 'node:crypto';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TerminalError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import { strataDir } from '../union/layer-cache.js';
import type { DriverName, Snapshot } from '../union/snapshotter.js';

/**
 * A container's record, `<storeRoot>/strata/containers/<name>/container.json`: the CONTRACT read by
 * `engine/commit` and `export`. All paths are absolute. Written atomically (temp file + rename), never changed after
 * create.
 */
export interface ContainerRecord {
  readonly name: string;
  /** 64 random hex digits. */
  readonly id: string;
  /** RFC 3339. */
  readonly created: string;
  readonly driver: DriverName;
  readonly image: {
    /** The store ref name the container was made from (`example.com/app:1`). */
    readonly name: string;
    /** Digest of the platform's image manifest. */
    readonly manifest: Digest;
    /** Digest of its config (the image ID). */
    readonly config: Digest;
    /** `os/arch[/variant]`. */
    readonly platform: string;
  };
  /**
   * The image's layers, base first. `dir`: overlay — the layer's own diff dir in the shared cache (overlay
   * whiteout form); vfs — the FULL tree of layers 0..n (so the container's lower tree is the last one's `dir`).
   */
  readonly layers: ReadonlyArray<{
    readonly digest: Digest;
    readonly diffId: Digest;
    readonly chainId: Digest;
    readonly dir: string;
  }>;
  /** overlay: the upper (writable) dir; vfs: the rootfs dir. */
  readonly upper: string;
  /** overlay only: the overlayfs work dir. */
  readonly work?: string;
  /** overlay: the mount point of the merged root; vfs: the rootfs dir. */
  readonly merged: string;
}

/** Name of the record file in a container's dir. */
export const RECORD_FILE = 'container.json';

/** Container names as docker accepts them. */
export const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;

/** Parent of every container dir. */
export function containersDir(storeRoot: string): string {
  return join(strataDir(storeRoot), 'containers');
}

/** A container's own dir (holding the record and `upper/`, `work/`, `merged/` or `rootfs/`). */
export function containerDir(storeRoot: string, name: string): string {
  return join(containersDir(storeRoot), name);
}

/** Throws INVALID_ARGUMENT unless `name` is a valid container name. */
export function validateName(name: string): string {
  if (!NAME_RE.test(name) || name.length > 128)
    throw new TerminalError(
      'INVALID_ARGUMENT',
      `invalid container name ${JSON.stringify(name)}: use 2 to 128 characters [a-zA-Z0-9][a-zA-Z0-9_.-]+`,
    );
  return name;
}

/** The snapshot (driver view) of a record. */
export function snapshotOf(record: ContainerRecord): Snapshot {
  return {
    driver: record.driver,
    layers: record.layers,
    upper: record.upper,
    ...(record.work ? { work: record.work } : {}),
    merged: record.merged,
  };
}

/** Writes the record atomically into `dir`. */
export async function writeRecord(dir: string, record: ContainerRecord): Promise<void> {
  const tmp = join(dir, `${RECORD_FILE}.tmp-${randomBytes(6).toString('hex')}`);
  try {
    await writeFile(tmp, `${JSON.stringify(record, null, 2)}\n`, { flush: true });
    await rename(tmp, join(dir, RECORD_FILE));
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** Reads and checks a record; undefined when the dir has none (a create in flight, or a crash's leftovers). */
export async function readRecord(dir: string): Promise<ContainerRecord | undefined> {
  let text: string;
  try {
    text = await readFile(join(dir, RECORD_FILE), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR')
      return undefined;
    throw err;
  }
  let rec: ContainerRecord;
  try {
    rec = JSON.parse(text) as ContainerRecord;
  } catch (err) {
    throw new TerminalError('STORE_CORRUPT', `${join(dir, RECORD_FILE)} is not valid JSON`, { cause: err });
  }
  if (
    typeof rec?.name !== 'string' ||
    (rec.driver !== 'overlay' && rec.driver !== 'vfs') ||
    !Array.isArray(rec.layers) ||
    typeof rec.merged !== 'string' ||
    typeof rec.upper !== 'string'
  )
    throw new TerminalError('STORE_CORRUPT', `${join(dir, RECORD_FILE)} is not a container record`);
  return rec;
}
