/**
 * The world → the ImageBuild's status (pure): from the object, the Jobs it owns and their pods' termination
 * messages. The same inputs give the same status, times included (they come from the Jobs and the pod's report,
 * not from a clock, except for a condition's first appearance before any Job exists), so a controller that
 * compares it with the stored status writes nothing when nothing happened. Also: which finished Jobs the history
 * limits let go.
 */
import type { CoreV1Event, V1Job, V1Pod } from '@kubernetes/client-node';
import { decodeBuildReport, type BuildReport } from '../../api/v1alpha1/build-result.js';
import type { ImageBuildStatus } from '../../api/v1alpha1/imagebuild.js';
import { setPhaseConditions, type Phase } from '../../kube/conditions.js';
import { CONDITION_FAILED, CONDITION_PROGRESSING, CONDITION_READY, rfc3339 } from './build-status.js';

export { CONDITION_FAILED, CONDITION_PROGRESSING, CONDITION_READY };
import { CONTAINER_NAME, jobName, type ClusterImageBuild } from './desired-job.js';

/** Reasons this module writes (others come from the pod's report: `StepFailed`, `RegistryUnauthorized`, …). */
export const REASONS = {
  building: 'Building',
  succeeded: 'BuildSucceeded',
  /** Built, `output.push: false`: the image existed only in the build pod (no `status.image`). */
  builtNotPushed: 'BuiltNotPushed',
  failed: 'BuildFailed',
  /** The apiserver refused the Job as invalid (422): not tried again for the same Job name. */
  jobRejected: 'JobRejected',
  /** The apiserver refused the Job as forbidden (403: a quota, an admission policy): tried again later. */
  jobForbidden: 'JobForbidden',
  /** The Job exists but cannot create its pod (its FailedCreate Event says why); it keeps trying. */
  podCreateFailed: 'PodCreateFailed',
  /** The Job completed but its pod's report cannot be read (gone, or not a Strata report). */
  resultMissing: 'ResultMissing',
  /** `activeDeadlineSeconds` passed. */
  deadlineExceeded: 'DeadlineExceeded',
  /** The kernel killed the build for memory (`resources.limits.memory`). */
  oomKilled: 'OOMKilled',
} as const;

/** How long a completed Job may lack a readable report before the build counts as failed (the pod cache lags). */
export const RESULT_GRACE_MS = 60_000;

/** Default history limits (as CronJob's). */
export const DEFAULT_SUCCESSFUL_JOBS_HISTORY_LIMIT = 3;
export const DEFAULT_FAILED_JOBS_HISTORY_LIMIT = 1;

/** What the controller sees of the world for one ImageBuild. */
export interface BuildWorld {
  /** Jobs in the ImageBuild's namespace (those it does not control are ignored). */
  readonly jobs: readonly V1Job[];
  /** Pods in the namespace (those of other Jobs are ignored). */
  readonly pods: readonly V1Pod[];
  /** Only for times that the world does not carry (a condition first set before any Job exists). */
  readonly now: Date;
  /**
   * Why no Job was made for the current generation: the admin's policy, a spec no cluster can run, or the
   * apiserver refusing the Job. The build is then Failed with this reason and message.
   */
  readonly refused?: { readonly reason: string; readonly message: string };
  /**
   * `FailedCreate` Events of Jobs (core/v1, written by the Job controller): how a build learns that its pod is
   * refused (Pod Security admission, a quota, a webhook), which the Job's status does not say.
   */
  readonly createFailures?: readonly CoreV1Event[];
  /** The kubelet's `FailedMount` Events of pods: a volume (context, push Secret) that cannot be set up. */
  readonly mountFailures?: readonly CoreV1Event[];
}

type JobState = 'running' | 'succeeded' | 'failed';

/** A Job's state from its conditions (a Job is finished only with `Complete` or `Failed` True). */
export function jobState(job: V1Job): JobState {
  const conds = job.status?.conditions ?? [];
  if (conds.some((c) => c.type === 'Complete' && c.status === 'True')) return 'succeeded';
  if (conds.some((c) => c.type === 'Failed' && c.status === 'True')) return 'failed';
  return 'running';
}

function isControlledBy(
  meta: { ownerReferences?: Array<{ uid: string; controller?: boolean }> } | undefined,
  uid: string | undefined,
): boolean {
  return !!uid && (meta?.ownerReferences ?? []).some((o) => o.controller === true && o.uid === uid);
}

function time(d: Date | string | undefined): string | undefined {
  if (d === undefined) return undefined;
  const date = typeof d === 'string' ? new Date(d) : d;
  return Number.isNaN(date.getTime()) ? undefined : rfc3339(date);
}

