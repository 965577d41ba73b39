/** What the COPY and ADD tests share. */
import { copyIntoRoot } from '../../src/engine/build/copy/copy.js';
import type { CopyRequest } from '../../src/engine/build/copy/types.js';

/** The request's parts a test names: the sources, the destination, and any option. */
export type CopyArgs = Partial<CopyRequest> & { sources: string[]; destination: string };

/**
 * `copyIntoRoot` for `instruction` from the build context `ctx` (no `.dockerignore`) into the root `dest`, with
 * WORKDIR `/`: the returned function takes the sources, the destination and any other part of the request.
 */
export function fromContext(
  instruction: CopyRequest['instruction'],
): (ctx: string, dest: string, args: CopyArgs) => ReturnType<typeof copyIntoRoot> {
  return (ctx, dest, args) =>
    copyIntoRoot({ instruction, from: { dir: ctx, isContext: true }, workdir: '/', destRoot: dest, ...args });
}
