/**
 * The build rows of `npm run bench` (see bench/README.md, "Build"): one Dockerfile built by `strata build` and by
 * `buildah bud --layers` over the same Debian base and the same generated context. This module prepares what both
 * sides need (base rootfs tarball, the base as an OCI archive, the context), says how each tool is invoked, and
 * checks what each build produced. Timing and alternation are bench/run.ts's.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { debootstrapRootfs } from './corpus.js';
import { BenchError, log, requireTool, run } from './util.js';

/** Bump when the generated context, the Dockerfile or the base preparation changes (cached files are rebuilt). */
const BUILD_FIXTURE_VERSION = 2;

/** The base image's name in both tools' local storage (FROM resolves it without a registry). */
export const BUILD_BASE_REF = 'bench/base:1';
/** The built image's name. */
export const BUILD_OUT_REF = 'bench/built:1';

/** What the Dockerfile's steps do, by size (the full and the --quick fixture). */
export interface BuildParams {
  version: number;
  quick: boolean;
  /** Files in the COPY context (besides the Dockerfile and .dockerignore). */
  contextFiles: number;
  /** Small files the first RUN writes. */
  runFiles: number;
  /** Bytes of the one big (incompressible) file the first RUN writes. */
  runBigBytes: number;
  /** The base: the debootstrap tree, or (--quick) a busybox-static tree. */
  base: 'debootstrap-minbase-bookworm' | 'busybox-static';
}

/** Everything a build run needs, prepared once and cached in WORK/build/. */
export interface BuildFixture {
  params: BuildParams;
  /** The context directory (Dockerfile inside). */
  context: string;
  /** The base root filesystem as a tarball (`strata import` input). */
  baseTar: string;
  /** The same base image as an OCI archive written by `strata save` (`buildah pull oci-archive:` input). */
  baseOci: string;
  /** Bytes of the base rootfs tarball. */
  baseTarBytes: number;
  /** Bytes of the context's generated files. */
  contextBytes: number;
  /** Context files the last RUN deletes (the `d00/` tree and every `f…7.dat`). */
  deletedFiles: number;
}

function paramsFor(quick: boolean): BuildParams {
  return quick
    ? {
        version: BUILD_FIXTURE_VERSION,
        quick,
        contextFiles: 500,
        runFiles: 200,
        runBigBytes: 5 << 20,
        base: 'busybox-static',
      }
    : {
        version: BUILD_FIXTURE_VERSION,
        quick,
        contextFiles: 5_000,
        runFiles: 2_000,
        runBigBytes: 50 << 20,
        base: 'debootstrap-minbase-bookworm',
      };
}

/**
 * The Dockerfile both tools build: COPY of the whole context, a RUN that writes many small files and one big
 * incompressible one, and a RUN that deletes part of what was copied (whiteouts in the last layer). POSIX sh
 * only, so that the busybox base of --quick runs it too.
 */
export function buildDockerfile(p: BuildParams): string {
  return [
    `FROM ${BUILD_BASE_REF}`,
    'COPY . /srv/ctx/',
    `RUN mkdir -p /srv/gen && i=0 && while [ $i -lt ${p.runFiles} ]; do echo "generated file $i" > /srv/gen/f$i; i=$((i+1)); done && head -c ${p.runBigBytes} /dev/urandom > /srv/gen/big.bin`,
    "RUN rm -rf /srv/ctx/d00 && find /srv/ctx -name 'f*7.dat' -exec rm -f {} +",
    '',
  ].join('\n');
}

/** xorshift32: deterministic sizes and contents, the same on every machine. */
function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

/**
 * The context file `i`'s path among `n`: ten top dirs dNN of ten sub dirs sNN each, every tenth file one level
 * deeper (dNN/sNN/tN/).
 */
function contextPath(i: number, n: number): string {
  const d = String(Math.floor((i * 10) / n)).padStart(2, '0');
  const s = String(Math.floor((i * 100) / n) % 10).padStart(2, '0');
  const f = `f${String(i).padStart(4, '0')}.dat`;
  return i % 10 === 9 ? `d${d}/s${s}/t${i % 7}/${f}` : `d${d}/s${s}/${f}`;
}

/**
 * Writes the context: `n` files of 64 B – 64 KiB (log-uniform, so most are small and a few dominate the bytes)
 * in nested directories; half the files are text (compressible), half slices of a random buffer. Returns the
 * bytes written and how many of the files the last RUN deletes.
 */
