/**
 * A kubeconfig that authenticates as a ServiceAccount with a token from the TokenRequest API (`kubectl create
 * token`), as a pod of that ServiceAccount would: RBAC tests and end-to-end runs make their calls under the
 * identity the shipped RBAC binds, not as an admin. The ServiceAccount must exist; the token is bound to it (deleting
 * the ServiceAccount revokes it).
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import type { ControlPlane } from './control-plane.js';

/** Options of {@link tokenKubeconfig}. */
export interface TokenKubeconfigOptions {
  /** The token's lifetime (`--duration`); default 1h, the shortest the apiserver keeps without extending it. */
  readonly duration?: string;
  /** The kubeconfig's default namespace; default the ServiceAccount's. */
  readonly defaultNamespace?: string;
}

interface Kubeconfig {
  users: { name: string; user: Record<string, unknown> }[];
  contexts: { name: string; context: { namespace?: string } }[];
}

/**
 * Requests a token for ServiceAccount `namespace/serviceAccount` and writes a kubeconfig using it (the admin
 * kubeconfig's server and CA) into the control plane's dir; returns its path.
 */
export async function tokenKubeconfig(
  cp: Pick<ControlPlane, 'kubectlOk' | 'kubeconfigPath' | 'dir'>,
  namespace: string,
  serviceAccount: string,
  o: TokenKubeconfigOptions = {},
): Promise<string> {
  const token = (
    await cp.kubectlOk([
      'create',
      'token',
      serviceAccount,
      '-n',
      namespace,
      `--duration=${o.duration ?? '1h'}`,
    ])
  ).trim();
  if (!/^[A-Za-z0-9._-]+$/.test(token)) throw new Error(`kubectl create token answered no token: ${token}`);
  const config = parse(await readFile(cp.kubeconfigPath, 'utf8')) as Kubeconfig;
  for (const u of config.users) u.user = { token };
  for (const c of config.contexts) c.context.namespace = o.defaultNamespace ?? namespace;
  const file = join(cp.dir, `sa-${namespace}-${serviceAccount}-${Date.now()}.kubeconfig`);
  await writeFile(file, stringify(config), { mode: 0o600 });
  return file;
}
