/**
 * Pure helpers that compute the ImageBuild status of one build, as `strata build --spec` prints it, and the
 * condition types and times the controller's status shares with it. Conditions are set with `src/kube/`'s
 * `setPhaseConditions`. Engine errors are read structurally (their stable `code`), so this module needs nothing
 * from the engine.
 */
import type { ImageBuildStatus } from '../../api/v1alpha1/imagebuild.js';
import { setPhaseConditions, type Phase } from '../../kube/conditions.js';
import { rfc3339 as rfc3339Ms } from '../../kube/time.js';

/** `Ready`: the image of the current generation exists (built, and pushed when asked). */
export const CONDITION_READY = 'Ready';
/** `Progressing`: a build of the current generation is pending or running. */
export const CONDITION_PROGRESSING = 'Progressing';
/** `Failed`: the last build of the current generation failed (True), or did not (False). */
export const CONDITION_FAILED = 'Failed';

/** What a finished build produced. */
export interface BuildResult {
  /** Manifest digest of the image. */
  readonly digest: string;
  /** The primary output reference (`spec.output.images[0]`); the status pins it to the digest. */
  readonly reference: string;
  readonly steps: number;
  readonly cacheHits: number;
}

/** When the build ran. */
export interface BuildTiming {
  readonly startedAt: Date;
  readonly finishedAt: Date;
}

/** Condition reasons, by the engine error code that ended the build; anything else is `BuildFailed`. */
export const FAILURE_REASONS: Readonly<Record<string, string>> = {
  DOCKERFILE_INVALID: 'DockerfileInvalid',
  BUILD_CONTEXT_INVALID: 'BuildContextInvalid',
  BUILD_STEP_FAILED: 'StepFailed',
  RUNTIME_UNAVAILABLE: 'RuntimeUnavailable',
  INVALID_ARGUMENT: 'InvalidSpec',
  INVALID_REFERENCE: 'InvalidSpec',
  PLATFORM_NOT_FOUND: 'PlatformNotFound',
  MANIFEST_UNKNOWN: 'BaseImageNotFound',
  NAME_UNKNOWN: 'BaseImageNotFound',
  UNAUTHORIZED: 'RegistryUnauthorized',
  DENIED: 'RegistryDenied',
  NETWORK: 'RegistryUnreachable',
  TOO_MANY_REQUESTS: 'RegistryThrottled',
  STORAGE_FULL: 'StorageFull',
  SIZE_LIMIT: 'SizeLimitExceeded',
  ABORTED: 'Aborted',
};

/** Reason of a successful build. */
export const REASON_SUCCEEDED = 'BuildSucceeded';
/** Reason for a failure with no more specific code. */
export const REASON_FAILED = 'BuildFailed';

/** Longest message a condition keeps (metav1.Condition allows 32768). */
const MAX_MESSAGE = 32768;

/** The condition reason for an error that ended a build, from its stable `code`. */
export function failureReason(err: unknown): string {
  const code = (err as { code?: unknown } | null | undefined)?.code;
  return (typeof code === 'string' && FAILURE_REASONS[code]) || REASON_FAILED;
}

function messageOf(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.length > MAX_MESSAGE ? `${msg.slice(0, MAX_MESSAGE - 1)}…` : msg;
}

/** `repo[:tag]` → `repo@digest` (the tag is dropped: the digest alone names the content). */
export function pinnedReference(reference: string, digest: string): string {
  const slash = reference.lastIndexOf('/');
  const colon = reference.lastIndexOf(':');
  const repo = colon > slash ? reference.slice(0, colon) : reference;
  return `${repo}@${digest}`;
}

/** Kubernetes writes times in whole seconds, UTC. */
export function rfc3339(d: Date): string {
  return rfc3339Ms(d.getTime());
}

/** What the controller knows of the build Job, kept in the status. */
export interface BuildJob {
  /** The build Job's name. */
  readonly jobName?: string;
  /** The `strata.dev/rebuild` annotation value the build answers. */
  readonly observedRebuild?: string;
}

/** The three conditions at once: the one of `phase` True, the other two False (Ready, Progressing, Failed). */
function withConditions(
  previous: ImageBuildStatus | undefined,
  phase: Phase,
  reason: string,
  message: string,
  generation: number,
  now: Date,
): ImageBuildStatus['conditions'] {
  return setPhaseConditions(
    previous?.conditions,
    phase,
    { reason, message, observedGeneration: generation },
    now.getTime(),
  );
}

function jobFields(job: BuildJob | undefined): BuildJob {
  return {
    ...(job?.jobName !== undefined ? { jobName: job.jobName } : {}),
    ...(job?.observedRebuild !== undefined ? { observedRebuild: job.observedRebuild } : {}),
  };
}

/**
 * The status while a build waits for its pod (`Pending`, reason `Scheduling`) or runs (`Running`, reason
 * `Building`): Progressing=True, Ready=False, Failed=False. The digest of an earlier generation is not kept: it
 * does not describe this spec.
 */
export function runningStatus(
  startedAt: Date,
  generation: number,
  previous?: ImageBuildStatus,
  job?: BuildJob & { readonly pending?: boolean },
): ImageBuildStatus {
  const pending = job?.pending === true;
  const reason = pending ? 'Scheduling' : 'Building';
  const message = pending ? 'the build pod is waiting to start' : 'the build is running';
  return {
    phase: pending ? 'Pending' : 'Running',
    conditions: withConditions(previous, 'Progressing', reason, message, generation, startedAt),
    ...jobFields(job),
    startedAt: rfc3339(startedAt),
    observedGeneration: generation,
  };
}

/**
 * The status after a build: `Succeeded` with digest, pinned image, step counts, Ready=True and Progressing,
 * Failed False for a {@link BuildResult}; `Failed` with Failed=True, Ready=False, a reason mapped from the
 * error's code (see {@link FAILURE_REASONS}) and its message otherwise. `previous` keeps lastTransitionTime of
 * conditions whose status did not change.
 */
export function buildStatus(
  outcome: BuildResult | { readonly error: unknown },
  timing: BuildTiming,
  generation: number,
  previous?: ImageBuildStatus,
  job?: BuildJob,
): ImageBuildStatus {
  const base = {
    ...jobFields(job),
    startedAt: rfc3339(timing.startedAt),
    finishedAt: rfc3339(timing.finishedAt),
    observedGeneration: generation,
  };
  const now = timing.finishedAt;
  if ('error' in outcome) {
    const reason = failureReason(outcome.error);
    const message = messageOf(outcome.error);
    const conditions = withConditions(previous, 'Failed', reason, message, generation, now);
    return { phase: 'Failed', conditions, ...base };
  }
  const image = pinnedReference(outcome.reference, outcome.digest);
  const message = `built ${image} in ${outcome.steps} steps (${outcome.cacheHits} from cache)`;
  const conditions = withConditions(previous, 'Ready', REASON_SUCCEEDED, message, generation, now);
  return {
    phase: 'Succeeded',
    digest: outcome.digest,
    image,
    conditions,
    ...base,
    cacheHits: outcome.cacheHits,
    steps: outcome.steps,
  };
}