/** When a finished Job finished: `completionTime`, else its Complete/Failed condition's transition. */
function finishedTime(job: V1Job): string | undefined {
  const cond = (job.status?.conditions ?? []).find(
    (c) => (c.type === 'Complete' || c.type === 'Failed') && c.status === 'True',
  );
  return time(job.status?.completionTime) ?? time(cond?.lastTransitionTime);
}

/** The build container's final state in the Job's newest finished pod. */
function terminatedState(job: V1Job, pods: readonly V1Pod[]) {
  const mine = pods
    .filter((p) => isControlledBy(p.metadata, job.metadata?.uid))
    .map((p) => {
      const statuses = p.status?.containerStatuses ?? [];
      const s = statuses.find((c) => c.name === CONTAINER_NAME) ?? statuses[0];
      return { pod: p, terminated: s?.state?.terminated };
    })
    .filter((x) => x.terminated !== undefined)
    .sort((a, b) =>
      String(time(b.terminated!.finishedAt) ?? '').localeCompare(
        String(time(a.terminated!.finishedAt) ?? ''),
      ),
    );
  return mine[0]?.terminated;
}

/** The condition that is True in each state of a build. */
const PHASE_OF: Readonly<Record<'progressing' | 'succeeded' | 'failed', Phase>> = {
  progressing: 'Progressing',
  succeeded: 'Ready',
  failed: 'Failed',
};

interface Outcome {
  readonly state: keyof typeof PHASE_OF;
  readonly reason: string;
  readonly message: string;
  /** When the state was entered (condition transitions). */
  readonly at: string;
  readonly report?: BuildReport;
  readonly startedAt?: string;
  readonly finishedAt?: string;
}

function failureFromPod(
  job: V1Job,
  terminated: NonNullable<ReturnType<typeof terminatedState>>,
): Pick<Outcome, 'reason' | 'message'> {
  const text = (terminated.message ?? '').trimEnd();
  const reason =
    terminated.reason === 'OOMKilled'
      ? REASONS.oomKilled
      : jobFailedReason(job) === 'DeadlineExceeded'
        ? REASONS.deadlineExceeded
        : REASONS.failed;
  const head = `the build exited with code ${terminated.exitCode}${terminated.reason ? ` (${terminated.reason})` : ''}`;
  return { reason, message: text ? `${head}:\n${text}` : head };
}

function jobFailedReason(job: V1Job): string | undefined {
  return (job.status?.conditions ?? []).find((c) => c.type === 'Failed' && c.status === 'True')?.reason;
}

/** Waiting reasons that are a pod's normal way to start, not news. */
const ORDINARY_WAITING = new Set(['ContainerCreating', 'PodInitializing']);

/**
 * Why the running Job's newest pod is not running, when it says: not scheduled (`PodScheduled=False`: no node
 * fits), or its container waiting for something other than an ordinary start (`ErrImagePull`,
 * `CreateContainerConfigError`, …), or a volume the kubelet cannot set up (its `FailedMount` Event: a missing
 * ConfigMap context or push Secret). The build stays Progressing, with this as its reason.
 */
function podWaiting(
  job: V1Job,
  pods: readonly V1Pod[],
  mountFailures: readonly CoreV1Event[],
): { pod: string; reason: string; message: string } | undefined {
  const pod = pods
    .filter((p) => isControlledBy(p.metadata, job.metadata?.uid))
    .sort((a, b) =>
      String(time(b.metadata?.creationTimestamp) ?? '').localeCompare(
        String(time(a.metadata?.creationTimestamp) ?? ''),
      ),
    )[0];
  if (!pod || pod.status?.phase === 'Running') return undefined;
  const name = pod.metadata?.name ?? '';
  const unscheduled = pod.status?.conditions?.find((c) => c.type === 'PodScheduled' && c.status === 'False');
  if (unscheduled)
    return { pod: name, reason: unscheduled.reason ?? 'Unschedulable', message: unscheduled.message ?? '' };
  for (const c of pod.status?.containerStatuses ?? []) {
    const w = c.state?.waiting;
    if (w?.reason && !ORDINARY_WAITING.has(w.reason))
      return { pod: name, reason: w.reason, message: w.message ?? '' };
  }
  const mount = mountFailures
    .filter((e) => e.involvedObject.uid === pod.metadata?.uid && e.reason === 'FailedMount')
    .sort((a, b) =>
      String(time(b.lastTimestamp) ?? '').localeCompare(String(time(a.lastTimestamp) ?? '')),
    )[0];
  if (mount) return { pod: name, reason: 'FailedMount', message: mount.message ?? '' };
  return undefined;
}

/**
 * A running Job with no pod and a `FailedCreate` Event: Failed with the Event's message (the Job controller keeps
 * trying; once a pod exists the build is Progressing again).
 */
