/**
 * The test node's container environment and command line, as the kubelet computes them: env entries in order
 * (`value` with `$(VAR)` references to earlier ones, `secretKeyRef`, `configMapKeyRef`, `fieldRef` for the pod's
 * name, namespace, uid, node name and IPs), and `$(VAR)` expanded in command and args.
 */
import type { CoreV1Api, V1Container, V1Pod } from '@kubernetes/client-node';
import { keyData, VolumeError } from './volumes.js';

/** Kubernetes' `$(VAR)` expansion: `$$` is a literal `$`; an unknown reference stays as written. */
export function expandVars(s: string, env: Readonly<Record<string, string>>): string {
  return s.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (m, name: string | undefined) =>
    m === '$$' ? '$' : name !== undefined && name in env ? env[name]! : m,
  );
}

function fieldValue(pod: V1Pod, path: string, hostIP: string): string {
  switch (path) {
    case 'metadata.name':
      return pod.metadata!.name!;
    case 'metadata.namespace':
      return pod.metadata!.namespace!;
    case 'metadata.uid':
      return pod.metadata!.uid!;
    case 'spec.nodeName':
      return pod.spec!.nodeName ?? '';
    case 'spec.serviceAccountName':
      return pod.spec!.serviceAccountName ?? '';
    case 'status.podIP':
    case 'status.hostIP':
      return hostIP;
    default: {
      const m = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(path);
      if (m) return (m[1] === 'labels' ? pod.metadata!.labels : pod.metadata!.annotations)?.[m[2]!] ?? '';
      throw new VolumeError(
        'CreateContainerConfigError',
        `fieldRef ${path} is not supported by the test node`,
      );
    }
  }
}

/** The container's environment (only the pod's variables, on top of `base`). */
export async function containerEnv(
  core: CoreV1Api,
  pod: V1Pod,
  c: V1Container,
  base: Readonly<Record<string, string>>,
  hostIP: string,
): Promise<Record<string, string>> {
  const namespace = pod.metadata!.namespace!;
  const env: Record<string, string> = { ...base };
  for (const e of c.env ?? []) {
    const from = e.valueFrom;
    if (!from) {
      env[e.name] = expandVars(e.value ?? '', env);
    } else if (from.secretKeyRef || from.configMapKeyRef) {
      const ref = (from.secretKeyRef ?? from.configMapKeyRef)!;
      const [kind, Kind] = from.secretKeyRef
        ? (['secret', 'Secret'] as const)
        : (['configmap', 'ConfigMap'] as const);
      const data = await keyData(core, namespace, kind, ref.name!);
      const v = data?.[ref.key];
      if (v !== undefined) env[e.name] = v.toString('utf8');
      else if (!ref.optional)
        throw new VolumeError(
          'CreateContainerConfigError',
          data
            ? `couldn't find key ${ref.key} in ${Kind} ${namespace}/${ref.name}`
            : `${kind} "${ref.name}" not found`,
        );
    } else if (from.fieldRef) {
      env[e.name] = fieldValue(pod, from.fieldRef.fieldPath, hostIP);
    } else {
      throw new VolumeError('CreateContainerConfigError', `env ${e.name}: resourceFieldRef is not supported`);
    }
  }
  return env;
}
