import { execFileSync } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../support/cli.js';
import { tempDir } from './helpers.js';

describe('strata unpack (CLI)', () => {
  it('unpacks a local image into a directory and refuses a non-empty one', async () => {
    const work = await tempDir('strata-unpack-cli-');
    const env = { STRATA_STORE: join(work, 'store') };
    await mkdir(join(work, 'rootfs/etc'), { recursive: true });
    await writeFile(join(work, 'rootfs/etc/motd'), 'hello\n');
    execFileSync('tar', ['-C', join(work, 'rootfs'), '-cf', join(work, 'rootfs.tar'), '.']);
    expect((await runCli(['import', join(work, 'rootfs.tar'), 'example.com/cli/unpack:1'], env)).code).toBe(
      0,
    );
    const out = join(work, 'out');
    const run = await runCli(['unpack', 'example.com/cli/unpack:1', out], env);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/Unpacked 1 layers into .*: 1 files/);
    expect(await readFile(join(out, 'etc/motd'), 'utf8')).toBe('hello\n');
    const again = await runCli(['unpack', 'example.com/cli/unpack:1', out], env);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/not empty.*--force/);
    expect((await runCli(['unpack', '--force', 'example.com/cli/unpack:1', out], env)).code).toBe(0);
  });
});
