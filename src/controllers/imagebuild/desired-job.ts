/**
 * ImageBuild → the batch/v1 Job that builds it (pure). The Job's name is a function of the object's uid, its
 * generation and its `strata.dev/rebuild` annotation, so a controller that restarts (or two that race) computes the
 * same name and the second create is a 409, never a duplicate build. See ADR 0024 for the shape.
 */
import { createHash } from 'node:crypto';
import type { V1EnvVar, V1Job, V1Volume, V1VolumeMount } from '@kubernetes/client-node';
import { API_VERSION, KIND, type ImageBuild } from '../../api/v1alpha1/imagebuild.js';
import { specEnvVars } from '../../api/v1alpha1/spec-env.js';
import type { BuildPolicy } from './policy.js';

/** Annotation whose new value rebuilds the same generation. */
export const REBUILD_ANNOTATION = 'strata.dev/rebuild';
/** Label on the Job and its pods: the ImageBuild's uid (always fits a label value). */
export const LABEL_UID = 'strata.dev/imagebuild-uid';
/** Label on the Job and its pods: the ImageBuild's name, when it fits a label value (63 characters). */
export const LABEL_NAME = 'strata.dev/imagebuild';
/** Label on the Job and its pods: the generation the Job builds. */
export const LABEL_GENERATION = 'strata.dev/generation';
/** Annotation on the Job: the rebuild token it was made for (the name's hash covers it too). */
export const ANNOTATION_REBUILD_TOKEN = 'strata.dev/rebuild-token';
/** The build container's name. */
export const CONTAINER_NAME = 'build';
/** Env var carrying the ImageBuild (JSON) to `strata build --spec env:…` (in parts when long: see spec-env.ts). */
export const SPEC_ENV = 'STRATA_IMAGEBUILD';
/** Where the pod writes its report (the Kubernetes default path). */
export const TERMINATION_MESSAGE_PATH = '/dev/termination-log';
/** The push secret's `.dockerconfigjson`, as `config.json` in this directory (`DOCKER_CONFIG`). */
export const DOCKER_CONFIG_DIR = '/var/run/strata/docker';
/** Where a configMap context is mounted. */
export const CONTEXT_MOUNT = '/var/run/strata/context';
/** The build's working volume: the store lives under it. */
export const WORK_DIR = '/var/lib/strata';

/** An ImageBuild as the controller reads it from the API (metadata complete). */
export type ClusterImageBuild = ImageBuild & {
  metadata: ImageBuild['metadata'] & { uid: string; namespace: string; generation: number };
};

/** Controller settings that shape the Job. */
export interface DesiredJobOptions {
  /** The Strata image the build pod runs (`--build-image`). */
  readonly buildImage: string;
  /** Default: `IfNotPresent`. */
  readonly imagePullPolicy?: 'Always' | 'IfNotPresent' | 'Never';
  /** The admin's placement of build pods (node selector and tolerations added to every pod). */
  readonly policy?: Pick<BuildPolicy, 'nodeSelector' | 'tolerations' | 'maxDurationSeconds'>;
}

const LABEL_VALUE_MAX = 63;
const HASH_LENGTH = 10;

/** The rebuild token: the `strata.dev/rebuild` annotation's value, '' when absent. */
export function rebuildToken(ib: Pick<ClusterImageBuild, 'metadata'>): string {
  return ib.metadata.annotations?.[REBUILD_ANNOTATION] ?? '';
}

/**
 * The Job name for the object's current generation and rebuild token: `<name>-<generation>-<hash>`, at most 63
 * characters (the Job controller copies it into a label), the name part cut when long.
 */
export function jobName(ib: Pick<ClusterImageBuild, 'metadata'>): string {
  const { uid, generation } = ib.metadata;
  const hash = createHash('sha256')
    .update(`${uid}\n${generation}\n${rebuildToken(ib)}`)
    .digest('hex')
    .slice(0, HASH_LENGTH);
  const suffix = `-${generation}-${hash}`;
  const prefix = ib.metadata.name.slice(0, LABEL_VALUE_MAX - suffix.length).replace(/[-.]+$/, '');
  return `${prefix}${suffix}`;
}

/** Labels the Job and its pods carry (selectable by the controller). */
export function jobLabels(ib: Pick<ClusterImageBuild, 'metadata'>): Record<string, string> {
  const labels: Record<string, string> = {
    'app.kubernetes.io/managed-by': 'strata',
    [LABEL_UID]: ib.metadata.uid,
    [LABEL_GENERATION]: String(ib.metadata.generation),
  };
  if (ib.metadata.name.length <= LABEL_VALUE_MAX) labels[LABEL_NAME] = ib.metadata.name;
  return labels;
}

/** Spec fields that shape the pod, not the build: the pod's copy of the spec leaves them out. */
const POD_ONLY_FIELDS = [
  'nodeSelector',
  'tolerations',
  'affinity',
  'resources',
  'serviceAccountName',
  'activeDeadlineSeconds',
  'backoffLimit',
  'successfulJobsHistoryLimit',
  'failedJobsHistoryLimit',
] as const;

