/**
 * The benchmark corpus: one realistic image `bench/app:1`, written as an OCI image layout by our own
 * code (no image hub, no skopeo/umoci for building). Built once and cached under the work dir.
 *
 *   layer 1  base      Debian bookworm minbase rootfs (debootstrap; --quick: a small generated tree)
 *   layer 2  files     20,000 small files (100 B – 4 KiB, deterministic text-like content) in nested dirs
 *   layer 3  changes   whiteouts of layer-1 and layer-2 paths, one opaque directory, a few new files
 *   layer 4  blob      one 256 MiB incompressible file (aes-256-ctr keystream from a fixed key)
 *
 * Layer tars come from GNU tar (--sort=name, numeric owners, mtime 0), compressed with pigz (or gzip);
 * diffIDs and digests are computed while streaming — no layer is ever held in memory.
 */
import { spawn } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { createWriteStream, existsSync } from 'node:fs';
import { chmod, mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BenchError, log, requireTool, run, sortedEntries, which } from './util.js';

export const CORPUS_REF = 'bench/app:1';
/** A second, small image in the same layout (one layer of about 1 MiB): `create` on images of different sizes. */
export const SMALL_REF = 'bench/small:1';
/** Bytes of the small image's files (64 files of 16 KiB). */
const SMALL_BYTES = 1 << 20;
const SUITE = 'bookworm';
const CORPUS_VERSION = 3;
const CREATED = '2024-01-01T00:00:00Z';

const MT_LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip';
const MT_CONFIG = 'application/vnd.oci.image.config.v1+json';
const MT_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const MT_INDEX = 'application/vnd.oci.image.index.v1+json';

export interface CorpusOptions {
  /** Work directory (cache root). */
  work: string;
  /** Smoke-run corpus: 2,000 files, 32 MiB blob, generated rootfs instead of debootstrap. */
  quick: boolean;
}

export interface LayerStat {
  name: string;
  digest: string;
  diffId: string;
  /** Compressed size (the blob). */
  size: number;
  /** Uncompressed tar size. */
  uncompressedSize: number;
  /** Regular files (not counting whiteout markers) and whiteout/opaque markers. */
  files: number;
  whiteouts: number;
}

export interface Corpus {
  /** OCI image layout directory. */
  layout: string;
  /** Ref name in index.json. */
  ref: string;
  manifestDigest: string;
  layers: LayerStat[];
  /** Compressor used (pigz or gzip). */
  compressor: string;
  rootfs: string;
  params: CorpusParams;
  /** The small image (`SMALL_REF`), added to the layout after the fact (so an older cache is kept). */
  small?: SmallImage;
}

export interface SmallImage {
  ref: string;
  manifestDigest: string;
  layers: LayerStat[];
}

interface CorpusParams {
  version: number;
  quick: boolean;
  smallFiles: number;
  bigBytes: number;
  rootfs: string;
}

function paramsFor(quick: boolean): CorpusParams {
  return quick
    ? { version: CORPUS_VERSION, quick, smallFiles: 2_000, bigBytes: 32 << 20, rootfs: 'generated' }
    : {
        version: CORPUS_VERSION,
        quick,
        smallFiles: 20_000,
        bigBytes: 256 << 20,
        rootfs: `debootstrap-minbase-${SUITE}`,
      };
}

