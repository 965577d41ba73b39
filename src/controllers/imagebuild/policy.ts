/**
 * The cluster admin's limits on build pods (flags of `strata controller`), and what an ImageBuild may not ask
 * for under them (pure). Build pods are privileged (RUN steps start runc containers), so whoever may create an
 * ImageBuild may run a privileged pod: the admin decides where (a dedicated node pool, by node selector and
 * tolerations added to every build pod), as whom (the ServiceAccounts a build may name), and with which RUN
 * network. See ADR 0026.
 */
import type { V1Toleration } from '@kubernetes/client-node';
import { DNS_SUBDOMAIN_PATTERN, durationMs } from '../../api/v1alpha1/common.js';
import { clusterContextIssues } from '../../api/v1alpha1/imagebuild.js';
import { SPEC_ENV_MAX_BYTES } from '../../api/v1alpha1/spec-env.js';
import type { ClusterImageBuild } from './desired-job.js';

/** RUN networks of `spec.network`. */
export type BuildNetwork = 'host' | 'none';

/** What the admin allows build pods. */
export interface BuildPolicy {
  /** Labels every build pod's node must have (`--build-node-selector`); a spec may add labels, not change these. */
  readonly nodeSelector: Readonly<Record<string, string>>;
  /** Tolerations every build pod gets (`--build-toleration`), before the spec's own. */
  readonly tolerations: readonly V1Toleration[];
  /** The ServiceAccounts `spec.serviceAccountName` may name (`--build-service-account`); none when empty. */
  readonly serviceAccounts: readonly string[];
  /** The RUN networks `spec.network` may ask for (`--build-network`). */
  readonly networks: readonly BuildNetwork[];
  /**
   * The longest a build may run, in seconds (`--build-max-duration`): the Job's activeDeadlineSeconds when the spec
   * sets none; a spec asking for more is refused. No limit when absent.
   */
  readonly maxDurationSeconds?: number;
}

/** No placement, no ServiceAccount, either network: the default of `strata controller`. */
export const DEFAULT_BUILD_POLICY: BuildPolicy = {
  nodeSelector: {},
  tolerations: [],
  serviceAccounts: [],
  networks: ['host', 'none'],
};

/** Why the controller makes no Job for an ImageBuild: a condition reason and a message naming the field. */
export interface Refusal {
  /** `PolicyViolation` (the admin's limits) or `InvalidSpec` (never runnable in a cluster). */
  readonly reason: 'PolicyViolation' | 'InvalidSpec';
  readonly message: string;
}

/**
 * Why `ib` may not be built under `policy`, or undefined when it may. Checked before a Job is made, so a refused
 * build never gets a pod. `podSpecBytes` is the size of the spec the pod receives (see spec-env.ts).
 */
export function refusalOf(
  ib: ClusterImageBuild,
  policy: BuildPolicy,
  podSpecBytes: number,
): Refusal | undefined {
  const invalid = clusterContextIssues(ib.spec.context);
  if (podSpecBytes > SPEC_ENV_MAX_BYTES)
    invalid.push(
      `spec: ${podSpecBytes} bytes is more than a build pod's environment carries (${SPEC_ENV_MAX_BYTES}): ` +
        'move the Dockerfile into the context (dockerfile.path)',
    );
  if (invalid.length > 0) return { reason: 'InvalidSpec', message: invalid.join('; ') };
  const violations: string[] = [];
  for (const [key, value] of Object.entries(ib.spec.nodeSelector ?? {})) {
    const forced = policy.nodeSelector[key];
    if (forced !== undefined && forced !== value)
      violations.push(
        `spec.nodeSelector.${key}: builds run where ${key}=${forced} (the controller's --build-node-selector), not ${value}`,
      );
  }
  const sa = ib.spec.serviceAccountName;
  if (sa !== undefined && !policy.serviceAccounts.includes(sa))
    violations.push(
      `spec.serviceAccountName: ${sa} is not a ServiceAccount builds may run as` +
        (policy.serviceAccounts.length
          ? ` (allowed: ${policy.serviceAccounts.join(', ')})`
          : ' (the controller allows none: see --build-service-account)'),
    );
  if (!policy.networks.includes(ib.spec.network))
    violations.push(
      `spec.network: ${ib.spec.network} is not allowed here (--build-network allows ${policy.networks.join(', ')})`,
    );
  const deadline = ib.spec.activeDeadlineSeconds;
  if (
    policy.maxDurationSeconds !== undefined &&
    deadline !== undefined &&
    deadline > policy.maxDurationSeconds
  )
    violations.push(
      `spec.activeDeadlineSeconds: ${deadline} is more than builds may run here (--build-max-duration ${policy.maxDurationSeconds}s)`,
    );
  return violations.length > 0 ? { reason: 'PolicyViolation', message: violations.join('; ') } : undefined;
}

