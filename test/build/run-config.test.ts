import { describe, expect, it } from 'vitest';
import {
  DEFAULT_CAPABILITIES,
  DEFAULT_PATH,
  MASKED_PATHS,
  READONLY_PATHS,
  runtimeConfig,
  type OciMount,
} from '../../src/engine/build/run/config.js';
import type { RunSpec } from '../../src/engine/build/run/types.js';

const spec: RunSpec = {
  rootfs: '/r',
  args: ['/bin/sh', '-c', 'true'],
  env: ['A=1'],
  cwd: '/work',
  user: { uid: 1000, gid: 100, additionalGids: [10, 20] },
  network: 'host',
};
const opts = { rootfs: '/real/r', hostname: 'h1', hostsFile: '/etc/hosts', resolvConf: '/etc/resolv.conf' };

type Cfg = {
  ociVersion: string;
  process: {
    terminal: boolean;
    args: string[];
    env: string[];
    cwd: string;
    user: { uid: number; gid: number; additionalGids?: number[] };
    capabilities: Record<string, string[]>;
    rlimits: Array<{ type: string; hard: number; soft: number }>;
    noNewPrivileges: boolean;
  };
  root: { path: string; readonly: boolean };
  hostname: string;
  mounts: OciMount[];
  linux: {
    namespaces: Array<{ type: string }>;
    maskedPaths: string[];
    readonlyPaths: string[];
    resources: { devices: unknown[] };
    cgroupsPath?: string;
  };
};
const cfg = (s: RunSpec, o: Parameters<typeof runtimeConfig>[1] = opts): Cfg => runtimeConfig(s, o) as Cfg;
const mount = (c: Cfg, d: string): OciMount | undefined => c.mounts.find((m) => m.destination === d);

describe('runtimeConfig', () => {
  it('describes the process as the spec says, with no terminal and docker capabilities', () => {
    const c = cfg(spec);
    expect(c.ociVersion).toBe('1.0.2');
    expect(c.process.terminal).toBe(false);
    expect(c.process.args).toEqual(spec.args);
    expect(c.process.cwd).toBe('/work');
    expect(c.process.user).toEqual({ uid: 1000, gid: 100, additionalGids: [10, 20] });
    expect(c.process.noNewPrivileges).toBe(false);
    expect(c.process.rlimits).toEqual([{ type: 'RLIMIT_NOFILE', hard: 1048576, soft: 1048576 }]);
    for (const set of ['bounding', 'effective', 'permitted'])
      expect([...c.process.capabilities[set]!].sort()).toEqual([...DEFAULT_CAPABILITIES].sort());
    expect(c.process.capabilities.ambient).toBeUndefined();
    expect(DEFAULT_CAPABILITIES).toHaveLength(14);
    expect(c.root).toEqual({ path: '/real/r', readonly: false });
    expect(c.hostname).toBe('h1');
  });

  it('adds the default PATH only when the env has none', () => {
    expect(cfg(spec).process.env).toEqual([`PATH=${DEFAULT_PATH}`, 'A=1']);
    expect(cfg({ ...spec, env: ['PATH=/x', 'B=2'] }).process.env).toEqual(['PATH=/x', 'B=2']);
  });

  it('leaves additionalGids out when there are none', () => {
    expect(cfg({ ...spec, user: { uid: 0, gid: 0, additionalGids: [] } }).process.user).toEqual({
      uid: 0,
      gid: 0,
    });
  });

  it('mounts proc, a small /dev, read-only sysfs and the host files read-only', () => {
    const c = cfg(spec);
    expect(mount(c, '/proc')?.type).toBe('proc');
    expect(mount(c, '/dev')).toMatchObject({
      type: 'tmpfs',
      options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
    });
    expect(mount(c, '/dev/pts')?.type).toBe('devpts');
    expect(mount(c, '/dev/shm')?.options).toContain('size=65536k');
    expect(mount(c, '/dev/mqueue')?.type).toBe('mqueue');
    expect(mount(c, '/sys')?.type).toBe('sysfs');
    expect(mount(c, '/sys')?.options).toEqual(expect.arrayContaining(['ro', 'nosuid', 'noexec', 'nodev']));
    expect(mount(c, '/etc/resolv.conf')).toMatchObject({ type: 'bind', source: '/etc/resolv.conf' });
    expect(mount(c, '/etc/resolv.conf')?.options).toContain('ro');
    expect(mount(c, '/etc/hosts')).toMatchObject({ type: 'bind', source: '/etc/hosts' });
    // /dev comes before its sub-mounts: runc mounts in order.
    const order = c.mounts.map((m) => m.destination);
    expect(order.indexOf('/dev')).toBeLessThan(order.indexOf('/dev/pts'));
  });

  it('shares the host network for host and isolates it for none', () => {
    const types = (c: Cfg): string[] => c.linux.namespaces.map((n) => n.type).sort();
    expect(types(cfg(spec))).toEqual(['ipc', 'mount', 'pid', 'uts']);
    const none = cfg({ ...spec, network: 'none' }, { rootfs: '/r', hostname: 'h', hostsFile: '/b/hosts' });
    expect(types(none)).toEqual(['ipc', 'mount', 'network', 'pid', 'uts']);
    expect(mount(none, '/etc/resolv.conf')).toBeUndefined();
    expect(mount(none, '/etc/hosts')?.source).toBe('/b/hosts');
  });

  it('maps binds and resolved destinations', () => {
    const c = cfg(
      { ...spec, binds: [{ source: '/host/secret', destination: '/run/secrets/s', readonly: true }] },
      {
        ...opts,
        destinations: { '/etc/resolv.conf': '/run/resolv.conf', '/run/secrets/s': '/var/run/secrets/s' },
      },
    );
    expect(mount(c, '/run/resolv.conf')?.source).toBe('/etc/resolv.conf');
    expect(mount(c, '/etc/resolv.conf')).toBeUndefined();
    expect(mount(c, '/var/run/secrets/s')).toMatchObject({ type: 'bind', source: '/host/secret' });
    expect(mount(c, '/var/run/secrets/s')?.options).toContain('ro');
  });

  it('masks and write-protects docker default paths, denies devices by default, lets runc pick the cgroup', () => {
    const c = cfg(spec);
    expect(c.linux.maskedPaths).toEqual([...MASKED_PATHS]);
    expect(c.linux.maskedPaths).toContain('/proc/kcore');
    expect(c.linux.readonlyPaths).toEqual([...READONLY_PATHS]);
    expect(c.linux.readonlyPaths).toContain('/proc/sys');
    expect(c.linux.resources.devices).toEqual([{ allow: false, access: 'rwm' }]);
    expect(c.linux.cgroupsPath).toBeUndefined();
  });
});
