/** desiredJob(): ImageBuild → batch/v1 Job, table-tested (pure). */
import { describe, expect, it } from 'vitest';
import { parseImageBuild } from '../../../src/api/v1alpha1/load.js';
import { readSpecEnv } from '../../../src/api/v1alpha1/spec-env.js';
import { expandVars } from '../../support/kube/pod-env.js';
import { clusterImageBuild } from './fixtures.js';
import {
  CONTEXT_MOUNT,
  DOCKER_CONFIG_DIR,
  desiredJob,
  jobName,
  podImageBuild,
  SPEC_ENV,
  type ClusterImageBuild,
} from '../../../src/controllers/imagebuild/desired-job.js';

const GIT = `  context:\n    git:\n      url: https://example.com/app.git\n  output:\n    images: [registry.example:5000/app:v1]\n    push: true\n    pushSecret:\n      name: push-creds\n`;
const OPTS = { buildImage: 'registry.example:5000/strata:0.1' };

describe('jobName', () => {
  const base = clusterImageBuild(GIT);
  const cases: Array<[string, ClusterImageBuild, boolean]> = [
    ['the same object', clusterImageBuild(GIT), true],
    ['another generation', clusterImageBuild(GIT, { generation: 2 }), false],
    ['another uid (deleted and re-created)', clusterImageBuild(GIT, { uid: 'other' }), false],
    [
      'a rebuild annotation',
      clusterImageBuild(GIT, { annotations: { 'strata.dev/rebuild': '2026-12-02' } }),
      false,
    ],
    ['another annotation', clusterImageBuild(GIT, { annotations: { note: 'x' } }), true],
    ['a label change', clusterImageBuild(GIT, { labels: { team: 'a' } }), true],
  ];
  it.each(cases)('%s → same name: %s', (_what, other, same) => {
    expect(jobName(other) === jobName(base)).toBe(same);
  });

  it('is <name>-<generation>-<hash>, cut to 63 characters without a trailing dash or dot', () => {
    expect(jobName(base)).toMatch(/^hello-1-[0-9a-f]{10}$/);
    const long = clusterImageBuild(GIT, { name: `${'a'.repeat(40)}.${'b'.repeat(100)}`, generation: 12345 });
    const name = jobName(long);
    expect(name.length).toBeLessThanOrEqual(63);
    expect(name).toMatch(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/);
    const dashy = clusterImageBuild(GIT, { name: `${'a'.repeat(49)}-${'b'.repeat(30)}` });
    expect(jobName(dashy)).toMatch(/^a{49}-1-[0-9a-f]{10}$/);
  });
});