/**
 * A `--build-toleration` value as kubectl taint writes a taint: `key=value:Effect` (Equal) or `key:Effect`
 * (Exists); the effect may be left out (`key=value`, `key`) to tolerate every effect. RangeError when malformed.
 */
export function parseToleration(text: string): V1Toleration {
  const m =
    /^([A-Za-z0-9][-A-Za-z0-9_./]*)(?:=([-A-Za-z0-9_.]*))?(?::(NoSchedule|PreferNoSchedule|NoExecute))?$/.exec(
      text,
    );
  if (!m)
    throw new RangeError(
      `${JSON.stringify(text)} is not key[=value][:NoSchedule|PreferNoSchedule|NoExecute]`,
    );
  return {
    key: m[1]!,
    ...(m[2] !== undefined ? { operator: 'Equal', value: m[2] } : { operator: 'Exists' }),
    ...(m[3] ? { effect: m[3] } : {}),
  };
}

/** A `--build-node-selector` value `key=value`; RangeError when malformed. */
export function parseNodeSelectorTerm(text: string): [string, string] {
  const m = /^([A-Za-z0-9][-A-Za-z0-9_./]*)=([-A-Za-z0-9_.]*)$/.exec(text);
  if (!m) throw new RangeError(`${JSON.stringify(text)} is not key=value`);
  return [m[1]!, m[2]!];
}

/**
 * The policy the `--build-*` flags of `strata controller` give (each list as repeated on the command line; absent
 * or empty: the default). RangeError naming the flag and value when one is malformed.
 */
export function buildPolicy(flags: {
  readonly nodeSelector?: readonly string[] | undefined;
  readonly tolerations?: readonly string[] | undefined;
  readonly serviceAccounts?: readonly string[] | undefined;
  readonly networks?: readonly string[] | undefined;
  readonly maxDuration?: string | undefined;
}): BuildPolicy {
  const parse = <T>(flag: string, values: readonly string[] | undefined, one: (v: string) => T): T[] =>
    (values ?? []).map((v) => {
      try {
        return one(v);
      } catch (err) {
        throw new RangeError(`invalid ${flag}: ${(err as Error).message}`);
      }
    });
  const networks = parse('--build-network', flags.networks, (v): BuildNetwork => {
    if (v !== 'host' && v !== 'none') throw new RangeError(`${JSON.stringify(v)} is not host or none`);
    return v;
  });
  const accounts = parse('--build-service-account', flags.serviceAccounts, (v) => {
    if (!new RegExp(DNS_SUBDOMAIN_PATTERN).test(v) || v.length > 253)
      throw new RangeError(`${JSON.stringify(v)} is not a ServiceAccount name`);
    return v;
  });
  return {
    nodeSelector: Object.fromEntries(
      parse('--build-node-selector', flags.nodeSelector, parseNodeSelectorTerm),
    ),
    tolerations: parse('--build-toleration', flags.tolerations, parseToleration),
    serviceAccounts: [...new Set(accounts)],
    networks: networks.length ? [...new Set(networks)] : DEFAULT_BUILD_POLICY.networks,
    ...(flags.maxDuration !== undefined
      ? { maxDurationSeconds: parse('--build-max-duration', [flags.maxDuration], durationSeconds)[0]! }
      : {}),
  };
}

/** `90m`, `2h`, `1h30m`, `3600s` → whole seconds (at least 1); RangeError otherwise. */
function durationSeconds(text: string): number {
  let ms: number;
  try {
    ms = durationMs(text);
  } catch {
    throw new RangeError(`${JSON.stringify(text)} is not a duration like 30m or 2h`);
  }
  if (ms < 1000) throw new RangeError(`${JSON.stringify(text)} is shorter than a second`);
  return Math.floor(ms / 1000);
}