/** Builds the corpus unless a complete one with the same parameters is cached; returns its description. */
export async function buildCorpus(opts: CorpusOptions): Promise<Corpus> {
  const params = paramsFor(opts.quick);
  const dir = path.join(opts.work, opts.quick ? 'corpus-quick' : 'corpus-full');
  const statsFile = path.join(dir, 'corpus.json');
  const cached = await readCached(statsFile, params);
  if (cached) {
    log(`corpus: cached in ${cached.layout}`);
    return ensureSmallImage(cached, statsFile);
  }
  await requireTool('tar', 'tar');
  const tarVersion = await run(['tar', '--version']);
  if (!tarVersion.includes('GNU tar')) throw new BenchError('tar is not GNU tar (Debian package "tar")');
  const compressor = (await which('pigz')) ? 'pigz' : 'gzip';
  await requireTool(compressor, compressor);

  const layout = path.join(dir, 'oci');
  const staging = path.join(dir, 'staging');
  await rm(dir, { recursive: true, force: true });
  await mkdir(path.join(layout, 'blobs', 'sha256'), { recursive: true });
  const oldUmask = process.umask(0o022);
  try {
    const rootfs = opts.quick
      ? await generatedRootfs(path.join(staging, 'rootfs'))
      : await debootstrapRootfs(path.join(opts.work, 'rootfs'));

    const layers: LayerStat[] = [];
    const t0 = Date.now();
    // Layer 1: a real OS tree keeps its numeric owners (e.g. root:shadow); /dev, /proc, /sys go empty
    // as in published base images (a runtime mounts its own), and, as those images do, the apt
    // package cache that debootstrap leaves behind is not shipped.
    layers.push(
      await tarLayer(layout, compressor, 'base', rootfs, {
        keepOwners: true,
        exclude: ['dev/*', 'proc/*', 'sys/*', 'var/cache/apt/archives/*.deb', 'var/cache/apt/*.bin'],
      }),
    );
    log(`corpus: layer base done (${secs(t0)})`);

    const t1 = Date.now();
    const filesDir = path.join(staging, 'files');
    const appPaths = await writeSmallFiles(filesDir, params.smallFiles);
    layers.push(await tarLayer(layout, compressor, 'files', filesDir, {}));
    await rm(filesDir, { recursive: true, force: true });
    log(`corpus: layer files done (${secs(t1)})`);

    const t2 = Date.now();
    const changesDir = path.join(staging, 'changes');
    await writeChanges(changesDir, rootfs, appPaths);
    layers.push(await tarLayer(layout, compressor, 'changes', changesDir, {}));
    await rm(changesDir, { recursive: true, force: true });
    log(`corpus: layer changes done (${secs(t2)})`);

    const t3 = Date.now();
    const blobDir = path.join(staging, 'blob');
    await writeRandomFile(path.join(blobDir, 'opt', 'blob', 'random.bin'), params.bigBytes);
    layers.push(await tarLayer(layout, compressor, 'blob', blobDir, {}));
    await rm(blobDir, { recursive: true, force: true });
    log(`corpus: layer blob done (${secs(t3)})`);

    const manifestDigest = await writeImage(layout, layers, params);
    await rm(staging, { recursive: true, force: true });
    const corpus: Corpus = { layout, ref: CORPUS_REF, manifestDigest, layers, compressor, rootfs, params };
    await writeFile(statsFile, JSON.stringify(corpus, null, 2) + '\n');
    return await ensureSmallImage(corpus, statsFile);
  } finally {
    process.umask(oldUmask);
  }
}

async function readCached(statsFile: string, params: CorpusParams): Promise<Corpus | undefined> {
  let c: Corpus;
  try {
    c = JSON.parse(await readFile(statsFile, 'utf8')) as Corpus;
  } catch {
    return undefined;
  }
  if (JSON.stringify(c.params) !== JSON.stringify(params)) return undefined;
  const blobs = [c.manifestDigest, ...c.layers.map((l) => l.digest)];
  for (const d of blobs) {
    if (!existsSync(path.join(c.layout, 'blobs', 'sha256', d.replace(/^sha256:/, '')))) return undefined;
  }
  if (!existsSync(path.join(c.layout, 'index.json'))) return undefined;
  if (c.small) {
    // A small image whose blobs went missing is simply rebuilt (ensureSmallImage); the big one stays cached.
    const small = [c.small.manifestDigest, ...c.small.layers.map((l) => l.digest)];
    if (small.some((d) => !existsSync(path.join(c.layout, 'blobs', 'sha256', d.replace(/^sha256:/, '')))))
      delete c.small;
  }
  return c;
}

/**
 * Adds the small image (`SMALL_REF`: one layer of 64 × 16 KiB text files in `opt/small/`, about 1 MiB) to the
 * corpus layout if it is not there yet, and records it in corpus.json. Separate from the main build so that a
 * cached corpus (and its debootstrap layer) is extended instead of rebuilt.
 */
