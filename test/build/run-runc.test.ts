import { execFileSync } from 'node:child_process';
import { mkdir, readdir, readFile, readlink, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRuncRunner } from '../../src/engine/build/run/runc.js';
import type { RunSpec, StepRunner } from '../../src/engine/build/run/types.js';
import { hasCode } from '../../src/engine/errors.js';
import { tempDir } from '../support/images.js';
import { makeBusyboxRoot, requireRunc } from './run-support.js';

let runc: string;
let base: string;
let stateRoot: string;
let run: StepRunner;
let n = 0;

beforeAll(async () => {
  runc = requireRunc();
  base = await tempDir('strata-run-runc-');
  stateRoot = join(base, 'state');
  await mkdir(join(base, 'bundles'));
  run = createRuncRunner({ runc, stateRoot, bundleDir: join(base, 'bundles') });
});

afterAll(async () => {
  if (base) await rm(base, { recursive: true, force: true });
});

/** A fresh busybox root (a plain directory: the runner must not care whether it is an overlay mount). */
async function newRoot(): Promise<string> {
  return makeBusyboxRoot(join(base, `root-${n++}`));
}

const root0 = { uid: 0, gid: 0, additionalGids: [] };

function spec(rootfs: string, script: string, extra: Partial<RunSpec> = {}): RunSpec {
  return {
    rootfs,
    args: ['/bin/sh', '-c', script],
    env: [],
    cwd: '/',
    user: root0,
    network: 'host',
    ...extra,
  };
}

/** Runs a step and collects its stdout/stderr as text. */
async function runText(s: RunSpec): Promise<{ out: string; err: string; exitCode: number; tail: string }> {
  let out = '';
  let err = '';
  const r = await run({
    ...s,
    onStdout: (c) => (out += c.toString()),
    onStderr: (c) => (err += c.toString()),
  });
  return { out, err, exitCode: r.exitCode, tail: r.tail };
}

function containers(): string {
  return execFileSync(runc, ['--root', stateRoot, 'list', '-q'], { encoding: 'utf8' }).trim();
}

