/**
 * The ImageBuild controller: level-triggered, from the informers' caches. For each ImageBuild it makes sure the Job
 * of the current generation (and rebuild token) exists, lets finished Jobs go under the history limits, and writes
 * the status `statusFromJob` computes — only when it differs from the stored one, so a pass with nothing new makes
 * no API call at all. It never writes `spec`. Jobs are deleted with the ImageBuild by the garbage collector
 * (ownerReferences); no finalizer, since nothing outside the cluster needs cleaning.
 */
import type { CoreV1Event, V1Job, V1Pod } from '@kubernetes/client-node';
import { API_VERSION, KIND } from '../../api/v1alpha1/imagebuild.js';
import type { KubeClient } from '../../kube/client.js';
import { ownerKeys, type ReconcileContext, type ReconcileOutcome } from '../../kube/controller.js';
import { hasCode } from '../../kube/errors.js';
import type { EventRecorder } from '../../kube/events.js';
import type { Informer } from '../../kube/informer.js';
import type { ControllerRegistration } from '../../kube/manager.js';
import {
  objectKey,
  resourcePath,
  splitKey,
  type KubeObject,
  type ResourceType,
} from '../../kube/resource.js';
import { updateStatus } from '../../kube/status.js';
import {
  desiredJob,
  jobName,
  LABEL_NAME,
  LABEL_UID,
  SPEC_ENV,
  type ClusterImageBuild,
  type DesiredJobOptions,
} from './desired-job.js';
import { DEFAULT_BUILD_POLICY, refusalOf, type BuildPolicy } from './policy.js';
import {
  CONDITION_FAILED,
  CONDITION_READY,
  jobsToDelete,
  REASONS,
  RESULT_GRACE_MS,
  statusFromJob,
} from './status-from-job.js';

/** ImageBuilds (strata.dev/v1alpha1). */
export const IMAGE_BUILDS: ResourceType = {
  apiVersion: API_VERSION,
  kind: KIND,
  plural: 'imagebuilds',
  namespaced: true,
};
/** Jobs (batch/v1). */
export const JOBS: ResourceType = { apiVersion: 'batch/v1', kind: 'Job', plural: 'jobs', namespaced: true };
/** Pods (core/v1). */
export const PODS: ResourceType = { apiVersion: 'v1', kind: 'Pod', plural: 'pods', namespaced: true };

/** Events (core/v1): only the Job controller's `FailedCreate` ones are watched. */
export const EVENTS: ResourceType = { apiVersion: 'v1', kind: 'Event', plural: 'events', namespaced: true };

/** Options of the ImageBuild controller: the build pods' image and the admin's limits on them. */
export type ImageBuildControllerOptions = DesiredJobOptions & { readonly policy?: BuildPolicy };

/** Only the Jobs and Pods of builds are cached (a label every build Job and pod carries), not the cluster's. */
const BUILD_SELECTOR = { labelSelector: LABEL_UID };

/** The registration `strata controller` runs. */
export function imageBuildController(options: ImageBuildControllerOptions): ControllerRegistration {
  return {
    name: 'imagebuild',
    setup(ctx) {
      const builds = ctx.informer<ClusterImageBuild>(IMAGE_BUILDS);
      const jobs = ctx.informer<V1Job>(JOBS, { ...BUILD_SELECTOR, transform: metadataAndStatus });
      const pods = ctx.informer<V1Pod>(PODS, { ...BUILD_SELECTOR, transform: metadataAndStatus });
      // A Job whose pod is refused (Pod Security, a quota, a webhook) says so only in an Event.
      const createFailures = ctx.informer<CoreV1Event>(EVENTS, { fieldSelector: CREATE_FAILURE_SELECTOR });
      // A pod whose volume cannot be set up (a ConfigMap context or push Secret that does not exist) stays
      // ContainerCreating; only the kubelet's FailedMount Event says why.
      const mountFailures = ctx.informer<CoreV1Event>(EVENTS, { fieldSelector: MOUNT_FAILURE_SELECTOR });
      const events = ctx.events();
      const reconcile = (key: string, rc: ReconcileContext): Promise<ReconcileOutcome | void> =>
        reconcileImageBuild(key, rc, {
          client: ctx.client,
          builds,
          jobs,
          pods,
          createFailures,
          mountFailures,
          events,
          options,
          now: () => new Date(ctx.clock.now()),
        });
      return ctx
        .controller({ reconcile })
        .watch(builds)
        .watch(jobs, ownerKeys<V1Job>(API_VERSION, KIND))
        .watch(pods, (pod) => podOwnerKeys(pod, builds))
        .watch(createFailures, (e) => eventOwnerKeys(e, jobs, ownerKeys<V1Job>(API_VERSION, KIND)))
        .watch(mountFailures, (e) => eventOwnerKeys(e, pods, (pod) => podOwnerKeys(pod, builds)));
    },
  };
}

