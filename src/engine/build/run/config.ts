import type { RunSpec } from './types.js';

/**
 * The OCI runtime config (`config.json`) of one RUN step: a pure function of the step and of the paths the runner
 * prepared, so every field can be checked without starting a container.
 */

/** Docker's default capability set, as `docker run` and `docker build` grant it. */
export const DEFAULT_CAPABILITIES: readonly string[] = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
];

/** Paths docker hides from containers (bind of /dev/null or an empty tmpfs). */
export const MASKED_PATHS: readonly string[] = [
  '/proc/asound',
  '/proc/acpi',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/proc/scsi',
  '/sys/firmware',
  '/sys/devices/virtual/powercap',
];

/** Paths docker makes read-only inside containers. */
export const READONLY_PATHS: readonly string[] = [
  '/proc/bus',
  '/proc/fs',
  '/proc/irq',
  '/proc/sys',
  '/proc/sysrq-trigger',
];

/** The PATH docker's builder sets when the image's ENV has none. */
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** What the runner decided before writing the config: names and host files outside the spec. */
export interface RuntimeConfigOptions {
  /** The root's real path (symlink-free), as runc wants it. */
  readonly rootfs: string;
  /** The UTS hostname (the runner picks a random one when the spec has none). */
  readonly hostname: string;
  /** Host file bound read-only at /etc/hosts (the host's for `host`, a generated one for `none`). */
  readonly hostsFile: string;
  /** Host file bound read-only at /etc/resolv.conf; omitted, no resolv.conf is mounted (network `none`). */
  readonly resolvConf?: string;
  /**
   * Where each nominal mount destination really lands in the root (canonical, symlink-free, absolute), when the
   * runner resolved it through the root's symlinks; a destination missing here is used as written.
   */
  readonly destinations?: Readonly<Record<string, string>>;
  /**
   * RLIMIT_NOFILE (soft and hard) of the process, default {@link DEFAULT_NOFILE}. The runner lowers it to its own
   * hard limit: the step has no CAP_SYS_RESOURCE, so runc cannot raise it above what it inherited.
   */
  readonly nofile?: number;
}

/** The open-files limit docker gives build steps. */
export const DEFAULT_NOFILE = 1048576;

/** One OCI mount entry. */
export interface OciMount {
  readonly destination: string;
  readonly type: string;
  readonly source: string;
  readonly options: readonly string[];
}

/** The destinations of the mounts the runtime's own machinery needs (not counting binds and the /etc files). */
export const SYSTEM_MOUNT_POINTS: readonly string[] = ['/proc', '/dev', '/sys'];

/**
 * Builds the OCI runtime config (ociVersion 1.0.2) for a step: its process (argv, env with a default PATH, cwd,
 * uid/gid/additional gids, docker's default capabilities, NOFILE 1048576 unless lowered), /proc, a tmpfs /dev with pts, shm and
 * mqueue, read-only /sys, the /etc/hosts and /etc/resolv.conf binds, the spec's binds, and pid, ipc, uts and mount
 * namespaces (plus network for `none`; `host` shares the host's network).
 */
export function runtimeConfig(spec: RunSpec, options: RuntimeConfigOptions): Record<string, unknown> {
  const dest = (path: string): string => options.destinations?.[path] ?? path;
  const env = spec.env.some((e) => e.startsWith('PATH='))
    ? [...spec.env]
    : [`PATH=${DEFAULT_PATH}`, ...spec.env];
  const caps = [...DEFAULT_CAPABILITIES];
  const nofile = options.nofile ?? DEFAULT_NOFILE;
  const mounts: OciMount[] = [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    {
      destination: '/dev',
      type: 'tmpfs',
      source: 'tmpfs',
      options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
    },
    {
      destination: '/dev/pts',
      type: 'devpts',
      source: 'devpts',
      options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'],
    },
    {
      destination: '/dev/shm',
      type: 'tmpfs',
      source: 'shm',
      options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'],
    },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    {
      destination: dest('/etc/hosts'),
      type: 'bind',
      source: options.hostsFile,
      options: ['rbind', 'ro', 'nosuid', 'nodev', 'noexec'],
    },
  ];
  if (options.resolvConf !== undefined)
    mounts.push({
      destination: dest('/etc/resolv.conf'),
      type: 'bind',
      source: options.resolvConf,
      options: ['rbind', 'ro', 'nosuid', 'nodev', 'noexec'],
    });
  for (const b of spec.binds ?? [])
    mounts.push({
      destination: dest(b.destination),
      type: 'bind',
      source: b.source,
      options: ['rbind', b.readonly ? 'ro' : 'rw', 'nosuid', 'nodev'],
    });
  const namespaces = [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }];
  if (spec.network === 'none') namespaces.push({ type: 'network' });
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: {
        uid: spec.user.uid,
        gid: spec.user.gid,
        ...(spec.user.additionalGids.length ? { additionalGids: [...spec.user.additionalGids] } : {}),
      },
      args: [...spec.args],
      env,
      cwd: spec.cwd,
      capabilities: { bounding: caps, effective: caps, permitted: caps },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: nofile, soft: nofile }],
      noNewPrivileges: false,
    },
    root: { path: options.rootfs, readonly: false },
    hostname: options.hostname,
    mounts,
    linux: {
      namespaces,
      // Deny every device, then runc adds its standard allow list (null, zero, full, tty, random, urandom, pts).
      resources: { devices: [{ allow: false, access: 'rwm' }] },
      maskedPaths: [...MASKED_PATHS],
      readonlyPaths: [...READONLY_PATHS],
    },
  };
}
