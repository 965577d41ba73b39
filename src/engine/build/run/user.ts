import { TerminalError } from '../../errors.js';
import { CHROOT, SafeRoot } from '../../union/safe-path.js';
import { readRootFile } from './root-path.js';
import type { RunUser } from './types.js';

/**
 * Docker's USER rules: `name`, `uid`, `name:group`, `uid:gid`, `name:gid`, `uid:group`, resolved through the root's
 * /etc/passwd and /etc/group. A number missing from passwd is used as is (gid 0 unless given); a name missing is an
 * error. Supplementary groups come from /etc/group only in the implicit form (no group given) for a known user.
 */

/** The largest /etc/passwd or /etc/group read: larger files are refused rather than read whole. */
export const MAX_ACCOUNT_FILE_BYTES = 4 * 1024 * 1024;

/** The largest id Linux accepts (ids are unsigned 32-bit; -1 means "unchanged" to the kernel). */
const MAX_ID = 0x7fffffff;

/** One /etc/passwd entry (the fields USER needs). */
export interface PasswdEntry {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
}

/** One /etc/group entry. */
export interface GroupEntry {
  readonly name: string;
  readonly gid: number;
  readonly members: readonly string[];
}

/** Parses /etc/passwd text; malformed lines (too few fields, non-numeric ids) are skipped, as libc does. */
export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const f of records(text)) {
    const uid = parseId(f[2]);
    const gid = parseId(f[3]);
    if (f.length < 4 || uid === undefined || gid === undefined) continue;
    out.push({ name: f[0]!, uid, gid });
  }
  return out;
}

/** Parses /etc/group text; malformed lines are skipped. */
export function parseGroup(text: string): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const f of records(text)) {
    const gid = parseId(f[2]);
    if (f.length < 3 || gid === undefined) continue;
    const members = (f[3] ?? '')
      .split(',')
      .map((m) => m.trim())
      .filter((m) => m !== '');
    out.push({ name: f[0]!, gid, members });
  }
  return out;
}

/** The colon-separated fields of each line of an account file; blank lines and `#` comments are skipped. */
function* records(text: string): Generator<string[]> {
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line !== '' && !line.startsWith('#')) yield line.split(':');
  }
}

/** A decimal id in range, or undefined. */
function parseId(s: string | undefined): number | undefined {
  if (s === undefined || !/^\d{1,10}$/.test(s)) return undefined;
  const n = Number(s);
  return n <= MAX_ID ? n : undefined;
}

/**
 * Pure USER resolution over parsed account files (`undefined` = the file is absent). Throws
 * `TerminalError('INVALID_ARGUMENT')` naming the user or group that is missing, or an id out of range.
 */
export function resolveUserFrom(
  user: string | undefined,
  passwd: readonly PasswdEntry[] | undefined,
  group: readonly GroupEntry[] | undefined,
  why?: { passwd?: string; group?: string },
): RunUser {
  const spec = user ?? '';
  const colon = spec.indexOf(':');
  const userArg = colon < 0 ? spec : spec.slice(0, colon);
  const groupArg = colon < 0 ? '' : spec.slice(colon + 1);
  const numericUser = /^\d+$/.test(userArg);
  const numericGroup = /^\d+$/.test(groupArg);

  let uid = 0;
  let gid = 0;
  let matchedName: string | undefined;
  // An empty user means root: look up uid 0 for its primary group, as docker does.
  const match = (passwd ?? []).find((p) =>
    userArg === '' ? p.uid === 0 : numericUser ? p.uid === Number(userArg) : p.name === userArg,
  );
  if (match) {
    matchedName = match.name;
    uid = match.uid;
    gid = match.gid;
  } else if (userArg !== '') {
    if (!numericUser)
      throw new TerminalError(
        'INVALID_ARGUMENT',
        `unable to find user ${userArg}: no matching entries in passwd file${why?.passwd ? ` (${why.passwd})` : ''}`,
        { detail: { user: spec } },
      );
    uid = checkedId(userArg, 'uid', spec);
  }

  const additionalGids: number[] = [];
  if (groupArg !== '') {
    const g = (group ?? []).find((e) => (numericGroup ? e.gid === Number(groupArg) : e.name === groupArg));
    if (g) gid = g.gid;
    else if (numericGroup) gid = checkedId(groupArg, 'gid', spec);
    else
      throw new TerminalError(
        'INVALID_ARGUMENT',
        `unable to find group ${groupArg}: no matching entries in group file${why?.group ? ` (${why.group})` : ''}`,
        { detail: { user: spec } },
      );
  } else if (matchedName !== undefined) {
    // Supplementary groups only in the implicit form, and only for a user found by name or id in passwd.
    const seen = new Set<number>();
    for (const g of group ?? [])
      if (g.members.includes(matchedName) && !seen.has(g.gid)) {
        seen.add(g.gid);
        additionalGids.push(g.gid);
      }
  }
  return { uid, gid, additionalGids };
}

function checkedId(s: string, what: string, spec: string): number {
  const n = parseId(s);
  if (n === undefined)
    throw new TerminalError('INVALID_ARGUMENT', `USER ${spec}: ${what} ${s} is out of range (0..${MAX_ID})`, {
      detail: { user: spec },
    });
  return n;
}

/**
 * Resolves a Dockerfile USER value (`undefined` or `''` = root) to numeric ids through the root's /etc/passwd and
 * /etc/group, read safely (never outside `rootfs`). Throws `TerminalError('INVALID_ARGUMENT')` for an unknown name.
 */
export async function resolveUser(rootfs: string, user: string | undefined): Promise<RunUser> {
  const root = await SafeRoot.open(rootfs, undefined, CHROOT);
  // Read both even for numeric specs: a uid found in passwd brings its primary group and supplementary groups.
  const passwd = await readRootFile(root, '/etc/passwd', MAX_ACCOUNT_FILE_BYTES);
  const group = await readRootFile(root, '/etc/group', MAX_ACCOUNT_FILE_BYTES);
  return resolveUserFrom(
    user,
    passwd.text === undefined ? undefined : parsePasswd(passwd.text),
    group.text === undefined ? undefined : parseGroup(group.text),
    { ...(passwd.why ? { passwd: passwd.why } : {}), ...(group.why ? { group: group.why } : {}) },
  );
}
