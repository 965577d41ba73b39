import { describe, expect, it } from 'vitest';
import { TerminalError, type StrataErrorCode } from '../../src/engine/errors.js';
import { imageBuildStatusField, type ImageBuildStatus } from '../../src/api/v1alpha1/imagebuild.js';
import {
  buildStatus,
  FAILURE_REASONS,
  pinnedReference,
  runningStatus,
} from '../../src/api/v1alpha1/status.js';
import { validate } from '../../src/api/validate.js';

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
      ['Succeeded', 'True', 'BuildSucceeded', 7],
      ['Ready', 'True', 'BuildSucceeded', 7],
    ]);
    valid(s);
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
        ['Succeeded', 'False', reason],
        ['Ready', 'False', reason],
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

  it('lastTransitionTime moves only when a condition flips', () => {
    const running = runningStatus(timing.startedAt, 3);
    valid(running);
    const later = new Date('2024-05-01T11:00:00Z');
    const failed = buildStatus({ error: new Error('x') }, { ...timing, finishedAt: later }, 3, running);
    const ready = failed.conditions!.find((c) => c.type === 'Ready')!;
    const succeeded = failed.conditions!.find((c) => c.type === 'Succeeded')!;
    expect(ready.lastTransitionTime).toBe('2024-05-01T10:00:00Z'); // False → False: unchanged
    expect(succeeded.lastTransitionTime).toBe('2024-05-01T11:00:00Z'); // Unknown → False: moved
  });

  it('pins references with and without tag or port', () => {
    expect(pinnedReference('a/b', DIGEST)).toBe(`a/b@${DIGEST}`);
    expect(pinnedReference('localhost:5000/a:v1', DIGEST)).toBe(`localhost:5000/a@${DIGEST}`);
    expect(pinnedReference('localhost:5000/a', DIGEST)).toBe(`localhost:5000/a@${DIGEST}`);
  });
});
