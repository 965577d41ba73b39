/**
 * Waiting for a quiet disk (the "unpack (first run)" row): after `sync`, the kernel may still be discarding the
 * blocks of the tree the previous run deleted (ext4 mounted with `discard`) or writing back; a run started then
 * pays for its predecessor. settleDisk waits until the device holding a directory has been idle for a while.
 */
import { readFile, stat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { run } from './util.js';

/** Field 10 of /sys/block/…/stat: milliseconds the device spent doing I/O (see Documentation/block/stat.rst). */
async function ioTicks(statFile: string): Promise<number | undefined> {
  const fields = (await readFile(statFile, 'utf8').catch(() => '')).trim().split(/\s+/);
  const v = Number(fields[9]);
  return Number.isFinite(v) ? v : undefined;
}

/**
 * `sync`, then waits until the block device of `dir` spent at most `busyMs` of I/O time over `quietMs`, or
 * `maxMs` passed (returns the ms waited). Without a readable /sys/dev/block entry it only syncs.
 */
export async function settleDisk(
  dir: string,
  opts: { quietMs?: number; busyMs?: number; maxMs?: number } = {},
): Promise<number> {
  const { quietMs = 1_000, busyMs = 50, maxMs = 20_000 } = opts;
  const t0 = Date.now();
  await run(['sync']);
  const dev = (await stat(dir)).dev;
  // Linux dev_t: major in bits 8–19, minor in bits 0–7 and 20–31.
  const major = (dev >> 8) & 0xfff;
  const minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
  const statFile = `/sys/dev/block/${major}:${minor}/stat`;
  const first = await ioTicks(statFile);
  if (first === undefined) return Date.now() - t0;
  let prev: number = first;
  while (Date.now() - t0 < maxMs) {
    await sleep(quietMs);
    const now: number = (await ioTicks(statFile)) ?? prev;
    if (now - prev <= busyMs) break;
    prev = now;
  }
  return Date.now() - t0;
}
