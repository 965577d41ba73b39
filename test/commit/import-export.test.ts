import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { chmod, chown, link, mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import type { RegistryApi } from '../../src/engine/registry/types.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { runCli } from '../support/cli.js';
import { tempDir } from '../support/images.js';
import { requirePeer } from '../support/peers.js';
import { requireRootAndOverlay, unmountAllUnder } from '../support/root.js';
import { diffTrees, snapshotTree } from './helpers.js';

let work: string;
let store: FsStore;
let engine: Engine;
let rootfs: string;

beforeAll(async () => {
  requireRootAndOverlay();
  work = await tempDir('strata-import-export-');
  store = await FsStore.open(join(work, 'store'));
  engine = new Engine({ store, registry: {} as RegistryApi });
  rootfs = join(work, 'rootfs');
  for (const d of ['bin', 'etc/ssl', 'empty', 'home/user', 'var/spool'])
    await mkdir(join(rootfs, d), { recursive: true });
  await writeFile(join(rootfs, 'bin/sh'), Buffer.alloc(10_000, 1));
  await chmod(join(rootfs, 'bin/sh'), 0o4755);
  await writeFile(join(rootfs, 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\n');
  await writeFile(join(rootfs, 'etc/shadow'), 'secret');
  await chmod(join(rootfs, 'etc/shadow'), 0o000);
  await writeFile(join(rootfs, 'home/user/file'), 'mine');
  await chown(join(rootfs, 'home/user/file'), 1000, 1000);
  await chown(join(rootfs, 'home/user'), 1000, 1000);
  await chmod(join(rootfs, 'var/spool'), 0o1777);
  await writeFile(join(rootfs, `etc/ssl/${'c'.repeat(150)}.pem`), 'cert');
  await symlink('sh', join(rootfs, 'bin/bash'));
  await link(join(rootfs, 'etc/passwd'), join(rootfs, 'etc/passwd-hard'));
  execFileSync('mkfifo', [join(rootfs, 'var/spool/fifo')]);
  execFileSync('mknod', [join(rootfs, 'etc/null'), 'c', '1', '3']);
});

afterAll(async () => {
  if (!work) return;
  unmountAllUnder(work);
  await rm(work, { recursive: true, force: true });
});

async function exportTo(container: string): Promise<Map<string, import('./helpers.js').TreeNode>> {
  const file = join(work, `${container}.tar`);
  await engine.export(container, createWriteStream(file));
  const out = join(work, `${container}-out`);
  await mkdir(out);
  execFileSync('tar', ['--xattrs', '--numeric-owner', '-xpf', file, '-C', out]);
  return snapshotTree(out);
}

describe('import DIR → export', () => {
  it('round-trips a rootfs (paths, types, modes, owners, contents) through an image and a container', async () => {
    const result = await engine.importDirectory(rootfs, 'example.com/rt:1', {
      message: 'from a dir',
      changes: ['CMD ["/bin/sh"]', 'WORKDIR /home/user'],
    });
    expect(result.layer.diffId).toMatch(/^sha256:/);
    const want = await snapshotTree(rootfs);
    expect(want.size).toBeGreaterThan(15);
    // The image itself, as umoci sees it.
    const bundle = join(work, 'bundle');
    execFileSync(requirePeer('umoci'), ['unpack', '--image', `${store.root}:example.com/rt:1`, bundle], {
      stdio: 'pipe',
    });
    expect(diffTrees(want, await snapshotTree(join(bundle, 'rootfs')))).toEqual([]);
    const cfg = (await engine.inspect('example.com/rt:1')).Config as { Cmd: string[]; WorkingDir: string };
    expect(cfg).toMatchObject({ Cmd: ['/bin/sh'], WorkingDir: '/home/user' });

    // A vfs container and an overlay one (not mounted: export mounts it).
    await engine.create('example.com/rt:1', { name: 'rt-vfs', driver: 'vfs' });
    expect(diffTrees(want, await exportTo('rt-vfs'))).toEqual([]);
    await engine.create('example.com/rt:1', { name: 'rt-ovl', driver: 'overlay' });
    expect(diffTrees(want, await exportTo('rt-ovl'))).toEqual([]);
    // Like docker export, it leaves the container as it found it: unmounted.
    expect((await engine.ps()).find((c) => c.name === 'rt-ovl')?.mounted).toBe(false);
  });

  it('the same directory imports to the same layer twice (deterministic)', async () => {
    const a = await engine.importDirectory(rootfs, 'example.com/rt:a', { now: () => new Date(0) });
    const b = await engine.importDirectory(rootfs, 'example.com/rt:b', { now: () => new Date(0) });
    expect(b.layer).toEqual(a.layer);
    expect(b.digest).toBe(a.digest);
  });

  it('CLI: import DIR -c, commit -m -a -c, export -o', async () => {
    const env = { STRATA_STORE: store.root };
    const imp = await runCli(['import', '-c', 'ENV X=1', rootfs, 'example.com/cli:1'], env);
    expect(imp.stderr).toBe('');
    expect(imp.code).toBe(0);
    expect(imp.stdout.trim()).toMatch(/^sha256:[a-f0-9]{64}$/);
    const create = await runCli(['create', '--name', 'cli1', '--driver', 'vfs', 'example.com/cli:1'], env);
    expect(create.code, create.stderr).toBe(0);
    const rec = JSON.parse(
      execFileSync('cat', [join(store.root, 'strata/containers/cli1/container.json')], { encoding: 'utf8' }),
    ) as { merged: string };
    await writeFile(join(rec.merged, 'etc/motd'), 'hello');
    const commit = await runCli(
      ['commit', '-m', 'msg', '-a', 'me', '-c', 'EXPOSE 80', '-c', 'LABEL a=b', 'cli1', 'example.com/cli:2'],
      env,
    );
    expect(commit.code, commit.stderr).toBe(0);
    expect(commit.stdout.trim()).toMatch(/^sha256:[a-f0-9]{64}$/);
    const bad = await runCli(['commit', '-c', 'FROB x', 'cli1', 'example.com/cli:3'], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/FROB/);
    const out = join(work, 'cli.tar');
    const exp = await runCli(['export', 'cli1', '-o', out], env);
    expect(exp.code, exp.stderr).toBe(0);
    expect(execFileSync('tar', ['-tf', out], { encoding: 'utf8' })).toMatch(/etc\/motd/);
  });

  it('CLI: import of random bytes fails with the entry check, tags nothing', async () => {
    const dir = await tempDir('strata-import-junk-');
    const env = { STRATA_STORE: join(dir, 'store') };
    const junk = join(dir, 'junk.tar');
    await writeFile(junk, randomBytes(10_000));
    const run = await runCli(['import', junk, 'example.com/junk:1'], env);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(/layer .*checksum/);
    expect(await (await FsStore.open(join(dir, 'store'))).listRefs()).toEqual([]);
    await rm(dir, { recursive: true, force: true });
  });
});
