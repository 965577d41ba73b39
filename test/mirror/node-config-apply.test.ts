import { chmod, mkdir, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  applyNodeConfig,
  planDaemonJsonFile,
  planHostsTomlFiles,
  restoreNodeConfig,
  type PlannedFile,
} from '../../src/mirror/node-config/index.js';
import { StrataError } from '../../src/engine/errors.js';
import { tempDir } from '../support/images.js';

/** Every file under `dir` (relative path → content), to compare trees byte for byte. */
async function tree(dir: string, prefix = ''): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await readdir(join(dir, prefix), { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) {
      out[`${rel}/`] = '';
      Object.assign(out, await tree(dir, rel));
    } else out[rel] = await readFile(join(dir, rel), 'latin1');
  }
  return out;
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'none';
  } catch (err) {
    return err instanceof StrataError ? err.code : String(err);
  }
}

const MIRRORS = [{ url: 'http://127.0.0.1:5002' }];

describe('applyNodeConfig / restoreNodeConfig (containerd hosts.toml)', () => {
  it('backs up an existing file once, writes nothing the second time, and restores byte-identical originals', async () => {
    const root = await tempDir();
    const original = '# my hosts.toml\nserver = "https://registry-1.docker.io"\n\xff\n';
    await mkdir(join(root, 'docker.io'));
    await writeFile(join(root, 'docker.io', 'hosts.toml'), original, 'latin1');
    await chmod(join(root, 'docker.io', 'hosts.toml'), 0o640);
    await writeFile(join(root, 'unrelated.txt'), 'x');
    const before = await tree(root);

    const files = planHostsTomlFiles(['docker.io', 'quay.io'], MIRRORS);
    const first = await applyNodeConfig({ root, files });
    expect(first.actions.map((a) => a.action)).toEqual(['update', 'create']);
    expect(first.warnings).toEqual([]);
    const backup = join(root, 'docker.io', 'hosts.toml.strata-backup');
    expect(await readFile(backup, 'latin1')).toBe(original);
    expect((await stat(backup)).mode & 0o777).toBe(0o640);
    expect(await readFile(join(root, 'quay.io', 'hosts.toml'), 'utf8')).toContain(
      'server = "https://quay.io"',
    );
    expect((await stat(join(root, 'docker.io', 'hosts.toml'))).mode & 0o777).toBe(0o640);
    const afterFirst = await tree(root);

    const mtime = (await stat(join(root, 'quay.io', 'hosts.toml'))).mtimeMs;
    const second = await applyNodeConfig({ root, files });
    expect(second.actions.map((a) => a.action)).toEqual(['unchanged', 'unchanged']);
    expect(await tree(root)).toEqual(afterFirst);
    expect((await stat(join(root, 'quay.io', 'hosts.toml'))).mtimeMs).toBe(mtime);

    // A changed mirror list rewrites our files; the backup is still the original, never our rendering.
    const third = await applyNodeConfig({
      root,
      files: planHostsTomlFiles(['docker.io', 'quay.io'], [{ url: 'http://m2:1' }]),
    });
    expect(third.actions.map((a) => a.action)).toEqual(['update', 'update']);
    expect(await readFile(backup, 'latin1')).toBe(original);

    const restored = await restoreNodeConfig({ root });
    expect(restored.actions.map((a) => a.action).sort()).toEqual(['remove', 'restore']);
    expect(await tree(root)).toEqual(before);
    expect((await stat(join(root, 'docker.io', 'hosts.toml'))).mode & 0o777).toBe(0o640);
    // Nothing left to restore.
    expect((await restoreNodeConfig({ root })).actions).toEqual([]);
  });

  it('a dry run reports the plan and changes nothing', async () => {
    const root = await tempDir();
    await mkdir(join(root, 'docker.io'));
    await writeFile(join(root, 'docker.io', 'hosts.toml'), 'server = "x"\n');
    const before = await tree(root);
    const result = await applyNodeConfig({
      root,
      files: planHostsTomlFiles(['docker.io', 'ghcr.io'], MIRRORS),
      dryRun: true,
    });
    expect(
      result.actions.map((a) => [a.action, a.content?.includes('[host."http://127.0.0.1:5002"]')]),
    ).toEqual([
      ['update', true],
      ['create', true],
    ]);
    expect(await tree(root)).toEqual(before);
  });

  it('on restore, leaves a file someone changed after us, with a warning, and keeps its backup', async () => {
    const root = await tempDir();
    await mkdir(join(root, 'docker.io'));
    await writeFile(join(root, 'docker.io', 'hosts.toml'), 'original\n');
    await applyNodeConfig({ root, files: planHostsTomlFiles(['docker.io', 'quay.io'], MIRRORS) });
    await writeFile(join(root, 'docker.io', 'hosts.toml'), 'edited by an admin\n');
    await writeFile(join(root, 'quay.io', 'hosts.toml'), 'also edited\n');
    const result = await restoreNodeConfig({ root });
    expect(result.actions.map((a) => a.action)).toEqual(['keep', 'keep']);
    expect(result.warnings).toHaveLength(2);
    expect(result.warnings[0]).toContain('changed by someone else');
    expect(await readFile(join(root, 'docker.io', 'hosts.toml'), 'utf8')).toBe('edited by an admin\n');
    expect(await readFile(join(root, 'docker.io', 'hosts.toml.strata-backup'), 'utf8')).toBe('original\n');
    expect(await readFile(join(root, 'quay.io', 'hosts.toml'), 'utf8')).toBe('also edited\n');
  });

  it('never replaces an older backup (a lost manifest), and restores that oldest original', async () => {
    const root = await tempDir();
    await mkdir(join(root, 'docker.io'));
    await writeFile(join(root, 'docker.io', 'hosts.toml'), 'original\n');
    const files = planHostsTomlFiles(['docker.io'], MIRRORS);
    await applyNodeConfig({ root, files });
    await writeFile(join(root, '.strata-mirror.json'), '{"version":1,"files":{},"dirs":[]}');
    await writeFile(join(root, 'docker.io', 'hosts.toml'), 'something else\n');
    const again = await applyNodeConfig({ root, files });
    expect(again.warnings.join()).toContain('older backup');
    expect(await readFile(join(root, 'docker.io', 'hosts.toml.strata-backup'), 'utf8')).toBe('original\n');
    await restoreNodeConfig({ root });
    expect(await readFile(join(root, 'docker.io', 'hosts.toml'), 'utf8')).toBe('original\n');
  });

  it('prunes files of registries no longer asked for', async () => {
    const root = await tempDir();
    await applyNodeConfig({ root, files: planHostsTomlFiles(['docker.io', 'quay.io'], MIRRORS) });
    const result = await applyNodeConfig({ root, files: planHostsTomlFiles(['docker.io'], MIRRORS) });
    expect(result.actions.map((a) => a.action)).toEqual(['unchanged', 'remove']);
    expect(Object.keys(await tree(root)).sort()).toEqual([
      '.strata-mirror.json',
      'docker.io/',
      'docker.io/hosts.toml',
    ]);
    await restoreNodeConfig({ root });
    expect(await tree(root)).toEqual({});
  });

  it('refuses symlinks out of the root and symlinked files, a missing root, a corrupt manifest, oversized files', async () => {
    const root = await tempDir();
    const outside = await tempDir();
    await symlink(outside, join(root, 'docker.io'));
    await mkdir(join(root, 'quay.io'));
    await symlink(join(outside, 'target'), join(root, 'quay.io', 'hosts.toml'));
    // A symlinked registry directory is resolved inside the root (chroot-like): an absolute target out of it
    // names nothing there, so the write is refused rather than landing outside.
    expect(await codeOf(applyNodeConfig({ root, files: planHostsTomlFiles(['docker.io'], MIRRORS) }))).toBe(
      'CONFLICT',
    );
    expect(await readdir(outside)).toEqual([]);
    expect(await codeOf(applyNodeConfig({ root, files: planHostsTomlFiles(['quay.io'], MIRRORS) }))).toBe(
      'CONFLICT',
    );
    expect(await readdir(outside)).toEqual([]);

    expect(await codeOf(applyNodeConfig({ root: join(root, 'nope'), files: [] }))).toBe('NOT_FOUND');
    const r2 = await tempDir();
    await writeFile(
      join(r2, '.strata-mirror.json'),
      '{"version":1,"files":{"../x":{"sha256":"a","backup":null}},"dirs":[]}',
    );
    expect(await codeOf(restoreNodeConfig({ root: r2 }))).toBe('STORE_CORRUPT');
    const r3 = await tempDir();
    await mkdir(join(r3, 'docker.io'));
    await writeFile(join(r3, 'docker.io', 'hosts.toml'), Buffer.alloc(2048));
    expect(
      await codeOf(
        applyNodeConfig({ root: r3, files: planHostsTomlFiles(['docker.io'], MIRRORS), maxFileBytes: 1024 }),
      ),
    ).toBe('SIZE_LIMIT');
    const bad: PlannedFile = { path: '../escape', render: () => ({ content: 'x' }) };
    expect(await codeOf(applyNodeConfig({ root: r3, files: [bad] }))).toBe('INVALID_ARGUMENT');
  });

  it('follows a relative symlink that stays inside the root, and restores through it', async () => {
    const root = await tempDir();
    await mkdir(join(root, 'shared'));
    await writeFile(join(root, 'shared', 'hosts.toml'), 'original\n');
    await symlink('shared', join(root, 'docker.io'));
    await applyNodeConfig({ root, files: planHostsTomlFiles(['docker.io'], MIRRORS) });
    expect(await readFile(join(root, 'shared', 'hosts.toml'), 'utf8')).toContain(
      '[host."http://127.0.0.1:5002"]',
    );
    expect(await readFile(join(root, 'shared', 'hosts.toml.strata-backup'), 'utf8')).toBe('original\n');
    await restoreNodeConfig({ root });
    expect(await readFile(join(root, 'shared', 'hosts.toml'), 'utf8')).toBe('original\n');
    expect((await readdir(join(root, 'shared'))).sort()).toEqual(['hosts.toml']);
  });

  it('a refusal while planning writes nothing at all', async () => {
    const root = await tempDir();
    await writeFile(join(root, 'daemon.json'), '{ not json');
    const before = await tree(root);
    const files = [
      planDaemonJsonFile('other.json', ['http://m']),
      planDaemonJsonFile('daemon.json', ['http://m']),
    ];
    expect(await codeOf(applyNodeConfig({ root, files }))).toBe('INVALID_ARGUMENT');
    expect(await tree(root)).toEqual(before);
  });
});

