import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import * as tar from 'tar-stream';
import { fileType } from '../support/file-type.js';

/** What the end-to-end tests compare of each path. */
export interface TreeNode {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  sha256?: string;
  link?: string;
}

/** Every path under `root` with type, mode, owner, size, content hash and link target. */
export async function snapshotTree(root: string): Promise<Map<string, TreeNode>> {
  const out = new Map<string, TreeNode>();
  const walk = async (rel: string): Promise<void> => {
    const abs = rel ? `${root}/${rel}` : root;
    for (const name of (await readdir(abs)).sort()) {
      const p = rel ? `${rel}/${name}` : name;
      const st = await lstat(`${abs}/${name}`);
      const type = fileType(st);
      const node: TreeNode = {
        type,
        mode: st.mode & 0o7777,
        uid: st.uid,
        gid: st.gid,
        size: type === 'file' ? st.size : 0,
      };
      if (type === 'file')
        node.sha256 = createHash('sha256')
          .update(await readFile(`${abs}/${name}`))
          .digest('hex');
      if (type === 'symlink') {
        node.link = await readlink(`${abs}/${name}`);
        node.mode = 0;
      }
      out.set(p, node);
      if (type === 'dir') await walk(p);
    }
  };
  await walk('');
  return out;
}

/** One entry of a tar as tar-stream reads it. */
export interface ReadEntry {
  name: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  linkname: string | null;
  pax: Record<string, string> | null;
  mtime: number;
  content: Buffer;
}

/** Reads a (gzip) tar into entries (small test tars only). */
export async function readTarEntries(source: Readable | string, gzip = false): Promise<ReadEntry[]> {
  const extract = tar.extract();
  const entries: ReadEntry[] = [];
  extract.on('entry', (h, stream, next) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: unknown) => chunks.push(c as Buffer));
    stream.on('end', () => {
      entries.push({
        name: h.name,
        type: h.type ?? 'file',
        mode: h.mode ?? 0,
        uid: h.uid ?? 0,
        gid: h.gid ?? 0,
        size: h.size ?? 0,
        linkname: h.linkname ?? null,
        pax: (h.pax as Record<string, string> | undefined) ?? null,
        mtime: h.mtime ? h.mtime.getTime() / 1000 : 0,
        content: Buffer.concat(chunks),
      });
      next();
    });
  });
  const input = typeof source === 'string' ? createReadStream(source) : source;
  await pipeline(
    ...((gzip ? [input, createGunzip(), extract] : [input, extract]) as [Readable, NodeJS.WritableStream]),
  );
  return entries;
}

/** Differences between two tree snapshots, one line each (empty when equal). */
export function diffTrees(
  a: Map<string, TreeNode>,
  b: Map<string, TreeNode>,
  ignoreDirMode = false,
): string[] {
  const out: string[] = [];
  for (const [p, x] of a) {
    const y = b.get(p);
    if (!y) {
      out.push(`only in first: ${p}`);
      continue;
    }
    const xx = ignoreDirMode && x.type === 'dir' ? { ...x, mode: 0 } : x;
    const yy = ignoreDirMode && y.type === 'dir' ? { ...y, mode: 0 } : y;
    if (JSON.stringify(xx) !== JSON.stringify(yy))
      out.push(`differs: ${p}: ${JSON.stringify(x)} vs ${JSON.stringify(y)}`);
  }
  for (const p of b.keys()) if (!a.has(p)) out.push(`only in second: ${p}`);
  return out;
}
