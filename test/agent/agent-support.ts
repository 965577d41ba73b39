/** Shared needs of the agent tests: a `strata agent` process of the built CLI, and StrataNode reads and writes. */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { AGENT_NAMESPACE_RULES, AGENT_RULES } from '../../src/controllers/rbac.js';
import type { ControlPlane } from '../support/kube/control-plane.js';
import { waitFor } from '../operator/support.js';

const CLI = fileURLToPath(new URL('../../bin/strata.js', import.meta.url));
const BUILT = fileURLToPath(new URL('../../dist/bundle/strata.js', import.meta.url));
/** The CRDs directory. */
export const CRDS = fileURLToPath(new URL('../../crds', import.meta.url));

/** A running `strata agent`. */
export interface AgentProcess {
  readonly child: ChildProcess;
  readonly stderr: () => string;
  readonly exited: Promise<number | null>;
  /** The node-local endpoint and the ops listener, from the `agent started` log line. */
  readonly endpoint: string;
  readonly ops: string;
  /** Sends `signal` and waits for the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts `strata agent` with the given flags (besides --kubeconfig, free ports and debug logs). */
export async function startAgent(kubeconfig: string, args: readonly string[]): Promise<AgentProcess> {
  if (!existsSync(BUILT)) throw new Error(`${BUILT} is missing: run \`npm run build\` first`);
  const child = spawn(
    process.execPath,
    [
      CLI,
      'agent',
      '--kubeconfig',
      kubeconfig,
      '--listen',
      '127.0.0.1:0',
      '--ops-listen',
      '127.0.0.1:0',
      ...args,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, STRATA_LOG_LEVEL: 'debug' } },
  );
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-200_000)));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  let done = false;
  void exited.then(() => (done = true));
  const started = await waitFor(
    'the agent to start',
    async () => {
      if (done) throw new Error(`strata agent exited:\n${err.slice(-5000)}`);
      for (const line of err.split('\n')) {
        if (!line.includes('"agent started"')) continue;
        const rec = JSON.parse(line) as { endpoint: string; ops: string };
        return rec;
      }
      return undefined;
    },
    60_000,
  ).catch((e: unknown) => {
    child.kill('SIGKILL');
    throw new Error(`${(e as Error).message}\n${err.slice(-5000)}`);
  });
  return {
    child,
    stderr: () => err,
    exited,
    endpoint: started.endpoint,
    ops: started.ops,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (!done) child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** Creates or replaces StrataNode `name`'s spec (as the controller would). */
export async function applyStrataNode(cp: ControlPlane, name: string, spec: unknown): Promise<void> {
  const obj = { apiVersion: 'strata.dev/v1alpha1', kind: 'StrataNode', metadata: { name }, spec };
  // Client-side apply: fields left out since the last apply are removed (an empty spec stays an object).
  await cp.kubectlOk(['apply', '-f', '-'], { input: JSON.stringify(obj) });
}

/** A StrataNode as read back. */
export interface ReadNode {
  metadata: { generation?: number };
  status?: {
    observedGeneration?: number;
    endpoint?: string;
    platform?: string;
    agentVersion?: string;
    storeBytes?: number;
    mirrors?: { name: string; configured: boolean; reason?: string }[];
    caches?: {
      name: string;
      generation?: number;
      bytes?: number;
      images?: {
        image: string;
        digest: string;
        platforms: { platform: string; state: string; reason?: string; bytes?: number; digest?: string }[];
      }[];
    }[];
    conditions?: { type: string; status: string; reason: string; message: string }[];
  };
}

/** Reads StrataNode `name`. */
export async function readStrataNode(cp: ControlPlane, name: string): Promise<ReadNode> {
  return JSON.parse(await cp.kubectlOk(['get', 'stratanode', name, '-o', 'json'])) as ReadNode;
}

/** The value of a counter in Prometheus text (summed over labels matching `labels`). */
export function metricValue(text: string, name: string, labels = ''): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name) || (labels && !line.includes(labels))) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== ' ' && rest[0] !== '{') continue;
    total += Number(line.split(' ').pop());
  }
  return total;
}

/**
 * Binds `user` to the shipped agent rules (src/controllers/rbac.ts): the ClusterRole, and with `namespace` the Role of
 * its DaemonSet there. Answers a kubeconfig of that user, so the agent runs with exactly those rights.
 */
export async function agentIdentity(cp: ControlPlane, user: string, namespace?: string): Promise<string> {
  const rbac = 'rbac.authorization.k8s.io';
  const bind = (kind: 'ClusterRole' | 'Role', rules: unknown): unknown[] => {
    const metadata = { name: 'strata-agent', ...(kind === 'Role' ? { namespace } : {}) };
    return [
      { apiVersion: `${rbac}/v1`, kind, metadata, rules },
      {
        apiVersion: `${rbac}/v1`,
        kind: `${kind}Binding`,
        metadata,
        roleRef: { apiGroup: rbac, kind, name: 'strata-agent' },
        subjects: [{ kind: 'User', name: user }],
      },
    ];
  };
  const items = [
    ...bind('ClusterRole', AGENT_RULES),
    ...(namespace ? bind('Role', AGENT_NAMESPACE_RULES) : []),
  ];
  await cp.kubectlOk(['apply', '-f', '-'], {
    input: JSON.stringify({ apiVersion: 'v1', kind: 'List', items }),
  });
  return cp.userKubeconfig(user, ['system:serviceaccounts', 'system:authenticated']);
}
