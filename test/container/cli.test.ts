import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { runCli } from '../support/cli.js';
import { makeImage, tempDir } from '../support/images.js';
import { requireRootAndOverlay, unmountAllUnder } from '../support/root.js';

let work: string;
let env: Record<string, string>;

beforeAll(async () => {
  requireRootAndOverlay();
  work = await tempDir('strata-container-cli-');
  const store = await FsStore.open(join(work, 'store'));
  await makeImage(store, 'example.com/cli/app:1', { 'etc/hello': 'hello\n', 'bin/tool': 4096 });
  env = { STRATA_STORE: store.root };
});

afterAll(async () => {
  if (!work) return;
  unmountAllUnder(work);
  await rm(work, { recursive: true, force: true });
});

describe('strata create / mount / ps / rm', () => {
  it('creates, mounts, lists and removes containers', async () => {
    const created = await runCli(['create', '--name', 'web', 'example.com/cli/app:1'], env);
    expect(created.stderr).toBe('');
    expect(created.code).toBe(0);
    expect(created.stdout.trim()).toBe('web');

    const vfs = await runCli(['create', '--driver', 'vfs', 'example.com/cli/app:1'], env);
    expect(vfs.code).toBe(0);
    const vfsName = vfs.stdout.trim();
    expect(vfsName).toMatch(/^strata-[a-f0-9]{8}$/);

    const mount = await runCli(['mount', 'web'], env);
    expect(mount.code).toBe(0);
    const root = mount.stdout.trim();
    expect(await readFile(join(root, 'etc/hello'), 'utf8')).toBe('hello\n');
    expect((await runCli(['mount', 'web'], env)).stdout.trim()).toBe(root);

    const ps = await runCli(['ps'], env);
    expect(ps.code).toBe(0);
    expect(ps.stdout).toMatch(/NAME\s+IMAGE\s+DRIVER\s+CREATED\s+MOUNTED/);
    expect(ps.stdout).toMatch(/web\s+example\.com\/cli\/app:1\s+overlay/);
    const json = JSON.parse((await runCli(['--json', 'ps'], env)).stdout) as Array<{
      name: string;
      mounted: boolean;
      driver: string;
    }>;
    expect(json.map((c) => [c.name, c.driver, c.mounted]).sort()).toEqual(
      [
        ['web', 'overlay', true],
        [vfsName, 'vfs', true],
      ].sort(),
    );

    const dup = await runCli(['create', '--name', 'web', 'example.com/cli/app:1'], env);
    expect(dup.code).toBe(1);
    expect(dup.stderr).toContain('already in use');

    const removed = await runCli(['rm', 'web', vfsName], env);
    expect(removed.code).toBe(0);
    expect(removed.stdout.trim().split('\n')).toEqual(['web', vfsName]);
    expect(await stat(root).catch(() => undefined)).toBeUndefined();
    expect((await readFile('/proc/self/mountinfo', 'utf8')).includes(root)).toBe(false);
    expect(JSON.parse((await runCli(['--json', 'ps'], env)).stdout)).toEqual([]);

    const missing = await runCli(['rm', 'web'], env);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('no container');
  });

  it('concurrent creates from several processes unpack each layer once', async () => {
    const store = await FsStore.open(env.STRATA_STORE!);
    await makeImage(store, 'example.com/cli/fresh:1', { 'data/blob': 256 * 1024, 'etc/x': 'x\n' });
    const runs = await Promise.all(
      ['p1', 'p2', 'p3'].map((n) =>
        runCli(['create', '--name', n, '--driver', 'overlay', 'example.com/cli/fresh:1'], env),
      ),
    );
    expect(runs.map((r) => [r.code, r.stderr])).toEqual([
      [0, ''],
      [0, ''],
      [0, ''],
    ]);
    const layers = join(store.root, 'strata', 'layers');
    const entries = await readdir(layers);
    expect(entries.filter((e) => e.startsWith('.'))).toEqual([]);
    const dirs = await Promise.all(
      ['p1', 'p2', 'p3'].map(async (n) => {
        const rec = JSON.parse(
          await readFile(join(store.root, 'strata', 'containers', n, 'container.json'), 'utf8'),
        ) as { layers: Array<{ dir: string }> };
        return rec.layers.map((l) => l.dir);
      }),
    );
    expect(dirs[1]).toEqual(dirs[0]);
    expect(dirs[2]).toEqual(dirs[0]);
    expect((await runCli(['rm', 'p1', 'p2', 'p3'], env)).code).toBe(0);
  });
});