async function writeContext(dir: string, p: BuildParams): Promise<{ bytes: number; deleted: number }> {
  const rnd = prng(0x5eed);
  const noise = Buffer.alloc(1 << 20);
  for (let o = 0; o < noise.length; o += 4) noise.writeUInt32LE(rnd(), o);
  let bytes = 0;
  let deleted = 0;
  const made = new Set<string>();
  const batch: Promise<void>[] = [];
  for (let i = 0; i < p.contextFiles; i++) {
    const rel = contextPath(i, p.contextFiles);
    const parent = path.join(dir, path.dirname(rel));
    if (!made.has(parent)) {
      await mkdir(parent, { recursive: true });
      made.add(parent);
    }
    const size = Math.round(64 * Math.pow(1024, (rnd() % 10_000) / 10_000)); // 64 B … 64 KiB
    let data: Buffer;
    if (i % 2 === 0) {
      const line = `context file ${i}: the quick brown fox jumps over the lazy dog ${rnd()}\n`;
      data = Buffer.from(line.repeat(Math.ceil(size / line.length)).slice(0, size));
    } else {
      const off = rnd() % (noise.length - size);
      data = noise.subarray(off, off + size);
    }
    bytes += size;
    if (rel.startsWith('d00/') || /f\d*7\.dat$/.test(rel)) deleted++;
    batch.push(writeFile(path.join(dir, rel), data));
    if (batch.length >= 64) await Promise.all(batch.splice(0));
  }
  await Promise.all(batch);
  // The Dockerfile and .dockerignore stay out of the COPY, so the copied tree is exactly the generated files.
  await writeFile(path.join(dir, '.dockerignore'), 'Dockerfile\n.dockerignore\n');
  await writeFile(path.join(dir, 'Dockerfile'), buildDockerfile(p));
  return { bytes, deleted };
}

