import { createHash } from 'node:crypto';

/** Inputs that decide whether a build step can be reused from the local build cache. */
export interface StepCacheInput {
  /**
   * What the step builds on: the parent image's config digest. Not its chain ID: USER, WORKDIR, SHELL and the
   * history a step inherits are in the config, not the layers, and change what a step produces.
   */
  parent: string;
  /** The instruction after ARG/ENV expansion, exactly as it would be recorded in history. */
  instruction: string;
  /** Build args in effect for the step (name → value); order-insensitive, like docker. */
  args: Readonly<Record<string, string>>;
  /** Environment in effect (`K=V` list, in config order — order is visible to the step). */
  env: readonly string[];
  /** For COPY/ADD: the digest from `hashSources`; absent for other steps. */
  sources?: string;
}

/**
 * Computes the local build-cache key of one step: a `sha256:` digest over a canonical JSON encoding of
 * `input`. Equal inputs give equal keys across processes and stores; any differing field gives a different key.
 */
export function stepCacheKey(input: StepCacheInput): string {
  // Canonical form: fixed field order, args sorted by name, so map iteration order never matters.
  const canonical = JSON.stringify([
    'strata-build-cache/v1',
    input.parent,
    input.instruction,
    Object.keys(input.args)
      .sort()
      .map((k) => [k, input.args[k]]),
    [...input.env],
    input.sources ?? null,
  ]);
  return `sha256:${createHash('sha256').update(canonical).digest('hex')}`;
}
