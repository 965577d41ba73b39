/** statusFromJob() and jobsToDelete(): the world → the ImageBuild's status, table-tested (pure). */
import type { CoreV1Event, V1Job, V1Pod } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { encodeBuildReport } from '../../../src/api/v1alpha1/build-result.js';
import { jobName, type ClusterImageBuild } from '../../../src/controllers/imagebuild/desired-job.js';
import {
  jobsToDelete,
  RESULT_GRACE_MS,
  statusFromJob,
} from '../../../src/controllers/imagebuild/status-from-job.js';
import { clusterImageBuild } from './fixtures.js';

const SPEC = `  context:\n    git:\n      url: https://example.com/app.git\n  output:\n    images: [registry.example:5000/app:v1]\n    push: true\n`;
const DIGEST = `sha256:${'b'.repeat(64)}`;
const IMAGE = `registry.example:5000/app@${DIGEST}`;
const T0 = '2026-12-02T07:00:00Z';
const T1 = '2026-12-02T07:00:05Z';
const T2 = '2026-12-02T07:01:00Z';
const NOW = new Date('2026-12-02T07:01:10Z');

type State = 'running' | 'succeeded' | 'failed';

function job(
  ib: ClusterImageBuild,
  state: State,
  o: { name?: string; finished?: string; owner?: string; failedReason?: string; deleting?: boolean } = {},
): V1Job {
  const finished = o.finished ?? T2;
  return {
    metadata: {
      name: o.name ?? jobName(ib),
      namespace: ib.metadata.namespace,
      uid: `job-${o.name ?? jobName(ib)}`,
      creationTimestamp: new Date(T0),
      ownerReferences: [
        {
          apiVersion: 'strata.dev/v1alpha1',
          kind: 'ImageBuild',
          name: ib.metadata.name,
          uid: o.owner ?? ib.metadata.uid,
          controller: true,
        },
      ],
      ...(o.deleting ? { deletionTimestamp: new Date(T2) } : {}),
    },
    status: {
      startTime: new Date(T1),
      ...(state === 'succeeded' ? { completionTime: new Date(finished), succeeded: 1 } : {}),
      ...(state === 'running' ? { active: 1 } : {}),
      conditions:
        state === 'running'
          ? []
          : [
              {
                type: state === 'succeeded' ? 'Complete' : 'Failed',
                status: 'True',
                lastTransitionTime: new Date(finished),
                ...(o.failedReason
                  ? { reason: o.failedReason, message: 'Job was active longer than specified deadline' }
                  : {}),
              },
            ],
    },
  };
}

function pod(j: V1Job, terminated: { exitCode: number; message?: string; reason?: string }): V1Pod {
  return {
    metadata: {
      name: `${j.metadata!.name}-abcde`,
      ownerReferences: [
        {
          apiVersion: 'batch/v1',
          kind: 'Job',
          name: j.metadata!.name!,
          uid: j.metadata!.uid!,
          controller: true,
        },
      ],
    },
    status: {
      phase: terminated.exitCode === 0 ? 'Succeeded' : 'Failed',
      containerStatuses: [
        {
          name: 'build',
          image: 'strata',
          imageID: '',
          ready: false,
          restartCount: 0,
          state: { terminated: { ...terminated, startedAt: new Date(T1), finishedAt: new Date(T2) } },
        },
      ],
    },
  };
}

const okReport = encodeBuildReport({
  v: 1,
  ok: true,
  digest: DIGEST,
  image: IMAGE,
  steps: 4,
  cacheHits: 2,
  startedAt: T1,
  finishedAt: T2,
});

/** A pending pod's status: its build container waiting for `reason`. */
function waitingStatus(reason: string, message?: string): V1Pod['status'] {
  const waiting = { reason, ...(message ? { message } : {}) };
  return {
    phase: 'Pending',
    containerStatuses: [
      { name: 'build', image: 'x', imageID: '', ready: false, restartCount: 0, state: { waiting } },
    ],
  };
}

function conds(s: ReturnType<typeof statusFromJob>) {
  return Object.fromEntries((s.conditions ?? []).map((c) => [c.type, [c.status, c.reason]]));
}

