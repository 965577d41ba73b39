import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach } from 'vitest';

const dirs: string[] = [];

/** A fresh temp directory removed after the current test. */
export async function tempDir(prefix = 'strata-store-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  dirs.push(dir);
  return dir;
}

afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

/** Names in a directory, [] when it does not exist. */
export async function names(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch {
    return [];
  }
}

/** Lazily yields `chunks` buffers of `chunkSize` bytes with deterministic content; counts what was pulled. */
export function generated(
  chunks: number,
  chunkSize: number,
  counter = { pulled: 0 },
): AsyncGenerator<Buffer> {
  return (async function* () {
    for (let i = 0; i < chunks; i++) {
      counter.pulled++;
      yield Buffer.alloc(chunkSize, i % 251);
    }
  })();
}
