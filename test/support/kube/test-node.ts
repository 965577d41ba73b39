/**
 * A test "node": plays the scheduler and the kubelet for the envtest control plane, which has neither. It registers
 * a Node (Ready, labels, taints, capacity) and renews its Lease in `kube-node-lease` (so the node lifecycle
 * controller keeps it Ready); watches Pods; binds pending pods it may run (nodeSelector, required node affinity with
 * matchExpressions and matchFields — the DaemonSet controller pins its pods with `metadata.name In [node]` — and
 * NoSchedule/NoExecute taints checked; `pods/binding`); runs the container as a local process — the Strata CLI when
 * the image is the Strata image — with the pod's env and its Secret/ConfigMap/emptyDir/hostPath volumes and
 * termination-message file at their real paths (a private mount namespace per pod, see pod-mounts.ts); and writes
 * back the pod status fields a kubelet writes (phase, startTime, hostIP/podIP, conditions, containerStatuses with
 * running → terminated: exitCode, reason, message from the termination-message file or the log tail under
 * `FallbackToLogsOnError`). A pod's deletion kills its process, then the node finishes the deletion (grace 0), as
 * the kubelet does. Several nodes may share a control plane.
 *
 * Each node has a host filesystem of its own: a root directory (`hostRoot`, a temp dir unless given) under which
 * its pods' hostPath volumes live, so twenty nodes have twenty distinct `/etc/containerd/certs.d` and
 * `/var/lib/strata` (`<hostRoot>/etc/containerd/certs.d`, …). The network is not per node: every node and pod
 * shares this machine's network (host IP and pod IP 127.0.0.1, `hostNetwork` or not), so two pods listening on one
 * fixed port collide; Services are reached through service-proxy.ts. A container whose `restartPolicy` is Always
 * (or OnFailure, after a failure) is restarted in place (`restartCount`, `lastState`) after `restartDelayMs`.
 * Readiness comes from the container's `httpGet`/`tcpSocket` readiness probe (pod-probes.ts) when it has one, else
 * the container is Ready once started. With `serviceAccountTokens`, pods get their ServiceAccount's token files and
 * `KUBERNETES_SERVICE_*` env (pod-token.ts), so in-cluster clients run under the pod's identity.
 *
 * Limits (a stand-in, not a kubelet): one container per pod (no init containers or sidecars), no liveness or exec
 * probes, no restart backoff growth, no resource enforcement, no network isolation, mount paths without spaces.
 * Logs are kept by the node (`logs()`); there is no kubelet log endpoint, so `kubectl logs` does not work against it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, openSync, closeSync } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CoordinationV1Api,
  CoreV1Api,
  Watch,
  type KubeConfig,
  type V1Container,
  type V1ContainerState,
  type V1ContainerStatus,
  type V1Node,
  type V1NodeSelectorRequirement,
  type V1NodeSelectorTerm,
  type V1Pod,
  type V1PodCondition,
  type V1Taint,
} from '@kubernetes/client-node';
import { REPO_ROOT } from './repo-root.js';
import { mountScript, type BindMount } from './pod-mounts.js';
import { containerEnv, expandVars } from './pod-env.js';
import { materialiseVolumes, VolumeError } from './volumes.js';
import { playable, runReadinessProbe } from './pod-probes.js';
import { SERVICE_ACCOUNT_DIR, serviceAccountFiles, wantsToken } from './pod-token.js';

/** The image name tests give build pods; the node runs the local Strata CLI for it. */
export const STRATA_TEST_IMAGE = 'strata.dev/strata:test';

const CLI = join(REPO_ROOT, 'bin/strata.js');
const BUILT = join(REPO_ROOT, 'dist/bundle/strata.js');

/** Turns a container's command line (entrypoint/command then args) into the local argv that plays it. */
export type ImageRunner = (argv: readonly string[]) => string[];

/** Runs `strata …` as `node bin/strata.js …` (the built CLI, like the Strata image's entrypoint). */
export const strataRunner: ImageRunner = (argv) => {
  if (!existsSync(BUILT)) throw new Error(`${BUILT} is missing: run \`npm run build\` first`);
  const [first, ...rest] = argv;
  return [process.execPath, CLI, ...(first === 'strata' ? rest : argv)];
};

