/** The controller machinery's public surface (see README.md). */
export { backoffDelay, type BackoffPolicy } from './backoff.js';
export {
  KubeClient,
  PATCH,
  type KubeClientOptions,
  type RequestOptions,
  type RequestRecord,
  type Verb,
} from './client.js';
export { sleep, systemClock, type Clock } from './clock.js';
export {
  findCondition,
  isConditionTrue,
  setCondition,
  setPhaseConditions,
  type Condition,
  type ConditionInput,
  type Phase,
} from './conditions.js';
export {
  Controller,
  ownerKeys,
  type ControllerOptions,
  type KeyMapper,
  type ReconcileContext,
  type ReconcileOutcome,
  type Reconciler,
} from './controller.js';
export { codeForStatus, hasCode, KubeError, TerminalError, type KubeErrorCode } from './errors.js';
export { EventRecorder, type EventInput, type EventRecorderOptions } from './events.js';
export { addFinalizer, hasFinalizer, removeFinalizer } from './finalizers.js';
export {
  Informer,
  type InformerHandlers,
  type InformerOptions,
  type WatchRestartReason,
} from './informer.js';
export { jsonEqual, mergePatch } from './json.js';
export { loadKubeConfig, type KubeConfigSources } from './kubeconfig.js';
export { LeaderElector, type Leadership, type LeaderElectorOptions } from './leader-election.js';
export { Manager, type ControllerRegistration, type ManagerOptions, type SetupContext } from './manager.js';
export { KubeMetrics, type ReconcileResult } from './metrics.js';
export { WorkQueue, DEFAULT_KEY_BACKOFF, type WorkQueueOptions } from './queue.js';
export {
  CONFIG_MAPS,
  EVENTS,
  LEASES,
  objectKey,
  resourcePath,
  splitKey,
  type KubeObject,
  type ResourceType,
} from './resource.js';
export { FIELD_MANAGER, updateStatus } from './status.js';
export { ObjectStore, type ReplaceResult } from './store.js';
export { microTime, rfc3339 } from './time.js';
