/**
 * Writes node configuration files under a root directory and undoes exactly what it wrote. Writes are atomic
 * (temp file in the same directory, fsync, rename, fsync of the directory); an existing file is copied to
 * `<file>.strata-backup` once, before our first write, and never replaced by a later backup; a manifest in the root
 * (`.strata-mirror.json` by default) records each file we wrote with the digest of our content, its backup, and the
 * directories we made, so that restore puts originals back byte for byte, removes what we created, and leaves (with a
 * warning) a file that someone else changed after us.
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, open, rename, rmdir, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { AbortedError, TerminalError, classifySystemError } from '../../engine/errors.js';
import { SafeRoot } from '../../engine/union/safe-path.js';
import { removeMirrors } from './daemon-json.js';

/** The default manifest file name inside the root. */
export const DEFAULT_MANIFEST = '.strata-mirror.json';
/** Suffix of the backup kept next to a file we replaced. */
export const BACKUP_SUFFIX = '.strata-backup';
/** Largest existing file (or manifest) read: node configuration files are small; anything bigger is refused. */
export const DEFAULT_MAX_FILE_BYTES = 1024 * 1024;

/** How restore undoes our part of a file someone changed after us (instead of leaving it as is). */
export interface UndoDaemonMirrors {
  readonly kind: 'daemon-json-mirrors';
  /** The mirrors we added to `registry-mirrors` (the original did not list them). */
  readonly mirrors: readonly string[];
}

/** What a {@link PlannedFile} renders: the file's content and, optionally, how to undo it surgically. */
export interface Rendered {
  readonly content: string;
  /**
   * Permission bits a file holding secrets needs (e.g. 0o600 for a hosts.toml with an Authorization header): a file
   * created gets them, an existing file keeps its mode narrowed by them. Default: 0o644 for new files.
   */
  readonly mode?: number;
  readonly undo?: UndoDaemonMirrors;
}

/** One file to converge. */
export interface PlannedFile {
  /** Path relative to the root, `/`-separated, without `.`/`..` segments (e.g. `docker.io/hosts.toml`). */
  readonly path: string;
  /**
   * The wanted content given the file's current text (undefined when missing) and the undo recorded by our
   * previous write (undefined when the file is not ours yet). Throws to refuse (nothing is written then).
   */
  render(current: string | undefined, previous: UndoDaemonMirrors | undefined): Rendered;
}

/** What happened (or, in a dry run, would happen) to one file. */
export interface FileAction {
  /** Host path of the file. */
  readonly path: string;
  /**
   * `create`/`update`: written; `unchanged`: already as wanted; `restore`: the backup put back; `remove`: a file we
   * created removed; `undo`: our part taken out of a file changed by someone else; `keep`: left as is (see warnings).
   */
  readonly action: 'create' | 'update' | 'unchanged' | 'restore' | 'remove' | 'undo' | 'keep';
  /** Host path of the backup, when there is one. */
  readonly backup?: string;
  /** The content written (create, update, undo). */
  readonly content?: string;
}

/** The outcome of {@link applyNodeConfig} and {@link restoreNodeConfig}. */
export interface NodeConfigResult {
  readonly actions: readonly FileAction[];
  /** Things a person should look at (a file changed by someone else, a missing backup). */
  readonly warnings: readonly string[];
  /** Host path of the manifest. */
  readonly manifest: string;
}

/** Options shared by apply and restore. */
export interface NodeConfigRootOptions {
  /** The directory the files live in (must exist). */
  readonly root: string;
  /** Manifest file name inside the root; default {@link DEFAULT_MANIFEST}. */
  readonly manifestName?: string;
  /** Only answer what would be done. */
  readonly dryRun?: boolean;
  readonly signal?: AbortSignal;
  /** Default {@link DEFAULT_MAX_FILE_BYTES}. */
  readonly maxFileBytes?: number;
}

/** Options of {@link applyNodeConfig}. */
export interface ApplyNodeConfigOptions extends NodeConfigRootOptions {
  readonly files: readonly PlannedFile[];
  /** Restore files of the manifest that are no longer planned (default true: the set converges). */
  readonly prune?: boolean;
}

interface ManifestEntry {
  sha256: string;
  backup: string | null;
  undo?: UndoDaemonMirrors;
}

interface Manifest {
  version: 1;
  files: Record<string, ManifestEntry>;
  dirs: string[];
}

interface Current {
  readonly bytes: Buffer;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
}

const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex');

function checkAbort(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new AbortedError('node configuration aborted');
}

