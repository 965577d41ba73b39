import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { stepCacheKey, type StepCacheInput } from '../../src/engine/build/executor/cache-key.js';

const base: StepCacheInput = {
  parent: 'sha256:' + 'a'.repeat(64),
  instruction: 'RUN echo hi',
  args: { B: '2', A: '1' },
  env: ['PATH=/bin', 'X=1'],
};

describe('stepCacheKey', () => {
  it('is the sha256 of the canonical encoding', () => {
    const expected = createHash('sha256')
      .update(
        JSON.stringify([
          'strata-build-cache/v1',
          base.parent,
          base.instruction,
          [
            ['A', '1'],
            ['B', '2'],
          ],
          base.env,
          null,
        ]),
      )
      .digest('hex');
    expect(stepCacheKey(base)).toBe(`sha256:${expected}`);
  });

  it('ignores build-arg insertion order', () => {
    expect(stepCacheKey({ ...base, args: { A: '1', B: '2' } })).toBe(stepCacheKey(base));
  });

  it('changes when any input changes', () => {
    const k = stepCacheKey(base);
    const variants: StepCacheInput[] = [
      { ...base, parent: 'sha256:' + 'b'.repeat(64) },
      { ...base, instruction: 'RUN echo ho' },
      { ...base, args: { A: '1', B: '3' } },
      { ...base, args: { A: '1' } },
      { ...base, env: ['X=1', 'PATH=/bin'] },
      { ...base, sources: 'sha256:' + 'c'.repeat(64) },
    ];
    const keys = variants.map(stepCacheKey);
    for (const other of keys) expect(other).not.toBe(k);
    expect(new Set(keys).size).toBe(keys.length);
  });

  it('does not confuse field boundaries', () => {
    expect(stepCacheKey({ ...base, args: { 'A=1': '' } })).not.toBe(
      stepCacheKey({ ...base, args: { A: '=1' } }),
    );
  });
});
