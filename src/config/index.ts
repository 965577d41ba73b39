import { homedir } from 'node:os';
import { join } from 'node:path';

/** Settings that come from the environment. Only this module reads `process.env`. */
export interface StrataEnvironment {
  /** Local store directory: `$STRATA_STORE`, else `$XDG_DATA_HOME/strata/store`, else `~/.local/share/strata/store`. */
  readonly storeDir: string;
  /** Root of the embedded registry's storage: `$STRATA_REGISTRY_ROOT`, else next to the store. */
  readonly registryRoot: string;
  /** Docker `config.json` for credentials: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. */
  readonly dockerConfigPath: string;
  /**
   * Insecure registries (HTTPS without certificate verification, falling back to plain HTTP):
   * `$STRATA_INSECURE_REGISTRIES` (comma-separated). Loopback registries are always plain HTTP.
   */
  readonly insecureRegistries: readonly string[];
  /**
   * certs.d directories with per-registry CAs and client certificates: `$STRATA_CERTS_DIRS` (colon-separated), else
   * `/etc/containers/certs.d` and `/etc/docker/certs.d`.
   */
  readonly certsDirs: readonly string[];
  /** Log level for servers: `$STRATA_LOG_LEVEL` (default `info`). */
  readonly logLevel: string;
  /**
   * Registry client timeouts as `connect=30s,headers=30s,idle=60s` (any subset): `$STRATA_HTTP_TIMEOUTS`, parsed by
   * `parseHttpTimeouts` when a registry client is made (so a typo fails the verb that talks to a registry).
   */
  readonly httpTimeouts?: string;
  /** `$SOURCE_DATE_EPOCH` (reproducible builds): commit/import/export clamp file mtimes to it. */
  readonly sourceDateEpoch?: number;
  /**
   * Cap on what one layer or one gzip archive may expand to (`512m`, `64g`): `$STRATA_MAX_UNCOMPRESSED`, parsed by
   * `parseByteSize` when a verb opens the engine (so a typo fails that verb, naming the variable).
   */
  readonly maxUncompressed?: string;
  /** `$KUBECONFIG` split on `:` (empty when unset), for `strata controller` without `--kubeconfig`. */
  readonly kubeconfigPaths: readonly string[];
  /** `~/.kube/config`: the last place `strata controller` looks for a kubeconfig. */
  readonly defaultKubeconfig: string;
  /** Whether this process runs in a pod (`$KUBERNETES_SERVICE_HOST` and `$KUBERNETES_SERVICE_PORT` set). */
  readonly inCluster: boolean;
  /** `$NODE_NAME` (the downward API's `spec.nodeName`): the node `strata agent` works for. */
  readonly nodeName?: string;
  /** `$POD_NAMESPACE` (the downward API): where `strata agent` finds its DaemonSet. */
  readonly podNamespace?: string;
}

/** Reads the environment once; pass `env` to test other settings. */
export function readEnvironment(env: NodeJS.ProcessEnv = process.env): StrataEnvironment {
  const home = env.HOME || homedir();
  const dataHome = env.XDG_DATA_HOME || join(home, '.local', 'share');
  const base = join(dataHome, 'strata');
  return {
    storeDir: env.STRATA_STORE || join(base, 'store'),
    registryRoot: env.STRATA_REGISTRY_ROOT || join(base, 'registry'),
    dockerConfigPath: join(env.DOCKER_CONFIG || join(home, '.docker'), 'config.json'),
    insecureRegistries: (env.STRATA_INSECURE_REGISTRIES ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean),
    certsDirs: env.STRATA_CERTS_DIRS
      ? env.STRATA_CERTS_DIRS.split(':')
          .map((s) => s.trim())
          .filter(Boolean)
      : ['/etc/containers/certs.d', '/etc/docker/certs.d'],
    logLevel: env.STRATA_LOG_LEVEL || 'info',
    kubeconfigPaths: (env.KUBECONFIG ?? '').split(':').filter(Boolean),
    defaultKubeconfig: join(home, '.kube', 'config'),
    inCluster: Boolean(env.KUBERNETES_SERVICE_HOST && env.KUBERNETES_SERVICE_PORT),
    ...(env.NODE_NAME ? { nodeName: env.NODE_NAME } : {}),
    ...(env.POD_NAMESPACE ? { podNamespace: env.POD_NAMESPACE } : {}),
    ...(env.STRATA_HTTP_TIMEOUTS ? { httpTimeouts: env.STRATA_HTTP_TIMEOUTS } : {}),
    ...(env.STRATA_MAX_UNCOMPRESSED ? { maxUncompressed: env.STRATA_MAX_UNCOMPRESSED } : {}),
    ...(env.SOURCE_DATE_EPOCH && /^\d+$/.test(env.SOURCE_DATE_EPOCH)
      ? { sourceDateEpoch: Number(env.SOURCE_DATE_EPOCH) }
      : {}),
  };
}