async function ensureSmallImage(c: Corpus, statsFile: string): Promise<Corpus> {
  if (c.small) return c;
  const t0 = Date.now();
  const staging = path.join(path.dirname(c.layout), 'staging-small');
  await rm(staging, { recursive: true, force: true });
  const oldUmask = process.umask(0o022);
  try {
    const rng = new Rng(4);
    const n = 64;
    await mkdir(path.join(staging, 'opt', 'small'), { recursive: true });
    for (let i = 0; i < n; i++) {
      await writeFile(path.join(staging, 'opt', 'small', `f${pad(i)}.txt`), rng.text(SMALL_BYTES / n));
    }
    const layer = await tarLayer(c.layout, c.compressor, 'small', staging, {});
    const { digest: manifestDigest } = await writeImageManifest(c.layout, [layer], c.params, 'small');
    await addIndexEntry(c.layout, manifestDigest, SMALL_REF);
    const out: Corpus = { ...c, small: { ref: SMALL_REF, manifestDigest, layers: [layer] } };
    await writeFile(statsFile, JSON.stringify(out, null, 2) + '\n');
    log(`corpus: small image ${SMALL_REF} added (${secs(t0)})`);
    return out;
  } finally {
    process.umask(oldUmask);
    await rm(staging, { recursive: true, force: true });
  }
}

function secs(t0: number): string {
  return `${((Date.now() - t0) / 1000).toFixed(1)}s`;
}

// ---------------------------------------------------------------------------------------------
// Layer 1: the base rootfs

/**
 * The first http(s) URI of an enabled `deb` source serving `suite`, from /etc/apt/sources.list,
 * sources.list.d/*.list (one-line format) and sources.list.d/*.sources (deb822).
 */
export async function aptMirror(suite: string, etc = '/etc/apt'): Promise<string | undefined> {
  const files: string[] = [path.join(etc, 'sources.list')];
  const d = path.join(etc, 'sources.list.d');
  try {
    for (const n of (await readdir(d)).sort()) {
      if (n.endsWith('.list') || n.endsWith('.sources')) files.push(path.join(d, n));
    }
  } catch {
    // no sources.list.d
  }
  for (const f of files) {
    let text: string;
    try {
      text = await readFile(f, 'utf8');
    } catch {
      continue;
    }
    const uris = f.endsWith('.sources') ? parseDeb822(text, suite) : parseOneLine(text, suite);
    const hit = uris.find((u) => /^https?:\/\//.test(u));
    if (hit) return hit;
  }
  return undefined;
}

/** `deb [opt=val ...] URI SUITE COMPONENT...` lines. */
export function parseOneLine(text: string, suite: string): string[] {
  const out: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/.exec(line);
    if (m && m[2] === suite) out.push(m[1]!);
  }
  return out;
}

/** deb822 paragraphs: Types, URIs, Suites, Enabled (comments and continuation lines allowed). */
export function parseDeb822(text: string, suite: string): string[] {
  const out: string[] = [];
  for (const para of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    let last: string | undefined;
    for (const line of para.split('\n')) {
      if (line.startsWith('#') || line.trim() === '') continue;
      if (/^\s/.test(line) && last) {
        fields.set(last, `${fields.get(last) ?? ''} ${line.trim()}`);
        continue;
      }
      const m = /^([A-Za-z0-9-]+):\s*(.*)$/.exec(line);
      if (m) {
        last = m[1]!.toLowerCase();
        fields.set(last, m[2]!.trim());
      }
    }
    const words = (k: string) => (fields.get(k) ?? '').split(/\s+/).filter(Boolean);
    if ((fields.get('enabled') ?? 'yes').toLowerCase() === 'no') continue;
    if (!words('types').includes('deb') || !words('suites').includes(suite)) continue;
    out.push(...words('uris'));
  }
  return out;
}

