import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import {
  chmod,
  chown,
  link,
  mkdir,
  readdir,
  readFile,
  readlink,
  lstat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { join } from 'node:path';
import type { ContentStore } from '../../src/engine/store/types.js';
import { makeLayer, makeLayeredImage, type TestLayer } from '../support/images.js';

/** What the tree comparison looks at for one path. */
export interface Entry {
  readonly type: string;
  readonly mode: string;
  readonly uid: number;
  readonly gid: number;
  readonly size?: number;
  readonly sha256?: string;
  readonly target?: string;
  readonly rdev?: number;
}

/** Every path under `root` (the root itself excluded): type, mode, owner, size, content hash, link target. */
export async function snapshotTree(root: string): Promise<Record<string, Entry>> {
  const out: Record<string, Entry> = {};
  const walk = async (rel: string): Promise<void> => {
    for (const name of (await readdir(join(root, rel))).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const p = join(root, r);
      const st = await lstat(p);
      const base = { mode: (st.mode & 0o7777).toString(8), uid: st.uid, gid: st.gid };
      if (st.isDirectory()) {
        out[r] = { type: 'dir', ...base };
        await walk(r);
      } else if (st.isSymbolicLink()) out[r] = { type: 'symlink', ...base, target: await readlink(p) };
      else if (st.isFile())
        out[r] = {
          type: 'file',
          ...base,
          size: st.size,
          sha256: createHash('sha256')
            .update(await readFile(p))
            .digest('hex'),
        };
      else if (st.isFIFO()) out[r] = { type: 'fifo', ...base };
      else if (st.isCharacterDevice()) out[r] = { type: 'char', ...base, rdev: st.rdev };
      else if (st.isBlockDevice()) out[r] = { type: 'block', ...base, rdev: st.rdev };
      else out[r] = { type: 'other', ...base };
    }
  };
  await walk('');
  return out;
}

async function file(
  root: string,
  rel: string,
  content: string | Buffer,
  mode = 0o644,
  owner = 0,
): Promise<void> {
  await mkdir(join(root, rel, '..'), { recursive: true });
  await writeFile(join(root, rel), content);
  await chown(join(root, rel), owner, owner); // before chmod: chown clears setuid/setgid
  await chmod(join(root, rel), mode);
}

async function dir(root: string, rel: string, mode = 0o755, owner = 0): Promise<void> {
  await mkdir(join(root, rel), { recursive: true });
  await chown(join(root, rel), owner, owner); // before chmod: chown clears setuid/setgid
  await chmod(join(root, rel), mode);
}

/** The layers of the test images: a base, a layer with whiteouts, an opaque dir and a replaced dir, a top layer. */
export async function makeTestLayers(store: ContentStore): Promise<{
  base: TestLayer;
  changes: TestLayer;
  top: TestLayer;
  sibling: TestLayer;
}> {
  const base = await makeLayer(store, async (r) => {
    await chmod(r, 0o755);
    await dir(r, 'bin');
    await file(r, 'bin/tool', Buffer.alloc(64 * 1024, 7), 0o755);
    await link(join(r, 'bin/tool'), join(r, 'bin/tool2'));
    await file(r, 'bin/suid', '#!/bin/sh\n', 0o4755);
    await dir(r, 'etc');
    await file(r, 'etc/passwd', 'root:x:0:0:root:/root:/bin/sh\n');
    await file(r, 'etc/hosts', '127.0.0.1 localhost\n');
    await file(r, 'etc/remove-me', 'bye\n');
    await symlink('passwd', join(r, 'etc/link'));
    await symlink('/etc/hosts', join(r, 'etc/abs-link'));
    await file(r, 'opt/app/a', 'a\n');
    await file(r, 'opt/app/b', 'b\n');
    await file(r, 'opt/app/sub/c', 'c\n');
    await file(r, 'var/lib/x/file', 'x\n');
    await dir(r, 'home/user', 0o750, 1000);
    await file(r, 'home/user/.profile', 'export A=1\n', 0o600, 1000);
    await dir(r, 'tmp', 0o1777);
    await dir(r, 'run');
    execFileSync('mkfifo', [join(r, 'run/fifo')]);
    await file(r, 'usr/share/doc/readme', 'doc\n');
  });
  const changes = await makeLayer(
    store,
    async (r) => {
      await chmod(r, 0o755);
      await dir(r, 'etc');
      await file(r, 'etc/.wh.remove-me', '');
      await file(r, 'etc/hosts', '127.0.0.1 localhost changed\n', 0o600);
      await dir(r, 'opt/app');
      await file(r, 'opt/app/.wh..wh..opq', '');
      await file(r, 'opt/app/new', 'new\n');
      await dir(r, 'var/lib');
      await file(r, 'var/lib/.wh.x', '');
      await dir(r, 'usr/share');
      await file(r, 'usr/share/doc', 'a file where a dir was\n'); // replaces a directory
      await dir(r, 'home/user', 0o750, 1000);
      await file(r, 'home/user/.profile', 'export A=2\n', 0o600, 1000);
    },
    'none',
  );
  const top = await makeLayer(store, async (r) => {
    await chmod(r, 0o755);
    await dir(r, 'etc');
    await file(r, 'etc/motd', 'welcome\n');
    await dir(r, 'bin');
    await file(r, 'bin/.wh.tool2', '');
    await file(r, 'srv/data/file', 'data\n', 0o640, 33);
  });
  const sibling = await makeLayer(store, async (r) => {
    await chmod(r, 0o755);
    await file(r, 'etc/sibling', 'sibling\n');
  });
  return { base, changes, top, sibling };
}

/** Tags the test images: `layered` (base+changes+top), `sibling` (base+sibling), `empty` (no layers). */
export async function makeTestImages(store: ContentStore): Promise<{
  layered: string;
  sibling: string;
  empty: string;
  layers: Awaited<ReturnType<typeof makeTestLayers>>;
}> {
  const layers = await makeTestLayers(store);
  const layered = 'example.com/test/layered:1';
  const sibling = 'example.com/test/sibling:1';
  const empty = 'example.com/test/empty:1';
  await makeLayeredImage(store, layered, [layers.base, layers.changes, layers.top]);
  await makeLayeredImage(store, sibling, [layers.base, layers.sibling]);
  await makeLayeredImage(store, empty, []);
  return { layered, sibling, empty, layers };
}