describe('statusFromJob', () => {
  it('no Job yet, then a running Job: Progressing, and the same status again (no write)', () => {
    const ib = clusterImageBuild(SPEC, { generation: 3 });
    const s1 = statusFromJob(ib, { jobs: [], pods: [], now: NOW });
    expect(s1.phase).toBe('Running');
    expect(s1.observedGeneration).toBe(3);
    expect(conds(s1)).toEqual({
      Ready: ['False', 'Building'],
      Progressing: ['True', 'Building'],
      Failed: ['False', 'Building'],
    });
    expect(
      s1.conditions!.every(
        (c) => c.observedGeneration === 3 && c.lastTransitionTime === '2026-12-02T07:01:10Z',
      ),
    ).toBe(true);
    expect(s1.digest).toBeUndefined();
    const running = { ...ib, status: s1 };
    const s2 = statusFromJob(running, {
      jobs: [job(ib, 'running')],
      pods: [],
      now: new Date(NOW.getTime() + 30_000),
    });
    expect(s2).toEqual(s1);
  });

  it('a refused build (no Job made): Failed with the refusal’s reason, stable on the next pass', () => {
    const ib = clusterImageBuild(SPEC, { generation: 2 });
    const refused = {
      reason: 'PolicyViolation',
      message: 'spec.serviceAccountName: deployer is not allowed',
    };
    const s1 = statusFromJob(ib, { jobs: [], pods: [], now: NOW, refused });
    expect(s1.phase).toBe('Failed');
    expect(conds(s1)).toEqual({
      Ready: ['False', 'PolicyViolation'],
      Progressing: ['False', 'PolicyViolation'],
      Failed: ['True', 'PolicyViolation'],
    });
    expect(s1.conditions!.find((c) => c.type === 'Failed')!.message).toBe(refused.message);
    const later = statusFromJob(
      { ...ib, status: s1 },
      { jobs: [], pods: [], now: new Date(NOW.getTime() + 600_000), refused },
    );
    expect(later).toEqual(s1);
    // A Job of the current generation (made before the policy changed) wins over a refusal.
    expect(statusFromJob(ib, { jobs: [job(ib, 'running')], pods: [], now: NOW, refused }).phase).toBe(
      'Running',
    );
  });

  it('a running Job whose pod admission refuses: Failed (PodCreateFailed) with the Event’s words, until a pod exists', () => {
    const ib = clusterImageBuild(SPEC);
    const j = job(ib, 'running');
    const refusal = 'pods "x" is forbidden: violates PodSecurity "restricted:latest": privileged';
    const event = (uid: string): CoreV1Event => ({
      metadata: { name: `e-${uid}`, namespace: 'builds' },
      involvedObject: { kind: 'Job', uid, name: j.metadata!.name!, namespace: 'builds' },
      reason: 'FailedCreate',
      message: `Error creating: ${refusal}`,
      firstTimestamp: new Date(T1),
      lastTimestamp: new Date(T2),
    });
    const failed = statusFromJob(ib, {
      jobs: [j],
      pods: [],
      now: NOW,
      createFailures: [event(j.metadata!.uid!)],
    });
    expect(failed.phase).toBe('Failed');
    const cond = failed.conditions!.find((c) => c.type === 'Failed')!;
    expect([cond.status, cond.reason, cond.lastTransitionTime]).toEqual(['True', 'PodCreateFailed', T1]);
    expect(cond.message).toContain(refusal);
    // Another Job's Event says nothing about this one.
    expect(statusFromJob(ib, { jobs: [j], pods: [], now: NOW, createFailures: [event('other')] }).phase).toBe(
      'Running',
    );
    // Once a pod exists (the namespace was relabelled), the build is Progressing again.
    const running: V1Pod = { metadata: pod(j, { exitCode: 0 }).metadata }; // no status yet
    expect(
      statusFromJob(ib, { jobs: [j], pods: [running], now: NOW, createFailures: [event(j.metadata!.uid!)] })
        .phase,
    ).toBe('Running');
  });

  it('built but not pushed (push: false): Ready with BuiltNotPushed, the digest, and no image that exists nowhere', () => {
    const ib = clusterImageBuild(SPEC.replace('    push: true\n', ''));
    const j = job(ib, 'succeeded');
    const s = statusFromJob(ib, { jobs: [j], pods: [pod(j, { exitCode: 0, message: okReport })], now: NOW });
    expect(conds(s).Ready).toEqual(['True', 'BuiltNotPushed']);
    expect(s.digest).toBe(DIGEST);
    expect(s.image).toBeUndefined();
    expect(s.conditions!.find((c) => c.type === 'Ready')!.message).toContain(
      'not pushed (output.push is false)',
    );
  });

  it.each([
    [
      'unschedulable',
      {
        conditions: [
          {
            type: 'PodScheduled',
            status: 'False',
            reason: 'Unschedulable',
            message: '0/3 nodes are available',
          },
        ],
      },
      'Unschedulable',
      'is waiting: Unschedulable: 0/3 nodes are available',
    ],
    [
      'its image not pulled',
      waitingStatus('ErrImagePull', 'not found'),
      'ErrImagePull',
      'is waiting: ErrImagePull: not found',
    ],
  ])('a pod %s: still Progressing, with the reason the pod gives', (_what, status, reason, message) => {
    const ib = clusterImageBuild(SPEC);
    const j = job(ib, 'running');
    const p: V1Pod = { metadata: pod(j, { exitCode: 0 }).metadata, status: status as V1Pod['status'] };
    const s = statusFromJob(ib, { jobs: [j], pods: [p], now: NOW });
    expect(s.phase).toBe('Running');
    expect(conds(s).Progressing).toEqual(['True', reason]);
    expect(s.conditions!.find((c) => c.type === 'Progressing')!.message).toContain(message);
    // An ordinary start says nothing more.
    const creating: V1Pod = {
      metadata: p.metadata,
      status: waitingStatus('ContainerCreating'),
    };
    expect(conds(statusFromJob(ib, { jobs: [j], pods: [creating], now: NOW })).Progressing).toEqual([
      'True',
      'Building',
    ]);
  });

  it('a pod whose volume the kubelet cannot set up: Progressing with FailedMount and the Event’s message', () => {
    const ib = clusterImageBuild(SPEC);
    const j = job(ib, 'running');
    const p: V1Pod = {
      metadata: { ...pod(j, { exitCode: 0 }).metadata, uid: 'pod-1' },
      status: waitingStatus('ContainerCreating'),
    };
    const event: CoreV1Event = {
      metadata: { name: 'e', namespace: 'builds' },
      involvedObject: { kind: 'Pod', uid: 'pod-1', name: p.metadata!.name! },
      reason: 'FailedMount',
      message: 'MountVolume.SetUp failed for volume "context" : configmap "typo" not found',
    };
    const s = statusFromJob(ib, { jobs: [j], pods: [p], now: NOW, mountFailures: [event] });
    expect(conds(s).Progressing).toEqual(['True', 'FailedMount']);
    expect(s.conditions!.find((c) => c.type === 'Progressing')!.message).toContain(
      'configmap "typo" not found',
    );
    // Another pod's Event says nothing about this one.
    const other = { ...event, involvedObject: { ...event.involvedObject, uid: 'pod-2' } };
    expect(
      conds(statusFromJob(ib, { jobs: [j], pods: [p], now: NOW, mountFailures: [other] })).Progressing,
    ).toEqual(['True', 'Building']);
  });

  it('success: digest and image from the report, Ready=True at the completion time; stable on the next pass', () => {
    const ib = clusterImageBuild(SPEC);
    const progressing = statusFromJob(ib, { jobs: [job(ib, 'running')], pods: [], now: NOW });
    const j = job(ib, 'succeeded');
    const world = {
      jobs: [j],
      pods: [pod(j, { exitCode: 0, reason: 'Completed', message: okReport })],
      now: NOW,
    };
    const done = statusFromJob({ ...ib, status: progressing }, world);
    expect(done).toMatchObject({
      phase: 'Succeeded',
      digest: DIGEST,
      image: IMAGE,
      steps: 4,
      cacheHits: 2,
      startedAt: T1,
      finishedAt: T2,
      observedGeneration: 1,
    });
    expect(conds(done)).toEqual({
      Ready: ['True', 'BuildSucceeded'],
      Progressing: ['False', 'BuildSucceeded'],
      Failed: ['False', 'BuildSucceeded'],
    });
    const byType = Object.fromEntries(done.conditions!.map((c) => [c.type, c.lastTransitionTime]));
    // Ready and Progressing flipped at the Job's completion; Failed was False and stays put.
    expect(byType).toEqual({
      Ready: T2,
      Progressing: T2,
      Failed: progressing.conditions![2]!.lastTransitionTime,
    });
    expect(
      statusFromJob({ ...ib, status: done }, { ...world, now: new Date(NOW.getTime() + 3_600_000) }),
    ).toEqual(done);
    // Without any previous status the same world yields the same status except for the never-flipped condition.
    expect(statusFromJob(ib, world).digest).toBe(DIGEST);
  });

  it('a new generation while Ready: Progressing, the last digest kept, Ready=False', () => {
    const ib1 = clusterImageBuild(SPEC);
    const j1 = job(ib1, 'succeeded');
    const ready = statusFromJob(ib1, {
      jobs: [j1],
      pods: [pod(j1, { exitCode: 0, message: okReport })],
      now: NOW,
    });
    const ib2 = { ...clusterImageBuild(SPEC, { generation: 2 }), status: ready };
    const s = statusFromJob(ib2, {
      jobs: [j1],
      pods: [pod(j1, { exitCode: 0, message: okReport })],
      now: NOW,
    });
    expect(s).toMatchObject({ phase: 'Running', digest: DIGEST, image: IMAGE, observedGeneration: 2 });
    expect(conds(s).Ready).toEqual(['False', 'Building']);
  });

  const failures: Array<
    [string, (ib: ClusterImageBuild) => { jobs: V1Job[]; pods: V1Pod[] }, string, RegExp]
  > = [
    [
      'the report of a failed step',
      (ib) => {
        const j = job(ib, 'failed', { failedReason: 'BackoffLimitExceeded' });
        const message = encodeBuildReport({
          v: 1,
          ok: false,
          reason: 'StepFailed',
          message: '#3 RUN make\nmake: *** [all] Error 2\nDockerfile:3: exit code 2',
          startedAt: T1,
          finishedAt: T2,
        });
        return { jobs: [j], pods: [pod(j, { exitCode: 1, reason: 'Error', message })] };
      },
      'StepFailed',
      /make: \*\*\* \[all\] Error 2\nDockerfile:3: exit code 2$/,
    ],
    [
      'a crash with the log tail (FallbackToLogsOnError)',
      (ib) => {
        const j = job(ib, 'failed', { failedReason: 'BackoffLimitExceeded' });
        return {
          jobs: [j],
          pods: [
            pod(j, { exitCode: 134, reason: 'Error', message: 'line 1\nFATAL ERROR: heap out of memory\n' }),
          ],
        };
      },
      'BuildFailed',
      /^the build exited with code 134 \(Error\):\nline 1\nFATAL ERROR: heap out of memory$/,
    ],
    [
      'an OOM kill',
      (ib) => {
        const j = job(ib, 'failed', { failedReason: 'BackoffLimitExceeded' });
        return { jobs: [j], pods: [pod(j, { exitCode: 137, reason: 'OOMKilled' })] };
      },
      'OOMKilled',
      /^the build exited with code 137 \(OOMKilled\)$/,
    ],
    [
      'the deadline, with no pod left',
      (ib) => ({ jobs: [job(ib, 'failed', { failedReason: 'DeadlineExceeded' })], pods: [] }),
      'DeadlineExceeded',
      /failed \(DeadlineExceeded\): Job was active longer/,
    ],
    [
      'a completed Job whose pod is gone (past the grace)',
      (ib) => ({
        jobs: [
          job(ib, 'succeeded', { finished: new Date(NOW.getTime() - RESULT_GRACE_MS - 1000).toISOString() }),
        ],
        pods: [],
      }),
      'ResultMissing',
      /its pod is gone/,
    ],
  ];
  it.each(failures)('failure: %s → Failed with reason %s', (_what, make, reason, message) => {
    const ib = clusterImageBuild(SPEC);
    const s = statusFromJob(ib, { ...make(ib), now: NOW });
    expect(s.phase).toBe('Failed');
    expect(conds(s)).toEqual({
      Ready: ['False', reason],
      Progressing: ['False', reason],
      Failed: ['True', reason],
    });
    expect(s.conditions![2]!.message).toMatch(message);
    expect(s.digest).toBeUndefined();
  });

  it('a completed Job whose pod result is not visible yet (within the grace) is still Progressing', () => {
    const ib = clusterImageBuild(SPEC);
    const s = statusFromJob(ib, {
      jobs: [job(ib, 'succeeded', { finished: new Date(NOW.getTime() - 1000).toISOString() })],
      pods: [],
      now: NOW,
    });
    expect(conds(s).Progressing).toEqual(['True', 'Building']);
  });

  it('ignores Jobs it does not control and older generations’ Jobs', () => {
    const ib = clusterImageBuild(SPEC, { generation: 2 });
    const foreign = job(ib, 'succeeded', { owner: 'someone-else' });
    const old = job(clusterImageBuild(SPEC), 'succeeded');
    const s = statusFromJob(ib, {
      jobs: [foreign, old],
      pods: [pod(foreign, { exitCode: 0, message: okReport }), pod(old, { exitCode: 0, message: okReport })],
      now: NOW,
    });
    expect(s.phase).toBe('Running');
  });

  it('clips a huge message to the condition limit, keeping the tail', () => {
    const ib = clusterImageBuild(SPEC);
    const j = job(ib, 'failed');
    const s = statusFromJob(ib, {
      jobs: [j],
      pods: [pod(j, { exitCode: 1, message: `${'x'.repeat(40_000)}END` })],
      now: NOW,
    });
    expect(s.conditions![0]!.message.length).toBeLessThanOrEqual(32768);
    expect(s.conditions![0]!.message.endsWith('END')).toBe(true);
  });
});