/** The debootstrap minbase tree under `rootDir` (made once, then reused while `<dir>.done` exists). */
export async function debootstrapRootfs(rootDir: string): Promise<string> {
  const dir = path.join(rootDir, `${SUITE}-minbase`);
  if (existsSync(`${dir}.done`)) {
    log(`corpus: rootfs ${dir} cached`);
    return dir;
  }
  const debootstrap = await requireTool('debootstrap', 'debootstrap');
  if (process.getuid?.() !== 0) throw new BenchError('debootstrap needs root: run the benchmark as root');
  const mirror = process.env.STRATA_BENCH_MIRROR ?? (await aptMirror(SUITE));
  if (!mirror) {
    throw new BenchError(
      `no apt source serving "${SUITE}" found in /etc/apt; set STRATA_BENCH_MIRROR=http://…/debian`,
    );
  }
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  log(`corpus: debootstrap --variant=minbase ${SUITE} ${dir} ${mirror} (takes a few minutes)`);
  const t0 = Date.now();
  const logFile = path.join(rootDir, 'debootstrap.log');
  const out = await runToFile([debootstrap, '--variant=minbase', SUITE, dir, mirror], logFile);
  if (out !== 0) {
    const tail = (await readFile(logFile, 'utf8')).trimEnd().split('\n').slice(-20).join('\n');
    throw new BenchError(`debootstrap failed (exit ${out}); log: ${logFile}`, tail);
  }
  await writeFile(`${dir}.done`, '');
  log(`corpus: debootstrap done (${secs(t0)})`);
  return dir;
}

function runToFile(argv: string[], file: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const out = createWriteStream(file);
    out.on('open', () => {
      const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', out, out] });
      child.on('error', reject);
      child.on('close', (code) => {
        out.end();
        resolve(code ?? 1);
      });
    });
    out.on('error', reject);
  });
}

/** --quick: a small deterministic tree shaped like a Debian rootfs (about 6 MiB). */
async function generatedRootfs(dir: string): Promise<string> {
  const rng = new Rng(1);
  const put = async (rel: string, data: string | Buffer, mode = 0o644) => {
    const f = path.join(dir, rel);
    await mkdir(path.dirname(f), { recursive: true });
    await writeFile(f, data);
    await chmod(f, mode);
  };
  for (const d of ['dev', 'proc', 'sys', 'tmp', 'root', 'home', 'var/log', 'var/cache/apt']) {
    await mkdir(path.join(dir, d), { recursive: true });
  }
  await put('etc/hostname', 'debian\n');
  await put('etc/motd', 'The programs included with the Debian GNU/Linux system are free software.\n');
  await put('etc/issue.net', 'Debian GNU/Linux 12\n');
  await put(
    'etc/passwd',
    'root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n',
  );
  await put('etc/group', 'root:x:0:\nnogroup:x:65534:\n');
  await put('etc/apt/sources.list.d/debian.sources', 'Types: deb\nURIs: http://deb.debian.org/debian\n');
  for (let i = 0; i < 24; i++) await put(`usr/bin/tool${i}`, rng.bytes(8_000 + rng.int(150_000)), 0o755);
  for (let i = 0; i < 8; i++)
    await put(`usr/lib/x86_64-linux-gnu/lib${i}.so.1`, rng.bytes(100_000 + rng.int(300_000)));
  for (let i = 0; i < 60; i++) await put(`usr/share/doc/pkg${i}/copyright`, rng.text(500 + rng.int(4_000)));
  for (let i = 0; i < 40; i++) await put(`usr/share/info/topic${i}.info.gz`, rng.bytes(200 + rng.int(3_000)));
  for (let i = 0; i < 200; i++)
    await put(`usr/share/locale/l${i % 20}/LC_MESSAGES/m${i}.mo`, rng.text(300 + rng.int(3_000)));
  await put('var/lib/dpkg/status', rng.text(400_000));
  return dir;
}

// ---------------------------------------------------------------------------------------------
// Layers 2–4: generated content

