import { execFileSync } from 'node:child_process';
import { chmod, link, mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { containerChanges } from '../../src/engine/commit/commit.js';
import { Engine } from '../../src/engine/engine.js';
import { MediaType } from '../../src/engine/oci/media-types.js';
import { getContainer } from '../../src/engine/container/containers.js';
import type { RegistryApi } from '../../src/engine/registry/types.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { tempDir } from '../support/images.js';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { createContainer } from '../../src/engine/container/containers.js';
import { findLocalRef, loadLocalImage } from '../../src/engine/image/local.js';
import type { EngineEvent } from '../../src/engine/observe.js';
import { chainIds, layerDiffDir } from '../../src/engine/union/layer-cache.js';
import { requirePeer } from '../support/peers.js';
import { requireRootAndOverlay, unmountAllUnder } from '../support/root.js';
import { diffTrees, readTarEntries, snapshotTree } from './helpers.js';

let work: string;
let store: FsStore;
let engine: Engine;

async function makeBase(root: string): Promise<void> {
  for (const d of ['etc', 'bin', 'lib/deep', 'data/old/inner', 'replace/me', 'usr/share'])
    await mkdir(join(root, d), { recursive: true });
  await writeFile(join(root, 'etc/config'), 'v1\n');
  await writeFile(join(root, 'etc/keep'), 'to be deleted\n');
  await writeFile(join(root, 'bin/tool'), Buffer.alloc(4096, 7));
  await chmod(join(root, 'bin/tool'), 0o755);
  await writeFile(join(root, 'lib/deep/x'), 'x');
  await writeFile(join(root, 'data/old/1'), 'one');
  await writeFile(join(root, 'data/old/inner/2'), 'two');
  await writeFile(join(root, 'replace/me/file'), 'inside');
  await writeFile(join(root, `usr/share/${'n'.repeat(140)}`), 'long name');
  await symlink('../bin/tool', join(root, 'lib/tool-link'));
  await link(join(root, 'lib/deep/x'), join(root, 'lib/deep/x-hard'));
}

/** The changes the issue lists: 3 adds, 1 modify, 1 delete, a dir replaced by a file, a dir deleted and recreated. */
async function mutate(root: string): Promise<void> {
  await mkdir(join(root, 'new'));
  await writeFile(join(root, 'new/a'), 'added a');
  await writeFile(join(root, 'new/b'), 'added b');
  await writeFile(join(root, 'etc/added'), 'added');
  await writeFile(join(root, 'etc/config'), 'v2 modified\n');
  await rm(join(root, 'etc/keep'));
  await rm(join(root, 'replace/me'), { recursive: true });
  await writeFile(join(root, 'replace/me'), 'now a file');
  await rm(join(root, 'data/old'), { recursive: true });
  await mkdir(join(root, 'data/old'));
  await writeFile(join(root, 'data/old/fresh'), 'fresh content');
  await chmod(join(root, 'bin/tool'), 0o4750);
  execFileSync('setfattr', ['-n', 'user.note', '-v', 'hi', join(root, 'etc/added')]);
}

async function umociTree(ref: string): Promise<ReturnType<typeof snapshotTree>> {
  const umoci = requirePeer('umoci');
  const bundle = join(work, `bundle-${Math.random().toString(36).slice(2)}`);
  execFileSync(umoci, ['unpack', '--image', `${store.root}:${ref}`, bundle], { stdio: 'pipe' });
  return snapshotTree(join(bundle, 'rootfs'));
}

beforeAll(async () => {
  requireRootAndOverlay();
  work = await tempDir('strata-commit-e2e-');
  store = await FsStore.open(join(work, 'store'));
  engine = new Engine({ store, registry: {} as RegistryApi });
  const base = join(work, 'base');
  await mkdir(base);
  await makeBase(base);
  await engine.importDirectory(base, 'example.com/base:1', { message: 'base' });
});

afterAll(async () => {
  if (!work) return;
  unmountAllUnder(work);
  await rm(work, { recursive: true, force: true });
});

describe('commit, end to end', () => {
  it('overlay: umoci unpack of the committed image equals the changed tree; history shows message and author', async () => {
    await engine.create('example.com/base:1', { name: 'ovl', driver: 'overlay' });
    const merged = await engine.mount('ovl');
    await mutate(merged);
    const record = await getContainer(store, 'ovl');
    const changes = await containerChanges(record, { classify: true });
    const kinds = new Map(changes.map((c) => [`${c.kind}:${c.path}`, c]));
    expect(kinds.has('delete:etc/keep')).toBe(true);
    expect(kinds.has('opaque:data/old')).toBe(true);
    expect(kinds.has('modify:etc/config')).toBe(true);
    expect(kinds.has('add:new/a')).toBe(true);

    const result = await engine.commit('ovl', 'example.com/x:2', {
      message: 'my change',
      author: 'Jane <jane@example.com>',
      changes: ['CMD ["/bin/tool"]', 'ENV A=1'],
    });
    expect(result.layer).toBeDefined();
    const entries = await readTarEntries(await store.openBlob(result.layer!.digest), true);
    const names = entries.map((e) => e.name.replace(/\/$/, ''));
    expect(names).toContain('etc/.wh.keep');
    expect(names).toContain('data/old/.wh..wh..opq');
    expect(names.indexOf('data/old/.wh..wh..opq')).toBeLessThan(names.indexOf('data/old/fresh'));

    const tree = await snapshotTree(merged);
    expect(tree.size).toBeGreaterThan(20);
    expect(tree.get('data/old/inner')).toBeUndefined();
    expect(diffTrees(tree, await umociTree('example.com/x:2'))).toEqual([]);

    const history = await engine.history('example.com/x:2');
    expect(history[0]!.comment).toBe('my change');
    expect(history[0]!.author).toBe('Jane <jane@example.com>');
    expect(history[0]!.layer).toBe(result.layer!.digest);
    const inspect = await engine.inspect('example.com/x:2');
    expect((inspect.Config as { Cmd: string[] }).Cmd).toEqual(['/bin/tool']);
    expect((inspect.Config as { Env: string[] }).Env).toEqual(['A=1']);
    expect(inspect.RootFS.Layers).toHaveLength(2);
  });

  it('overlay on top of a layer with whiteouts: a second commit still matches', async () => {
    await engine.create('example.com/x:2', { name: 'ovl2', driver: 'overlay' });
    const merged = await engine.mount('ovl2');
    await rm(join(merged, 'new'), { recursive: true });
    await writeFile(join(merged, 'etc/keep'), 'resurrected');
    await rm(join(merged, 'lib/deep/x'));
    await symlink('/etc/config', join(merged, 'etc/config-link'));
    const result = await engine.commit('ovl2', 'example.com/x:3');
    expect(diffTrees(await snapshotTree(merged), await umociTree('example.com/x:3'))).toEqual([]);
    expect((await engine.inspect('example.com/x:3')).RootFS.Layers).toHaveLength(3);
    expect(result.changes.delete).toBe(2);
  });

  it('overlay commit caches its layer: create of the new image unpacks nothing, and its root is right', async () => {
    await engine.create('example.com/base:1', { name: 'cache1', driver: 'overlay' });
    const merged = await engine.mount('cache1');
    await mutate(merged);
    // A socket left in the container: the layer tar skips it, so the cached layer must not have it either.
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(join(merged, 'etc/app.sock'), resolve));
    const events: EngineEvent[] = [];
    const result = await engine.commit('cache1', 'example.com/cached:1', {
      observer: { log: console, emit: (e) => events.push(e) },
    });
    expect(events.filter((e) => e.type === 'commit-progress').at(-1)).toMatchObject({
      done: true,
      bytes: result.layer!.size,
    });
    const image = await loadLocalImage(store, await findLocalRef(store, 'example.com/cached:1'));
    const chain = chainIds(image.config.rootfs.diff_ids).at(-1)!;
    const diff = layerDiffDir(store.root, chain);
    expect(existsSync(join(diff, '..', 'done'))).toBe(true);
    // overlayfs' own bookkeeping (origin, impure…) is not carried into the cached layer; the opaque marker is.
    const attrs = execFileSync(
      'getfattr',
      ['-R', '-h', '-d', '-m', '^trusted\\.overlay\\.', '--absolute-names', diff],
      {
        encoding: 'utf8',
      },
    );
    expect(attrs.match(/^trusted\.overlay\.[a-z]+/gm) ?? []).toEqual(['trusted.overlay.opaque']);

    let opened = 0;
    const counting = new Proxy(store, {
      get(target, prop) {
        if (prop === 'openBlob')
          return (...args: Parameters<FsStore['openBlob']>) => {
            opened++;
            return target.openBlob(...args);
          };
        const value: unknown = Reflect.get(target, prop, target);
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
    const record = await createContainer(counting, image, { name: 'cache2', driver: 'overlay' });
    expect(opened).toBe(0); // no layer blob was read: nothing unpacked
    expect(record.layers.at(-1)!.dir).toBe(diff);
    const root = await engine.mount('cache2');
    const tree = await snapshotTree(root);
    expect(existsSync(join(merged, 'etc/app.sock'))).toBe(true);
    expect(existsSync(join(root, 'etc/app.sock'))).toBe(false);
    await new Promise<void>((resolve) => server.close(() => resolve())); // closing removes the socket file
    expect(diffTrees(tree, await snapshotTree(merged))).toEqual([]);
    expect(diffTrees(tree, await umociTree('example.com/cached:1'))).toEqual([]);
  });

  it('cacheLayer: false leaves the layer to be unpacked by create', async () => {
    await engine.create('example.com/base:1', { name: 'nocache', driver: 'overlay' });
    await writeFile(join(await engine.mount('nocache'), 'etc/only-here'), 'x');
    await engine.commit('nocache', 'example.com/nocache:1', { cacheLayer: false });
    const image = await loadLocalImage(store, await findLocalRef(store, 'example.com/nocache:1'));
    expect(existsSync(layerDiffDir(store.root, chainIds(image.config.rootfs.diff_ids).at(-1)!))).toBe(false);
  });

  it('vfs: the rootfs diff (per-entry whiteouts, no opaque marker) gives the same image content', async () => {
    await engine.create('example.com/base:1', { name: 'vfs1', driver: 'vfs' });
    const record = await getContainer(store, 'vfs1');
    await mutate(record.merged);
    const changes = await containerChanges(record);
    const keys = changes.map((c) => `${c.kind}:${c.path}`).sort();
    expect(keys).toContain('delete:etc/keep');
    expect(keys).toContain('delete:data/old/1');
    expect(keys).toContain('delete:data/old/inner');
    expect(keys).toContain('modify:replace/me');
    expect(keys).toContain('modify:bin/tool');
    expect(keys.filter((k) => k.startsWith('opaque:'))).toEqual([]);
    expect(keys).not.toContain('modify:lib/deep/x'); // untouched files are not in the layer
    await engine.commit('vfs1', 'example.com/v:2', { message: 'vfs change' });
    expect(diffTrees(await snapshotTree(record.merged), await umociTree('example.com/v:2'))).toEqual([]);
  });

  it('an unchanged container commits an empty_layer step, as docker does', async () => {
    await engine.create('example.com/base:1', { name: 'idle', driver: 'overlay' });
    const result = await engine.commit('idle', 'example.com/idle:1', { message: 'nothing' });
    expect(result.layer).toBeUndefined();
    const inspect = await engine.inspect('example.com/idle:1');
    expect(inspect.RootFS.Layers).toHaveLength(1);
    const history = await engine.history('example.com/idle:1');
    expect(history[0]!.comment).toBe('nothing');
    expect(history[0]!.size).toBe(0);
  });

  it('a Docker schema2 base gives a Docker schema2 image', async () => {
    const d = (await store.getRef('example.com/base:1'))!;
    const m = JSON.parse((await store.readBlob(d.digest)).toString()) as {
      config: { mediaType: string };
      layers: Array<{ mediaType: string }>;
    };
    const docker = {
      schemaVersion: 2,
      mediaType: MediaType.DockerManifest,
      config: { ...m.config, mediaType: MediaType.DockerConfig },
      layers: m.layers.map((l) => ({ ...l, mediaType: MediaType.DockerLayer })),
    };
    const bytes = Buffer.from(JSON.stringify(docker));
    const put = await store.putBytes(bytes);
    await store.setRef('example.com/dockerbase:1', {
      mediaType: MediaType.DockerManifest,
      digest: put.digest,
      size: put.size,
    });
    await engine.create('example.com/dockerbase:1', { name: 'dock', driver: 'overlay' });
    await writeFile(join(await engine.mount('dock'), 'etc/docker'), 'x');
    const result = await engine.commit('dock', 'example.com/dockerbase:2');
    expect(result.mediaType).toBe(MediaType.DockerManifest);
    const out = JSON.parse((await store.readBlob(result.digest)).toString()) as typeof docker;
    expect(out.config.mediaType).toBe(MediaType.DockerConfig);
    expect(out.layers.map((l) => l.mediaType)).toEqual([MediaType.DockerLayer, MediaType.DockerLayer]);
  });

  it('refuses an unknown -c instruction before writing anything', async () => {
    await expect(engine.commit('ovl', 'example.com/bad:1', { changes: ['RUN true'] })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
    });
    await expect(engine.commit('nope', 'example.com/bad:1')).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});