describe('desiredJob', () => {
  it('owns the Job, labels it, runs strata build --spec env: with the spec, the push secret as DOCKER_CONFIG', () => {
    const ib = clusterImageBuild(GIT);
    const job = desiredJob(ib, OPTS);
    expect(job.metadata).toMatchObject({
      name: jobName(ib),
      namespace: 'builds',
      labels: {
        'strata.dev/imagebuild': 'hello',
        'strata.dev/imagebuild-uid': ib.metadata.uid,
        'strata.dev/generation': '1',
      },
      ownerReferences: [
        {
          apiVersion: 'strata.dev/v1alpha1',
          kind: 'ImageBuild',
          name: 'hello',
          uid: ib.metadata.uid,
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
    });
    expect(job.spec).toMatchObject({ backoffLimit: 0, completions: 1, parallelism: 1 });
    expect(job.spec!.ttlSecondsAfterFinished).toBeUndefined();
    const pod = job.spec!.template.spec!;
    expect(job.spec!.template.metadata!.labels).toEqual(job.metadata!.labels);
    expect(pod.restartPolicy).toBe('Never');
    expect(pod.automountServiceAccountToken).toBe(false);
    const c = pod.containers[0]!;
    expect(c.image).toBe(OPTS.buildImage);
    expect([...c.command!, ...c.args!]).toEqual([
      'strata',
      'build',
      '--spec',
      `env:${SPEC_ENV}`,
      '--termination-message-path',
      '/dev/termination-log',
    ]);
    expect(c.terminationMessagePath).toBe('/dev/termination-log');
    expect(c.terminationMessagePolicy).toBe('FallbackToLogsOnError');
    expect(c.securityContext).toEqual({ privileged: true, runAsUser: 0, runAsGroup: 0 });
    const env = Object.fromEntries(c.env!.map((e) => [e.name, e.value]));
    expect(env.DOCKER_CONFIG).toBe(DOCKER_CONFIG_DIR);
    expect(env.STRATA_STORE).toBe('/var/lib/strata/store');
    // The pod's copy parses as the same ImageBuild.
    const sent = parseImageBuild(env[SPEC_ENV]!, 'env');
    expect(sent.spec).toEqual(ib.spec);
    expect(sent.metadata).toMatchObject({ name: 'hello', namespace: 'builds', generation: 1 });
    expect(pod.volumes).toContainEqual({
      name: 'docker-config',
      secret: { secretName: 'push-creds', items: [{ key: '.dockerconfigjson', path: 'config.json' }] },
    });
    expect(c.volumeMounts).toContainEqual({
      name: 'docker-config',
      mountPath: DOCKER_CONFIG_DIR,
      readOnly: true,
    });
    expect(c.volumeMounts!.map((m) => m.mountPath).sort()).toEqual(
      ['/tmp', '/var/lib/strata', DOCKER_CONFIG_DIR].sort(),
    );
  });

  it('is pure: the same object gives an equal Job', () => {
    const ib = clusterImageBuild(GIT);
    expect(desiredJob(ib, OPTS)).toEqual(desiredJob(structuredClone(ib), OPTS));
  });

  const scheduling: Array<
    [string, Record<string, unknown>, (j: ReturnType<typeof desiredJob>) => unknown, unknown]
  > = [
    [
      'nodeSelector',
      { nodeSelector: { 'kubernetes.io/arch': 'amd64' } },
      (j) => j.spec!.template.spec!.nodeSelector,
      { 'kubernetes.io/arch': 'amd64' },
    ],
    [
      'tolerations',
      { tolerations: [{ key: 'builds', operator: 'Exists', effect: 'NoSchedule' }] },
      (j) => j.spec!.template.spec!.tolerations,
      [{ key: 'builds', operator: 'Exists', effect: 'NoSchedule' }],
    ],
    [
      'resources',
      { resources: { limits: { memory: '2Gi' }, requests: { cpu: '500m' } } },
      (j) => j.spec!.template.spec!.containers[0]!.resources,
      { limits: { memory: '2Gi' }, requests: { cpu: '500m' } },
    ],
    [
      'serviceAccountName (and then the token is the account’s business)',
      { serviceAccountName: 'builder' },
      (j) => [j.spec!.template.spec!.serviceAccountName, j.spec!.template.spec!.automountServiceAccountToken],
      ['builder', undefined],
    ],
    [
      'affinity',
      {
        affinity: {
          nodeAffinity: {
            requiredDuringSchedulingIgnoredDuringExecution: {
              nodeSelectorTerms: [{ matchExpressions: [{ key: 'pool', operator: 'In', values: ['build'] }] }],
            },
          },
        },
      },
      (j) => j.spec!.template.spec!.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution,
      { nodeSelectorTerms: [{ matchExpressions: [{ key: 'pool', operator: 'In', values: ['build'] }] }] },
    ],
    ['activeDeadlineSeconds', { activeDeadlineSeconds: 600 }, (j) => j.spec!.activeDeadlineSeconds, 600],
    ['backoffLimit', { backoffLimit: 2 }, (j) => j.spec!.backoffLimit, 2],
  ];
  it.each(scheduling)('honours %s, and leaves it out of the pod’s spec copy', (_what, extra, pick, want) => {
    const ib = clusterImageBuild(GIT, {}, extra);
    const job = desiredJob(ib, OPTS);
    expect(pick(job)).toEqual(want);
    const sent = JSON.parse(podImageBuild(ib)) as { spec: Record<string, unknown> };
    for (const k of Object.keys(extra)) expect(sent.spec[k]).toBeUndefined();
  });

  it('mounts a configMap context (all keys, or the one tarball key) and tells the pod where', () => {
    const files = clusterImageBuild(
      `  context:\n    configMap:\n      name: app-src\n  output:\n    images: [r.example/app]\n`,
    );
    const job = desiredJob(files, OPTS);
    const pod = job.spec!.template.spec!;
    expect(pod.volumes).toContainEqual({ name: 'context', configMap: { name: 'app-src' } });
    expect(pod.containers[0]!.volumeMounts).toContainEqual({
      name: 'context',
      mountPath: CONTEXT_MOUNT,
      readOnly: true,
    });
    expect(pod.containers[0]!.args!.slice(-2)).toEqual(['--context-mount', CONTEXT_MOUNT]);
    // No push secret: no DOCKER_CONFIG.
    expect(pod.containers[0]!.env!.map((e) => e.name)).not.toContain('DOCKER_CONFIG');

    const tarball = clusterImageBuild(
      `  context:\n    configMap:\n      name: app-src\n      key: context.tar.gz\n  output:\n    images: [r.example/app]\n`,
    );
    expect(desiredJob(tarball, OPTS).spec!.template.spec!.volumes).toContainEqual({
      name: 'context',
      configMap: { name: 'app-src', items: [{ key: 'context.tar.gz', path: 'context.tar.gz' }] },
    });
  });

  it('git and tarball URL contexts travel in the spec as they are (resolved in the pod)', () => {
    const ib = clusterImageBuild(
      `  context:\n    tarball: https://example.com/ctx.tar.gz\n  output:\n    images: [r.example/app]\n`,
    );
    const job = desiredJob(ib, OPTS);
    const c = job.spec!.template.spec!.containers[0]!;
    expect(c.volumeMounts!.map((m) => m.name)).toEqual(['work', 'tmp']);
    const sent = JSON.parse(c.env!.find((e) => e.name === SPEC_ENV)!.value!) as {
      spec: { context: unknown };
    };
    expect(sent.spec.context).toEqual({ tarball: 'https://example.com/ctx.tar.gz' });
  });

  it('the admin’s longest build is the deadline of a spec that sets none', () => {
    const policy = { nodeSelector: {}, tolerations: [], maxDurationSeconds: 3600 };
    expect(desiredJob(clusterImageBuild(GIT), { ...OPTS, policy }).spec!.activeDeadlineSeconds).toBe(3600);
    const own = clusterImageBuild(GIT, {}, { activeDeadlineSeconds: 60 });
    expect(desiredJob(own, { ...OPTS, policy }).spec!.activeDeadlineSeconds).toBe(60);
    expect(desiredJob(clusterImageBuild(GIT), OPTS).spec!.activeDeadlineSeconds).toBeUndefined();
  });

  it('a failed build is not retried by default (backoffLimit 0)', () => {
    expect(desiredJob(clusterImageBuild(GIT), OPTS).spec!.backoffLimit).toBe(0);
  });

  it('the admin’s node selector and tolerations come first; the spec only adds to them', () => {
    const policy = {
      nodeSelector: { 'strata.dev/pool': 'builds' },
      tolerations: [{ key: 'strata.dev/builds', operator: 'Exists', effect: 'NoSchedule' }],
    };
    const bare = desiredJob(clusterImageBuild(GIT), { ...OPTS, policy }).spec!.template.spec!;
    expect(bare.nodeSelector).toEqual({ 'strata.dev/pool': 'builds' });
    expect(bare.tolerations).toEqual(policy.tolerations);
    const own = clusterImageBuild(
      GIT,
      {},
      {
        nodeSelector: { zone: 'a', 'strata.dev/pool': 'elsewhere' },
        tolerations: [{ key: 'gpu', operator: 'Exists' }],
      },
    );
    const pod = desiredJob(own, { ...OPTS, policy }).spec!.template.spec!;
    // A selector key the admin set keeps the admin's value (and policy.ts refuses such a spec before this).
    expect(pod.nodeSelector).toEqual({ zone: 'a', 'strata.dev/pool': 'builds' });
    expect(pod.tolerations).toEqual([...policy.tolerations, { key: 'gpu', operator: 'Exists' }]);
  });

  it('a spec too long for one environment string travels in parts the pod joins back', () => {
    const inline = `FROM scratch\n${'# padding\n'.repeat(30_000)}LABEL a=b\n`;
    const ib = clusterImageBuild(GIT, {}, { dockerfile: { inline } });
    const env = desiredJob(ib, OPTS).spec!.template.spec!.containers[0]!.env!;
    const parts = env.filter((e) => e.name.startsWith(SPEC_ENV));
    expect(parts.length).toBeGreaterThan(3);
    for (const p of parts) expect(Buffer.byteLength(p.value ?? '')).toBeLessThan(128 * 1024);
    const byName = new Map(env.map((e) => [e.name, expandVars(e.value ?? '', {})]));
    expect(readSpecEnv(SPEC_ENV, (k) => byName.get(k))).toBe(podImageBuild(ib));
  });

  it('a name longer than a label value keeps only the uid label', () => {
    const ib = clusterImageBuild(GIT, { name: 'n'.repeat(80) });
    const labels = desiredJob(ib, OPTS).metadata!.labels!;
    expect(labels['strata.dev/imagebuild']).toBeUndefined();
    expect(labels['strata.dev/imagebuild-uid']).toBe(ib.metadata.uid);
  });
});