/** A build pod → its ImageBuild's key: by the name label, else by the uid label through the cache. */
function podOwnerKeys(pod: V1Pod, builds: Informer<ClusterImageBuild>): string[] {
  const ns = pod.metadata?.namespace;
  const labels = pod.metadata?.labels ?? {};
  if (!ns) return [];
  if (labels[LABEL_NAME]) return [`${ns}/${labels[LABEL_NAME]}`];
  const uid = labels[LABEL_UID];
  const owner = builds.store.byNamespace(ns).find((b) => b.metadata.uid === uid);
  return owner ? [`${ns}/${owner.metadata.name}`] : [];
}

/**
 * What the controller reads of a build Job or pod: metadata and status. Their specs carry the whole ImageBuild in
 * env vars (up to 1 MiB): cached, a large build would be held three times over (issue 14 review).
 */
function metadataAndStatus(obj: KubeObject): KubeObject {
  const { apiVersion, kind, metadata, status } = obj as KubeObject & { status?: unknown };
  return { apiVersion, kind, metadata, ...(status !== undefined ? { status } : {}) } as KubeObject;
}

const CREATE_FAILURE_SELECTOR = 'involvedObject.kind=Job,reason=FailedCreate';
const MOUNT_FAILURE_SELECTOR = 'involvedObject.kind=Pod,reason=FailedMount';

/**
 * The cached object an Event is about (by namespace/name from `involvedObject`, the same uid), mapped to its
 * ImageBuild's keys; Events about objects that are not builds' map to nothing.
 */
function eventOwnerKeys<T extends KubeObject>(
  e: CoreV1Event,
  cache: Informer<T>,
  toKeys: (obj: T) => string[],
): string[] {
  const { namespace, name, uid } = e.involvedObject;
  const obj = namespace && name ? cache.store.get(objectKey({ metadata: { namespace, name } })) : undefined;
  return obj && obj.metadata?.uid === uid ? toKeys(obj) : [];
}

interface Deps {
  readonly client: KubeClient;
  readonly builds: Informer<ClusterImageBuild>;
  readonly jobs: Informer<V1Job>;
  readonly pods: Informer<V1Pod>;
  readonly createFailures: Informer<CoreV1Event>;
  readonly mountFailures: Informer<CoreV1Event>;
  readonly events: EventRecorder;
  readonly options: ImageBuildControllerOptions;
  readonly now: () => Date;
}

