/**
 * Where `strata controller` finds its API server: `--kubeconfig`, else the pod's service account (in-cluster),
 * else `$KUBECONFIG` (a `:`-separated list, merged in order as kubectl does), else `~/.kube/config`. The caller
 * (config/ through the CLI) says which of these exist; this module reads no environment.
 */
import { existsSync } from 'node:fs';
import { KubeConfig } from '@kubernetes/client-node';
import { KubeError } from './errors.js';

/** The sources, as config/ reads them. */
export interface KubeConfigSources {
  /** `--kubeconfig`. */
  readonly flag?: string;
  readonly inCluster: boolean;
  /** `$KUBECONFIG` entries. */
  readonly envPaths: readonly string[];
  /** `~/.kube/config`. */
  readonly defaultPath: string;
}

/** Loads the first source that applies, and says which it was. A source named but unusable is a CONFIG error. */
export function loadKubeConfig(sources: KubeConfigSources): { kubeConfig: KubeConfig; source: string } {
  const kc = new KubeConfig();
  try {
    if (sources.flag) {
      kc.loadFromFile(sources.flag);
      return { kubeConfig: checked(kc, sources.flag), source: sources.flag };
    }
    if (sources.inCluster) {
      kc.loadFromCluster();
      return { kubeConfig: checked(kc, 'in-cluster'), source: 'in-cluster' };
    }
    const paths = sources.envPaths.filter((p) => existsSync(p));
    if (paths.length > 0) {
      kc.loadFromFile(paths[0]!);
      for (const p of paths.slice(1)) {
        const more = new KubeConfig();
        more.loadFromFile(p);
        kc.mergeConfig(more, true);
      }
      return { kubeConfig: checked(kc, paths.join(':')), source: `$KUBECONFIG (${paths.join(':')})` };
    }
    if (existsSync(sources.defaultPath)) {
      kc.loadFromFile(sources.defaultPath);
      return { kubeConfig: checked(kc, sources.defaultPath), source: sources.defaultPath };
    }
  } catch (err) {
    if (err instanceof KubeError) throw err;
    throw new KubeError('CONFIG', `cannot load the kubeconfig: ${(err as Error).message}`, { cause: err });
  }
  throw new KubeError(
    'CONFIG',
    `no kubeconfig: pass --kubeconfig, run in a pod, set $KUBECONFIG or create ${sources.defaultPath}`,
  );
}

function checked(kc: KubeConfig, where: string): KubeConfig {
  if (!kc.getCurrentCluster()) throw new KubeError('CONFIG', `${where}: no current context with a cluster`);
  return kc;
}
