/** The build pod's report (termination message): encoding within 4096 bytes, decoding hostile text. */
import { describe, expect, it } from 'vitest';
import {
  decodeBuildReport,
  encodeBuildReport,
  TERMINATION_MESSAGE_LIMIT,
  type BuildReport,
} from '../../src/api/v1alpha1/build-result.js';

const DIGEST = `sha256:${'a'.repeat(64)}`;
const T = { startedAt: '2026-12-02T07:00:00Z', finishedAt: '2026-12-02T07:01:00Z' };
const OK: BuildReport = {
  v: 1,
  ok: true,
  digest: DIGEST,
  image: `registry.example:5000/app@${DIGEST}`,
  steps: 3,
  cacheHits: 1,
  ...T,
};

describe('build report', () => {
  it('round-trips a success and a failure', () => {
    expect(decodeBuildReport(encodeBuildReport(OK))).toEqual(OK);
    const fail: BuildReport = { v: 1, ok: false, reason: 'StepFailed', message: 'RUN false: exit 1', ...T };
    expect(decodeBuildReport(encodeBuildReport(fail))).toEqual(fail);
  });

  const long: Array<[string, string]> = [
    ['ASCII', `${'x'.repeat(10_000)}THE END`],
    ['multi-byte', `${'é✓'.repeat(5000)}THE END`],
    ['control characters (JSON-escaped to 6 bytes)', `${'\u001b'.repeat(5000)}THE END`],
  ];
  it.each(long)('a long %s message keeps its tail and fits 4096 bytes', (_what, message) => {
    const text = encodeBuildReport({ v: 1, ok: false, reason: 'StepFailed', message, ...T });
    expect(Buffer.byteLength(text)).toBeLessThanOrEqual(TERMINATION_MESSAGE_LIMIT);
    const back = decodeBuildReport(text);
    expect(back?.ok).toBe(false);
    expect(back && !back.ok && back.message.endsWith('THE END')).toBe(true);
    expect(back && !back.ok && back.message.startsWith('…')).toBe(true);
    expect(Buffer.byteLength(text)).toBeGreaterThan(TERMINATION_MESSAGE_LIMIT - 64);
  });

  const notReports: Array<[string, string | undefined]> = [
    ['nothing', undefined],
    ['a log tail (FallbackToLogsOnError)', 'step 2/3 failed\nexit 1'],
    ['broken JSON', '{"v":1,'],
    ['another version', JSON.stringify({ ...OK, v: 2 })],
    ['a digest the CRD would refuse', JSON.stringify({ ...OK, digest: 'sha256:zz' })],
    ['an image that is not pinned', JSON.stringify({ ...OK, image: 'registry.example/app:v1' })],
    ['steps not an integer', JSON.stringify({ ...OK, steps: 'many' })],
    ['no times', JSON.stringify({ v: 1, ok: false, reason: 'X', message: 'm' })],
    ['null', 'null'],
  ];
  it.each(notReports)('%s is no report', (_what, text) => {
    expect(decodeBuildReport(text)).toBeUndefined();
  });

  it('a reason that is no condition reason becomes BuildFailed', () => {
    const r = decodeBuildReport(
      JSON.stringify({ v: 1, ok: false, reason: 'no spaces allowed', message: 'm', ...T }),
    );
    expect(r).toMatchObject({ ok: false, reason: 'BuildFailed' });
  });
});
