import { execFileSync } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { isAbsolute, join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../support/cli.js';
import { tempDir } from '../store/helpers.js';

describe('a relative --store', () => {
  it('is resolved once: container records keep absolute paths and mount prints an absolute path', async () => {
    const dir = await tempDir();
    await mkdir(join(dir, 'rootfs', 'etc'), { recursive: true });
    await writeFile(join(dir, 'rootfs', 'etc', 'hostname'), 'rel\n');
    const rootfs = join(dir, 'rootfs.tar');
    execFileSync('tar', ['-cf', rootfs, '-C', join(dir, 'rootfs'), '.']);
    const store = relative(process.cwd(), join(dir, 'store'));
    expect(isAbsolute(store)).toBe(false);
    expect((await runCli(['--store', store, 'import', rootfs, 'ex.com/rel:1'])).code).toBe(0);
    const created = await runCli([
      '--store',
      store,
      'create',
      '--driver',
      'vfs',
      '--name',
      'c1',
      'ex.com/rel:1',
    ]);
    expect(created.stderr).toBe('');
    const record = await readFile(join(dir, 'store', 'strata', 'containers', 'c1', 'container.json'), 'utf8');
    expect(record).toContain(`"${join(dir, 'store')}/`); // paths into the store are absolute
    expect(record).not.toMatch(/"(?:\.\.?\/|tmp\/)[^"]*"/); // no relative path anywhere
    const mount = await runCli(['--store', store, 'mount', 'c1']);
    expect(mount.code).toBe(0);
    const printed = mount.stdout.trim();
    expect(isAbsolute(printed)).toBe(true);
    expect(printed.startsWith(join(dir, 'store'))).toBe(true);
  });
});
