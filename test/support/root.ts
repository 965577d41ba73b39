import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Fails (throws) unless the tests run as root on a kernel where an overlayfs mount works: the container tests
 * mount for real. Never a skip: in CI (`CI=true`) and locally alike, a machine without them cannot run the suite.
 */
export function requireRootAndOverlay(): void {
  const why: string[] = [];
  if (process.getuid?.() !== 0) why.push('they must run as root');
  let fss = '';
  try {
    fss = readFileSync('/proc/filesystems', 'utf8');
  } catch {
    why.push('/proc/filesystems is unreadable');
  }
  if (fss && !/\boverlay\b/.test(fss)) why.push('the kernel has no overlayfs (modprobe overlay)');
  if (why.length === 0) {
    const dir = mkdtempSync(join(tmpdir(), 'strata-ovl-probe-'));
    try {
      for (const d of ['l', 'u', 'w', 'm']) mkdirSync(join(dir, d));
      execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', 'lowerdir=l,upperdir=u,workdir=w', 'm'], {
        cwd: dir,
        stdio: 'pipe',
      });
      execFileSync('umount', [join(dir, 'm')], { stdio: 'pipe' });
    } catch (err) {
      why.push(`a test overlay mount failed: ${(err as Error).message}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  if (why.length)
    throw new Error(
      `the container tests need root and overlayfs${process.env.CI === 'true' ? ' (CI=true)' : ''}: ${why.join('; ')}`,
    );
}

/** Lazily unmounts every mount point under `dir` (deepest first): leaked mounts would break later runs. */
export function unmountAllUnder(dir: string): void {
  const text = readFileSync('/proc/self/mountinfo', 'utf8');
  const points = text
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => !!p)
    .map((p) => p.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((p) => p === dir || p.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
  for (const p of points) {
    try {
      execFileSync('umount', ['-l', p], { stdio: 'pipe' });
    } catch {
      // already gone
    }
  }
}

/**
 * Fails (throws) unless the tests run as root: namespaces, mounts of small filesystems. Never a skip, in CI
 * (`CI=true`) or locally: `what` names the tests that need it.
 */
export function requireRoot(what: string): void {
  if (process.getuid?.() !== 0)
    throw new Error(
      `${what} need root${process.env.CI === 'true' ? ' (CI=true)' : ''}: run the suite as root (sudo npm test)`,
    );
}