/** Refuses anything but a normalized relative path (no `..`, `.`, empty or absolute segments). */
function checkRelative(path: string): string {
  const parts = path.split('/');
  if (path === '' || parts.some((p) => p === '' || p === '.' || p === '..' || p.includes('\0')))
    throw new TerminalError('INVALID_ARGUMENT', `invalid node configuration path ${JSON.stringify(path)}`);
  return path;
}

/** Reads a regular file without following a final symlink; undefined when missing. Bounded by `max`. */
async function readCurrent(host: string, max: number): Promise<Current | undefined> {
  let fh: FileHandle;
  try {
    fh = await open(host, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'ELOOP')
      throw new TerminalError(
        'CONFLICT',
        `${host} is a symbolic link; refusing to replace it (point it at a file)`,
      );
    throw classifySystemError(err, `read ${host}`);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile())
      throw new TerminalError('CONFLICT', `${host} is not a regular file; refusing to replace it`);
    if (st.size > max)
      throw new TerminalError(
        'SIZE_LIMIT',
        `${host} is ${st.size} bytes, more than the ${max} a config file may be`,
      );
    const buf = Buffer.alloc(st.size);
    let off = 0;
    while (off < buf.length) {
      const { bytesRead } = await fh.read(buf, off, buf.length - off, off);
      if (bytesRead === 0) break;
      off += bytesRead;
    }
    return { bytes: buf.subarray(0, off), mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
  } finally {
    await fh.close();
  }
}

/** Where the backup of a file lives: next to it. */
const backupOf = (host: string): string => `${host}${BACKUP_SUFFIX}`;

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Writes `content` to `path` atomically: a temp file in the same directory (exclusive create), fsync, rename over
 * the target, fsync of the directory. Mode (default 0644) and, when given, owner are set before the rename.
 */
export async function writeFileAtomic(
  path: string,
  content: string | Buffer,
  options: { mode?: number; uid?: number; gid?: number } = {},
): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `.${randomBytes(6).toString('hex')}.strata-tmp`);
  const fh = await open(
    tmp,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o600,
  );
  try {
    try {
      await fh.writeFile(content);
      await fh.chmod(options.mode ?? 0o644);
      if (options.uid !== undefined && options.gid !== undefined)
        await fh.chown(options.uid, options.gid).catch(() => {}); // not root: the file stays ours
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw classifySystemError(err, `write ${path}`);
  }
  await fsyncDir(dir);
}

