/**
 * A configMap context as the kubelet mounts it: each key a file at the mount's root, reached through the kubelet's
 * `..data` symlink (its atomic-update layout), with `..`-prefixed entries that are not keys.
 */
import { copyFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { TerminalError, throwIfAborted } from '../../engine/errors.js';
import { resolveInside } from './inside.js';

/** The kubelet's own entries in a ConfigMap volume (`..data`, `..2026_12_02_…`): never keys. */
function isKubeletEntry(name: string): boolean {
  return name.startsWith('..');
}

/**
 * Copies every key of a mounted ConfigMap into `dest` as regular files (symlinks followed only inside the mount).
 * A ConfigMap is flat (keys hold no `/`), so the context has no subdirectories: use `key` with a tarball for trees.
 */
export async function copyConfigMapKeys(mount: string, dest: string, signal?: AbortSignal): Promise<void> {
  const names = await readdir(mount).catch((err: unknown) => {
    throw new TerminalError('BUILD_CONTEXT_INVALID', `configMap context ${mount}: cannot read the mount`, {
      cause: err,
    });
  });
  const keys = names.filter((n) => !isKubeletEntry(n)).sort();
  if (keys.length === 0)
    throw new TerminalError('BUILD_CONTEXT_INVALID', `configMap context ${mount}: the ConfigMap has no keys`);
  for (const key of keys) {
    throwIfAborted(signal);
    const found = await resolveInside(mount, key, 'file', 'configMap key');
    await copyFile(found.host, join(dest, key));
  }
}

/** The mounted file of one key (the tarball of a `configMap.key` context). */
export async function configMapKeyFile(mount: string, key: string): Promise<string> {
  return (await resolveInside(mount, key, 'file', 'configMap key')).host;
}
