/**
 * A RUN step's network: the build's network (`--network`, an ImageBuild's `spec.network`) is an upper bound that a
 * Dockerfile cannot widen. BuildKit has the same rule: `RUN --network=host` needs the `network.host` entitlement,
 * which a build without host networking does not grant.
 */
import type { RunInstruction } from '../dockerfile/types.js';

/** A RUN step's network (and a build's). */
export type StepNetwork = 'host' | 'none';

/** Why a RUN's `--network` cannot be had, or its network. */
export type NetworkChoice =
  { readonly ok: true; readonly network: StepNetwork } | { readonly ok: false; readonly why: string };

/**
 * The network of a RUN under a build whose network is `build` (default host): `--network=none` always narrows it,
 * `--network=default` (or no flag) is the build's, and `--network=host` is allowed only when the build's network is
 * host. Anything else, or host under a `none` build, answers why not.
 */
export function runNetwork(instr: Pick<RunInstruction, 'flags'>, build: StepNetwork = 'host'): NetworkChoice {
  const flag = instr.flags.find((f) => f.name === 'network')?.value;
  if (flag === undefined || flag === 'default') return { ok: true, network: build };
  if (flag === 'none') return { ok: true, network: 'none' };
  if (flag !== 'host') return { ok: false, why: `RUN --network=${flag}: use host, none or default` };
  if (build === 'host') return { ok: true, network: 'host' };
  return {
    ok: false,
    why: `RUN --network=host is not allowed: the build's network is ${build}, and a Dockerfile cannot widen it (BuildKit requires the network.host entitlement)`,
  };
}
