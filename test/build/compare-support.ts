/**
 * Helpers for comparing two images built from the same Dockerfile: a tree snapshot (types, modes, owners,
 * contents, link targets, hard-link groups, xattrs) and the config fields docker users see.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { ImageConfig } from '../../src/engine/oci/types.js';
import { requirePeer } from '../support/peers.js';

/** One path of a tree, as compared. */
export interface TreeEntry {
  readonly type: 'file' | 'dir' | 'symlink' | 'fifo' | 'char' | 'block' | 'socket';
  /** Permission and special bits (octal text). */
  readonly mode: string;
  readonly uid: number;
  readonly gid: number;
  /** sha256 of a file's content, a symlink's target, or a device's numbers. */
  readonly content?: string;
  /** The other paths of a hard-link group (sorted), when the file has more than one name in the tree. */
  readonly links?: string;
  /** Extended attributes as `name=hex` (sorted), when any. */
  readonly xattrs?: string;
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(path), h);
  return h.digest('hex');
}

/** `getfattr` over a whole tree (never following links): path (relative) → sorted `name=hex` list. */
function xattrsOf(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const text = execFileSync(
    requirePeer('getfattr'),
    ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', root],
    { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let current: string | undefined;
  const attrs: string[] = [];
  const flush = (): void => {
    if (current !== undefined && attrs.length > 0) out.set(current, [...attrs].sort().join(','));
    attrs.length = 0;
  };
  for (const line of text.split('\n')) {
    if (line.startsWith('# file: ')) {
      flush();
      const abs = line.slice('# file: '.length);
      current = abs === root ? '.' : abs.slice(root.length + 1);
    } else if (line.includes('=')) attrs.push(line);
  }
  flush();
  return out;
}

/** Walks `root` (not following symlinks) into a path → entry map; `.` is the root itself. */
export async function snapshotTree(root: string): Promise<Map<string, TreeEntry>> {
  const raw = new Map<string, { entry: Omit<TreeEntry, 'links' | 'xattrs'>; ino: string; nlink: number }>();
  const walk = async (rel: string): Promise<void> => {
    const abs = rel === '.' ? root : join(root, rel);
    const st = await lstat(abs);
    const type = st.isDirectory()
      ? 'dir'
      : st.isSymbolicLink()
        ? 'symlink'
        : st.isFIFO()
          ? 'fifo'
          : st.isCharacterDevice()
            ? 'char'
            : st.isBlockDevice()
              ? 'block'
              : st.isSocket()
                ? 'socket'
                : 'file';
    const content =
      type === 'file'
        ? await sha256File(abs)
        : type === 'symlink'
          ? `-> ${await readlink(abs)}`
          : type === 'char' || type === 'block'
            ? `rdev ${st.rdev}`
            : undefined;
    raw.set(rel, {
      entry: {
        type,
        mode: (st.mode & 0o7777).toString(8).padStart(4, '0'),
        uid: st.uid,
        gid: st.gid,
        ...(content !== undefined ? { content } : {}),
      },
      ino: `${st.dev}:${st.ino}`,
      nlink: st.nlink,
    });
    if (type === 'dir')
      for (const name of (await readdir(abs)).sort()) await walk(rel === '.' ? name : `${rel}/${name}`);
  };
  await walk('.');
  const byIno = new Map<string, string[]>();
  for (const [p, r] of raw)
    if (r.entry.type !== 'dir' && r.nlink > 1) byIno.set(r.ino, [...(byIno.get(r.ino) ?? []), p]);
  const xattrs = xattrsOf(root);
  const out = new Map<string, TreeEntry>();
  for (const [p, r] of raw) {
    const group = (byIno.get(r.ino) ?? []).filter((q) => q !== p).sort();
    const x = xattrs.get(p);
    out.set(p, {
      ...r.entry,
      ...(group.length > 0 ? { links: group.join(',') } : {}),
      ...(x ? { xattrs: x } : {}),
    });
  }
  return out;
}

/** Differences between two trees as `path: field strata=… buildah=…` lines (sorted). */
export function diffTrees(strata: Map<string, TreeEntry>, buildah: Map<string, TreeEntry>): string[] {
  const out: string[] = [];
  for (const p of new Set([...strata.keys(), ...buildah.keys()])) {
    const a = strata.get(p);
    const b = buildah.get(p);
    if (!a) out.push(`${p}: only in buildah (${b!.type})`);
    else if (!b) out.push(`${p}: only in strata (${a.type})`);
    else
      for (const k of ['type', 'mode', 'uid', 'gid', 'content', 'links', 'xattrs'] as const)
        if (a[k] !== b[k]) out.push(`${p}: ${k} strata=${String(a[k])} buildah=${String(b[k])}`);
  }
  return out.sort();
}

/** The config fields compared, in a form that ignores key order. */
export function comparableConfig(config: ImageConfig): Record<string, unknown> {
  // An empty list or map means the same as an absent one (buildah writes `[]`/`{}` where docker leaves the field out).
  const c = Object.fromEntries(
    Object.entries(config.config ?? {}).filter(
      ([, v]) => v !== null && !(typeof v === 'object' && Object.keys(v as object).length === 0),
    ),
  );
  const keys = (v: unknown): string[] | undefined =>
    v && typeof v === 'object' ? Object.keys(v).sort() : undefined;
  const history = config.history ?? [];
  return {
    Env: c['Env'] ?? null,
    Cmd: c['Cmd'] ?? null,
    Entrypoint: c['Entrypoint'] ?? null,
    WorkingDir: c['WorkingDir'] || null,
    User: c['User'] || null,
    ExposedPorts: keys(c['ExposedPorts']) ?? null,
    Volumes: keys(c['Volumes']) ?? null,
    Labels: c['Labels'] ? Object.entries(c['Labels']).sort(([a], [b]) => (a < b ? -1 : 1)) : null,
    StopSignal: c['StopSignal'] ?? null,
    Healthcheck: c['Healthcheck'] ?? null,
    OnBuild: c['OnBuild'] ?? null,
    Shell: c['Shell'] ?? null,
    author: config.author ?? null,
    historyCount: history.length,
    emptyLayers: history.map((h) => (h.empty_layer === true ? 'empty' : 'layer')).join(' '),
    layers: config.rootfs.diff_ids.length,
  };
}

/** Differences between two comparable configs as `config.FIELD strata=… buildah=…` lines. */
export function diffConfigs(strata: Record<string, unknown>, buildah: Record<string, unknown>): string[] {
  const out: string[] = [];
  for (const k of Object.keys(strata)) {
    const a = JSON.stringify(strata[k]);
    const b = JSON.stringify(buildah[k]);
    if (a !== b) out.push(`config.${k}: strata=${a} buildah=${b}`);
  }
  return out;
}
