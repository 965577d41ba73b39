/**
 * Helpers of the issue-3 scenarios (unpack, commit, create; see bench/README.md): the container changes that
 * both commit sides make (untimed) and the checks of what unpack and commit produced.
 */
import { spawn } from 'node:child_process';
import { appendFile, lstat, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Corpus } from './corpus.js';
import { sortedEntries } from './util.js';

/** What the commit scenario changes in a container's root. */
export const CHANGES = { added: 1_000, deleted: 100, changed: 10 } as const;

/** Regular files under `dir` (relative to `root`), depth first in byte order; stops after `max`. */
async function firstFiles(root: string, dir: string, max: number): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    for (const name of await sortedEntries(path.join(root, rel))) {
      if (out.length >= max) return;
      const r = `${rel}/${name}`;
      const st = await lstat(path.join(root, r));
      if (st.isDirectory()) await walk(r);
      else if (st.isFile()) out.push(r);
    }
  };
  await walk(dir);
  if (out.length < max) throw new Error(`${root}/${dir} has only ${out.length} files, want ${max}`);
  return out;
}

/**
 * Makes the commit scenario's changes in a root filesystem (a mounted container root or a umoci bundle's
 * rootfs): adds 1,000 files of 100 B – 4 KiB in `opt/new/dNN/` (10 dirs), deletes the first 100 files of
 * `opt/app/d01/` and appends a line to the first 10 files of `opt/app/d02/` (byte order, so both sides pick the
 * same files). Deterministic content; never timed.
 */
export async function makeChanges(root: string): Promise<void> {
  for (let d = 0; d < 10; d++) {
    const dir = path.join(root, 'opt', 'new', `d${String(d).padStart(2, '0')}`);
    await mkdir(dir, { recursive: true });
    const writes: Promise<void>[] = [];
    for (let f = 0; f < CHANGES.added / 10; f++) {
      const i = d * 100 + f;
      const size = 100 + ((i * 997) % 3_997);
      const line = `# new file ${i}: the quick brown fox jumps over the lazy dog\n`;
      writes.push(
        writeFile(
          path.join(dir, `f${String(f).padStart(3, '0')}.txt`),
          line.repeat(size / line.length + 1).slice(0, size),
        ),
      );
    }
    await Promise.all(writes);
  }
  for (const rel of await firstFiles(root, 'opt/app/d01', CHANGES.deleted)) await rm(path.join(root, rel));
  for (const rel of await firstFiles(root, 'opt/app/d02', CHANGES.changed))
    await appendFile(path.join(root, rel), '# changed by the bench\n');
}

/** Checks that `dir` is the corpus image unpacked: the big file, a whiteout, the opaque dir, an override. */
export async function verifyRootfs(dir: string, corpus: Corpus): Promise<void> {
  const big = await lstat(path.join(dir, 'opt', 'blob', 'random.bin')).catch(() => undefined);
  if (big?.size !== corpus.params.bigBytes)
    throw new Error(`${dir}/opt/blob/random.bin: size ${big?.size}, want ${corpus.params.bigBytes}`);
  const hostname = await readFile(path.join(dir, 'etc', 'hostname'), 'utf8').catch(() => '');
  if (hostname !== 'strata-bench\n') throw new Error(`${dir}/etc/hostname: ${JSON.stringify(hostname)}`);
  if (await lstat(path.join(dir, 'usr', 'share', 'doc')).catch(() => undefined))
    throw new Error(`${dir}/usr/share/doc exists: whiteout not applied`);
  // The opaque directory holds only the 10 files of layer 3 (see corpus.ts writeChanges), whichever it is.
  const app = path.join(dir, 'opt', 'app');
  let opaque = 0;
  for (const d of await readdir(app)) {
    for (const s of await readdir(path.join(app, d))) {
      const names = await readdir(path.join(app, d, s));
      if (names.length === 10 && names.every((n) => n.startsWith('new'))) opaque++;
    }
  }
  if (opaque !== 1)
    throw new Error(`${app}: ${opaque} directories with only the opaque dir's 10 files, want 1`);
}

/** The layer digests of the manifest that an OCI layout's index.json names `ref`. */
export async function layoutLayers(layout: string, ref: string): Promise<string[]> {
  const index = JSON.parse(await readFile(path.join(layout, 'index.json'), 'utf8')) as {
    manifests: { digest: string; annotations?: Record<string, string> }[];
  };
  const m = index.manifests.find((x) => x.annotations?.['org.opencontainers.image.ref.name'] === ref);
  if (!m) throw new Error(`${layout}/index.json has no ${ref}`);
  const manifest = JSON.parse(await readFile(blobPath(layout, m.digest), 'utf8')) as {
    layers: { digest: string }[];
  };
  return manifest.layers.map((l) => l.digest);
}

export function blobPath(layout: string, digest: string): string {
  return path.join(layout, 'blobs', 'sha256', digest.replace(/^sha256:/, ''));
}

/** Member counts of a gzip layer (`tar -tzf`): whiteout markers and other non-directory entries. */
async function layerCounts(blob: string): Promise<{ whiteouts: number; files: number }> {
  const names = await new Promise<string>((resolve, reject) => {
    const child = spawn('tar', ['-tzf', blob], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`tar -tzf ${blob}: ${err}`))));
  });
  let whiteouts = 0;
  let files = 0;
  for (const n of names.split('\n')) {
    if (n === '' || n.endsWith('/')) continue;
    if (path.posix.basename(n).startsWith('.wh.')) whiteouts++;
    else files++;
  }
  return { whiteouts, files };
}

/**
 * Checks a committed image (`ref` in `layout`): one layer more than the corpus image, holding the 100 whiteouts
 * and at least the 1,000 added + 10 changed files.
 */
export async function verifyCommitted(layout: string, ref: string, corpus: Corpus): Promise<void> {
  const layers = await layoutLayers(layout, ref);
  if (layers.length !== corpus.layers.length + 1)
    throw new Error(`${ref}: ${layers.length} layers, want ${corpus.layers.length + 1}`);
  const c = await layerCounts(blobPath(layout, layers[layers.length - 1]!));
  if (c.whiteouts !== CHANGES.deleted || c.files < CHANGES.added + CHANGES.changed)
    throw new Error(
      `${ref}: the new layer has ${c.whiteouts} whiteouts and ${c.files} files, want ${CHANGES.deleted} and ≥ ${CHANGES.added + CHANGES.changed}`,
    );
}