/** One pass for one ImageBuild; see the module comment. Exported for tests. */
export async function reconcileImageBuild(
  key: string,
  rc: ReconcileContext,
  d: Deps,
): Promise<ReconcileOutcome | void> {
  const ib = d.builds.store.get(key);
  // Being deleted: the garbage collector takes the Jobs; nothing to write.
  if (!ib || (ib.metadata as { deletionTimestamp?: unknown }).deletionTimestamp) return;
  const { namespace } = splitKey(key);
  const uid = ib.metadata.uid;
  let owned = d.jobs.store.byOwner(uid);

  // 1. The current build's Job. Its name is fixed by uid, generation and rebuild token: a second create (a restarted
  // controller, a cache behind the server) is a 409, never a second build.
  const name = jobName(ib);
  let refused: { reason: string; message: string } | undefined;
  let retryAfterMs: number | undefined;
  if (!owned.some((j) => j.metadata?.name === name)) {
    const job = desiredJob(ib, d.options);
    // A spec the admin's policy forbids, or no cluster can run, gets no Job (and so no privileged pod).
    refused =
      refusalOf(ib, d.options.policy ?? DEFAULT_BUILD_POLICY, podSpecBytes(job)) ?? rejectedBefore(ib, name);
    if (!refused)
      try {
        const created = await d.client.request<V1Job>('create', 'POST', resourcePath(JOBS, namespace), {
          body: job,
          query: { fieldManager: 'strata' },
          signal: rc.signal,
        });
        owned = [...owned, created];
        // No Event here: Progressing=True says it, and Events are kept for outcomes (one per build at scale).
        rc.logger.info({ job: name, generation: ib.metadata.generation }, 'build job created');
      } catch (err) {
        if (hasCode(err, 'INVALID') || hasCode(err, 'FORBIDDEN')) {
          // The apiserver refuses this Job (a bad affinity term, a quota, an admission policy): retrying at once
          // cannot help, and saying nothing would leave the build Pending for ever. Failed with its words; a
          // quota or policy may change, so a refusal for FORBIDDEN is tried again later.
          const forbidden = hasCode(err, 'FORBIDDEN');
          refused = {
            reason: forbidden ? REASONS.jobForbidden : REASONS.jobRejected,
            message: `the apiserver refused the build Job ${name}: ${(err as Error).message}`,
          };
          if (forbidden) retryAfterMs = FORBIDDEN_RETRY_MS;
          rc.logger.warn({ job: name, err: (err as Error).message }, 'build job refused');
        } else {
          if (!hasCode(err, 'CONFLICT')) throw err;
          // AlreadyExists: our cache lags; the Job's watch event brings it and requeues this key.
          owned = [...owned, job];
        }
      }
  }

  // 2. Finished Jobs beyond the history limits, and running Jobs of superseded generations.
  for (const del of jobsToDelete(ib, owned)) {
    try {
      await d.client.request('delete', 'DELETE', resourcePath(JOBS, namespace, del.name), {
        body: { propagationPolicy: 'Background' },
        signal: rc.signal,
      });
      rc.logger.info({ job: del.name, why: del.why }, 'build job deleted');
    } catch (err) {
      if (!hasCode(err, 'NOT_FOUND')) throw err;
    }
  }

  // 3. The status the world says, written only when it differs.
  const world = {
    jobs: owned,
    pods: d.pods.store.byNamespace(namespace ?? ''),
    createFailures: d.createFailures.store.byNamespace(namespace ?? ''),
    mountFailures: d.mountFailures.store.byNamespace(namespace ?? ''),
    now: d.now(),
    ...(refused ? { refused } : {}),
  };
  const status = statusFromJob(ib, world);
  const before = conditionState(ib.status?.conditions);
  const updated = await updateStatus(d.client, IMAGE_BUILDS, ib, status, rc.signal);
  if (updated) {
    d.builds.remember(updated);
    const after = conditionState(status.conditions);
    if (after !== before && after === 'ready')
      d.events.record(ib, {
        type: 'Normal',
        reason: 'BuildSucceeded',
        action: 'Build',
        note: `built ${status.image ?? status.digest ?? ''}`,
      });
    if (after !== before && after === 'failed') {
      const failed = status.conditions?.find((c) => c.type === CONDITION_FAILED);
      d.events.record(ib, {
        type: 'Warning',
        reason: failed?.reason ?? 'BuildFailed',
        action: 'Build',
        note: failed?.message ?? 'the build failed',
      });
    }
  }
  // Watches bring every change of the Job and its pod; the requeue covers a completed Job whose pod report is not
  // readable yet (statusFromJob waits that grace before calling it failed).
  if (retryAfterMs !== undefined) return { requeueAfterMs: retryAfterMs };
  if (status.phase === 'Running') return { requeueAfterMs: RESULT_GRACE_MS };
}

/**
 * The refusal the status already records for this very Job name (uid, generation and rebuild token): an invalid
 * Job stays invalid, so it is not sent again on every event; a new generation or rebuild token tries again.
 */
function rejectedBefore(
  ib: ClusterImageBuild,
  name: string,
): { reason: string; message: string } | undefined {
  if (ib.status?.jobName !== name) return undefined;
  const failed = ib.status.conditions?.find((c) => c.type === CONDITION_FAILED && c.status === 'True');
  return failed?.reason === REASONS.jobRejected
    ? { reason: failed.reason, message: failed.message }
    : undefined;
}

/** How long a Job the apiserver refused with 403 (quota, admission) waits before it is tried again. */
const FORBIDDEN_RETRY_MS = 60_000;

/** UTF-8 bytes of the spec the build pod receives in its environment (all parts). */
function podSpecBytes(job: V1Job): number {
  const env = job.spec?.template.spec?.containers[0]?.env ?? [];
  return env
    .filter((e) => e.name === SPEC_ENV || e.name.startsWith(`${SPEC_ENV}_`))
    .reduce((n, e) => n + Buffer.byteLength(e.value ?? ''), 0);
}

function conditionState(conditions: ReadonlyArray<{ type: string; status: string }> | undefined): string {
  if (conditions?.some((c) => c.type === CONDITION_READY && c.status === 'True')) return 'ready';
  if (conditions?.some((c) => c.type === CONDITION_FAILED && c.status === 'True')) return 'failed';
  return 'other';
}