describe('applyNodeConfig / restoreNodeConfig (docker daemon.json)', () => {
  const original =
    '{\n\t"debug": true,\n\t"registry-mirrors": ["https://old.example/"],\n\t"log-driver": "local"\n}\n';

  it('merges, is idempotent, replaces our own mirrors when they change, restores the original bytes', async () => {
    const root = await tempDir();
    await writeFile(join(root, 'daemon.json'), original);
    const opts = { root, manifestName: '.strata-mirror-docker.json' };
    await applyNodeConfig({ ...opts, files: [planDaemonJsonFile('daemon.json', ['http://m1:5002'])] });
    expect(JSON.parse(await readFile(join(root, 'daemon.json'), 'utf8'))).toEqual({
      debug: true,
      'registry-mirrors': ['http://m1:5002/', 'https://old.example/'],
      'log-driver': 'local',
    });
    const again = await applyNodeConfig({
      ...opts,
      files: [planDaemonJsonFile('daemon.json', ['http://m1:5002'])],
    });
    expect(again.actions.map((a) => a.action)).toEqual(['unchanged']);
    await applyNodeConfig({ ...opts, files: [planDaemonJsonFile('daemon.json', ['http://m2:5002'])] });
    expect(JSON.parse(await readFile(join(root, 'daemon.json'), 'utf8'))['registry-mirrors']).toEqual([
      'http://m2:5002/',
      'https://old.example/',
    ]);
    await restoreNodeConfig(opts);
    expect(await readFile(join(root, 'daemon.json'), 'utf8')).toBe(original);
    expect((await readdir(root)).sort()).toEqual(['daemon.json']);
  });

  it('on restore of a file changed after us, takes out only our mirrors and keeps the admin change', async () => {
    const root = await tempDir();
    const opts = { root, manifestName: '.strata-mirror-docker.json' };
    await applyNodeConfig({ ...opts, files: [planDaemonJsonFile('daemon.json', ['http://m1:5002'])] });
    const doc = JSON.parse(await readFile(join(root, 'daemon.json'), 'utf8'));
    await writeFile(join(root, 'daemon.json'), JSON.stringify({ ...doc, 'live-restore': true }));
    const result = await restoreNodeConfig(opts);
    expect(result.actions.map((a) => a.action)).toEqual(['undo']);
    expect(result.warnings[0]).toContain('changed by someone else');
    expect(JSON.parse(await readFile(join(root, 'daemon.json'), 'utf8'))).toEqual({ 'live-restore': true });
  });
});
