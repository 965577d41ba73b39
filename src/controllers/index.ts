/**
 * Every controller `strata controller` runs, in order. A controller plugs in with one
 * {@link ControllerRegistration} (see src/kube/README.md, "Writing a controller"). None is registered yet: the
 * ImageBuild controller lands with its own branch, so until then `strata controller` runs only the machinery
 * (leader election, metrics, probes) and says so in its log.
 */
import type { ControllerRegistration } from '../kube/manager.js';

/** The controllers of this build. */
export const CONTROLLERS: readonly ControllerRegistration[] = [];
