import { execFileSync } from 'node:child_process';
import { copyFile, mkdir, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { requirePeer } from '../support/peers.js';
import { requireRoot } from '../support/root.js';

/** The busybox applets the runner tests call inside their roots. */
const APPLETS = [
  'sh',
  'cat',
  'echo',
  'grep',
  'id',
  'ip',
  'hostname',
  'ls',
  'sleep',
  'env',
  'pwd',
  'mkdir',
  'ps',
];

/** Fails unless root, runc and busybox-static are present (never a skip). Answers runc's path. */
export function requireRunc(): string {
  requireRoot('the RUN (runc) tests');
  const runc = requirePeer('runc');
  requirePeer('busybox');
  execFileSync(runc, ['--version'], { stdio: 'pipe' });
  return runc;
}

/** Makes a minimal root in `dir`: /bin/busybox (static) and symlinks for the applets the tests use. */
export async function makeBusyboxRoot(dir: string): Promise<string> {
  const busybox = requirePeer('busybox');
  await mkdir(join(dir, 'bin'), { recursive: true });
  await copyFile(busybox, join(dir, 'bin', 'busybox'));
  for (const a of APPLETS) await symlink('busybox', join(dir, 'bin', a));
  return dir;
}
