import { readFileSync, readlinkSync } from 'node:fs';

/**
 * Who a process is, in terms that let another process prove it dead: the PID namespace (the inode of
 * `/proc/self/ns/pid`), the boot (`/proc/sys/kernel/random/boot_id`) and the pid's start time in clock ticks since
 * boot (field 22 of `/proc/<pid>/stat`, which defeats pid reuse). A pid means nothing outside its namespace and
 * boot, so liveness is only ever judged when both match.
 */
export interface ProcIdentity {
  readonly pid: number;
  readonly pidNs: string;
  readonly bootId: string;
  readonly startTime: string;
}

let self: ProcIdentity | null | undefined;

/**
 * This process's identity, or undefined when `/proc` cannot prove it (not Linux, `/proc` missing, or a `/proc`
 * mounted for another PID namespace than ours, where `/proc/self` would name someone else). Computed once.
 */
export function selfIdentity(): ProcIdentity | undefined {
  if (self === undefined) self = readSelf() ?? null;
  return self ?? undefined;
}

function readSelf(): ProcIdentity | undefined {
  try {
    const pidNs = readlinkSync('/proc/self/ns/pid');
    const bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    const stat = parseStat(readFileSync('/proc/self/stat', 'utf8'));
    // /proc/self must be us: a /proc of another PID namespace would give another pid here.
    if (!stat || stat.pid !== process.pid || !pidNs || !bootId) return undefined;
    return { pid: process.pid, pidNs, bootId, startTime: stat.startTime };
  } catch {
    return undefined;
  }
}

/**
 * Whether the process `other` describes is provably dead: true only when it ran in our PID namespace during this
 * boot and its pid is now absent or belongs to a process started at another time. Anything we cannot prove (other
 * namespace, other boot, unreadable `/proc`) is 'unknown': the caller must fall back to a rule without pids.
 */
export function provablyDead(other: Partial<ProcIdentity>): boolean | 'unknown' {
  const me = selfIdentity();
  if (!me || other.pidNs !== me.pidNs || other.bootId !== me.bootId) return 'unknown';
  if (typeof other.pid !== 'number' || !Number.isSafeInteger(other.pid) || other.pid <= 0) return 'unknown';
  if (typeof other.startTime !== 'string') return 'unknown';
  let text: string;
  try {
    text = readFileSync(`/proc/${other.pid}/stat`, 'utf8');
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? true : 'unknown';
  }
  const stat = parseStat(text);
  if (!stat) return 'unknown';
  if (stat.startTime !== other.startTime) return true; // the pid was reused
  return stat.state === 'Z' || stat.state === 'X'; // a zombie holds no lock: it can never refresh or release
}

/** pid, state and start time from a `/proc/<pid>/stat` line; the command name may contain spaces and parens. */
function parseStat(text: string): { pid: number; state: string; startTime: string } | undefined {
  const close = text.lastIndexOf(')');
  if (close < 0) return undefined;
  const pid = Number(text.slice(0, text.indexOf(' ')));
  // Fields after the name start at field 3 (state); the start time is field 22.
  const rest = text
    .slice(close + 2)
    .trim()
    .split(' ');
  const state = rest[0];
  const startTime = rest[22 - 3];
  if (!Number.isSafeInteger(pid) || !state || !startTime) return undefined;
  return { pid, state, startTime };
}
