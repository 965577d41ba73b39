import { execFileSync } from 'node:child_process';
import { mkdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRuncRunner } from '../../src/engine/build/run/runc.js';
import { tempDir } from '../support/images.js';
import { requireRootAndOverlay, unmountAllUnder } from '../support/root.js';
import { makeBusyboxRoot, requireRunc } from './run-support.js';

let base: string;
let runc: string;

beforeAll(async () => {
  runc = requireRunc();
  requireRootAndOverlay();
  base = await tempDir('strata-run-ovl-');
});

afterAll(async () => {
  if (!base) return;
  unmountAllUnder(base);
  await rm(base, { recursive: true, force: true });
});

/** Lists an upper dir as `path type` lines (find -printf), sorted. */
function listing(dir: string): string[] {
  return execFileSync('find', ['.', '-mindepth', '1', '-printf', '%p %y\n'], { cwd: dir, encoding: 'utf8' })
    .trim()
    .split('\n')
    .filter(Boolean)
    .sort();
}

describe('createRuncRunner over an overlay root', () => {
  it("leaves in the upper dir only what the step wrote (and untouched copy-ups of the stubs' parents)", async () => {
    const [l, u, w, m] = ['l', 'u', 'w', 'm'].map((x) => join(base, x)) as [string, string, string, string];
    for (const d of [l, u, w, m]) await mkdir(d);
    await makeBusyboxRoot(l);
    await mkdir(join(l, 'etc'));
    await writeFile(join(l, 'etc/hosts'), '10.1.1.1 lower\n');
    const old = new Date('2002-03-04T05:06:07Z');
    await utimes(join(l, 'etc'), old, old);
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${l},upperdir=${u},workdir=${w}`, m]);
    const run = createRuncRunner({ runc, stateRoot: join(base, 'state'), bundleDir: base });
    const res = await run({
      rootfs: m,
      args: ['/bin/sh', '-c', 'echo hi > /hello'],
      env: [],
      cwd: '/',
      user: { uid: 0, gid: 0, additionalGids: [] },
      network: 'host',
    });
    expect(res.exitCode).toBe(0);
    execFileSync('umount', [m]);
    // No proc/dev/sys, no resolv.conf stub, no whiteouts: /etc is only a copy-up (a stub was made in it and
    // removed), with the lower's mtime restored, so it equals the lower directory.
    expect(listing(u)).toEqual(['./etc d', './hello f']);
    expect((await stat(join(u, 'etc'))).mtime.getTime()).toBe(old.getTime());
  });
});
