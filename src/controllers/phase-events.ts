/**
 * Events on outcomes only: a RegistryMirror or LayerCache whose status write flips it to Ready (Normal) or Failed
 * (Warning) gets one Event with the condition's reason and message; Progressing is said by the condition alone.
 */
import type { EventRecorder } from '../kube/events.js';
import type { KubeObject } from '../kube/resource.js';

type Conditions =
  ReadonlyArray<{ type: string; status: string; reason?: string; message?: string }> | undefined;

/** The phase condition that is True (`Ready`, `Failed`, `Progressing`), or '' when none is. */
export function truePhase(conditions: Conditions): string {
  return (
    conditions?.find((c) => c.status === 'True' && ['Ready', 'Failed', 'Progressing'].includes(c.type))
      ?.type ?? ''
  );
}

/** Records the outcome Event when the phase moved from `before` to a Ready or Failed `after`. */
export function recordPhaseEvent(
  events: EventRecorder,
  obj: KubeObject,
  before: Conditions,
  after: Conditions,
  action: string,
): void {
  const from = truePhase(before);
  const to = truePhase(after);
  if (to === from || (to !== 'Ready' && to !== 'Failed')) return;
  const c = after?.find((x) => x.type === to);
  events.record(obj, {
    type: to === 'Ready' ? 'Normal' : 'Warning',
    reason: c?.reason ?? to,
    action,
    note: c?.message ?? to,
  });
}
