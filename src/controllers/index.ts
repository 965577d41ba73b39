/**
 * Every controller `strata controller` runs, in order. A controller plugs in with one
 * {@link ControllerRegistration} (see src/kube/README.md, "Writing a controller").
 */
import type { ControllerRegistration } from '../kube/manager.js';
import { imageBuildController } from './imagebuild/controller.js';
import type { BuildPolicy } from './imagebuild/policy.js';

/** What the command line tells the controllers. */
export interface ControllerSettings {
  /** The Strata image build pods run (`--build-image`). */
  readonly buildImage: string;
  /** Pull policy of build pods (`--build-image-pull-policy`). */
  readonly buildImagePullPolicy?: 'Always' | 'IfNotPresent' | 'Never';
  /** The admin's limits on build pods (`--build-node-selector`, `--build-toleration`, …). */
  readonly buildPolicy?: BuildPolicy;
}

/** The controllers of this build. */
export function controllers(settings: ControllerSettings): ControllerRegistration[] {
  return [
    imageBuildController({
      buildImage: settings.buildImage,
      ...(settings.buildImagePullPolicy ? { imagePullPolicy: settings.buildImagePullPolicy } : {}),
      ...(settings.buildPolicy ? { policy: settings.buildPolicy } : {}),
    }),
  ];
}
