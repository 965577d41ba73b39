import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readlink, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { TerminalError } from '../errors.js';
import type { LocalImage } from '../image/local.js';
import type { Observer } from '../observe.js';
import { readStoredManifest } from '../image/store-endpoint.js';
import { formatPlatform } from '../oci/platform.js';
import { parseImageConfig, type Descriptor } from '../oci/types.js';
import type { ContentStore } from '../store/types.js';
import {
  chainIds,
  ensurePrivateStrataDir,
  pruneCacheDirs,
  strataDir,
  type PruneLayersResult,
} from '../union/layer-cache.js';
import { chooseDriver, snapshotterFor, type DriverName } from '../union/snapshotter.js';
import {
  containerDir,
  containersDir,
  readRecord,
  snapshotOf,
  validateName,
  writeRecord,
  type ContainerRecord,
} from './record.js';

/** Options of {@link createContainer}. */
export interface CreateContainerOptions {
  /** Default: `strata-<8 hex>`. */
  readonly name?: string;
  /** Default: overlay when it works here (root + overlayfs), else vfs. */
  readonly driver?: DriverName;
  readonly signal?: AbortSignal;
  /** Receives `layer-apply` events while missing layers are unpacked into the shared cache. */
  readonly observer?: Observer;
  /** Cap on each missing layer's uncompressed bytes (default 64 GiB): beyond it create fails with SIZE_LIMIT. */
  readonly maxUncompressedBytes?: number;
  /** Clock, for tests. */
  readonly now?: () => Date;
}

/**
 * Creates a container over a local image: claims the name (mkdir), lets the driver unpack the missing layers into
 * the shared cache and make the writable dirs, then writes the record. Nothing is left behind on failure. The
 * root is not mounted yet: {@link mountContainer} does that.
 */
export async function createContainer(
  store: ContentStore,
  image: LocalImage,
  options: CreateContainerOptions = {},
): Promise<ContainerRecord> {
  const name = validateName(options.name ?? `strata-${randomBytes(4).toString('hex')}`);
  const driver = await chooseDriver(store, options.driver);
  await ensurePrivateStrataDir(store.root);
  await mkdir(containersDir(store.root), { recursive: true });
  const dir = containerDir(store.root, name);
  try {
    await mkdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST')
      throw new TerminalError(
        'ALREADY_EXISTS',
        `the container name ${JSON.stringify(name)} is already in use; remove that container (strata rm ${name}) or choose another name`,
      );
    throw err;
  }
  try {
    const snapshotter = await snapshotterFor(store, driver);
    const snap = await snapshotter.prepare(dir, image, {
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.observer ? { observer: options.observer } : {}),
      ...(options.maxUncompressedBytes !== undefined
        ? { maxUncompressedBytes: options.maxUncompressedBytes }
        : {}),
    });
    const cfg = image.config;
    const record: ContainerRecord = {
      name,
      id: randomBytes(32).toString('hex'),
      created: (options.now?.() ?? new Date()).toISOString(),
      driver,
      image: {
        name: image.name,
        manifest: image.manifest.digest,
        config: image.configDigest,
        platform: formatPlatform({
          os: cfg.os,
          architecture: cfg.architecture,
          ...(cfg.variant ? { variant: cfg.variant } : {}),
        }),
      },
      layers: snap.layers.map((l) => ({
        digest: l.digest,
        diffId: l.diffId,
        chainId: l.chainId,
        dir: l.dir,
      })),
      upper: snap.upper,
      ...(snap.work ? { work: snap.work } : {}),
      merged: snap.merged,
    };
    await writeRecord(dir, record);
    return record;
  } catch (err) {
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    throw err;
  }
}

/** Every container of the store (dirs without a record — creates in flight, crash leftovers — are skipped). */
export async function listContainers(store: ContentStore): Promise<ContainerRecord[]> {
  const names = await readdir(containersDir(store.root)).catch(() => [] as string[]);
  const out: ContainerRecord[] = [];
  for (const n of names) {
    const rec = await readRecord(join(containersDir(store.root), n)).catch(() => undefined);
    if (rec) out.push(rec);
  }
  return out.sort((a, b) => a.created.localeCompare(b.created) || a.name.localeCompare(b.name));
}

/** A container by name, or by a unique prefix of its id (as docker accepts); NOT_FOUND otherwise. */
export async function getContainer(store: ContentStore, nameOrId: string): Promise<ContainerRecord> {
  if (/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(nameOrId)) {
    const rec = await readRecord(containerDir(store.root, nameOrId));
    if (rec) return rec;
  }
  if (/^[a-f0-9]{4,64}$/.test(nameOrId)) {
    const hits = (await listContainers(store)).filter((c) => c.id.startsWith(nameOrId));
    if (hits.length > 1)
      throw new TerminalError('INVALID_ARGUMENT', `container ID prefix ${nameOrId} is ambiguous`);
    if (hits[0]) return hits[0];
  }
  throw new TerminalError('NOT_FOUND', `no container ${JSON.stringify(nameOrId)} (see \`strata ps\`)`);
}