/** Options of {@link startTestNode}. */
export interface TestNodeOptions {
  /** Node name (default `test-node-<random>`). */
  readonly name?: string;
  /** Extra labels (kubernetes.io/hostname, os and arch are always set). */
  readonly labels?: Record<string, string>;
  readonly taints?: V1Taint[];
  /** Default: 2 cpu, 8Gi memory, 110 pods. */
  readonly capacity?: Record<string, string>;
  /** Image → runner. Default: {@link STRATA_TEST_IMAGE} → {@link strataRunner}. Other images fail to start. */
  readonly images?: Record<string, ImageRunner>;
  /** Longest grace a deleted pod's process gets before SIGKILL (default 10 s). */
  readonly maxGraceMs?: number;
  /**
   * Finish every bound pod at once, running nothing: its status goes straight to terminated with what this returns
   * (scale runs with thousands of pods; `images` is then not consulted).
   */
  readonly instant?: (pod: V1Pod) => InstantOutcome;
  /**
   * The node's host filesystem root: hostPath volumes are paths under it. Default: a directory of the node's own,
   * removed by `stop()`; one given here is the caller's and stays.
   */
  readonly hostRoot?: string;
  /** Give pods their ServiceAccount token and the apiserver address, as in a cluster (see pod-token.ts). */
  readonly serviceAccountTokens?: boolean;
  /** Delay before a container is restarted (restartPolicy Always/OnFailure; default 1 s, the kubelet's is 10 s+). */
  readonly restartDelayMs?: number;
  /** Multiplies probes' periods and initial delays (default 1; e.g. 0.1 for tests). */
  readonly probePeriodScale?: number;
}

/** How an instant pod ends: its container's exit code and termination message. */
export interface InstantOutcome {
  readonly exitCode: number;
  readonly message?: string;
}

/** A running test node. */
export interface TestNode {
  readonly name: string;
  /** The pod's container log (stdout and stderr, interleaved) so far; '' when the node never ran it. */
  logs(namespace: string, pod: string): Promise<string>;
  /** Pods this node ran or runs (namespace/name). */
  ran(): string[];
  /** The node's host filesystem root (hostPath volumes live under it). */
  readonly hostRoot: string;
  /** `path` of the node's host filesystem as a path on this machine (`<hostRoot><path>`). */
  hostPath(path: string): string;
  /** The pid of the pod's running container process, if it runs on this node. */
  pid(namespace: string, pod: string): number | undefined;
  /** Kills every process, stops watching, removes its files (the Node object is deleted, best effort). */
  stop(): Promise<void>;
}

/** How a container process ended. */
interface Ending {
  exitCode: number;
  signal?: NodeJS.Signals | null;
  message?: string;
  pid?: number;
}

/** A container's restart history, as containerStatuses carry it. */
interface Restarts {
  restartCount: number;
  lastState?: V1ContainerState;
}

interface Running {
  readonly key: string;
  child?: ChildProcess;
  exited?: Promise<void>;
  stopping: boolean;
  /** Wakes a restart delay early when the pod goes. */
  wake?: () => void;
}

const HOST_IP = '127.0.0.1';
const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** The kubelet's cap on a termination message, and its log fallback: last 80 lines, at most 2 KiB. */
const MESSAGE_MAX = 4096;
const LOG_TAIL_LINES = 80;
const LOG_TAIL_BYTES = 2048;
const LEASE_RENEW_MS = 10_000;

function apiCode(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : undefined;
}

function matchExpr(labels: Record<string, string>, r: V1NodeSelectorRequirement): boolean {
  const v = labels[r.key];
  switch (r.operator) {
    case 'In':
      return v !== undefined && (r.values ?? []).includes(v);
    case 'NotIn':
      return v === undefined || !(r.values ?? []).includes(v);
    case 'Exists':
      return v !== undefined;
    case 'DoesNotExist':
      return v === undefined;
    case 'Gt':
    case 'Lt': {
      const n = Number(v);
      const w = Number((r.values ?? [])[0]);
      return v !== undefined && (r.operator === 'Gt' ? n > w : n < w);
    }
    default:
      return false;
  }
}

/** A node selector term: every expression on labels and every field requirement (only `metadata.name` exists). */
function matchTerm(term: V1NodeSelectorTerm, labels: Record<string, string>, nodeName: string): boolean {
  const fields = { 'metadata.name': nodeName };
  return (
    (term.matchExpressions ?? []).every((r) => matchExpr(labels, r)) &&
    (term.matchFields ?? []).every((r) => matchExpr(fields, r))
  );
}

