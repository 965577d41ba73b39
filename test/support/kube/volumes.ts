/**
 * The test node's volumes: a pod's Secret, ConfigMap, emptyDir and hostPath volumes materialised as directories,
 * Secret and ConfigMap ones in the kubelet's atomic-writer layout (`..<timestamp>/` holding the files, `..data`
 * pointing at it, each top-level entry a symlink through `..data`), so code that reads mounted volumes meets
 * what it meets on a real node. A hostPath volume is a path in the node's own host filesystem: each test node has a
 * root directory of its own (`hostRoot`), so `/var/lib/strata` of node A and of node B are different directories
 * (`<rootA>/var/lib/strata`, `<rootB>/var/lib/strata`), as on two machines.
 */
import { mkdir, stat, symlink, writeFile } from 'node:fs/promises';
import { dirname, join, posix } from 'node:path';
import type { CoreV1Api, V1KeyToPath, V1Pod, V1Volume } from '@kubernetes/client-node';

/** A volume the pod cannot start without (a missing Secret or ConfigMap, an unsupported kind). */
export class VolumeError extends Error {
  constructor(
    readonly reason: 'CreateContainerConfigError' | 'FailedMount',
    message: string,
  ) {
    super(message);
    this.name = 'VolumeError';
  }
}

function apiCode(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : undefined;
}

/** Reads an object, answering undefined for 404 (the caller decides whether that is fatal). */
export async function readOrMissing<T>(read: () => Promise<T>): Promise<T | undefined> {
  try {
    return await read();
  } catch (err) {
    if (apiCode(err) === 404) return undefined;
    throw err;
  }
}

/** Files of a Secret or ConfigMap volume: key → bytes, honouring `items` (key → path) and modes. */
function projectKeys(
  data: Record<string, Buffer>,
  items: V1KeyToPath[] | undefined,
  defaultMode: number,
  what: string,
): Array<{ path: string; bytes: Buffer; mode: number }> {
  if (!items) return Object.entries(data).map(([k, bytes]) => ({ path: k, bytes, mode: defaultMode }));
  return items.map((it) => {
    const bytes = data[it.key];
    if (!bytes) throw new VolumeError('FailedMount', `${what}: no key ${it.key}`);
    const path = posix.normalize(it.path);
    if (path.startsWith('..') || path.startsWith('/'))
      throw new VolumeError('FailedMount', `${what}: item path ${it.path} leaves the volume`);
    return { path, bytes, mode: it.mode ?? defaultMode };
  });
}

/** Writes files in the kubelet's atomic-writer layout under `dir`. */
async function writeAtomicLayout(
  dir: string,
  files: Array<{ path: string; bytes: Buffer; mode: number }>,
): Promise<void> {
  const stamp = `..${new Date().toISOString().replace(/[-:.]/g, '_')}`;
  await mkdir(join(dir, stamp), { recursive: true });
  for (const f of files) {
    const host = join(dir, stamp, f.path);
    await mkdir(dirname(host), { recursive: true });
    await writeFile(host, f.bytes, { mode: f.mode });
  }
  await symlink(stamp, join(dir, '..data'));
  const tops = new Set(files.map((f) => f.path.split('/')[0]!));
  for (const top of tops) await symlink(posix.join('..data', top), join(dir, top));
}

/**
 * Makes each volume of the pod a directory under `dir` (a hostPath: its path under `hostRoot`, the node's own root)
 * and answers volume name → path on this machine. Missing Secrets/ConfigMaps that are not optional, and hostPaths
 * whose `type` requires what is not there, throw {@link VolumeError}.
 */
export async function materialiseVolumes(
  core: CoreV1Api,
  pod: V1Pod,
  dir: string,
  hostRoot: string,
): Promise<Map<string, string>> {
  const namespace = pod.metadata!.namespace!;
  const out = new Map<string, string>();
  for (const v of pod.spec?.volumes ?? [])
    out.set(v.name, await materialise(core, namespace, v, dir, hostRoot));
  return out;
}

/** A hostPath volume's path under the node's root, made or checked as its `type` says (the kubelet's rules). */
async function hostPathVolume(v: V1Volume, hostRoot: string): Promise<string> {
  const path = posix.normalize(v.hostPath!.path);
  if (!path.startsWith('/') || path.split('/').includes('..'))
    throw new VolumeError('FailedMount', `hostPath ${v.hostPath!.path} is not a clean absolute path`);
  const host = join(hostRoot, path);
  const type = v.hostPath!.type ?? '';
  const st = await stat(host).catch(() => undefined);
  if (type === '' || type === 'DirectoryOrCreate') {
    // "" skips the checks; the runtime then makes a missing path a directory, as DirectoryOrCreate does.
    if (!st) await mkdir(host, { recursive: true, mode: 0o755 });
  } else if (type === 'FileOrCreate') {
    if (!st) {
      await mkdir(dirname(host), { recursive: true });
      await writeFile(host, '', { mode: 0o644 });
    } else if (!st.isFile()) throw new VolumeError('FailedMount', `hostPath ${path} is not a file`);
  } else if (type === 'Directory' || type === 'File') {
    if (!st || (type === 'Directory' ? !st.isDirectory() : !st.isFile()))
      throw new VolumeError(
        'FailedMount',
        `hostPath type check failed: ${path} is not a ${type.toLowerCase()}`,
      );
  } else if (!st) throw new VolumeError('FailedMount', `hostPath type check failed: ${path} does not exist`);
  return host;
}

/** A Secret's or ConfigMap's keys as bytes (`data` and `binaryData`); undefined when it does not exist. */
export async function keyData(
  core: CoreV1Api,
  namespace: string,
  kind: 'secret' | 'configmap',
  name: string,
): Promise<Record<string, Buffer> | undefined> {
  const b64 = (m: Record<string, string> | undefined) =>
    Object.entries(m ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64')] as const);
  if (kind === 'secret') {
    const s = await readOrMissing(() => core.readNamespacedSecret({ name, namespace }));
    return s && Object.fromEntries(b64(s.data));
  }
  const cm = await readOrMissing(() => core.readNamespacedConfigMap({ name, namespace }));
  return (
    cm && {
      ...Object.fromEntries(Object.entries(cm.data ?? {}).map(([k, t]) => [k, Buffer.from(t, 'utf8')])),
      ...Object.fromEntries(b64(cm.binaryData)),
    }
  );
}

async function materialise(
  core: CoreV1Api,
  namespace: string,
  v: V1Volume,
  root: string,
  hostRoot: string,
): Promise<string> {
  const dir = join(root, v.name);
  if (v.hostPath) return hostPathVolume(v, hostRoot);
  if (v.emptyDir) {
    await mkdir(dir, { recursive: true });
    return dir;
  }
  const source = v.secret
    ? { kind: 'secret' as const, name: v.secret.secretName!, ...v.secret }
    : v.configMap
      ? { kind: 'configmap' as const, name: v.configMap.name!, ...v.configMap }
      : undefined;
  if (source) {
    const { kind, name } = source;
    const data = await keyData(core, namespace, kind, name);
    if (!data && !source.optional)
      throw new VolumeError('FailedMount', `${kind} "${name}" not found (volume ${v.name})`);
    await mkdir(dir, { recursive: true });
    await writeAtomicLayout(
      dir,
      projectKeys(data ?? {}, source.items, source.defaultMode ?? 0o644, `${kind} ${name}`),
    );
    return dir;
  }
  throw new VolumeError(
    'CreateContainerConfigError',
    `volume ${v.name}: the test node supports secret, configMap, emptyDir and hostPath volumes only`,
  );
}