/** Mounts a container's root (idempotent: an existing mount is reused) and returns its path. */
export async function mountContainer(store: ContentStore, nameOrId: string): Promise<string> {
  const rec = await getContainer(store, nameOrId);
  return (await snapshotterFor(store, rec.driver)).mount(snapshotOf(rec));
}

/** Unmounts a container's root if mounted (ContainerBusyError when in use, unless `force`). */
export async function unmountContainer(
  store: ContentStore,
  nameOrId: string,
  options: { force?: boolean } = {},
): Promise<void> {
  const rec = await getContainer(store, nameOrId);
  await (await snapshotterFor(store, rec.driver)).unmount(snapshotOf(rec), options);
}

/** True when the container's root is mounted (always true for vfs). */
export async function isContainerMounted(store: ContentStore, record: ContainerRecord): Promise<boolean> {
  return (await snapshotterFor(store, record.driver)).isMounted(snapshotOf(record));
}

/**
 * Removes a container: unmounts its root (refusing with ContainerBusyError when in use, unless `force`, which
 * detaches lazily) and deletes its dir. The shared layer dirs stay (see {@link pruneLayerCache}). A dir left without
 * a record by a crash is removed too.
 */
export async function removeContainer(
  store: ContentStore,
  nameOrId: string,
  options: { force?: boolean } = {},
): Promise<string> {
  let rec: ContainerRecord | undefined;
  try {
    rec = await getContainer(store, nameOrId);
  } catch (err) {
    const dir = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(nameOrId)
      ? containerDir(store.root, nameOrId)
      : undefined;
    if (!dir || !(await stat(dir).catch(() => undefined))) throw err;
    const overlay = await snapshotterFor(store, 'overlay');
    await overlay.remove(dir, undefined, options);
    return nameOrId;
  }
  const snapshotter = await snapshotterFor(store, rec.driver);
  await snapshotter.remove(containerDir(store.root, rec.name), snapshotOf(rec), options);
  return rec.name;
}

/** The directories of a container's image layers, base first (overlay: diff dirs; vfs: full trees). */
export function containerLayerDirs(record: ContainerRecord): string[] {
  return record.layers.map((l) => l.dir);
}

/** ChainIDs of the layers some container uses (they are never pruned). */
export async function containerChainIds(store: ContentStore): Promise<Set<string>> {
  const out = new Set<string>();
  for (const c of await listContainers(store)) for (const l of c.layers) out.add(l.chainId);
  return out;
}

/** Manifest digests of the images containers were made from (gc roots, so commit can still read them). */
export async function containerImageRoots(store: ContentStore): Promise<Descriptor['digest'][]> {
  return [...new Set((await listContainers(store)).map((c) => c.image.manifest))];
}

/** ChainIDs of every image in the store (every platform present locally). */
async function imageChainIds(store: ContentStore): Promise<Set<string>> {
  const out = new Set<string>();
  const seen = new Set<string>();
  const visit = async (d: Pick<Descriptor, 'digest' | 'mediaType'>, what: string): Promise<void> => {
    if (seen.has(d.digest) || !(await store.has(d.digest))) return;
    seen.add(d.digest);
    const doc = await readStoredManifest(store, d, what).catch(() => undefined);
    if (!doc) return;
    if (doc.kind === 'index') {
      for (const m of doc.index.manifests) await visit(m, what);
      return;
    }
    const cfg = await store
      .readBlob(doc.manifest.config.digest, 8 * 1024 * 1024)
      .then((b) => parseImageConfig(b, what))
      .catch(() => undefined);
    for (const c of chainIds(cfg?.rootfs.diff_ids ?? [])) out.add(c);
  };
  for (const r of await store.listRefs()) await visit(r.descriptor, r.name);
  return out;
}

/**
 * Deletes the layer cache entries (overlay diff dirs, vfs trees) that no image of the store and no container
 * uses, temp and incomplete entries, and dangling short links. Entries touched in the last 10 minutes are kept
 * (a create may be between unpacking and writing its record).
 */
export async function pruneLayerCache(
  store: ContentStore,
  options: { dryRun?: boolean; graceMs?: number } = {},
): Promise<PruneLayersResult> {
  const inUse = await imageChainIds(store);
  for (const c of await containerChainIds(store)) inUse.add(c);
  for (const c of (await store.leasedContent()).chainIds) inUse.add(c); // a create in flight holds its layers
  const result = await pruneCacheDirs(store.root, inUse, options);
  if (!options.dryRun) {
    const links = join(strataDir(store.root), 'l');
    for (const n of await readdir(links).catch(() => [] as string[])) {
      const target = await readlink(join(links, n)).catch(() => undefined);
      if (target === undefined || !(await stat(join(links, target)).catch(() => undefined)))
        await rm(join(links, n), { force: true });
    }
  }
  return result;
}
