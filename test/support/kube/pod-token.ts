/**
 * What the ServiceAccount admission plugin and the kubelet give a pod together: a token for the pod's
 * ServiceAccount (a TokenRequest bound to the pod, as the projected `kube-api-access-*` volume holds), the cluster's
 * CA and the namespace, in the files in-cluster clients read (`/var/run/secrets/kubernetes.io/serviceaccount`), and
 * `KUBERNETES_SERVICE_HOST`/`_PORT`. The test control plane runs without that admission plugin (a pod naming a
 * missing ServiceAccount would be refused), so test nodes that should do this say so (`serviceAccountTokens`).
 * The service address is the apiserver's own (127.0.0.1): on a real node it is the `kubernetes` Service's ClusterIP.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { CoreV1Api, KubeConfig, V1Pod } from '@kubernetes/client-node';
import { VolumeError } from './volumes.js';

/** Where in-cluster clients read the token, ca.crt and namespace. */
export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

function apiCode(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : undefined;
}

/** Whether the pod gets a token (automountServiceAccountToken is not false). */
export function wantsToken(pod: V1Pod): boolean {
  return pod.spec?.automountServiceAccountToken !== false;
}

/**
 * Writes the pod's token, ca.crt and namespace under `dir` (asking the API for a token bound to the pod, valid 1 h)
 * and answers the env to add. A missing ServiceAccount is a {@link VolumeError} (FailedMount), as on a kubelet.
 */
export async function serviceAccountFiles(
  core: CoreV1Api,
  kc: KubeConfig,
  pod: V1Pod,
  dir: string,
): Promise<Record<string, string>> {
  const namespace = pod.metadata!.namespace!;
  const sa = pod.spec?.serviceAccountName || 'default';
  let token: string;
  try {
    const tr = await core.createNamespacedServiceAccountToken({
      name: sa,
      namespace,
      body: {
        spec: {
          audiences: [],
          expirationSeconds: 3600,
          boundObjectRef: {
            apiVersion: 'v1',
            kind: 'Pod',
            name: pod.metadata!.name!,
            uid: pod.metadata!.uid!,
          },
        },
      },
    });
    token = tr.status!.token;
  } catch (err) {
    if (apiCode(err) === 404)
      throw new VolumeError('FailedMount', `serviceaccount "${sa}" not found (kube-api-access)`);
    throw err;
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('the test node kubeconfig has no cluster');
  const ca = cluster.caData ? Buffer.from(cluster.caData, 'base64') : await readFile(cluster.caFile!);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'token'), token, { mode: 0o600 });
  await writeFile(join(dir, 'ca.crt'), ca, { mode: 0o644 });
  await writeFile(join(dir, 'namespace'), namespace, { mode: 0o644 });
  const server = new URL(cluster.server);
  const port = server.port || '443';
  return {
    KUBERNETES_SERVICE_HOST: server.hostname,
    KUBERNETES_SERVICE_PORT: port,
    KUBERNETES_SERVICE_PORT_HTTPS: port,
  };
}