/** Deterministic PRNG (xorshift128+ style, 32-bit lanes) — stable across Node versions. */
class Rng {
  private s: Uint32Array;
  constructor(seed: number) {
    this.s = new Uint32Array([seed ^ 0x9e3779b9, 0x243f6a88, 0x85a308d3, 0x13198a2e]);
    for (let i = 0; i < 16; i++) this.next();
  }
  /** Next 32-bit unsigned value (xoshiro128**). */
  next(): number {
    const s = this.s;
    let [a, b, c, d] = [s[0]!, s[1]!, s[2]!, s[3]!];
    const r = Math.imul(rotl(Math.imul(b, 5) >>> 0, 7), 9) >>> 0;
    const t = (b << 9) >>> 0;
    c ^= a;
    d ^= b;
    b ^= c;
    a ^= d;
    c ^= t;
    d = rotl(d >>> 0, 11);
    s[0] = a;
    s[1] = b;
    s[2] = c;
    s[3] = d;
    return r;
  }
  int(n: number): number {
    return this.next() % n;
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i += 4) {
      const v = this.next();
      b[i] = v & 0xff;
      if (i + 1 < n) b[i + 1] = (v >>> 8) & 0xff;
      if (i + 2 < n) b[i + 2] = (v >>> 16) & 0xff;
      if (i + 3 < n) b[i + 3] = v >>> 24;
    }
    return b;
  }
  private vocab: string[] | undefined;
  /** Text-like content: words from a 400-word vocabulary in lines (compresses ~3x, like source/config). */
  text(n: number): string {
    if (!this.vocab) {
      const letters = 'abcdefghijklmnopqrstuvwxyz_';
      this.vocab = Array.from({ length: 400 }, () =>
        Array.from({ length: 2 + this.int(9) }, () => letters[this.int(letters.length)]).join(''),
      );
    }
    let s = '';
    while (s.length < n) {
      const words = 3 + this.int(10);
      for (let w = 0; w < words; w++) s += (w ? ' ' : '') + this.vocab[this.int(this.vocab.length)];
      s += '\n';
    }
    return s.slice(0, n);
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** Layout of the small files: D dirs × S subdirs × F files. */
function smallFileShape(n: number): [number, number, number] {
  return n >= 20_000 ? [20, 20, n / 400] : [10, 10, Math.max(1, Math.round(n / 100))];
}

/** Writes `n` files of 100 B – 4 KiB under DIR/opt/app/dNN/sNN/fNNN.txt; returns their relative paths. */
async function writeSmallFiles(dir: string, n: number): Promise<string[]> {
  const rng = new Rng(2);
  const [D, S, F] = smallFileShape(n);
  const paths: string[] = [];
  for (let d = 0; d < D; d++) {
    for (let s = 0; s < S; s++) {
      const sub = `opt/app/d${pad(d)}/s${pad(s)}`;
      await mkdir(path.join(dir, sub), { recursive: true });
      const writes: Promise<void>[] = [];
      for (let f = 0; f < F; f++) {
        const rel = `${sub}/f${pad(f, 3)}.txt`;
        paths.push(rel);
        const size = 100 + rng.int(4096 - 100 + 1);
        const head = `# ${rel}\n`;
        writes.push(writeFile(path.join(dir, rel), head + rng.text(Math.max(0, size - head.length))));
      }
      await Promise.all(writes);
    }
  }
  return paths;
}

function pad(n: number, w = 2): string {
  return String(n).padStart(w, '0');
}

/**
 * Layer 3: deletes some layer-1 paths (a directory and files that exist in the rootfs) and ~2.5 % of
 * the layer-2 files plus one whole layer-2 directory (`.wh.NAME`, empty regular files); makes one
 * layer-2 directory opaque (`.wh..wh..opq`) and refills it with 10 new files; adds/overrides a file.
 */
async function writeChanges(dir: string, rootfs: string, appPaths: string[]): Promise<void> {
  const rng = new Rng(3);
  const put = async (rel: string, data: string) => {
    const f = path.join(dir, rel);
    await mkdir(path.dirname(f), { recursive: true });
    await writeFile(f, data);
  };
  const whiteout = (rel: string) => put(path.join(path.dirname(rel), `.wh.${path.basename(rel)}`), '');

  // Layer-1 deletions: whichever of these the rootfs has (a debootstrap minbase has them all).
  const baseCandidates = ['usr/share/doc', 'usr/share/info', 'etc/motd', 'etc/issue.net'];
  let baseDeleted = 0;
  for (const rel of baseCandidates) {
    if (await exists(path.join(rootfs, rel))) {
      await whiteout(rel);
      baseDeleted++;
    }
  }
  if (baseDeleted === 0) throw new BenchError(`rootfs ${rootfs} has none of ${baseCandidates.join(', ')}`);

  // Layer-2 deletions: every 40th file, and the last subdirectory as a whole.
  const dirs = [...new Set(appPaths.map((p) => path.dirname(p)))].sort();
  const goneDir = dirs[dirs.length - 1]!;
  const opaqueDir = dirs[Math.min(dirs.length - 2, 11)]!;
  await whiteout(goneDir);
  for (let i = 7; i < appPaths.length; i += 40) {
    const p = appPaths[i]!;
    if (p.startsWith(goneDir + '/') || p.startsWith(opaqueDir + '/')) continue;
    await whiteout(p);
  }
  // Opaque directory, refilled with new content.
  await put(`${opaqueDir}/.wh..wh..opq`, '');
  for (let i = 0; i < 10; i++) await put(`${opaqueDir}/new${pad(i)}.txt`, rng.text(200 + rng.int(3_000)));
  // Plain additions / overrides.
  await put('etc/app.conf', rng.text(1_500));
  await put('etc/hostname', 'strata-bench\n');
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

/** Layer 4: `size` incompressible bytes — the aes-256-ctr keystream of a fixed key (fast, deterministic). */
async function writeRandomFile(file: string, size: number): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const key = createHash('sha256').update('strata-bench-blob').digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  const zeros = Buffer.alloc(1 << 20);
  async function* keystream() {
    for (let left = size; left > 0; left -= zeros.length) {
      yield cipher.update(left >= zeros.length ? zeros : zeros.subarray(0, left));
    }
  }
  await pipeline(keystream, createWriteStream(file));
}

// ---------------------------------------------------------------------------------------------
// tar | gzip with streaming hashes; image config, manifest, index

interface TarOpts {
  /** Keep the files' numeric owners (real OS tree) instead of forcing 0:0. */
  keepOwners?: boolean;
  /** Anchored patterns of members to leave out (their parent directory stays). */
  exclude?: string[];
}

function hashingTap(h: ReturnType<typeof createHash>, count: { n: number }): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      h.update(chunk);
      count.n += chunk.length;
      cb(null, chunk);
    },
  });
}