/** --quick base: busybox-static with the applets the Dockerfile uses (sh, mkdir, head, rm, find). */
async function busyboxRootfs(dir: string): Promise<string> {
  const busybox = await requireTool('/usr/bin/busybox', 'busybox-static');
  await rm(dir, { recursive: true, force: true });
  for (const d of ['bin', 'tmp', 'etc', 'dev', 'proc', 'sys', 'srv'])
    await mkdir(path.join(dir, d), { recursive: true });
  await chmod(path.join(dir, 'tmp'), 0o1777);
  await run(['cp', busybox, path.join(dir, 'bin', 'busybox')]);
  for (const a of ['sh', 'mkdir', 'head', 'rm', 'find', 'echo', 'ls', 'cat'])
    await symlink('busybox', path.join(dir, 'bin', a));
  await writeFile(path.join(dir, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  await writeFile(path.join(dir, 'etc', 'group'), 'root:x:0:\n');
  return dir;
}

/** The strata command prefix's verbs the build rows use, over one store. */
export function strataBuildCli(prefix: readonly string[], store: string) {
  const s = [...prefix, '--quiet', '--store', store];
  return {
    import: (tar: string) => [...s, 'import', tar, BUILD_BASE_REF],
    save: (out: string) => [...s, 'save', '--format', 'oci', '-o', out, BUILD_BASE_REF],
    build: (context: string, metadata: string) => [
      ...s,
      'build',
      '-t',
      BUILD_OUT_REF,
      '--metadata-file',
      metadata,
      context,
    ],
    inspectBase: () => [...s, 'inspect', BUILD_BASE_REF],
    /** A container over the base unpacks its layer into the store's layer cache (as `buildah pull` extracts). */
    createOnBase: (name: string) => [...s, 'create', '--driver', 'overlay', '--name', name, BUILD_BASE_REF],
    rm: (name: string) => [...s, 'rm', name],
    history: () => [...s, '--json', 'history', '--no-trunc', BUILD_OUT_REF],
  };
}

/**
 * buildah over a private storage root: overlay driver (vfs copies every layer and is slower than anything a
 * user would pick), RUN through runc (`--isolation oci`, as strata's steps), `--layers` for the build cache,
 * `--pull-never` so FROM resolves the local base only.
 */
export function buildahCli(root: string) {
  const s = [
    'buildah',
    '--root',
    path.join(root, 'root'),
    '--runroot',
    path.join(root, 'run'),
    '--storage-driver',
    'overlay',
  ];
  return {
    pull: (ociArchive: string) => [...s, 'pull', '--quiet', `oci-archive:${ociArchive}`],
    bud: (context: string, iidfile: string) => [
      ...s,
      'bud',
      '--quiet',
      '--layers',
      '--isolation',
      'oci',
      '--pull-never',
      '--iidfile',
      iidfile,
      '-t',
      BUILD_OUT_REF,
      context,
    ],
    inspectBase: () => [...s, 'inspect', '--type', 'image', BUILD_BASE_REF],
    inspectOut: () => [...s, 'inspect', '--type', 'image', BUILD_OUT_REF],
  };
}

/**
 * Prepares (or finds cached in WORK/build/) the base and the context. The base rootfs is the bench corpus's
 * debootstrap tree (WORK/rootfs/, made by debootstrap once), packed with GNU tar; it is imported into a scratch
 * strata store and saved as an OCI archive, so that buildah starts from the very image strata does.
 */
export async function prepareBuildFixture(opts: {
  work: string;
  quick: boolean;
  strataPrefix: readonly string[];
}): Promise<BuildFixture> {
  const p = paramsFor(opts.quick);
  const key = createHash('sha256').update(JSON.stringify(p)).digest('hex').slice(0, 12);
  const dir = path.join(opts.work, 'build', `${opts.quick ? 'quick' : 'full'}-${key}`);
  const metaFile = path.join(dir, 'fixture.json');
  if (existsSync(metaFile)) {
    const fx = JSON.parse(await readFile(metaFile, 'utf8')) as BuildFixture;
    log(`build: fixture ${dir} cached`);
    return fx;
  }
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const t0 = Date.now();
  const rootfs = opts.quick
    ? await busyboxRootfs(path.join(dir, 'busybox-rootfs'))
    : await debootstrapRootfs(path.join(opts.work, 'rootfs'));
  const baseTar = path.join(dir, 'base-rootfs.tar');
  // As a published base image: no apt package cache, empty /dev /proc /sys.
  await run([
    'tar',
    '--sort=name',
    '--numeric-owner',
    '--xattrs',
    '--exclude=./var/cache/apt/archives/*.deb',
    '--exclude=./dev/*',
    '--exclude=./proc/*',
    '--exclude=./sys/*',
    '-C',
    rootfs,
    '-cf',
    baseTar,
    '.',
  ]);
  const scratch = path.join(dir, 'scratch-store');
  const strata = strataBuildCli(opts.strataPrefix, scratch);
  await run(strata.import(baseTar));
  const baseOci = path.join(dir, 'base-oci.tar');
  await run(strata.save(baseOci));
  await rm(scratch, { recursive: true, force: true });
  const contextTmp = path.join(dir, 'context.tmp');
  const { bytes, deleted } = await writeContext(contextTmp, p);
  const context = path.join(dir, 'context');
  await rename(contextTmp, context);
  const baseTarBytes = (await stat(baseTar)).size;
  const fx: BuildFixture = {
    params: p,
    context,
    baseTar,
    baseOci,
    baseTarBytes,
    contextBytes: bytes,
    deletedFiles: deleted,
  };
  await writeFile(metaFile, JSON.stringify(fx, null, 2));
  log(`build: fixture ${dir} prepared in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return fx;
}

/**
 * Checks strata's output image (`strata --json history` output): the base layer plus one per step (COPY, RUN,
 * RUN), the two RUN commands in its history, and the first RUN's layer at least as large as its big file.
 */
export function verifyStrataBuilt(historyJson: string, p: BuildParams): void {
  const h = JSON.parse(historyJson) as { createdBy?: string; layer?: string | null; size?: number }[];
  const withLayer = h.filter((e) => typeof e.layer === 'string');
  if (withLayer.length !== 4)
    throw new Error(`strata: the built image has ${withLayer.length} layers, want 4 (base + COPY + 2 RUN)`);
  const gen = h.find((e) => e.createdBy?.includes('/srv/gen/big.bin'));
  if (!gen) throw new Error('strata: no history entry for the RUN that writes /srv/gen');
  if ((gen.size ?? 0) < p.runBigBytes)
    throw new Error(`strata: the RUN layer has ${gen.size} bytes, less than its ${p.runBigBytes}-byte file`);
  if (!h.some((e) => e.createdBy?.includes('rm -rf /srv/ctx/d00')))
    throw new Error('strata: no history entry for the RUN that deletes copied files');
}

/** Checks buildah's output image (`buildah inspect --type image` output): four layers, both RUN steps. */
export function verifyBuildahBuilt(inspectJson: string): void {
  const b = JSON.parse(inspectJson) as {
    OCIv1?: { rootfs?: { diff_ids?: string[] }; history?: { created_by?: string }[] };
  };
  const layers = b.OCIv1?.rootfs?.diff_ids?.length ?? -1;
  if (layers !== 4) throw new Error(`buildah: the built image has ${layers} layers, want 4`);
  const all = (b.OCIv1?.history ?? []).map((e) => e.created_by ?? '').join('\n');
  for (const want of ['/srv/gen/big.bin', 'rm -rf /srv/ctx/d00'])
    if (!all.includes(want)) throw new Error(`buildah: the built image's history has no step with "${want}"`);
}

/** strata's --metadata-file: how many steps ran, how many came from the build cache, and the image ID. */
export async function strataBuildMetadata(
  metadataFile: string,
): Promise<{ steps: number; cacheHits: number; config: string }> {
  const m = JSON.parse(await readFile(metadataFile, 'utf8')) as {
    'containerimage.config.digest'?: string;
    'strata.build'?: { steps?: number; cacheHits?: number };
  };
  const b = m['strata.build'];
  if (b?.steps === undefined || b.cacheHits === undefined || !m['containerimage.config.digest'])
    throw new BenchError(`${metadataFile}: no strata.build steps/cacheHits or config digest`);
  return { steps: b.steps, cacheHits: b.cacheHits, config: m['containerimage.config.digest'] };
}