describe('createRuncRunner', () => {
  it('streams stdout and stderr live and keeps a tail', async () => {
    const r = await newRoot();
    const chunks: Array<[string, number]> = [];
    const t0 = Date.now();
    const res = await run({
      ...spec(r, 'echo out1; echo err1 >&2; sleep 1; echo out2'),
      onStdout: (c) => chunks.push([c.toString(), Date.now() - t0]),
      onStderr: (c) => chunks.push([`E:${c.toString()}`, Date.now() - t0]),
    });
    expect(res.exitCode).toBe(0);
    const first = chunks.find(([t]) => t.includes('out1'));
    const last = chunks.find(([t]) => t.includes('out2'));
    expect(chunks.some(([t]) => t === 'E:err1\n')).toBe(true);
    // Live: out1 arrived well before the step ended.
    expect(last![1] - first![1]).toBeGreaterThan(700);
    expect(res.tail).toContain('out1');
    expect(res.tail).toContain('err1');
    expect(res.tail.endsWith('out2\n')).toBe(true);
  });

  it('returns a non-zero exit code instead of throwing, with a bounded tail', async () => {
    const r = await newRoot();
    const res = await run(spec(r, 'i=0; while [ $i -lt 2000 ]; do echo line$i; i=$((i+1)); done; exit 3'));
    expect(res.exitCode).toBe(3);
    expect(res.signal).toBeUndefined();
    expect(res.runtimeError).toBeUndefined();
    expect(res.tail.length).toBeLessThanOrEqual(4096);
    expect(res.tail.endsWith('line1999\n')).toBe(true);
  });

  it('passes env, cwd (made when missing, owned by the user) and uid:gid:groups', async () => {
    const r = await newRoot();
    const res = await runText(
      spec(r, 'echo "$FOO|$PATH"; pwd; id', {
        env: ['FOO=bar baz'],
        cwd: '/work/dir',
        user: { uid: 1234, gid: 5678, additionalGids: [42] },
      }),
    );
    expect(res.exitCode).toBe(0);
    const [envLine, cwd, id] = res.out.trim().split('\n');
    expect(envLine).toBe('bar baz|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin');
    expect(cwd).toBe('/work/dir');
    expect(id).toBe('uid=1234 gid=5678 groups=42');
    const st = await stat(join(r, 'work/dir'));
    expect([st.uid, st.gid]).toEqual([1234, 5678]);
  });

  it('sets the hostname', async () => {
    const r = await newRoot();
    expect((await runText(spec(r, 'hostname', { hostname: 'builder-7' }))).out).toBe('builder-7\n');
  });

  it('isolates the network for none (loopback only) and shares it for host', async () => {
    const r = await newRoot();
    const none = await runText(spec(r, 'ls /sys/class/net; cat /etc/hosts', { network: 'none' }));
    expect(none.exitCode).toBe(0);
    expect(none.out.split('\n')[0]).toBe('lo');
    expect(none.out).toContain('localhost');
    const host = await runText(spec(r, 'ls /sys/class/net'));
    expect(host.out.trim().split('\n').sort()).toEqual(readdirSync('/sys/class/net').sort());
  });

  it('binds the host resolv.conf and hosts, and leaves no mount points it created', async () => {
    const r = await newRoot();
    const before = (await readdir(r)).sort();
    const res = await runText(
      spec(r, 'cat /etc/resolv.conf; echo ---; cat /etc/hosts; ls -d /proc/1 /dev/null'),
    );
    expect(res.exitCode).toBe(0);
    const [resolv, hosts] = res.out.split('---\n');
    expect(resolv).toBe(readFileSync('/etc/resolv.conf', 'utf8'));
    expect(hosts!.startsWith(readFileSync('/etc/hosts', 'utf8'))).toBe(true);
    expect((await readdir(r)).sort()).toEqual(before);
    for (const p of ['etc', 'proc', 'dev', 'sys']) expect(existsSync(join(r, p))).toBe(false);
  });

  it('leaves an existing /etc/hosts and resolv.conf byte-identical, and keeps existing /proc etc.', async () => {
    const r = await newRoot();
    for (const d of ['proc', 'dev', 'sys', 'etc']) await mkdir(join(r, d));
    await writeFile(join(r, 'etc/hosts'), '10.0.0.1 mine\n');
    await writeFile(join(r, 'etc/resolv.conf'), 'nameserver 192.0.2.1\n');
    const etcBefore = await stat(join(r, 'etc'));
    const res = await runText(spec(r, 'cat /etc/resolv.conf; echo x > /etc/new'));
    expect(res.out).toBe(readFileSync('/etc/resolv.conf', 'utf8'));
    expect(await readFile(join(r, 'etc/hosts'), 'utf8')).toBe('10.0.0.1 mine\n');
    expect(await readFile(join(r, 'etc/resolv.conf'), 'utf8')).toBe('nameserver 192.0.2.1\n');
    expect(await readFile(join(r, 'etc/new'), 'utf8')).toBe('x\n');
    for (const d of ['proc', 'dev', 'sys']) expect((await readdir(join(r, d))).length).toBe(0);
    expect((await stat(join(r, 'etc'))).ino).toBe(etcBefore.ino);
  });

  it('removes a created /etc/resolv.conf but keeps /etc when the step wrote into it; restores untouched mtimes', async () => {
    const r = await newRoot();
    await mkdir(join(r, 'var'));
    await writeFile(join(r, 'var/keep'), 'k');
    const wrote = await runText(spec(r, 'echo data > /etc/made-by-step'));
    expect(wrote.exitCode).toBe(0);
    expect((await readdir(join(r, 'etc'))).sort()).toEqual(['made-by-step']);
    const r2 = await newRoot();
    await mkdir(join(r2, 'etc'));
    const old = new Date('2001-02-03T04:05:06Z');
    await utimes(join(r2, 'etc'), old, old);
    await utimes(r2, old, old);
    expect((await runText(spec(r2, 'true'))).exitCode).toBe(0);
    expect((await readdir(join(r2, 'etc'))).length).toBe(0);
    expect((await stat(join(r2, 'etc'))).mtime.getTime()).toBe(old.getTime());
    expect((await stat(r2)).mtime.getTime()).toBe(old.getTime());
  });

  it('keeps the files a step writes', async () => {
    const r = await newRoot();
    const res = await runText(spec(r, 'mkdir -p /opt/app && echo hi > /opt/app/f && echo t > /tmpfile'));
    expect(res.exitCode).toBe(0);
    expect(await readFile(join(r, 'opt/app/f'), 'utf8')).toBe('hi\n');
    expect(await readFile(join(r, 'tmpfile'), 'utf8')).toBe('t\n');
  });

  it("grants docker's default capabilities", async () => {
    const r = await newRoot();
    const res = await runText(spec(r, 'grep -E "^Cap(Eff|Bnd|Prm)" /proc/self/status'));
    // docker's default set: CHOWN … AUDIT_WRITE, SETFCAP = 0xa80425fb
    expect(res.out).toBe('CapPrm:\t00000000a80425fb\nCapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\n');
  });

  it('aborts a long step within ~2 s, killing the whole process tree, and leaves no container', async () => {
    const r = await newRoot();
    const ac = new AbortController();
    const t0 = Date.now();
    let started = false;
    const p = run({
      ...spec(r, 'sleep 3737 & sleep 3737 & echo started; wait'),
      signal: ac.signal,
      onStdout: () => {
        started = true;
        setTimeout(() => ac.abort(), 200);
      },
    });
    const err = await p.catch((e: unknown) => e);
    expect(started).toBe(true);
    expect(hasCode(err, 'ABORTED')).toBe(true);
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(containers()).toBe('');
    // No `sleep 3737` of this step survives on the host (an odd number: other suites may sleep 1000).
    const ps = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' });
    expect(ps.split('\n').filter((l) => l.trim() === 'sleep 3737')).toEqual([]);
    // And the root is clean again.
    for (const d of ['etc', 'proc', 'dev', 'sys']) expect(existsSync(join(r, d))).toBe(false);
    expect((await readdir(join(base, 'bundles'))).length).toBe(0);
  });

  it('rejects at once when already aborted, and reports a runc failure as a failed step', async () => {
    const r = await newRoot();
    const ac = new AbortController();
    ac.abort();
    expect(
      hasCode(await run({ ...spec(r, 'true'), signal: ac.signal }).catch((e: unknown) => e), 'ABORTED'),
    ).toBe(true);
    const res = await run({ ...spec(r, ''), args: ['/bin/nonexistent'] });
    expect(res.exitCode).not.toBe(0);
    expect(res.tail).toMatch(/nonexistent/);
    expect(res.runtimeError).toMatch(/unable to start container process.*nonexistent/);
    expect(containers()).toBe('');
  });

  it('binds over where a resolv.conf symlink points, then removes only what it made', async () => {
    const r = await newRoot();
    await mkdir(join(r, 'etc'));
    await symlink('../run/systemd/resolve/stub-resolv.conf', join(r, 'etc/resolv.conf'));
    const res = await runText(spec(r, 'cat /etc/resolv.conf'));
    expect(res.out).toBe(readFileSync('/etc/resolv.conf', 'utf8'));
    expect(await readlink(join(r, 'etc/resolv.conf'))).toBe('../run/systemd/resolve/stub-resolv.conf');
    expect(existsSync(join(r, 'run'))).toBe(false);
    expect((await readdir(join(r, 'etc'))).sort()).toEqual(['resolv.conf']);
  });

  it('mounts binds read-only and removes their mount points; none has no resolv.conf', async () => {
    const r = await newRoot();
    const secret = join(base, `secret-${n}`);
    await writeFile(secret, 's3cret');
    const res = await runText(
      spec(
        r,
        'cat /run/secrets/token; echo > /run/secrets/token || echo ro; test -e /etc/resolv.conf || echo nores',
        {
          network: 'none',
          binds: [{ source: secret, destination: '/run/secrets/token', readonly: true }],
        },
      ),
    );
    expect(res.out).toMatch(/^s3cret.*ro\nnores\n$/s);
    expect(await readFile(secret, 'utf8')).toBe('s3cret');
    expect(existsSync(join(r, 'run'))).toBe(false);
    expect(existsSync(join(r, 'etc'))).toBe(false);
  });

  it('reports a step killed by a signal with its name (128+N, as shells and runc report it)', async () => {
    const r = await newRoot();
    // The step's pid 1 cannot be SIGKILLed from inside its namespace: a child is, and the shell passes it on.
    const res = await run(spec(r, "sh -c 'kill -9 $$'; exit $?"));
    expect(res).toMatchObject({ exitCode: 137, signal: 'SIGKILL' });
  });

  it('keeps a working directory through a climbing symlink inside the root (chroot), refuses a bundle dir inside the root', async () => {
    const r = await newRoot();
    await symlink('../../..', join(r, 'up'));
    // `..` at the root stays there, as in chroot: /up/made is the root's /made, created inside the root.
    const res = await runText(spec(r, 'pwd', { cwd: '/up/made' }));
    expect(res.out.trim()).toMatch(/^\/(up\/)?made$/);
    expect(existsSync(join(r, 'made'))).toBe(true);
    expect(existsSync(join(r, '..', 'made'))).toBe(false);
    const inside = createRuncRunner({ runc, stateRoot, bundleDir: join(r, 'bin') });
    expect(hasCode(await inside(spec(r, 'true')).catch((e: unknown) => e), 'INVALID_ARGUMENT')).toBe(true);
    const badHost = await run(spec(r, 'true', { hostname: 'a\n1.2.3.4 evil' })).catch((e: unknown) => e);
    expect(hasCode(badHost, 'INVALID_ARGUMENT')).toBe(true);
  });

  it("puts the step in its own cgroup under the caller's, and runc removes it", async () => {
    const r = await newRoot();
    const mine = readFileSync('/proc/self/cgroup', 'utf8');
    /** The host directory of a /proc/<pid>/cgroup line's cgroup (v1 hierarchy or the v2 unified one). */
    const dirOf = (controllers: string, path: string): string =>
      controllers === ''
        ? join(existsSync('/sys/fs/cgroup/unified') ? '/sys/fs/cgroup/unified' : '/sys/fs/cgroup', path)
        : join('/sys/fs/cgroup', controllers.replace(/^name=/, ''), path);
    let out = '';
    const during: boolean[] = [];
    const res = await run({
      ...spec(r, 'cat /proc/self/cgroup; sleep 0.3'),
      onStdout: (c) => {
        out += c.toString();
        for (const line of out.trim().split('\n')) {
          const [, controllers, path] = line.split(':');
          during.push(existsSync(dirOf(controllers!, path!)));
        }
      },
    });
    expect(res.exitCode).toBe(0);
    expect(during.length).toBeGreaterThan(0);
    expect(during.every(Boolean)).toBe(true);
    for (const line of out.trim().split('\n')) {
      const [hid, controllers, path] = line.split(':');
      const ownPath = mine
        .split('\n')
        .find((l) => l.startsWith(`${hid}:${controllers}:`))!
        .split(':')[2]!;
      expect(path).toMatch(/\/strata-build-[0-9a-f]{16}$/);
      expect(path!.startsWith(ownPath === '/' ? '/' : `${ownPath}/`)).toBe(true);
      expect(existsSync(dirOf(controllers!, path!))).toBe(false);
    }
  });

  it('stops the step and rejects with the error when an output consumer throws', async () => {
    const r = await newRoot();
    const boom = new Error('consumer failed');
    const t0 = Date.now();
    const err = await run({
      ...spec(r, 'echo hi; sleep 3737'),
      onStdout: () => {
        throw boom;
      },
    }).catch((e: unknown) => e);
    expect(err).toBe(boom);
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(containers()).toBe('');
  });

  it('refuses a bind target through a dangling symlink and undoes the mount points made so far', async () => {
    const r = await newRoot();
    await symlink('/nonexistent/dir', join(r, 'run'));
    const old = new Date('2003-04-05T06:07:08Z');
    await utimes(r, old, old);
    const secret = join(base, `secret-${n}`);
    await writeFile(secret, 'x');
    const err = await run(
      spec(r, 'true', { binds: [{ source: secret, destination: '/run/secrets/x', readonly: true }] }),
    ).catch((e: unknown) => e);
    expect(hasCode(err, 'BUILD_STEP_FAILED')).toBe(true);
    expect((err as Error).message).toMatch(/\/run\/secrets\/x/);
    expect((await readdir(r)).sort()).toEqual(['bin', 'run']);
    expect((await stat(r)).mtime.getTime()).toBe(old.getTime());
    expect(containers()).toBe('');
  });

  it('refuses to run without runc, naming the package', () => {
    let err: unknown;
    try {
      createRuncRunner({ runc: join(base, 'no-runc') });
    } catch (e) {
      err = e;
    }
    expect(hasCode(err, 'RUNTIME_UNAVAILABLE')).toBe(true);
    expect((err as Error).message).toMatch(/install Debian's runc/);
  });
});