/** Whether the scheduler would put the pod on the node `nodeName` with these labels and taints. */
export function fits(
  pod: V1Pod,
  labels: Record<string, string>,
  taints: readonly V1Taint[],
  nodeName: string = labels['kubernetes.io/hostname'] ?? '',
): boolean {
  const spec = pod.spec!;
  for (const [k, v] of Object.entries(spec.nodeSelector ?? {})) if (labels[k] !== v) return false;
  const required = spec.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution;
  // An empty term matches nothing (the scheduler's rule), so a term must ask something.
  if (
    required &&
    !required.nodeSelectorTerms.some(
      (t) =>
        ((t.matchExpressions ?? []).length > 0 || (t.matchFields ?? []).length > 0) &&
        matchTerm(t, labels, nodeName),
    )
  )
    return false;
  for (const taint of taints) {
    if (taint.effect === 'PreferNoSchedule') continue;
    const tolerated = (spec.tolerations ?? []).some(
      (t) =>
        (!t.effect || t.effect === taint.effect) &&
        (t.operator === 'Exists'
          ? !t.key || t.key === taint.key
          : t.key === taint.key && (t.value ?? '') === (taint.value ?? '')),
    );
    if (!tolerated) return false;
  }
  return true;
}

/** Last lines of a log, as the kubelet's FallbackToLogsOnError takes them. */
function logTail(text: string): string {
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  const tail = lines.slice(-LOG_TAIL_LINES).join('\n');
  const bytes = Buffer.from(tail);
  return bytes.length > LOG_TAIL_BYTES
    ? bytes.subarray(bytes.length - LOG_TAIL_BYTES).toString('utf8')
    : tail;
}

async function readCapped(path: string, max: number): Promise<string> {
  const fh = await open(path, 'r').catch(() => undefined);
  if (!fh) return '';
  try {
    const buf = Buffer.alloc(max);
    const { bytesRead } = await fh.read(buf, 0, max, 0);
    return buf.subarray(0, bytesRead).toString('utf8');
  } finally {
    await fh.close();
  }
}

