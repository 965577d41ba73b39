/**
 * The ImageBuild in environment variables: parts that each fit Linux's 128 KiB cap, joined back whole, after the
 * kubelet's `$(VAR)` / `$$` expansion (the test node's, which follows the kubelet's rules).
 */
import { describe, expect, it } from 'vitest';
import { readSpecEnv, SPEC_ENV_PART_UNITS, specEnvVars } from '../../src/api/v1alpha1/spec-env.js';
import { expandVars } from '../support/kube/pod-env.js';

const MAX_ARG_STRLEN = 128 * 1024;

function roundTrip(value: string): {
  vars: Array<{ name: string; value: string }>;
  back: string | undefined;
} {
  const vars = specEnvVars('SPEC', value);
  // What the process sees: each value expanded as the kubelet expands it (the variables defined before it).
  const defined: Record<string, string> = {};
  for (const v of vars) defined[v.name] = expandVars(v.value, defined);
  const env = new Map(Object.entries(defined));
  return { vars, back: readSpecEnv('SPEC', (k) => env.get(k)) };
}

describe('specEnvVars / readSpecEnv', () => {
  it('a short value is one variable, read back as is', () => {
    const { vars, back } = roundTrip('{"spec":{}}');
    expect(vars).toEqual([{ name: 'SPEC', value: '{"spec":{}}' }]);
    // `$` survives the kubelet: `$$`, `$(VAR)` and a lone `$` arrive as written.
    for (const text of ['RUN echo $$ $(SPEC) $HOME', 'a$', '$$$(SPEC_PARTS)'])
      expect(roundTrip(text).back).toBe(text);
    expect(back).toBe('{"spec":{}}');
  });

  it.each([
    ['ASCII', 'a'.repeat(SPEC_ENV_PART_UNITS * 3 + 7)],
    ['three-byte characters', '€'.repeat(SPEC_ENV_PART_UNITS * 2 + 1)],
    // Every `$` doubled for the kubelet: a part of `$`s only is still under the cap, and no `$$` is cut in two.
    ['dollars and $(VAR) references', `${'$(SPEC)$$'.repeat(SPEC_ENV_PART_UNITS)}$`],
    // A surrogate pair straddling a part boundary must not be split.
    ['astral characters across a boundary', `x${'😀'.repeat(SPEC_ENV_PART_UNITS)}`],
  ])('%s: parts each under the kernel cap, joined back whole', (_what, value) => {
    const { vars, back } = roundTrip(value);
    expect(vars.length).toBeGreaterThan(2);
    for (const v of vars) {
      expect(Buffer.byteLength(`${v.name}=${v.value}`) + 1).toBeLessThanOrEqual(MAX_ARG_STRLEN);
      expect(Buffer.from(v.value, 'utf8').toString('utf8')).toBe(v.value); // no lone surrogate
    }
    expect(vars.at(-1)).toEqual({ name: 'SPEC_PARTS', value: String(vars.length - 1) });
    expect(back).toBe(value);
  });

  it('not set: undefined; a missing part or a bad count: an error naming the variable', () => {
    expect(readSpecEnv('SPEC', () => undefined)).toBeUndefined();
    const env: Record<string, string> = { SPEC: 'a', SPEC_PARTS: '3', SPEC_1: 'b' };
    expect(() => readSpecEnv('SPEC', (k) => env[k])).toThrow('$SPEC_2 is missing (SPEC_PARTS says 3 parts)');
    env.SPEC_PARTS = 'many';
    expect(() => readSpecEnv('SPEC', (k) => env[k])).toThrow('$SPEC_PARTS is "many", not a count of parts');
  });
});
