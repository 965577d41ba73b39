/**
 * `resolveInRoot` over a real directory: chroot semantics for final symlinks in a step's root, and refusals that
 * name the link they came through.
 */
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { resolveInRoot } from '../../src/engine/build/run/root-path.js';
import { CHROOT, SafeRoot } from '../../src/engine/union/safe-path.js';
import { tempDir } from '../support/images.js';

async function imageRoot(): Promise<string> {
  const outer = await tempDir('strata-root-path-');
  const root = join(outer, 'a', 'b', 'root');
  await mkdir(join(root, 'etc'), { recursive: true });
  await writeFile(join(root, 'etc', 'shadow'), 'in-root');
  await symlink('../../../../etc/shadow', join(root, 'etc', 'resolv.conf'));
  await symlink('/tmp/../../../tmp', join(root, 'w'));
  return root;
}

describe('resolveInRoot', () => {
  it('follows a final symlink whose .. climbs above the root to the in-root target (chroot)', async () => {
    const root = await SafeRoot.open(await imageRoot(), undefined, CHROOT);
    expect(await resolveInRoot(root, '/etc/resolv.conf', { followFinal: true })).toEqual({
      status: 'ok',
      rel: 'etc/shadow',
    });
    const made: string[] = [];
    const r = await resolveInRoot(root, '/w', {
      followFinal: true,
      mkdir: async (rel) => {
        made.push(rel);
        await mkdir(root.host(rel));
      },
    });
    expect(r).toEqual({ status: 'ok', rel: 'tmp' });
  });

  it('names the symlink when a refusing root refuses what it points at', async () => {
    const root = await SafeRoot.open(await imageRoot());
    const r = await resolveInRoot(root, '/etc/resolv.conf', { followFinal: true });
    expect(r.status).toBe('refused');
    const reason = r.status === 'refused' ? r.reason : '';
    expect(reason).toContain('symlink /etc/resolv.conf -> ../../../../etc/shadow');
    expect(reason).not.toContain('undefined');
  });
});