function exited(child: ReturnType<typeof spawn>, what: string, stderr: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0
        ? resolve()
        : reject(new BenchError(`${what} failed (exit ${code})`, stderr.join('').slice(-4000))),
    );
  });
}

/** tar DIR's content (members without "./") | pigz → blob in the layout; returns sizes and digests. */
async function tarLayer(
  layout: string,
  compressor: string,
  name: string,
  dir: string,
  opts: TarOpts,
): Promise<LayerStat> {
  const members = await sortedEntries(dir);
  const args = ['--sort=name', '--numeric-owner', '--mtime=@0', '--format=gnu'];
  if (!opts.keepOwners) args.push('--owner=0', '--group=0');
  if (opts.exclude?.length) args.push('--anchored', ...opts.exclude.map((p) => `--exclude=${p}`));
  args.push('-cf', '-', '-C', dir, ...members);

  const tarErr: string[] = [];
  const gzErr: string[] = [];
  const tar = spawn('tar', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const gz = spawn(compressor, ['-6', '-n', '-c'], { stdio: ['pipe', 'pipe', 'pipe'] });
  tar.stderr.on('data', (b: Buffer) => tarErr.push(b.toString()));
  gz.stderr.on('data', (b: Buffer) => gzErr.push(b.toString()));

  const uh = createHash('sha256');
  const zh = createHash('sha256');
  const usize = { n: 0 };
  const zsize = { n: 0 };
  const tmp = path.join(layout, 'blobs', 'sha256', `.tmp-${name}`);
  await Promise.all([
    pipeline(tar.stdout, hashingTap(uh, usize), gz.stdin),
    pipeline(gz.stdout, hashingTap(zh, zsize), createWriteStream(tmp)),
    exited(tar, `tar of layer ${name}`, tarErr),
    exited(gz, `${compressor} of layer ${name}`, gzErr),
  ]);
  const digest = zh.digest('hex');
  await rename(tmp, path.join(layout, 'blobs', 'sha256', digest));
  const counts = await countMembers(dir, opts.exclude ?? []);
  return {
    name,
    digest: `sha256:${digest}`,
    diffId: `sha256:${uh.digest('hex')}`,
    size: zsize.n,
    uncompressedSize: usize.n,
    files: counts.files,
    whiteouts: counts.whiteouts,
  };
}

/** Regular files and whiteout markers that the tar holds (same exclusions as tar's --anchored globs). */
async function countMembers(dir: string, exclude: string[]): Promise<{ files: number; whiteouts: number }> {
  const res = exclude.map(
    (g) =>
      new RegExp(
        '^' +
          g
            .replace(/[.+^${}()|[\]\\]/g, '\\$&')
            .replace(/\*/g, '.*')
            .replace(/\?/g, '.') +
          '$',
      ),
  );
  let files = 0;
  let whiteouts = 0;
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const rel = path.relative(dir, path.join(e.parentPath, e.name));
    if (res.some((r) => r.test(rel))) continue;
    if (e.name.startsWith('.wh.')) whiteouts++;
    else files++;
  }
  return { files, whiteouts };
}