/**
 * The ImageBuild the pod receives: identity and the build's part of the spec (no status, no managed fields, no
 * scheduling), with a configMap context left as is — the pod reads it from {@link CONTEXT_MOUNT}.
 */
export function podImageBuild(ib: ClusterImageBuild): string {
  const { name, namespace, uid, generation } = ib.metadata;
  const spec: Record<string, unknown> = { ...ib.spec };
  for (const k of POD_ONLY_FIELDS) delete spec[k];
  return JSON.stringify({
    apiVersion: API_VERSION,
    kind: KIND,
    metadata: { name, namespace, uid, generation },
    spec,
  });
}

/**
 * The Job for the ImageBuild's current generation. Pure: the same object and options give the same Job. The
 * admin's node selector and tolerations (`options.policy`) come first; the spec's own may only narrow the choice
 * of node (a selector key the admin set is refused before this, see policy.ts).
 */
export function desiredJob(ib: ClusterImageBuild, options: DesiredJobOptions): V1Job {
  const spec = ib.spec;
  const labels = jobLabels(ib);
  const args = ['build', '--spec', `env:${SPEC_ENV}`, '--termination-message-path', TERMINATION_MESSAGE_PATH];
  const env: V1EnvVar[] = [
    ...specEnvVars(SPEC_ENV, podImageBuild(ib)),
    { name: 'STRATA_STORE', value: `${WORK_DIR}/store` },
  ];
  const nodeSelector = { ...spec.nodeSelector, ...options.policy?.nodeSelector };
  // The admin's longest build applies when the spec sets no deadline (a longer one is refused in policy.ts).
  const deadline = spec.activeDeadlineSeconds ?? options.policy?.maxDurationSeconds;
  const tolerations = [...(options.policy?.tolerations ?? []), ...(spec.tolerations ?? [])].map((t) => ({
    ...t,
  }));
  const volumes: V1Volume[] = [
    // The store and RUN steps' overlay mounts need a real filesystem: the container's root is itself an overlay.
    { name: 'work', emptyDir: {} },
    { name: 'tmp', emptyDir: {} },
  ];
  const mounts: V1VolumeMount[] = [
    { name: 'work', mountPath: WORK_DIR },
    { name: 'tmp', mountPath: '/tmp' },
  ];
  if (spec.output.pushSecret) {
    volumes.push({
      name: 'docker-config',
      secret: {
        secretName: spec.output.pushSecret.name,
        items: [{ key: '.dockerconfigjson', path: 'config.json' }],
      },
    });
    mounts.push({ name: 'docker-config', mountPath: DOCKER_CONFIG_DIR, readOnly: true });
    env.push({ name: 'DOCKER_CONFIG', value: DOCKER_CONFIG_DIR });
  }
  const cm = 'configMap' in spec.context ? spec.context.configMap : undefined;
  if (cm) {
    volumes.push({
      name: 'context',
      configMap: { name: cm.name, ...(cm.key ? { items: [{ key: cm.key, path: cm.key }] } : {}) },
    });
    mounts.push({ name: 'context', mountPath: CONTEXT_MOUNT, readOnly: true });
    args.push('--context-mount', CONTEXT_MOUNT);
  }
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: {
      name: jobName(ib),
      namespace: ib.metadata.namespace,
      labels,
      annotations: { [ANNOTATION_REBUILD_TOKEN]: rebuildToken(ib) },
      ownerReferences: [
        {
          apiVersion: API_VERSION,
          kind: KIND,
          name: ib.metadata.name,
          uid: ib.metadata.uid,
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
    },
    spec: {
      // A failed build is reported at once unless the spec asks for retries; a new generation or rebuild token
      // builds again either way.
      backoffLimit: spec.backoffLimit ?? 0,
      completions: 1,
      parallelism: 1,
      ...(deadline !== undefined ? { activeDeadlineSeconds: deadline } : {}),
      template: {
        metadata: { labels },
        spec: {
          restartPolicy: 'Never',
          enableServiceLinks: false,
          // The build talks to registries, not to the API: no token unless the user picked an account
          // (workload identity for registry credentials needs it).
          ...(spec.serviceAccountName
            ? { serviceAccountName: spec.serviceAccountName }
            : { automountServiceAccountToken: false }),
          ...(Object.keys(nodeSelector).length ? { nodeSelector } : {}),
          ...(tolerations.length ? { tolerations } : {}),
          ...(spec.affinity ? { affinity: spec.affinity } : {}),
          volumes,
          containers: [
            {
              name: CONTAINER_NAME,
              image: options.buildImage,
              imagePullPolicy: options.imagePullPolicy ?? 'IfNotPresent',
              command: ['strata'],
              args,
              env,
              volumeMounts: mounts,
              ...(spec.resources ? { resources: spec.resources } : {}),
              terminationMessagePath: TERMINATION_MESSAGE_PATH,
              terminationMessagePolicy: 'FallbackToLogsOnError',
              // RUN steps start runc containers (namespaces, overlay mounts, pivot_root); see ADR 0024. As root:
              // the Strata image's default user is non-root, for the controller and the mirror (ADR 0027).
              securityContext: { privileged: true, runAsUser: 0, runAsGroup: 0 },
            },
          ],
        },
      },
    },
  };
}