async function exists(host: string): Promise<boolean> {
  try {
    await lstat(host);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/** Reads and checks the manifest; an absent one is empty. A corrupt one is refused (we would not know what is ours). */
async function readManifest(host: string, max: number): Promise<Manifest> {
  const cur = await readCurrent(host, max);
  if (!cur) return { version: 1, files: {}, dirs: [] };
  try {
    const m = JSON.parse(cur.bytes.toString('utf8')) as Manifest;
    if (m.version !== 1 || typeof m.files !== 'object' || m.files === null || !Array.isArray(m.dirs))
      throw new Error('unknown layout');
    for (const [path, e] of Object.entries(m.files)) {
      checkRelative(path);
      if (typeof e.sha256 !== 'string' || (e.backup !== null && typeof e.backup !== 'string'))
        throw new Error(`bad entry ${path}`);
      if (e.backup !== null) checkRelative(e.backup);
      if (e.undo && (e.undo.kind !== 'daemon-json-mirrors' || !Array.isArray(e.undo.mirrors)))
        throw new Error(`bad undo of ${path}`);
    }
    for (const d of m.dirs) checkRelative(d);
    return m;
  } catch (err) {
    throw new TerminalError(
      'STORE_CORRUPT',
      `${host} is not a strata node configuration manifest (${(err as Error).message}); move it away to start over`,
      { cause: err },
    );
  }
}

/** The root, its manifest, and the safe resolution of paths below it. */
class Root {
  private constructor(
    readonly safe: SafeRoot,
    readonly manifestPath: string,
    readonly max: number,
    /** Directories made while resolving (relative, canonical). */
    readonly createdDirs: string[],
  ) {}

  static async open(options: NodeConfigRootOptions): Promise<Root> {
    const created: string[] = [];
    let safe: SafeRoot;
    try {
      // Directories made while resolving are recorded, so that restore removes them again.
      safe = await SafeRoot.open(options.root, async (_host, rel) => void created.push(rel));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new TerminalError(
        code === 'ENOENT' ? 'NOT_FOUND' : 'INVALID_ARGUMENT',
        `configuration directory ${options.root} ${code === 'ENOENT' ? 'does not exist' : 'is not a directory'}`,
        { cause: err },
      );
    }
    const manifestName = checkRelative(options.manifestName ?? DEFAULT_MANIFEST);
    return new Root(
      safe,
      join(safe.root, manifestName),
      options.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES,
      created,
    );
  }

  /** Host path of a relative path, parents resolved inside the root (made when `create`); undefined if missing. */
  async resolve(path: string, create: boolean): Promise<string | undefined> {
    const walk = await this.safe.resolve(checkRelative(path), { create });
    if (walk.status === 'refused')
      throw new TerminalError(
        'CONFLICT',
        `${join(this.safe.root, path)}: ${walk.reason}; refusing to write there`,
      );
    return walk.status === 'ok' ? this.safe.host(walk.rel) : undefined;
  }
}

async function writeManifest(root: Root, manifest: Manifest): Promise<void> {
  if (Object.keys(manifest.files).length === 0 && manifest.dirs.length === 0) {
    await unlink(root.manifestPath).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
    await fsyncDir(root.safe.root);
    return;
  }
  await writeFileAtomic(root.manifestPath, `${JSON.stringify(manifest, null, 2)}\n`);
}

/**
 * Converges the planned files under `root`: renders each (all before any write, so a refusal changes nothing), backs
 * up an existing file the first time, writes what differs atomically, records it all in the manifest, and (with
 * `prune`) restores files of the manifest that are no longer planned. Running it twice writes nothing the second time.
 */
export async function applyNodeConfig(options: ApplyNodeConfigOptions): Promise<NodeConfigResult> {
  checkAbort(options.signal);
  const root = await Root.open(options);
  const manifest = await readManifest(root.manifestPath, root.max);
  const warnings: string[] = [];
  const actions: FileAction[] = [];

  // Plan: resolve, read and render everything first.
  const plans: { file: PlannedFile; host: string; current?: Current; rendered: Rendered }[] = [];
  const seen = new Set<string>();
  for (const file of options.files) {
    if (seen.has(file.path)) throw new TerminalError('INVALID_ARGUMENT', `${file.path} is planned twice`);
    seen.add(file.path);
    const host = (await root.resolve(file.path, false)) ?? join(root.safe.root, file.path);
    const current = await readCurrent(host, root.max);
    const entry = manifest.files[file.path];
    const rendered = file.render(current?.bytes.toString('utf8'), entry?.undo);
    plans.push({ file, host, ...(current ? { current } : {}), rendered });
  }

  // Backups of files that are not ours yet, then the manifest (the intent), then the files.
  const writes: { host: string; plan: (typeof plans)[number] }[] = [];
  for (const plan of plans) {
    checkAbort(options.signal);
    const { file, current, rendered } = plan;
    const wanted = Buffer.from(rendered.content, 'utf8');
    const entry = manifest.files[file.path];
    if (current?.bytes.equals(wanted)) {
      actions.push({
        path: plan.host,
        action: 'unchanged',
        ...(entry?.backup ? { backup: backupOf(plan.host) } : {}),
      });
      continue;
    }
    if (entry && current && sha256(current.bytes) !== entry.sha256)
      warnings.push(`${plan.host} was changed by someone else since strata wrote it; replacing it again`);
    let backup = entry?.backup ?? null;
    if (!entry && current) {
      backup = `${file.path}${BACKUP_SUFFIX}`;
      const backupHost = backupOf(plan.host);
      if (await exists(backupHost))
        warnings.push(`${backupHost} already exists (an older backup); keeping it`);
      else if (!options.dryRun)
        await writeFileAtomic(backupHost, current.bytes, {
          mode: current.mode,
          uid: current.uid,
          gid: current.gid,
        });
    }
    manifest.files[file.path] = {
      sha256: sha256(wanted),
      backup,
      ...(rendered.undo ? { undo: rendered.undo } : {}),
    };
    writes.push({ host: plan.host, plan });
  }

  const planned = new Set(options.files.map((f) => f.path));
  const stale = options.prune === false ? [] : Object.keys(manifest.files).filter((p) => !planned.has(p));

  if (options.dryRun) {
    for (const { host, plan } of writes)
      actions.push({
        path: host,
        action: plan.current ? 'update' : 'create',
        content: plan.rendered.content,
        ...(manifest.files[plan.file.path]!.backup ? { backup: backupOf(host) } : {}),
      });
    for (const path of stale) actions.push(await restoreEntry(root, manifest, path, true, warnings));
    return { actions, warnings, manifest: root.manifestPath };
  }

  if (writes.length > 0) await writeManifest(root, manifest);
  for (const { plan } of writes) {
    checkAbort(options.signal);
    const host = (await root.resolve(plan.file.path, true))!;
    const c = plan.current;
    const m = plan.rendered.mode;
    await writeFileAtomic(
      host,
      plan.rendered.content,
      c
        ? { mode: m === undefined ? c.mode : c.mode & m, uid: c.uid, gid: c.gid }
        : m === undefined
          ? {}
          : { mode: m },
    );
    const backup = manifest.files[plan.file.path]!.backup;
    actions.push({
      path: host,
      action: c ? 'update' : 'create',
      content: plan.rendered.content,
      ...(backup ? { backup: backupOf(host) } : {}),
    });
  }
  for (const d of root.createdDirs) if (!manifest.dirs.includes(d)) manifest.dirs.push(d);
  for (const path of stale) actions.push(await restoreEntry(root, manifest, path, false, warnings));
  if (writes.length > 0 || stale.length > 0 || root.createdDirs.length > 0)
    await writeManifest(root, manifest);
  if (stale.length > 0) await removeEmptyDirs(root, manifest);
  return { actions, warnings, manifest: root.manifestPath };
}

/** Undoes one manifest entry (see {@link restoreNodeConfig}) and drops it from the manifest. */
async function restoreEntry(
  root: Root,
  manifest: Manifest,
  path: string,
  dryRun: boolean,
  warnings: string[],
): Promise<FileAction> {
  const entry = manifest.files[path]!;
  const host = (await root.resolve(path, false)) ?? join(root.safe.root, path);
  const backupHost = entry.backup ? backupOf(host) : undefined;
  const current = await readCurrent(host, root.max);
  const haveBackup = backupHost !== undefined && (await exists(backupHost));
  let action: FileAction;
  if (current === undefined || sha256(current.bytes) === entry.sha256) {
    if (haveBackup) {
      if (!dryRun) {
        await rename(backupHost, host);
        await fsyncDir(dirname(host));
      }
      action = { path: host, action: 'restore', backup: backupHost };
    } else if (backupHost) {
      warnings.push(`${host}: its backup ${backupHost} is gone; leaving the file as strata wrote it`);
      action = { path: host, action: 'keep' };
    } else if (current !== undefined) {
      if (!dryRun) {
        await unlink(host);
        await fsyncDir(dirname(host));
      }
      action = { path: host, action: 'remove' };
    } else action = { path: host, action: 'unchanged' };
  } else if (entry.undo?.kind === 'daemon-json-mirrors') {
    const content = removeMirrors(current.bytes.toString('utf8'), entry.undo.mirrors);
    if (!dryRun && content !== current.bytes.toString('utf8'))
      await writeFileAtomic(host, content, { mode: current.mode, uid: current.uid, gid: current.gid });
    warnings.push(
      `${host} was changed by someone else since strata wrote it: only strata's mirrors were taken out` +
        (haveBackup ? ` (the original is still in ${backupHost})` : ''),
    );
    action = { path: host, action: 'undo', content, ...(haveBackup ? { backup: backupHost } : {}) };
  } else {
    warnings.push(
      `${host} was changed by someone else since strata wrote it: left as is` +
        (haveBackup ? ` (the original is in ${backupHost})` : ''),
    );
    action = { path: host, action: 'keep', ...(haveBackup ? { backup: backupHost } : {}) };
  }
  if (!dryRun) delete manifest.files[path];
  return action;
}

/** Removes the directories we made once they are empty and none of our files is left in them. */
async function removeEmptyDirs(root: Root, manifest: Manifest): Promise<void> {
  const keep: string[] = [];
  for (const d of [...manifest.dirs].sort((a, b) => b.length - a.length)) {
    const stillUsed = Object.keys(manifest.files).some((p) => p.startsWith(`${d}/`));
    if (stillUsed) {
      keep.push(d);
      continue;
    }
    try {
      await rmdir(root.safe.host(d));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
    }
  }
  manifest.dirs = keep;
  await writeManifest(root, manifest);
}

/**
 * Undoes everything the manifest records: a file still as we wrote it (or gone) gets its backup back (renamed, so
 * byte-identical, mode and owner included) or, when we created it, is removed; a file changed by someone else is
 * left as is with a warning (daemon.json: only our mirrors are taken out); empty directories we made are removed,
 * then the manifest. Without a manifest there is nothing to do.
 */
export async function restoreNodeConfig(options: NodeConfigRootOptions): Promise<NodeConfigResult> {
  checkAbort(options.signal);
  const root = await Root.open(options);
  const manifest = await readManifest(root.manifestPath, root.max);
  const warnings: string[] = [];
  const actions: FileAction[] = [];
  for (const path of Object.keys(manifest.files)) {
    checkAbort(options.signal);
    actions.push(await restoreEntry(root, manifest, path, options.dryRun ?? false, warnings));
  }
  if (!options.dryRun) await removeEmptyDirs(root, manifest);
  return { actions, warnings, manifest: root.manifestPath };
}
