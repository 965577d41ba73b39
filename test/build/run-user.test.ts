import { mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { hasCode } from '../../src/engine/errors.js';
import {
  parseGroup,
  parsePasswd,
  resolveUser,
  resolveUserFrom,
  MAX_ACCOUNT_FILE_BYTES,
} from '../../src/engine/build/run/user.js';
import { tempDir } from '../support/images.js';

const PASSWD = `root:x:0:0:root:/root:/bin/sh
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1000:1000::/home/app:/bin/sh
broken:x:notanumber:1::/:/bin/sh
dup:x:1001:1001::/:/bin/sh
dup:x:1002:1002::/:/bin/sh
`;
const GROUP = `root:x:0:
wheel:x:10:app,root
staff:x:50:app
app:x:1000:
docker:x:999:other
`;
const pw = parsePasswd(PASSWD);
const gr = parseGroup(GROUP);

describe('resolveUserFrom (docker USER rules)', () => {
  const cases: Array<[string | undefined, { uid: number; gid: number; additionalGids: number[] }]> = [
    [undefined, { uid: 0, gid: 0, additionalGids: [10] }],
    ['', { uid: 0, gid: 0, additionalGids: [10] }],
    ['root', { uid: 0, gid: 0, additionalGids: [10] }],
    ['app', { uid: 1000, gid: 1000, additionalGids: [10, 50] }],
    ['1000', { uid: 1000, gid: 1000, additionalGids: [10, 50] }],
    ['app:staff', { uid: 1000, gid: 50, additionalGids: [] }],
    ['app:999', { uid: 1000, gid: 999, additionalGids: [] }],
    ['app:4242', { uid: 1000, gid: 4242, additionalGids: [] }],
    ['4242', { uid: 4242, gid: 0, additionalGids: [] }],
    ['4242:4343', { uid: 4242, gid: 4343, additionalGids: [] }],
    ['4242:docker', { uid: 4242, gid: 999, additionalGids: [] }],
    ['daemon', { uid: 1, gid: 1, additionalGids: [] }],
    ['dup', { uid: 1001, gid: 1001, additionalGids: [] }], // first match wins
  ];
  for (const [user, want] of cases)
    it(`USER ${JSON.stringify(user)}`, () => expect(resolveUserFrom(user, pw, gr)).toEqual(want));

  it('refuses a name missing from passwd, naming it', () => {
    let err: unknown;
    try {
      resolveUserFrom('nobody', pw, gr);
    } catch (e) {
      err = e;
    }
    expect(hasCode(err, 'INVALID_ARGUMENT')).toBe(true);
    expect((err as Error).message).toBe('unable to find user nobody: no matching entries in passwd file');
  });

  it('refuses a group name missing from group, and a name when there is no passwd at all', () => {
    expect(() => resolveUserFrom('app:nogroup', pw, gr)).toThrow(/unable to find group nogroup/);
    expect(() => resolveUserFrom('app', undefined, undefined)).toThrow(/unable to find user app/);
    expect(resolveUserFrom('7:8', undefined, undefined)).toEqual({ uid: 7, gid: 8, additionalGids: [] });
    expect(resolveUserFrom(undefined, undefined, undefined)).toEqual({ uid: 0, gid: 0, additionalGids: [] });
  });

  it('refuses ids out of range', () => {
    expect(() => resolveUserFrom('99999999999', pw, gr)).toThrow(/out of range/);
    expect(() => resolveUserFrom('1:4294967296', pw, gr)).toThrow(/out of range/);
  });
});

describe('resolveUser (files in a root)', () => {
  const dirs: string[] = [];
  afterEach(async () => {
    for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
  });
  const root = async (): Promise<string> => {
    const d = await tempDir('strata-run-user-');
    dirs.push(d);
    const r = join(d, 'rootfs');
    await mkdir(join(r, 'etc'), { recursive: true });
    return r;
  };

  it('reads passwd and group from the root', async () => {
    const r = await root();
    await writeFile(join(r, 'etc/passwd'), PASSWD);
    await writeFile(join(r, 'etc/group'), GROUP);
    expect(await resolveUser(r, 'app')).toEqual({ uid: 1000, gid: 1000, additionalGids: [10, 50] });
  });

  it('follows symlinks inside the root', async () => {
    const r = await root();
    await mkdir(join(r, 'usr/share/base'), { recursive: true });
    await writeFile(join(r, 'usr/share/base/passwd'), PASSWD);
    await symlink('../usr/share/base/passwd', join(r, 'etc/passwd'));
    expect((await resolveUser(r, 'app')).uid).toBe(1000);
  });

  it('never follows a passwd symlink out of the root', async () => {
    const r = await root();
    const outside = join(r, '..', 'outside-passwd');
    await writeFile(outside, 'evil:x:4321:4321::/:/bin/sh\n');
    // Relative: `..` stops at the root as in chroot, so it names the root's /outside-passwd (missing).
    // Absolute: restarts at the root, where nothing is (missing).
    await symlink('../../outside-passwd', join(r, 'etc/passwd'));
    await expect(resolveUser(r, 'evil')).rejects.toThrow(/unable to find user evil/);
    await writeFile(join(r, 'outside-passwd'), 'inroot:x:77:77::/:/bin/sh\n');
    expect((await resolveUser(r, 'inroot')).uid).toBe(77);
    await expect(resolveUser(r, 'evil')).rejects.toThrow(/unable to find user evil/);
    await rm(join(r, 'outside-passwd'));
    await rm(join(r, 'etc/passwd'));
    await symlink(outside, join(r, 'etc/passwd'));
    await expect(resolveUser(r, 'evil')).rejects.toThrow(/unable to find user evil/);
    // A numeric user still works without a usable passwd, as in docker.
    expect(await resolveUser(r, '4321')).toEqual({ uid: 4321, gid: 0, additionalGids: [] });
  });

  it('refuses an oversized passwd rather than reading it whole', async () => {
    const r = await root();
    await writeFile(join(r, 'etc/passwd'), Buffer.alloc(MAX_ACCOUNT_FILE_BYTES + 10, 0x61));
    const err = await resolveUser(r, 'app').catch((e: unknown) => e);
    expect(hasCode(err, 'SIZE_LIMIT')).toBe(true);
  });

  it('ignores a passwd that is a directory or a fifo-like non-file', async () => {
    const r = await root();
    await mkdir(join(r, 'etc/passwd'));
    await expect(resolveUser(r, 'app')).rejects.toThrow(/not a regular file/);
  });
});
