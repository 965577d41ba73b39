/**
 * Gives a pod's process the real paths of its volume mounts and termination-message file: the process starts in a
 * private mount namespace (`unshare --mount`) whose shell bind-mounts each source onto its mountPath, then execs the
 * command. Nothing is created on the host but an empty top-level directory (`/host` for `/host/etc`) when a mountPath
 * has no existing ancestor but `/` (left in place: other pods may use it): otherwise a mountPath whose parent does not
 * exist gets an overlay on its nearest existing ancestor (upper layer in the pod's directory), so the missing
 * directories exist only in the namespace.
 * Every mount dies with the namespace when the process exits.
 */
import { isAbsolute, join, posix } from 'node:path';

/** One bind mount. */
export interface BindMount {
  /** Host path of the volume (a directory) or of a file. */
  readonly source: string;
  /** The absolute path the process sees. */
  readonly target: string;
  readonly kind: 'dir' | 'file';
  readonly readOnly?: boolean;
}

function q(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function isUnder(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
}

/**
 * Orders mounts so that each sees its source: shallow targets first (a mount inside a volume lands in that volume),
 * but a target that hides the node's own directory (e.g. `/tmp` when the node works in /tmp) last, since every
 * source lives there.
 */
export function orderMounts(mounts: readonly BindMount[], nodeDir: string): BindMount[] {
  for (const m of mounts)
    if (
      !isAbsolute(m.target) ||
      posix.normalize(m.target) !== m.target.replace(/\/+$/, '') ||
      m.target === '/'
    )
      throw new Error(`mountPath ${JSON.stringify(m.target)} must be a clean absolute path other than /`);
  const depth = (p: string) => p.split('/').length;
  const hides = (m: BindMount) => isUnder(nodeDir, m.target);
  const sorted = [...mounts].sort(
    (a, b) => Number(hides(a)) - Number(hides(b)) || depth(a.target) - depth(b.target),
  );
  const hiding = sorted.filter(hides);
  for (const h of hiding)
    for (const m of sorted)
      if (m !== h && isUnder(m.target, h.target))
        throw new Error(
          `the test node cannot mount ${m.target} inside ${h.target}, which hides its own directory`,
        );
  return sorted;
}

/**
 * The shell script run as `unshare --mount --propagation private -- sh -c SCRIPT sh CMD ARGS…`: it makes the
 * mounts, changes to `workingDir` when given, and execs the command. `keep` names host directories the command
 * itself needs (the Strata checkout it runs from): a volume mounted over one of their ancestors (an emptyDir at
 * `/tmp` when the checkout is under /tmp) would hide them, so they are bound back, from a descriptor opened before.
 */
export function mountScript(
  mounts: readonly BindMount[],
  podDir: string,
  nodeDir: string,
  workingDir?: string,
  keep: readonly string[] = [],
): string {
  const ordered = orderMounts(mounts, nodeDir);
  const hidden = keep.filter((k) => ordered.some((m) => isUnder(k, m.target))).slice(0, 3);
  const lines = [
    'set -eu',
    // Descriptors 6–8 keep the hidden directories reachable (/proc/self/fd/N) once a volume covers them.
    ...hidden.map((k, i) => `exec ${6 + i}< ${q(k)}`),
    `scratch=${q(join(podDir, 'overlays'))}`,
    'n=0',
    // Targets already bound (and overlays of ours): a missing path under one is made inside it, as runc would.
    'bound=""',
    'in_bound() { for b in $bound; do case "$1/" in "$b"/*) return 0;; esac; done; return 1; }',
    // ensure PATH d|f: make the mount point exist in this namespace only.
    'ensure() {',
    '  [ -e "$1" ] && return 0',
    '  a=$(dirname "$1"); while [ ! -e "$a" ]; do a=$(dirname "$a"); done',
    '  a=$(readlink -f "$a")',
    // Under / itself no overlay can go (it would hide every other mount): the top directory is made on the host.
    '  if [ "$a" = / ]; then top="/$(echo "$1" | cut -d/ -f2)"; mkdir -p "$top"; a="$top"; fi',
    '  if ! in_bound "$a"; then',
    '    n=$((n+1)); mkdir -p "$scratch/$n/u" "$scratch/$n/w"',
    '    mount -t overlay overlay -o "lowerdir=$a,upperdir=$scratch/$n/u,workdir=$scratch/$n/w" "$a"',
    // Below an overlay of ours, directories are made in its upper layer: no second overlay.
    '    bound="$bound $a"',
    '  fi',
    '  if [ "$2" = d ]; then mkdir -p "$1"; else mkdir -p "$(dirname "$1")"; : > "$1"; fi',
    '}',
  ];
  for (const m of ordered) {
    lines.push(`ensure ${q(m.target)} ${m.kind === 'dir' ? 'd' : 'f'}`);
    lines.push(`mount --bind ${q(m.source)} ${q(m.target)}`);
    if (m.readOnly) lines.push(`mount -o remount,bind,ro ${q(m.target)}`);
    lines.push(`bound="$bound $(readlink -f ${q(m.target)})"`);
  }
  hidden.forEach((k, i) => {
    lines.push(`ensure ${q(k)} d`);
    // --no-canonicalize: mount would resolve the descriptor to its (now hidden) path name.
    lines.push(`mount --no-canonicalize --bind /proc/self/fd/${6 + i} ${q(k)}`);
    lines.push(`exec ${6 + i}<&-`);
  });
  if (workingDir) lines.push(`cd ${q(workingDir)}`);
  lines.push('exec "$@"');
  return lines.join('\n');
}