async function putJson(layout: string, obj: unknown): Promise<{ digest: string; size: number }> {
  const data = Buffer.from(JSON.stringify(obj));
  const hex = createHash('sha256').update(data).digest('hex');
  await writeFile(path.join(layout, 'blobs', 'sha256', hex), data);
  return { digest: `sha256:${hex}`, size: data.length };
}

function ociArch(): string {
  const a = os.arch();
  return a === 'x64' ? 'amd64' : a;
}

const HISTORY: Record<string, string> = {
  base: `debootstrap --variant=minbase ${SUITE} (bench base layer)`,
  files: 'COPY app/ /opt/app/ # bench: small files',
  changes: 'RUN rm -rf … && rewrite /opt/app/… # bench: whiteouts and an opaque directory',
  blob: 'COPY random.bin /opt/blob/ # bench: incompressible blob',
  small: 'COPY small/ /opt/small/ # bench: the small image (1 MiB)',
};

/** Config and manifest blobs of an image made of `layers`; returns the manifest descriptor. */
async function writeImageManifest(
  layout: string,
  layers: LayerStat[],
  params: CorpusParams,
  label: string,
): Promise<{ digest: string; size: number }> {
  const config = {
    created: CREATED,
    architecture: ociArch(),
    os: 'linux',
    config: {
      Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      Cmd: ['/bin/bash'],
      WorkingDir: '/',
      Labels: { 'org.strata.bench.corpus': label },
    },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: layers.map((l) => ({
      created: CREATED,
      created_by:
        l.name === 'base' && params.quick ? 'generated rootfs (bench --quick)' : (HISTORY[l.name] ?? l.name),
    })),
  };
  const configDesc = await putJson(layout, config);
  const manifest = {
    schemaVersion: 2,
    mediaType: MT_MANIFEST,
    config: { mediaType: MT_CONFIG, ...configDesc },
    layers: layers.map((l) => ({ mediaType: MT_LAYER, digest: l.digest, size: l.size })),
  };
  return putJson(layout, manifest);
}

/** Adds (or replaces) the index.json entry naming `ref`. */
async function addIndexEntry(layout: string, manifestDigest: string, ref: string): Promise<void> {
  const file = path.join(layout, 'index.json');
  const index = JSON.parse(await readFile(file, 'utf8')) as {
    manifests: { annotations?: Record<string, string> }[];
  };
  const data = await readFile(path.join(layout, 'blobs', 'sha256', manifestDigest.replace(/^sha256:/, '')));
  index.manifests = index.manifests.filter(
    (m) => m.annotations?.['org.opencontainers.image.ref.name'] !== ref,
  );
  index.manifests.push({
    mediaType: MT_MANIFEST,
    digest: manifestDigest,
    size: data.length,
    annotations: { 'org.opencontainers.image.ref.name': ref },
  } as (typeof index.manifests)[number]);
  await writeFile(file, JSON.stringify(index, null, 1) + '\n');
}

async function writeImage(layout: string, layers: LayerStat[], params: CorpusParams): Promise<string> {
  const manifestDesc = await writeImageManifest(layout, layers, params, params.quick ? 'quick' : 'full');
  await writeFile(path.join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const index = {
    schemaVersion: 2,
    mediaType: MT_INDEX,
    manifests: [
      {
        mediaType: MT_MANIFEST,
        ...manifestDesc,
        annotations: { 'org.opencontainers.image.ref.name': CORPUS_REF },
      },
    ],
  };
  await writeFile(path.join(layout, 'index.json'), JSON.stringify(index, null, 1) + '\n');
  return manifestDesc.digest;
}
