import { describe, expect, it } from 'vitest';
import { TerminalError, type StrataErrorCode } from '../../../src/engine/errors.js';
import { imageBuildStatusField, type ImageBuildStatus } from '../../../src/api/v1alpha1/imagebuild.js';
import {
  buildStatus,
  FAILURE_REASONS,
  pinnedReference,
  runningStatus,
} from '../../../src/controllers/imagebuild/build-status.js';
import { validate } from '../../../src/api/validate.js';

const DIGEST = `sha256:${'ab'.repeat(32)}`;
const timing = {
  startedAt: new Date('2024-05-01T10:00:00.250Z'),
  finishedAt: new Date('2024-05-01T10:01:30Z'),
};

function valid(status: ImageBuildStatus): void {
  expect(validate(imageBuildStatusField.schema, status, ['status']).issues).toEqual([]);
}

describe('buildStatus', () => {
  it('a success: digest, pinned image, counts, True conditions, valid against the schema', () => {
    const s = buildStatus(
      { digest: DIGEST, reference: 'reg.example:5000/app/api:v1', steps: 4, cacheHits: 3 },
      timing,
      7,
    );
    expect(s).toMatchObject({
      phase: 'Succeeded',
      digest: DIGEST,
      image: `reg.example:5000/app/api@${DIGEST}`,
      startedAt: '2024-05-01T10:00:00Z',
      finishedAt: '2024-05-01T10:01:30Z',
      steps: 4,
      cacheHits: 3,
      observedGeneration: 7,
    });
    expect(s.conditions?.map((c) => [c.type, c.status, c.reason, c.observedGeneration])).toEqual([
      ['Ready', 'True', 'BuildSucceeded', 7],
      ['Progressing', 'False', 'BuildSucceeded', 7],
      ['Failed', 'False', 'BuildSucceeded', 7],
    ]);
    valid(s);
    const withJob = buildStatus(
      { digest: DIGEST, reference: 'a/b', steps: 1, cacheHits: 0 },
      timing,
      7,
      undefined,
      { jobName: 'hello-7-abc', observedRebuild: '2' },
    );
    expect(withJob).toMatchObject({ jobName: 'hello-7-abc', observedRebuild: '2' });
    valid(withJob);
  });

  it('a failure: reason from the engine code, message kept', () => {
    const cases: [unknown, string][] = [
      [
        new TerminalError('DOCKERFILE_INVALID', 'Dockerfile:3: unknown instruction FORM'),
        'DockerfileInvalid',
      ],
      [new TerminalError('BUILD_STEP_FAILED', 'step 2 exited 1'), 'StepFailed'],
      [new TerminalError('BUILD_CONTEXT_INVALID', 'x'), 'BuildContextInvalid'],
      [new TerminalError('RUNTIME_UNAVAILABLE', 'no runc'), 'RuntimeUnavailable'],
      [new Error('boom'), 'BuildFailed'],
      ['a string', 'BuildFailed'],
    ];
    for (const [err, reason] of cases) {
      const s = buildStatus({ error: err }, timing, 2);
      expect(s.phase).toBe('Failed');
      expect(s.digest).toBeUndefined();
      expect(s.conditions?.map((c) => [c.type, c.status, c.reason])).toEqual([
        ['Ready', 'False', reason],
        ['Progressing', 'False', reason],
        ['Failed', 'True', reason],
      ]);
      valid(s);
    }
    expect(
      buildStatus({ error: new TerminalError('DOCKERFILE_INVALID', 'Dockerfile:3: bad') }, timing, 1)
        .conditions?.[0]?.message,
    ).toBe('Dockerfile:3: bad');
  });

  it('every mapped reason is a valid condition reason and is what an engine error with that code gets', () => {
    for (const [code, reason] of Object.entries(FAILURE_REASONS)) {
      const s = buildStatus({ error: new TerminalError(code as StrataErrorCode, 'x') }, timing, 1);
      expect(s.conditions?.[0]?.reason).toBe(reason);
      valid(s);
    }
  });

  it('pending and running: Progressing True, Ready and Failed False, the Job named', () => {
    const pending = runningStatus(timing.startedAt, 3, undefined, { jobName: 'b-3', pending: true });
    expect(pending.phase).toBe('Pending');
    expect(pending.jobName).toBe('b-3');
    expect(pending.conditions?.map((c) => [c.type, c.status, c.reason])).toEqual([
      ['Ready', 'False', 'Scheduling'],
      ['Progressing', 'True', 'Scheduling'],
      ['Failed', 'False', 'Scheduling'],
    ]);
    valid(pending);
    const running = runningStatus(timing.startedAt, 3, pending, { jobName: 'b-3' });
    expect(running.phase).toBe('Running');
    expect(running.conditions?.map((c) => c.reason)).toEqual(['Building', 'Building', 'Building']);
    valid(running);
  });

  it('lastTransitionTime moves only when a condition flips', () => {
    const running = runningStatus(timing.startedAt, 3);
    valid(running);
    const later = new Date('2024-05-01T11:00:00Z');
    const failed = buildStatus({ error: new Error('x') }, { ...timing, finishedAt: later }, 3, running);
    const at = (type: string): string => failed.conditions!.find((c) => c.type === type)!.lastTransitionTime;
    expect(at('Ready')).toBe('2024-05-01T10:00:00Z'); // False → False: unchanged
    expect(at('Progressing')).toBe('2024-05-01T11:00:00Z'); // True → False: moved
    expect(at('Failed')).toBe('2024-05-01T11:00:00Z'); // False → True: moved
  });

  it('pins references with and without tag or port', () => {
    expect(pinnedReference('a/b', DIGEST)).toBe(`a/b@${DIGEST}`);
    expect(pinnedReference('localhost:5000/a:v1', DIGEST)).toBe(`localhost:5000/a@${DIGEST}`);
    expect(pinnedReference('localhost:5000/a', DIGEST)).toBe(`localhost:5000/a@${DIGEST}`);
  });
});
