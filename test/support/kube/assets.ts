/**
 * Where the envtest binaries are (controller-runtime's `KUBEBUILDER_ASSETS` convention): the directory the
 * variable names, else setup-envtest's own directory for v1.28.0; when neither holds them, they are unpacked from
 * the workplace's `shared/envtest` folder (what `scripts/install-deps.sh` does). Missing binaries are a test
 * failure with a message saying how to get them, never a skip.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from './repo-root.js';

const BINARIES = ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kubectl', 'helm'] as const;
/** One of the envtest binaries. */
export type EnvtestBinary = (typeof BINARIES)[number];

/** setup-envtest's directory for Kubernetes 1.28.0 on linux/amd64. */
export function defaultAssetsDir(): string {
  const data = process.env.XDG_DATA_HOME || join(homedir(), '.local/share');
  return join(data, 'kubebuilder-envtest/k8s/1.28.0-linux-amd64');
}

/** The folders holding the compressed binaries and their setup.sh, in the order tried. */
export function envtestSources(): string[] {
  return [
    process.env.STRATA_ENVTEST_SRC,
    join(REPO_ROOT, '../shared/envtest'),
    join(REPO_ROOT, '../../shared/envtest'),
    '/work/shared/envtest',
  ].filter((d): d is string => !!d && existsSync(join(d, 'setup.sh')));
}

const complete = (dir: string): boolean => BINARIES.every((b) => existsSync(join(dir, b)));

let found: string | undefined;

/** The directory holding etcd, kube-apiserver, kube-controller-manager, kubectl and helm; unpacks them when needed. */
export function envtestAssets(): string {
  if (found) return found;
  const dir = process.env.KUBEBUILDER_ASSETS || defaultAssetsDir();
  if (!complete(dir)) {
    const [src] = envtestSources();
    if (!src)
      throw new Error(
        `the envtest binaries (${BINARIES.join(', ')}) are not in ${dir} and no shared/envtest folder was found ` +
          'to unpack them from: run `bash scripts/install-deps.sh`, or set KUBEBUILDER_ASSETS to a directory from ' +
          '`setup-envtest use 1.28.0 -p path`',
      );
    execFileSync('bash', [join(src, 'setup.sh'), dir], { stdio: 'pipe' });
  }
  found = dir;
  return dir;
}

/** The path of one envtest binary. */
export function envtestBinary(name: EnvtestBinary): string {
  return join(envtestAssets(), name);
}
