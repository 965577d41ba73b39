/**
 * Status conditions as pure functions (metav1.Condition): `lastTransitionTime` moves only when a condition's
 * status flips; reason, message and observedGeneration are updated in place. Inputs are never mutated.
 */
import { rfc3339 } from './time.js';

/** One condition, as Kubernetes API conventions define it. */
export interface Condition {
  readonly type: string;
  readonly status: 'True' | 'False' | 'Unknown';
  /** CamelCase, machine-readable. */
  readonly reason: string;
  readonly message: string;
  readonly observedGeneration?: number;
  /** RFC 3339, seconds precision. */
  readonly lastTransitionTime: string;
}

/** A condition to set; its transition time is decided by {@link setCondition}. */
export type ConditionInput = Omit<Condition, 'lastTransitionTime'>;

/** The condition of `type`, if present. */
export function findCondition(
  conditions: readonly Condition[] | undefined,
  type: string,
): Condition | undefined {
  return conditions?.find((c) => c.type === type);
}

/** Whether the condition of `type` is `True`. */
export function isConditionTrue(conditions: readonly Condition[] | undefined, type: string): boolean {
  return findCondition(conditions, type)?.status === 'True';
}

/**
 * `conditions` with `input` set: a new condition is stamped `nowMs`; an existing one keeps its
 * `lastTransitionTime` unless its status changes. Order is kept; a new type is appended.
 */
export function setCondition(
  conditions: readonly Condition[] | undefined,
  input: ConditionInput,
  nowMs: number,
): Condition[] {
  const list = [...(conditions ?? [])];
  const i = list.findIndex((c) => c.type === input.type);
  const old = i >= 0 ? list[i] : undefined;
  const lastTransitionTime = old && old.status === input.status ? old.lastTransitionTime : rfc3339(nowMs);
  const next: Condition = {
    type: input.type,
    status: input.status,
    reason: input.reason,
    message: input.message,
    ...(input.observedGeneration !== undefined ? { observedGeneration: input.observedGeneration } : {}),
    lastTransitionTime,
  };
  if (i >= 0) list[i] = next;
  else list.push(next);
  return list;
}

/** The three states the standard conditions describe. */
export type Phase = 'Progressing' | 'Ready' | 'Failed';

/**
 * Sets `Ready`, `Progressing` and `Failed` together so they never contradict: exactly the one named by `phase` is
 * `True` and the other two `False`, all with `reason`, `message` and `observedGeneration`.
 */
export function setPhaseConditions(
  conditions: readonly Condition[] | undefined,
  phase: Phase,
  detail: { reason: string; message: string; observedGeneration?: number },
  nowMs: number,
): Condition[] {
  let out = [...(conditions ?? [])];
  for (const type of ['Ready', 'Progressing', 'Failed'] as const) {
    out = setCondition(out, { type, status: type === phase ? 'True' : 'False', ...detail }, nowMs);
  }
  return out;
}