describe('jobsToDelete', () => {
  const at = (m: number) => new Date(Date.UTC(2026, 11, 2, 6, m)).toISOString();
  const cases: Array<[string, Record<string, unknown>, number, Array<[string, State, number]>, string[]]> = [
    [
      'nothing beyond the defaults (3 succeeded, 1 failed)',
      {},
      9,
      [
        ['a', 'succeeded', 1],
        ['b', 'succeeded', 2],
        ['c', 'failed', 3],
      ],
      [],
    ],
    [
      'the oldest succeeded beyond 3 (the current one counts)',
      {},
      9,
      [
        ['a', 'succeeded', 1],
        ['b', 'succeeded', 2],
        ['c', 'succeeded', 3],
        ['CURRENT', 'succeeded', 9],
      ],
      ['a'],
    ],
    [
      'failed beyond 1',
      {},
      9,
      [
        ['a', 'failed', 1],
        ['b', 'failed', 2],
        ['c', 'succeeded', 3],
      ],
      ['a'],
    ],
    [
      'limits of 0 still keep the current Job',
      { successfulJobsHistoryLimit: 0, failedJobsHistoryLimit: 0 },
      9,
      [
        ['a', 'failed', 1],
        ['b', 'succeeded', 2],
        ['CURRENT', 'succeeded', 9],
      ],
      ['a', 'b'],
    ],
    [
      'a running Job of an older generation is superseded',
      {},
      9,
      [
        ['old', 'running', 1],
        ['CURRENT', 'running', 9],
      ],
      ['old'],
    ],
  ];
  it.each(cases)('%s', (_what, limits, _n, jobs, want) => {
    const ib = clusterImageBuild(SPEC, { generation: 9 }, limits);
    const list = jobs.map(([name, state, m]) =>
      job(ib, state, { name: name === 'CURRENT' ? jobName(ib) : name, finished: at(m) }),
    );
    list.push(job(ib, 'succeeded', { name: 'foreign', owner: 'other', finished: at(0) }));
    list.push(job(ib, 'failed', { name: 'going', deleting: true, finished: at(0) }));
    expect(jobsToDelete(ib, list).map((d) => d.name)).toEqual(want);
  });
});