function createFailure(job: V1Job, world: BuildWorld): Outcome | undefined {
  const uid = job.metadata?.uid;
  if (!uid || world.pods.some((p) => isControlledBy(p.metadata, uid))) return undefined;
  const latest = (world.createFailures ?? [])
    .filter((e) => e.involvedObject.uid === uid && e.reason === 'FailedCreate')
    .sort((a, b) =>
      String(time(b.lastTimestamp) ?? '').localeCompare(String(time(a.lastTimestamp) ?? '')),
    )[0];
  if (!latest) return undefined;
  return {
    state: 'failed',
    reason: REASONS.podCreateFailed,
    message: `Job ${job.metadata!.name} cannot create the build pod: ${latest.message ?? 'no reason given'}`,
    at: time(latest.firstTimestamp) ?? time(latest.eventTime) ?? rfc3339(world.now),
  };
}

function outcomeOf(ib: ClusterImageBuild, job: V1Job | undefined, world: BuildWorld): Outcome {
  const name = jobName(ib);
  const progressing: Outcome = {
    state: 'progressing',
    reason: REASONS.building,
    message: `building generation ${ib.metadata.generation} in Job ${name}`,
    at: time(job?.status?.startTime) ?? time(job?.metadata?.creationTimestamp) ?? rfc3339(world.now),
  };
  if (!job && world.refused)
    return {
      state: 'failed',
      reason: world.refused.reason,
      message: world.refused.message,
      at: rfc3339(world.now),
    };
  if (!job) return progressing;
  const state = jobState(job);
  if (state === 'running') {
    const waiting = podWaiting(job, world.pods, world.mountFailures ?? []);
    const waitingOutcome: Outcome | undefined = waiting && {
      ...progressing,
      reason: waiting.reason,
      message: `${progressing.message}: pod ${waiting.pod} is waiting: ${waiting.reason}: ${waiting.message}`,
    };
    return createFailure(job, world) ?? waitingOutcome ?? progressing;
  }
  const at = finishedTime(job) ?? progressing.at;
  const terminated = terminatedState(job, world.pods);
  const report = decodeBuildReport(terminated?.message);
  const times = {
    startedAt: report?.startedAt ?? time(job.status?.startTime),
    finishedAt: report?.finishedAt ?? at,
  };
  if (state === 'succeeded') {
    if (report?.ok && !ib.spec.output.push)
      return {
        state: 'succeeded',
        reason: REASONS.builtNotPushed,
        message:
          `built ${report.digest} in ${report.steps} steps (${report.cacheHits} from cache), not pushed ` +
          '(output.push is false): the image went with the build pod',
        at,
        report,
        ...times,
      };
    if (report?.ok)
      return {
        state: 'succeeded',
        reason: REASONS.succeeded,
        message: `built ${report.image} in ${report.steps} steps (${report.cacheHits} from cache)`,
        at,
        report,
        ...times,
      };
    // The Job controller can see the pod finish before our pod cache does: wait a little for the report.
    if (!terminated && world.now.getTime() - new Date(at).getTime() < RESULT_GRACE_MS) return progressing;
    return {
      state: 'failed',
      reason: REASONS.resultMissing,
      message: terminated
        ? `Job ${name} completed but its pod's termination message is no build report`
        : `Job ${name} completed but its pod is gone: the digest cannot be read`,
      at,
      ...times,
    };
  }
  if (report && !report.ok)
    return { state: 'failed', reason: report.reason, message: report.message, at, ...times };
  if (terminated) return { state: 'failed', ...failureFromPod(job, terminated), at, ...times };
  const cond = (job.status?.conditions ?? []).find((c) => c.type === 'Failed' && c.status === 'True');
  return {
    state: 'failed',
    reason: cond?.reason === 'DeadlineExceeded' ? REASONS.deadlineExceeded : REASONS.failed,
    message: `Job ${name} failed${cond?.reason ? ` (${cond.reason})` : ''}${cond?.message ? `: ${cond.message}` : ''}`,
    at,
    ...times,
  };
}

/** Longest condition message (metav1.Condition allows 32768); the tail is what matters in a log. */
const MAX_MESSAGE = 32768;

function clip(message: string): string {
  return message.length > MAX_MESSAGE ? `…${message.slice(message.length - MAX_MESSAGE + 1)}` : message;
}

/**
 * The status the ImageBuild should have. `Progressing` while the current generation's Job (see `jobName`) is absent
 * or running; `Ready` with `digest`/`image` from the pod's report when it completed; `Failed` with the report's
 * reason and log tail (or the pod's exit and log tail, or the Job's own reason) when it failed. `digest`, `image`,
 * `startedAt`, `finishedAt`, `steps` and `cacheHits` describe the last finished build and are kept while a new one
 * runs. `lastTransitionTime` moves only on a flip (see `setPhaseConditions` in `src/kube/conditions.ts`).
 */
