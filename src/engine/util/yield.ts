/**
 * Turns of the event loop for loops of synchronous file-system calls. Per-entry syscalls are made synchronously
 * where a tree has thousands of small entries (see `union/apply.ts`): through the thread pool each is a round trip
 * between threads, which on a loaded machine costs a scheduling delay every time. Such a loop still lets the event
 * loop run (timers, signals, abort listeners, streams it feeds) every so often.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';

/** Calls between two turns of the event loop: a few milliseconds of small syscalls. */
export const SYNC_BATCH = 256;

/**
 * A counter for a loop of synchronous calls: `await tick()` once per call gives the event loop a turn every
 * `every` calls and costs nothing otherwise.
 */
export function turnEvery(every: number = SYNC_BATCH): () => Promise<void> | undefined {
  let n = 0;
  return () => {
    if (++n < every) return undefined;
    n = 0;
    return nextTurn().then(() => undefined);
  };
}
