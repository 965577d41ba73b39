import { createHash } from 'node:crypto';
import { lstat, mkdtemp, readdir, readFile, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pack, type Header } from 'tar-stream';
import { afterEach } from 'vitest';
import { digestOf } from '../../src/engine/oci/digest.js';
import { MediaType } from '../../src/engine/oci/media-types.js';
import { hostPlatform } from '../../src/engine/oci/platform.js';
import type { ContentStore } from '../../src/engine/store/types.js';
import { fileType } from '../support/file-type.js';

const dirs: string[] = [];

/** A fresh temp directory removed after the current test. */
export async function tempDir(prefix = 'strata-union-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  dirs.push(dir);
  return dir;
}

afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

/** One node of a tree snapshot. */
export interface NodeInfo {
  type: 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';
  mode: number;
  uid: number;
  gid: number;
  size?: number;
  sha256?: string;
  link?: string;
  rdev?: number;
  ino: number;
  nlink: number;
  mtime?: number;
}

/** Every path under `root` (relative, root itself as '.') with its type, mode, owner, content hash, link target. */
export async function snapshot(
  root: string,
  options: { mtimes?: boolean } = {},
): Promise<Map<string, NodeInfo>> {
  const out = new Map<string, NodeInfo>();
  const visit = async (rel: string): Promise<void> => {
    const host = rel === '.' ? root : join(root, rel);
    const st = await lstat(host);
    const type: NodeInfo['type'] = fileType(st);
    const info: NodeInfo = {
      type,
      mode: st.mode & 0o7777,
      uid: st.uid,
      gid: st.gid,
      ino: st.ino,
      nlink: st.nlink,
    };
    if (options.mtimes && type !== 'dir') info.mtime = Math.floor(st.mtimeMs / 1000);
    if (type === 'file') {
      info.size = st.size;
      info.sha256 = createHash('sha256')
        .update(await readFile(host))
        .digest('hex');
    }
    if (type === 'symlink') info.link = await readlink(host);
    if (type === 'char' || type === 'block') info.rdev = st.rdev;
    if (type === 'symlink') info.mode = 0;
    out.set(rel, info);
    if (type === 'dir')
      for (const child of (await readdir(host)).sort()) await visit(rel === '.' ? child : `${rel}/${child}`);
  };
  await visit('.');
  return out;
}

/** A tar-stream header plus optional content, as the tests write them. */
export type TarEntrySpec = Partial<Header> & {
  name: string;
  content?: string | Buffer;
  pax?: Record<string, string>;
};

/** A tar (tar-stream pack) of the given entries, as one buffer. */
export async function makeTar(entries: readonly TarEntrySpec[]): Promise<Buffer> {
  const p = pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of p) chunks.push(c as Buffer);
  })();
  for (const { content, ...header } of entries) {
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      const isFile = header.type === undefined || header.type === 'file';
      if (content === undefined && !isFile) p.entry(header, cb);
      else p.entry(header, content ?? '', cb);
    });
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

/** A readable of a buffer, in chunks. */
export function readableOf(buf: Buffer, chunk = 64 * 1024): Readable {
  return Readable.from(
    (function* () {
      for (let i = 0; i < buf.length; i += chunk) yield buf.subarray(i, i + chunk);
    })(),
  );
}

/** Stores layer blobs, a config and a manifest, and tags the image `name`. */
export async function storeImage(
  store: ContentStore,
  name: string,
  layers: readonly { blob: Buffer; mediaType: string; diffId: string }[],
): Promise<void> {
  const platform = hostPlatform();
  const descriptors = [];
  for (const l of layers) {
    const r = await store.putBytes(l.blob);
    descriptors.push({ mediaType: l.mediaType, digest: r.digest, size: r.size });
  }
  const config = Buffer.from(
    JSON.stringify({
      architecture: platform.architecture,
      os: platform.os,
      config: {},
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      history: layers.map(() => ({ created_by: 'test' })),
    }),
  );
  const cfg = await store.putBytes(config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      config: { mediaType: MediaType.OciConfig, digest: cfg.digest, size: cfg.size },
      layers: descriptors,
    }),
  );
  const m = await store.putBytes(manifest);
  await store.setRef(name, { mediaType: MediaType.OciManifest, digest: m.digest, size: m.size });
}

/** The sha256 digest string of bytes (a diffID). */
export function diffIdOf(bytes: Buffer): string {
  return digestOf(bytes);
}