/** Registers a Node and starts playing scheduler and kubelet for it. Call `stop()` in afterAll. */
export async function startTestNode(kc: KubeConfig, options: TestNodeOptions = {}): Promise<TestNode> {
  const name = options.name ?? `test-node-${Math.random().toString(36).slice(2, 8)}`;
  const core = kc.makeApiClient(CoreV1Api);
  const coordination = kc.makeApiClient(CoordinationV1Api);
  const images = options.images ?? { [STRATA_TEST_IMAGE]: strataRunner };
  const maxGraceMs = options.maxGraceMs ?? 10_000;
  const labels = {
    'kubernetes.io/hostname': name,
    'kubernetes.io/os': 'linux',
    'kubernetes.io/arch': 'amd64',
    ...options.labels,
  };
  const taints = options.taints ?? [];
  const running = new Map<string, Running>();
  const ranPods: string[] = [];
  const chains = new Map<string, Promise<void>>();
  let stopped = false;
  const errors: string[] = [];

  // --- the Node and its heartbeat ------------------------------------------------------------------------------
  const capacity = {
    cpu: '2',
    memory: '8Gi',
    pods: '110',
    'ephemeral-storage': '100Gi',
    ...options.capacity,
  };
  const node: V1Node = { metadata: { name, labels }, spec: { taints } };
  try {
    await core.createNode({ body: node });
  } catch (err) {
    if (apiCode(err) !== 409) throw err;
  }
  const now = () => new Date();
  // The node controllers may touch a new Node between our read and write: re-read on a conflict.
  for (let attempt = 0; ; attempt++) {
    try {
      await core.replaceNodeStatus({ name, body: nodeStatus(await core.readNode({ name })) });
      break;
    } catch (err) {
      if (apiCode(err) !== 409 || attempt >= 10) throw err;
    }
  }
  function nodeStatus(current: V1Node): V1Node {
    current.status = {
      capacity,
      allocatable: capacity,
      addresses: [
        { type: 'InternalIP', address: HOST_IP },
        { type: 'Hostname', address: name },
      ],
      conditions: [
        {
          type: 'Ready',
          status: 'True',
          reason: 'KubeletReady',
          message: 'strata test node is posting ready status',
          lastHeartbeatTime: now(),
          lastTransitionTime: now(),
        },
      ],
      nodeInfo: {
        architecture: 'amd64',
        bootID: name,
        containerRuntimeVersion: 'strata-test://1',
        kernelVersion: '',
        kubeProxyVersion: 'v1.28.0',
        kubeletVersion: 'v1.28.0',
        machineID: name,
        operatingSystem: 'linux',
        osImage: 'strata test node',
        systemUUID: name,
      },
    };
    return current;
  }
  // Lease times are MicroTime (six fractional digits); client-node would write a Date with three, which the
  // apiserver refuses, so they go as strings, and the Lease is written whole (no read-back Dates).
  const microTime = (d: Date) => d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z') as unknown as Date;
  const renewLease = async (): Promise<void> => {
    const namespace = 'kube-node-lease';
    const existing = await coordination
      .readNamespacedLease({ name, namespace })
      .catch((err: unknown) => (apiCode(err) === 404 ? undefined : Promise.reject(err)));
    const body = {
      metadata: {
        name,
        namespace,
        ...(existing ? { resourceVersion: existing.metadata!.resourceVersion! } : {}),
      },
      spec: { holderIdentity: name, leaseDurationSeconds: 40, renewTime: microTime(now()) },
    };
    if (!existing) await coordination.createNamespacedLease({ namespace, body });
    else await coordination.replaceNamespacedLease({ name, namespace, body });
  };
  await renewLease();
  const leaseTimer = setInterval(() => {
    renewLease().catch(() => undefined); // the next renewal retries; the grace is 40 s
  }, LEASE_RENEW_MS);

  // --- pod status --------------------------------------------------------------------------------------------
  /**
   * Read-modify-write of the status subresource (retried on conflicts), as the kubelet's status manager does. A
   * `known` copy of the pod (fresh from the watch) saves the first read; a conflict reads it anew.
   */
  const writeStatus = async (
    ns: string,
    podName: string,
    uid: string,
    edit: (p: V1Pod) => void,
    known?: V1Pod,
  ): Promise<void> => {
    for (let attempt = 0; attempt < 10; attempt++) {
      let pod: V1Pod;
      try {
        pod =
          attempt === 0 && known
            ? structuredClone(known)
            : await core.readNamespacedPod({ name: podName, namespace: ns });
      } catch (err) {
        if (apiCode(err) === 404) return;
        throw err;
      }
      if (pod.metadata?.uid !== uid) return;
      edit(pod);
      try {
        await core.replaceNamespacedPodStatus({ name: podName, namespace: ns, body: pod });
        return;
      } catch (err) {
        if (apiCode(err) === 404) return;
        if (apiCode(err) !== 409) throw err;
      }
    }
    throw new Error(`pod ${ns}/${podName}: status conflicts did not settle`);
  };

  const setConditions = (pod: V1Pod, ready: boolean, at: Date, reason?: string): void => {
    const keep = (pod.status?.conditions ?? []).filter(
      (c) => !['Initialized', 'Ready', 'ContainersReady'].includes(c.type),
    );
    const cond = (type: string, status: boolean): V1PodCondition => {
      const prev = pod.status?.conditions?.find((c) => c.type === type);
      const s = status ? 'True' : 'False';
      return {
        type,
        status: s,
        lastProbeTime: null as unknown as Date,
        lastTransitionTime: prev?.status === s ? prev.lastTransitionTime! : at,
        ...(!status && reason ? { reason } : {}),
      };
    };
    pod.status!.conditions = [
      ...keep,
      cond('Initialized', true),
      cond('Ready', ready),
      cond('ContainersReady', ready),
    ];
  };

  const containerStatus = (
    c: V1Container,
    state: V1ContainerStatus['state'],
    ready: boolean,
    pid?: number,
    history: Restarts = { restartCount: 0 },
  ): V1ContainerStatus => ({
    name: c.name,
    image: c.image ?? '',
    imageID: `strata-test://${c.image ?? ''}`,
    ...(pid ? { containerID: `strata-test://${pid}` } : {}),
    ready,
    started: state?.running !== undefined,
    ...history,
    state,
  });

  /** A container's terminated state, as the kubelet reports it (also as `lastState` after a restart). */
  const terminatedState = (
    end: Ending,
    startedAt: Date,
    finishedAt: Date,
    containerID: string,
  ): NonNullable<V1ContainerState['terminated']> => ({
    exitCode: end.exitCode,
    ...(end.signal ? { signal: end.signal === 'SIGKILL' ? 9 : 15 } : {}),
    reason: end.exitCode === 0 ? 'Completed' : 'Error',
    ...(end.message ? { message: end.message } : {}),
    startedAt,
    finishedAt,
    containerID,
  });

  /** The status of a pod whose container ended: phase, conditions and the terminated state, as the kubelet writes. */
  const terminatedStatus =
    (c: V1Container, end: Ending, startedAt: Date, finishedAt: Date, history?: Restarts) =>
    (p: V1Pod): void => {
      p.status = {
        ...p.status,
        phase: end.exitCode === 0 ? 'Succeeded' : 'Failed',
        hostIP: HOST_IP,
        hostIPs: [{ ip: HOST_IP }],
        startTime: p.status?.startTime ?? startedAt,
      };
      setConditions(p, false, finishedAt, 'PodCompleted');
      const containerID = `strata-test://${end.pid ?? p.metadata?.uid ?? ''}`;
      p.status.containerStatuses = [
        containerStatus(
          c,
          { terminated: terminatedState(end, startedAt, finishedAt, containerID) },
          false,
          end.pid,
          history,
        ),
      ];
    };

  // --- running a pod -------------------------------------------------------------------------------------------
  const logFile = (ns: string, podName: string, uid: string) =>
    join(dir, 'logs', `${ns}_${podName}_${uid}.log`);

  /** FailedMount Events already written, by pod uid and message: one each (the kubelet's repeats only count up). */
  const mountEvents = new Set<string>();
  const mountFailed = async (pod: V1Pod, message: string): Promise<void> => {
    const ns = pod.metadata!.namespace!;
    const key = `${pod.metadata!.uid}\n${message}`;
    if (mountEvents.has(key)) return;
    mountEvents.add(key);
    const at = new Date();
    try {
      const eventName = `${pod.metadata!.name}.${Date.now().toString(16)}`;
      await core.createNamespacedEvent({
        namespace: ns,
        body: {
          metadata: { name: eventName, namespace: ns },
          involvedObject: {
            kind: 'Pod',
            apiVersion: 'v1',
            name: pod.metadata!.name!,
            namespace: ns,
            uid: pod.metadata!.uid!,
          },
          reason: 'FailedMount',
          type: 'Warning',
          message: `MountVolume.SetUp failed: ${message}`,
          source: { component: 'kubelet', host: name }, // the node's name
          firstTimestamp: at,
          lastTimestamp: at,
          count: 1,
        },
      });
    } catch {
      // An Event is best effort, as the kubelet's are.
    }
  };

  const run = async (pod: V1Pod, r: Running): Promise<void> => {
    const ns = pod.metadata!.namespace!;
    const podName = pod.metadata!.name!;
    const uid = pod.metadata!.uid!;
    const c = pod.spec!.containers[0]!;
    const podDir = join(dir, 'pods', uid);
    const log = logFile(ns, podName, uid);
    const waiting = (reason: string, message: string) =>
      writeStatus(ns, podName, uid, (p) => {
        p.status = { ...p.status, phase: 'Pending', hostIP: HOST_IP, hostIPs: [{ ip: HOST_IP }] };
        setConditions(p, false, now(), 'ContainersNotReady');
        p.status.containerStatuses = [containerStatus(c, { waiting: { reason, message } }, false)];
      });
    if ((pod.spec!.containers.length ?? 0) !== 1 || (pod.spec!.initContainers ?? []).length > 0)
      return waiting('CreateContainerConfigError', 'the test node runs pods of exactly one container');
    const runner = images[c.image ?? ''];
    if (!runner) return waiting('ErrImageNeverPull', `the test node has no runner for image ${c.image}`);

    // Volumes and env, retried while something is missing (as the kubelet retries mounts).
    let mounts: BindMount[] = [];
    let env: Record<string, string> = {};
    const base = { PATH, HOSTNAME: podName, HOME: '/root' };
    for (;;) {
      if (r.stopping || stopped) return;
      try {
        await rm(podDir, { recursive: true, force: true });
        await mkdir(podDir, { recursive: true });
        const volumes = await materialiseVolumes(core, pod, join(podDir, 'volumes'), hostRoot);
        mounts = [];
        for (const m of c.volumeMounts ?? []) {
          const source = volumes.get(m.name);
          if (!source)
            throw new VolumeError('CreateContainerConfigError', `volumeMount ${m.name}: no such volume`);
          const path = m.subPath ? join(source, m.subPath) : source;
          const isDir = (await stat(path).catch(() => undefined))?.isDirectory() ?? true;
          mounts.push({
            source: path,
            target: m.mountPath,
            kind: isDir ? 'dir' : 'file',
            readOnly: m.readOnly === true,
          });
        }
        let tokenEnv: Record<string, string> = {};
        if (options.serviceAccountTokens && wantsToken(pod)) {
          const saDir = join(podDir, 'serviceaccount');
          tokenEnv = await serviceAccountFiles(core, kc, pod, saDir);
          mounts.push({ source: saDir, target: SERVICE_ACCOUNT_DIR, kind: 'dir', readOnly: true });
        }
        env = await containerEnv(core, pod, c, { ...base, ...tokenEnv }, HOST_IP);
        break;
      } catch (err) {
        if (!(err instanceof VolumeError)) throw err;
        // As the kubelet: a volume that cannot be set up leaves the container ContainerCreating and says why in
        // a FailedMount Event on the pod; a bad env reference is the container's CreateContainerConfigError.
        if (err.reason === 'FailedMount') {
          await waiting('ContainerCreating', '');
          await mountFailed(pod, err.message);
        } else await waiting(err.reason, err.message);
        await new Promise((res) => setTimeout(res, 1000));
      }
    }
    const termPath = c.terminationMessagePath ?? '/dev/termination-log';
    const termFile = join(podDir, 'termination-log');
    mounts.push({ source: termFile, target: termPath, kind: 'file' });
    const argv = runner([...(c.command ?? []), ...(c.args ?? [])].map((s) => expandVars(s, env)));
    const script = mountScript(mounts, podDir, dir, c.workingDir, [REPO_ROOT]);
    const probe = playable(c.readinessProbe) ? c.readinessProbe : undefined;
    const policy = pod.spec!.restartPolicy ?? 'Always';
    let history: Restarts = { restartCount: 0 };
    ranPods.push(`${ns}/${podName}`);

    for (;;) {
      closeSync(openSync(termFile, 'w'));
      const out = openSync(log, 'a');
      let child: ChildProcess;
      try {
        child = spawn(
          'unshare',
          ['--mount', '--propagation', 'private', '--', 'sh', '-c', script, 'sh', ...argv],
          {
            env,
            stdio: ['ignore', out, out],
            detached: true, // its own process group: a deletion kills the whole tree
          },
        );
      } finally {
        closeSync(out);
      }
      r.child = child;
      const startedAt = now();
      const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => {
        child.once('exit', (code, signal) => res({ code, signal }));
        child.once('error', () => res({ code: 127, signal: null }));
      });
      r.exited = exit.then(() => undefined);
      const runHistory = history;
      await writeStatus(ns, podName, uid, (p) => {
        p.status = {
          ...p.status,
          phase: 'Running',
          hostIP: HOST_IP,
          hostIPs: [{ ip: HOST_IP }],
          podIP: HOST_IP,
          podIPs: [{ ip: HOST_IP }],
          startTime: p.status?.startTime ?? startedAt,
        };
        setConditions(p, !probe, startedAt, 'ContainersNotReady');
        p.status.containerStatuses = [
          containerStatus(c, { running: { startedAt } }, !probe, child.pid, runHistory),
        ];
      }).catch((err: unknown) => errors.push(`pod ${ns}/${podName} running status: ${String(err)}`));
      // The readiness probe flips Ready while the container runs (the kubelet's prober).
      const probing = new AbortController();
      if (probe)
        runReadinessProbe(
          probe,
          c,
          HOST_IP,
          probing.signal,
          (ready) =>
            writeStatus(ns, podName, uid, (p) => {
              if (!p.status?.containerStatuses?.[0]?.state?.running) return;
              setConditions(p, ready, now(), 'ContainersNotReady');
              p.status.containerStatuses[0].ready = ready;
            }),
          options.probePeriodScale ?? 1,
        ).catch((err: unknown) => errors.push(`pod ${ns}/${podName} probe: ${String(err)}`));

      const { code, signal } = await exit;
      probing.abort();
      const finishedAt = now();
      const exitCode = code ?? 128 + (signal === 'SIGKILL' ? 9 : 15);
      let message = await readCapped(termFile, MESSAGE_MAX);
      if (!message && exitCode !== 0 && c.terminationMessagePolicy === 'FallbackToLogsOnError')
        message = logTail(await readFile(log, 'utf8').catch(() => ''));
      const end: Ending = { exitCode, signal, message, ...(child.pid ? { pid: child.pid } : {}) };
      const restart =
        !r.stopping && !stopped && (policy === 'Always' || (policy === 'OnFailure' && exitCode !== 0));
      if (restart) {
        // As the kubelet: the last run becomes lastState, the container waits (CrashLoopBackOff), then runs again.
        history = {
          restartCount: history.restartCount + 1,
          lastState: {
            terminated: terminatedState(end, startedAt, finishedAt, `strata-test://${child.pid ?? uid}`),
          },
        };
        const waitingHistory = history;
        await writeStatus(ns, podName, uid, (p) => {
          p.status = { ...p.status, phase: 'Running' };
          setConditions(p, false, finishedAt, 'ContainersNotReady');
          p.status.containerStatuses = [
            containerStatus(
              c,
              { waiting: { reason: 'CrashLoopBackOff', message: `back-off restarting container ${c.name}` } },
              false,
              undefined,
              waitingHistory,
            ),
          ];
        }).catch((err: unknown) => errors.push(`pod ${ns}/${podName} waiting status: ${String(err)}`));
        await new Promise<void>((res) => {
          const t = setTimeout(res, options.restartDelayMs ?? 1000);
          r.wake = () => (clearTimeout(t), res());
        });
        r.wake = undefined;
        if (!r.stopping && !stopped) continue;
      }
      await rm(podDir, { recursive: true, force: true }).catch(() => undefined);
      if (r.stopping && stopped) return;
      if (restart) return; // deleted while waiting to restart: the deletion finishes the pod
      await writeStatus(ns, podName, uid, terminatedStatus(c, end, startedAt, finishedAt, history)).catch(
        (err: unknown) => errors.push(`pod ${ns}/${podName} final status: ${String(err)}`),
      );
      return;
    }
  };

  /** `instant`: the pod ends as soon as it is bound, nothing run (written from the watched copy: one request). */
  const finishInstantly = async (pod: V1Pod, instant: NonNullable<TestNodeOptions['instant']>) => {
    const ns = pod.metadata!.namespace!;
    const podName = pod.metadata!.name!;
    ranPods.push(`${ns}/${podName}`);
    const at = now();
    const end = instant(pod);
    await writeStatus(
      ns,
      podName,
      pod.metadata!.uid!,
      terminatedStatus(pod.spec!.containers[0]!, end, at, at),
      pod,
    ).catch((err: unknown) => errors.push(`pod ${ns}/${podName} instant status: ${String(err)}`));
  };

  const kill = async (r: Running, graceMs: number): Promise<void> => {
    r.stopping = true;
    r.wake?.();
    const child = r.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const signalGroup = (sig: NodeJS.Signals) => {
      try {
        process.kill(-child.pid!, sig);
      } catch {
        // already gone
      }
    };
    signalGroup('SIGTERM');
    const timer = setTimeout(() => signalGroup('SIGKILL'), Math.min(graceMs, maxGraceMs));
    await r.exited;
    clearTimeout(timer);
  };

  // --- the pod loop ----------------------------------------------------------------------------------------------
  const handle = async (type: string, pod: V1Pod): Promise<void> => {
    const uid = pod.metadata?.uid;
    if (!uid || stopped) return;
    const ns = pod.metadata!.namespace!;
    const podName = pod.metadata!.name!;
    if (type === 'DELETED') {
      const r = running.get(uid);
      if (r) await kill(r, 0);
      return;
    }
    if (!pod.spec?.nodeName) {
      if (
        pod.metadata?.deletionTimestamp ||
        (pod.spec?.schedulerName ?? 'default-scheduler') !== 'default-scheduler'
      )
        return;
      if (!fits(pod, labels, taints, name)) return;
      try {
        await core.createNamespacedBinding({
          namespace: ns,
          body: {
            metadata: { name: podName, namespace: ns, uid },
            target: { apiVersion: 'v1', kind: 'Node', name },
          },
        });
      } catch (err) {
        // Another node bound it first, or it is gone.
        if (apiCode(err) !== 409 && apiCode(err) !== 404)
          errors.push(`bind ${ns}/${podName}: ${String(err)}`);
      }
      return;
    }
    if (pod.spec.nodeName !== name) return;
    if (pod.metadata?.deletionTimestamp) {
      const r = running.get(uid);
      if (r) await kill(r, (pod.metadata.deletionGracePeriodSeconds ?? 30) * 1000);
      // The kubelet finishes a graceful deletion once the containers are gone.
      await core
        .deleteNamespacedPod({
          name: podName,
          namespace: ns,
          body: { gracePeriodSeconds: 0, preconditions: { uid } },
        })
        .catch((err: unknown) => {
          if (apiCode(err) !== 404 && apiCode(err) !== 409)
            errors.push(`delete ${ns}/${podName}: ${String(err)}`);
        });
      return;
    }
    if (running.has(uid) || pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') return;
    const r: Running = { key: `${ns}/${podName}`, stopping: false };
    running.set(uid, r);
    if (options.instant) return finishInstantly(pod, options.instant);
    // Not awaited here: a pod runs for long; its status writes are its own.
    run(pod, r).catch((err: unknown) => errors.push(`pod ${ns}/${podName}: ${String(err)}`));
  };

  const enqueue = (type: string, pod: V1Pod): void => {
    const uid = pod.metadata?.uid;
    if (!uid) return;
    const prev = chains.get(uid) ?? Promise.resolve();
    const next = prev
      .then(() => handle(type, pod))
      .catch((err: unknown) => {
        errors.push(`pod ${pod.metadata?.namespace}/${pod.metadata?.name}: ${String(err)}`);
      });
    chains.set(uid, next);
  };

  // List, then watch from the list's resourceVersion; a watch that ends is restarted, 410 Gone relists.
  const watch = new Watch(kc);
  let abort: AbortController | undefined;
  let resourceVersion = '';
  const list = async (): Promise<void> => {
    const pods = await core.listPodForAllNamespaces();
    resourceVersion = pods.metadata?.resourceVersion ?? '';
    // Pods deleted while nobody watched: their processes go.
    const present = new Set(pods.items.map((p) => p.metadata?.uid));
    for (const [uid, r] of running) if (!present.has(uid)) void kill(r, 0);
    for (const p of pods.items) enqueue('ADDED', p);
  };
  const startWatch = async (): Promise<void> => {
    while (!stopped) {
      try {
        if (!resourceVersion) await list();
        const ended = new Promise<unknown>((resolve) => {
          watch
            .watch(
              '/api/v1/pods',
              { resourceVersion, allowWatchBookmarks: true },
              (type: string, obj: V1Pod & { code?: number }) => {
                if (type === 'ERROR') {
                  if (obj.code === 410) resourceVersion = '';
                  return;
                }
                if (obj.metadata?.resourceVersion) resourceVersion = obj.metadata.resourceVersion;
                if (type !== 'BOOKMARK') enqueue(type, obj);
              },
              (err: unknown) => resolve(err),
            )
            .then((a) => (abort = a), resolve);
        });
        const err = await ended;
        if (err && apiCode(err) === 410) resourceVersion = '';
        if (err && !stopped) await new Promise((res) => setTimeout(res, 500));
      } catch {
        if (!stopped) await new Promise((res) => setTimeout(res, 500));
      }
    }
  };
  // The node's files: made last, so a failed start leaves nothing behind (pods only run from here on).
  const dir = await mkdtemp(join(tmpdir(), `strata-${name}-`));
  const hostRoot = options.hostRoot ?? join(dir, 'host');
  try {
    await mkdir(join(dir, 'logs'));
    await mkdir(hostRoot, { recursive: true });
    await list();
  } catch (err) {
    clearInterval(leaseTimer);
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  const watching = startWatch();

  return {
    name,
    async logs(namespace, pod) {
      const { readdir } = await import('node:fs/promises');
      const files = (await readdir(join(dir, 'logs'))).filter((f) => f.startsWith(`${namespace}_${pod}_`));
      const texts = await Promise.all(files.map((f) => readFile(join(dir, 'logs', f), 'utf8')));
      return texts.join('');
    },
    ran: () => [...ranPods],
    hostRoot,
    hostPath: (path) => join(hostRoot, path),
    pid(namespace, pod) {
      for (const r of running.values())
        if (
          r.key === `${namespace}/${pod}` &&
          r.child &&
          r.child.exitCode === null &&
          r.child.signalCode === null
        )
          return r.child.pid;
      return undefined;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(leaseTimer);
      abort?.abort();
      await Promise.all([...running.values()].map((r) => kill(r, 1000)));
      await Promise.race([watching, new Promise((res) => setTimeout(res, 2000))]);
      await core.deleteNode({ name }).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
      if (errors.length) process.stderr.write(`test node ${name}: ${errors.join('\n')}\n`);
    },
  };
}