export function statusFromJob(ib: ClusterImageBuild, world: BuildWorld): ImageBuildStatus {
  const generation = ib.metadata.generation;
  const name = jobName(ib);
  const job = world.jobs.find(
    (j) => j.metadata?.name === name && isControlledBy(j.metadata, ib.metadata.uid),
  );
  const o = outcomeOf(ib, job, world);
  const previous = ib.status;
  const message = clip(o.message);
  // Only the three conditions this controller owns, in a fixed order (a stable list: no diffs for GitOps tools).
  const prev = (previous?.conditions ?? []).filter((c) =>
    [CONDITION_READY, CONDITION_PROGRESSING, CONDITION_FAILED].includes(c.type),
  );
  const conditions = setPhaseConditions(
    prev,
    PHASE_OF[o.state],
    { reason: o.reason, message, observedGeneration: generation },
    Date.parse(o.at),
  );
  const order = [CONDITION_READY, CONDITION_PROGRESSING, CONDITION_FAILED];
  conditions.sort((a, b) => order.indexOf(a.type) - order.indexOf(b.type));

  const last =
    o.state === 'progressing'
      ? {
          digest: previous?.digest,
          image: previous?.image,
          startedAt: previous?.startedAt,
          finishedAt: previous?.finishedAt,
          steps: previous?.steps,
          cacheHits: previous?.cacheHits,
        }
      : o.report?.ok
        ? {
            digest: o.report.digest,
            image: ib.spec.output.push ? o.report.image : undefined,
            startedAt: o.startedAt,
            finishedAt: o.finishedAt,
            steps: o.report.steps,
            cacheHits: o.report.cacheHits,
          }
        : {
            digest: previous?.digest,
            image: previous?.image,
            startedAt: o.startedAt,
            finishedAt: o.finishedAt,
          };
  const status: ImageBuildStatus = {
    phase: o.state === 'progressing' ? 'Running' : o.state === 'succeeded' ? 'Succeeded' : 'Failed',
    conditions,
    // The current generation's Job (`kubectl logs job/<jobName>`); named even when it was refused.
    jobName: name,
    observedGeneration: generation,
  };
  // Absent fields stay absent (never `undefined`), so a deep comparison with the stored status holds.
  for (const [k, v] of Object.entries(last)) if (v !== undefined) (status as Record<string, unknown>)[k] = v;
  return status;
}

/** A Job the history limits let go, and why. */
export interface JobToDelete {
  readonly name: string;
  readonly why: 'superseded' | 'history';
}

/**
 * Jobs to delete (with `propagationPolicy: Background`, so their pods go too): running Jobs of older generations
 * (superseded), and finished ones beyond `successfulJobsHistoryLimit` / `failedJobsHistoryLimit` (newest kept). The
 * current generation's Job is never deleted: it is the record that this generation was built, so a restart does not
 * build it again; it counts toward its limit.
 */
export function jobsToDelete(ib: ClusterImageBuild, jobs: readonly V1Job[]): JobToDelete[] {
  const current = jobName(ib);
  const mine = jobs.filter(
    (j) => isControlledBy(j.metadata, ib.metadata.uid) && !j.metadata?.deletionTimestamp && j.metadata?.name,
  );
  const out: JobToDelete[] = [];
  const finished: Record<'succeeded' | 'failed', V1Job[]> = { succeeded: [], failed: [] };
  let currentState: JobState | undefined;
  for (const j of mine) {
    const state = jobState(j);
    if (j.metadata!.name === current) {
      currentState = state;
      continue;
    }
    if (state === 'running') out.push({ name: j.metadata!.name!, why: 'superseded' });
    else finished[state].push(j);
  }
  const limits = {
    succeeded: ib.spec.successfulJobsHistoryLimit ?? DEFAULT_SUCCESSFUL_JOBS_HISTORY_LIMIT,
    failed: ib.spec.failedJobsHistoryLimit ?? DEFAULT_FAILED_JOBS_HISTORY_LIMIT,
  };
  for (const kind of ['succeeded', 'failed'] as const) {
    const keep = Math.max(0, limits[kind] - (currentState === kind ? 1 : 0));
    const newestFirst = [...finished[kind]].sort(
      (a, b) =>
        (finishedTime(b) ?? '').localeCompare(finishedTime(a) ?? '') ||
        (b.metadata!.name! < a.metadata!.name! ? -1 : 1),
    );
    for (const j of newestFirst.slice(keep)) out.push({ name: j.metadata!.name!, why: 'history' });
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
