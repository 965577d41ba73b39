/**
 * Every controller `strata controller` runs, in order. A controller plugs in with one
 * {@link ControllerRegistration} (see src/kube/README.md, "Writing a controller").
 */
import type { ControllerRegistration } from '../kube/manager.js';
import { imageBuildController } from './imagebuild/controller.js';
import type { BuildPolicy } from './imagebuild/policy.js';
import { layerCacheController } from './layercache/controller.js';
import { registryMirrorController } from './registrymirror/controller.js';
import { strataNodeController } from './stratanode/controller.js';

/** What the command line tells the controllers. */
export interface ControllerSettings {
  /** The Strata image build pods run (`--build-image`). */
  readonly buildImage: string;
  /** The Strata image RegistryMirror pods run (`--mirror-image`; default: the build image). */
  readonly mirrorImage?: string;
  /** Pull policy of build and mirror pods (`--build-image-pull-policy`). */
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
    registryMirrorController({
      image: settings.mirrorImage ?? settings.buildImage,
      ...(settings.buildImagePullPolicy ? { imagePullPolicy: settings.buildImagePullPolicy } : {}),
    }),
    layerCacheController(),
    strataNodeController(),
  ];
}
