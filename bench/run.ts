/**
 * `npm run bench`: Strata's CLI against skopeo on the same image and the same local registry,
 * alternating the two run by run in this one process; reports medians, ratios and peak RSS.
 * Not a test: it fails only when a command fails. See bench/README.md.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { buildCorpus, type Corpus } from './corpus.js';
import { CountingProxy, type ProxyCounts } from './proxy.js';
import { killAllSync, Registry, stopAll } from './registry.js';
import {
  BenchError,
  fmtBytes,
  killRunningSync,
  log,
  median,
  MiB,
  requireTool,
  run,
  runCapture,
} from './util.js';

// ---------------------------------------------------------------------------------------------
// Targets (what we aim for; the table says whether each was met)

/** strata median / skopeo median must not exceed this, unless a scenario sets its own (issue 2's targets). */
const RATIO_TARGET = 1.0;
/** Pull must beat skopeo by this much. */
const PULL_RATIO_TARGET = 0.9;
/** Peak RSS must stay under this whatever the layer size (the corpus has a 256 MiB layer). */
const RSS_TARGET_MIB = 150;
/** A re-push of an unchanged image must take no longer than this, whole process. */
const REPUSH_SECONDS_TARGET = 0.1;

// ---------------------------------------------------------------------------------------------
// Arguments

const USAGE = `usage: npm run bench -- [options]     (or: node dist/bench/run.js [options])

  --runs N          timed runs per side and scenario (default 5, env STRATA_BENCH_RUNS); +1 warm-up
  --quick           small corpus (2,000 files, 32 MiB blob, generated rootfs: no debootstrap)
  --only LIST       comma-separated scenarios: startup,pull,push-new,push-cold,repush (default: all)
  --corpus-only     build (or find cached) the corpus, print its sizes, and stop
  --timeout S       a command running longer than S seconds fails the bench (default 600)
  --strata-cmd CMD  developer override of "node bin/strata.js" (a command prefix); the value
                    "skopeo" runs skopeo on the strata side too (harness self-test)
  -h, --help

Work dir: STRATA_BENCH_WORK, default <repo>/.bench-work (results in WORK/results.md).
Debian mirror for debootstrap: from /etc/apt sources, or STRATA_BENCH_MIRROR.`;

const SCENARIO_IDS = ['startup', 'pull', 'push-new', 'push-cold', 'repush'] as const;
type ScenarioId = (typeof SCENARIO_IDS)[number];

interface Args {
  runs: number;
  quick: boolean;
  only: Set<ScenarioId>;
  corpusOnly: boolean;
  strataCmd: string | undefined;
  work: string;
  root: string;
}

function repoRoot(): string {
  let d = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(d, 'package.json'))) {
    const up = path.dirname(d);
    if (up === d) throw new BenchError('cannot find the repository root (package.json)');
    d = up;
  }
  return d;
}

function parse(argv: string[]): Args {
  const { values } = parseArgs({
    args: argv,
    options: {
      runs: { type: 'string' },
      quick: { type: 'boolean', default: false },
      only: { type: 'string' },
      'corpus-only': { type: 'boolean', default: false },
      'strata-cmd': { type: 'string' },
      timeout: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    process.exit(0);
  }
  const runsRaw = values.runs ?? process.env.STRATA_BENCH_RUNS ?? '5';
  const runs = Number(runsRaw);
  if (!Number.isInteger(runs) || runs < 1)
    throw new BenchError(`--runs must be a positive integer, got "${runsRaw}"`);
  const only = new Set<ScenarioId>();
  for (const s of (values.only ?? SCENARIO_IDS.join(',')).split(',').filter(Boolean)) {
    if (!(SCENARIO_IDS as readonly string[]).includes(s)) {
      throw new BenchError(`unknown scenario "${s}" (known: ${SCENARIO_IDS.join(', ')})`);
    }
    only.add(s as ScenarioId);
  }
  const timeoutS = Number(values.timeout ?? '600');
  if (!(timeoutS > 0))
    throw new BenchError(`--timeout must be a positive number of seconds, got "${values.timeout}"`);
  timeoutMs = timeoutS * 1000;
  const root = repoRoot();
  return {
    runs,
    quick: values.quick ?? false,
    only,
    corpusOnly: values['corpus-only'] ?? false,
    strataCmd: values['strata-cmd'],
    work: path.resolve(process.env.STRATA_BENCH_WORK ?? path.join(root, '.bench-work')),
    root,
  };
}

// ---------------------------------------------------------------------------------------------
// The two sides

type Side = 'strata' | 'skopeo';

/** How the strata side is invoked: the real CLI, or (developer override) another command. */
interface StrataCli {
  describe: string;
  version(): string[];
  pull(store: string, ref: string): string[];
  push(store: string, src: string, dst: string): string[];
}

function strataCli(args: Args): StrataCli {
  if (args.strataCmd === 'skopeo') {
    // Harness self-test: "store" is an OCI layout, the local ref is its tag "bench".
    return {
      describe: 'skopeo (self-test: --strata-cmd skopeo — NOT strata)',
      version: () => ['skopeo', '--version'],
      pull: (store, ref) => [
        'skopeo',
        'copy',
        '--src-tls-verify=false',
        `docker://${ref}`,
        `oci:${store}:bench`,
      ],
      push: (store, _src, dst) => [
        'skopeo',
        'copy',
        '--dest-tls-verify=false',
        `oci:${store}:bench`,
        `docker://${dst}`,
      ],
    };
  }
  const prefix = args.strataCmd
    ? args.strataCmd.split(/\s+/).filter(Boolean)
    : [process.execPath, path.join(args.root, 'bin', 'strata.js')];
  return {
    describe: args.strataCmd ? `${args.strataCmd} (override)` : 'node bin/strata.js',
    version: () => [...prefix, '--version'],
    pull: (store, ref) => [...prefix, '--store', store, 'pull', ref],
    push: (store, src, dst) => [...prefix, '--store', store, 'push', src, dst],
  };
}

const SKOPEO = {
  pull: (ref: string, layout: string) => [
    'skopeo',
    'copy',
    '--src-tls-verify=false',
    `docker://${ref}`,
    `oci:${layout}:bench`,
  ],
  push: (layout: string, dst: string) => [
    'skopeo',
    'copy',
    '--dest-tls-verify=false',
    `oci:${layout}:bench`,
    `docker://${dst}`,
  ],
};

// ---------------------------------------------------------------------------------------------
// Timing one command: wall time from here, peak RSS from GNU time

interface Sample {
  seconds: number;
  rssKiB: number;
}

let timeBin = '/usr/bin/time';
let timeoutMs = 600_000;

async function timed(argv: string[], label: string, tmpDir: string): Promise<Sample> {
  const tfile = path.join(tmpDir, `time-${process.pid}.txt`);
  await rm(tfile, { force: true });
  const t0 = process.hrtime.bigint();
  const r = await runCapture([timeBin, '-f', '%e %M', '-o', tfile, ...argv], { timeoutMs });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const tout = await readFile(tfile, 'utf8').catch(() => '');
  if (r.code !== 0 || r.timedOut) {
    const why = r.timedOut ? `timed out after ${timeoutMs / 1000} s` : `exit ${r.code}`;
    throw new BenchError(`${label} failed (${why}): ${argv.join(' ')}`, r.tail.text(40));
  }
  const last = tout.trim().split('\n').pop() ?? '';
  const m = /^([\d.]+) (\d+)$/.exec(last);
  if (!m) throw new BenchError(`cannot parse GNU time output for ${label}: "${tout.trim()}"`);
  return { seconds, rssKiB: Number(m[2]) };
}

// ---------------------------------------------------------------------------------------------
// Scenarios

interface Scenario {
  id: ScenarioId;
  title: string;
  target: string;
  /** Which targets apply besides the ratio. */
  checks: {
    rss?: boolean;
    zeroBlobBytes?: boolean;
    informational?: boolean;
    ratio?: number;
    seconds?: number;
  };
  /** Once before the warm-up. */
  setup?(): Promise<void>;
  /** Before each run, untimed (e.g. a fresh destination, a wiped registry). */
  before?(side: Side, i: number): Promise<void>;
  cmd(side: Side, i: number): string[];
  /** After each run, untimed: checks that the command really did its job (an exit 0 is not enough). */
  verify?(side: Side, i: number): Promise<void>;
  /** After each run, untimed; may return byte counts (sent through the proxy, or stored). */
  after?(side: Side, i: number): Promise<ByteCount | undefined>;
  teardown?(): Promise<void>;
}

/** Blob bytes a run moved: `sent` through the counting proxy, or `stored` by an empty registry. */
interface ByteCount {
  how: 'sent' | 'stored';
  blobBytes: number;
  proxy?: ProxyCounts;
}

interface ScenarioResult {
  scenario: Scenario;
  samples: Record<Side, Sample[]>;
  counts: Record<Side, ByteCount[]>;
}

async function runScenario(sc: Scenario, runs: number, tmpDir: string): Promise<ScenarioResult> {
  const res: ScenarioResult = {
    scenario: sc,
    samples: { strata: [], skopeo: [] },
    counts: { strata: [], skopeo: [] },
  };
  log(`scenario ${sc.id}: ${sc.title} — 1 warm-up + ${runs} runs per side, alternating`);
  await sc.setup?.();
  for (let i = 0; i <= runs; i++) {
    // Alternate which side goes first, so neither always runs right after the other.
    const order: Side[] = i % 2 === 0 ? ['strata', 'skopeo'] : ['skopeo', 'strata'];
    for (const side of order) {
      await sc.before?.(side, i);
      const label = `${sc.id} ${side} run ${i}`;
      const s = await timed(sc.cmd(side, i), label, tmpDir);
      await sc.verify?.(side, i).catch((err: unknown) => {
        throw new BenchError(
          `${label}: exit 0 but wrong result: ${(err as Error).message}`,
          sc.cmd(side, i).join(' '),
        );
      });
      const c = await sc.after?.(side, i);
      await run(['sync']);
      const tag = i === 0 ? 'warm-up' : `run ${i}/${runs}`;
      log(
        `  ${sc.id} ${side.padEnd(6)} ${tag}: ${s.seconds.toFixed(3)} s, ${(s.rssKiB / 1024).toFixed(0)} MiB RSS` +
          (c ? `, blob bytes ${c.how} ${c.blobBytes}` : ''),
      );
      if (i === 0) continue;
      res.samples[side].push(s);
      if (c) res.counts[side].push(c);
    }
  }
  await sc.teardown?.();
  return res;
}

/** Checks that an OCI image layout (a skopeo destination or a strata store) holds the corpus image. */
async function verifyLayout(dir: string, corpus: Corpus): Promise<void> {
  let index: { manifests?: { digest?: string }[] };
  try {
    index = JSON.parse(await readFile(path.join(dir, 'index.json'), 'utf8')) as typeof index;
  } catch (err) {
    throw new Error(`no readable index.json in ${dir} (${(err as Error).message})`);
  }
  if (!index.manifests?.some((m) => m.digest === corpus.manifestDigest)) {
    throw new Error(`index.json of ${dir} does not list manifest ${corpus.manifestDigest}`);
  }
  for (const l of corpus.layers) {
    const blob = path.join(dir, 'blobs', 'sha256', l.digest.slice('sha256:'.length));
    const size = await stat(blob).then(
      (st) => st.size,
      () => -1,
    );
    if (size !== l.size) throw new Error(`layer ${l.name} blob ${blob}: size ${size}, want ${l.size}`);
  }
}

/** Checks that REPO:1 on a registry resolves to the corpus manifest digest. */
async function verifyPushed(host: string, repo: string, corpus: Corpus): Promise<void> {
  const url = `http://${host}/v2/${repo}/manifests/1`;
  const r = await fetch(url, {
    method: 'HEAD',
    headers: {
      accept:
        'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json',
    },
    signal: AbortSignal.timeout(10_000),
  });
  const digest = r.headers.get('docker-content-digest');
  if (r.status !== 200) throw new Error(`HEAD ${url}: HTTP ${r.status}`);
  if (digest !== corpus.manifestDigest)
    throw new Error(`${url} is ${digest}, want ${corpus.manifestDigest} (digest not preserved)`);
}

/** Bytes of the blobs a docker-registry stores (its data/…/blobs/ tree: layers and configs). */
async function storedBlobBytes(dataDir: string): Promise<number> {
  const root = path.join(dataDir, 'docker', 'registry', 'v2', 'blobs');
  let total = 0;
  let entries;
  try {
    entries = await readdir(root, { recursive: true, withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) {
    if (e.isFile() && e.name === 'data') total += (await stat(path.join(e.parentPath, e.name))).size;
  }
  return total;
}

// ---------------------------------------------------------------------------------------------
// Report

function rssMiB(samples: Sample[]): number {
  return Math.max(...samples.map((s) => s.rssKiB)) / 1024;
}

function resultRow(r: ScenarioResult): string {
  const sm = median(r.samples.strata.map((s) => s.seconds));
  const km = median(r.samples.skopeo.map((s) => s.seconds));
  const ratio = sm / km;
  const srss = rssMiB(r.samples.strata);
  const krss = rssMiB(r.samples.skopeo);
  const blob = r.counts.strata.length ? Math.max(...r.counts.strata.map((c) => c.blobBytes)) : 0;
  const { rss, zeroBlobBytes, informational, seconds } = r.scenario.checks;
  const ratioOk = seconds !== undefined || ratio <= (r.scenario.checks.ratio ?? RATIO_TARGET);
  const met =
    ratioOk &&
    (!rss || srss <= RSS_TARGET_MIB) &&
    (!zeroBlobBytes || blob === 0) &&
    (seconds === undefined || sm <= seconds);
  const verdict = informational ? '' : met ? ' — met' : ' — **missed**';
  return `| ${r.scenario.title} | ${sm.toFixed(3)} | ${km.toFixed(3)} | ${ratio.toFixed(2)} | ${srss.toFixed(0)} | ${krss.toFixed(0)} | ${r.scenario.target}${verdict} |`;
}

function detailRows(r: ScenarioResult): string[] {
  const rows: string[] = [];
  for (const side of ['strata', 'skopeo'] as const) {
    const xs = r.samples[side].map((s) => s.seconds);
    const counts = r.counts[side];
    let bytes = '';
    if (counts.length) {
      const last = counts[counts.length - 1]!;
      const lo = Math.min(...counts.map((c) => c.blobBytes));
      const hi = Math.max(...counts.map((c) => c.blobBytes));
      bytes = `blob bytes ${last.how}: ${lo === hi ? hi : `${lo}–${hi}`}`;
      if (last.proxy) {
        const reqs = Object.entries(last.proxy.requests)
          .sort()
          .map(([k, v]) => `${k}×${v}`)
          .join(', ');
        bytes += `; manifest bytes ${last.proxy.manifestBytes}; requests (last run): ${reqs}`;
      }
    }
    rows.push(
      `| ${r.scenario.title} | ${side} | ${xs.map((x) => x.toFixed(3)).join(' ')} | ${Math.min(...xs).toFixed(3)} | ${Math.max(...xs).toFixed(3)} | ${bytes} |`,
    );
  }
  return rows;
}

function corpusTable(c: Corpus): string[] {
  const rows = [
    '| layer | regular files | whiteout markers | compressed | uncompressed | digest |',
    '|---|---:|---:|---:|---:|---|',
  ];
  let z = 0;
  let u = 0;
  c.layers.forEach((l, i) => {
    z += l.size;
    u += l.uncompressedSize;
    rows.push(
      `| ${i + 1} ${l.name} | ${l.files} | ${l.whiteouts} | ${fmtBytes(l.size)} | ${fmtBytes(l.uncompressedSize)} | \`${l.digest.slice(0, 19)}…\` |`,
    );
  });
  rows.push(`| total | | | ${fmtBytes(z)} | ${fmtBytes(u)} | |`);
  return rows;
}

async function machineFacts(args: Args, cli: StrataCli, c: Corpus): Promise<string[]> {
  const firstLine = async (argv: string[]) => {
    const r = await runCapture(argv).catch(() => undefined);
    return r && r.code === 0 ? r.tail.text(1).trim() : 'unknown';
  };
  const commit = await firstLine(['git', '-C', args.root, 'rev-parse', '--short', 'HEAD']);
  const st = await runCapture([
    'git',
    '-C',
    args.root,
    'status',
    '--porcelain',
    '--untracked-files=no',
  ]).catch(() => undefined);
  const dirty = st !== undefined && st.code === 0 && st.tail.text(1).trim() !== '';
  return [
    `- date: ${new Date().toISOString()}`,
    `- machine: ${os.availableParallelism()} CPUs (nproc), ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${(os.totalmem() / 1024 / MiB).toFixed(1)} GiB RAM, Linux ${os.release()}`,
    `- node ${process.version}; ${await firstLine(['skopeo', '--version'])}; ${await firstLine(['/usr/bin/docker-registry', '--version'])}`,
    `- strata: ${cli.describe}, commit ${commit}${dirty ? ' (with uncommitted changes)' : ''}`,
    `- runs: 1 warm-up + ${args.runs} timed per side, alternating; corpus: ${c.params.quick ? '**quick** (smoke run, not representative)' : 'full'}, rootfs ${c.params.rootfs}, compressed with ${c.compressor}`,
    `- work dir: ${args.work}`,
  ];
}

// ---------------------------------------------------------------------------------------------
// Main

let cleanup: (() => Promise<void>) | undefined;

async function main(): Promise<void> {
  const args = parse(process.argv.slice(2));
  await mkdir(args.work, { recursive: true });
  const corpus = await buildCorpus({ work: args.work, quick: args.quick });
  if (args.corpusOnly) {
    process.stdout.write(corpusTable(corpus).join('\n') + '\n');
    return;
  }

  await requireTool('skopeo', 'skopeo');
  await requireTool('/usr/bin/docker-registry', 'docker-registry');
  timeBin = await requireTool('/usr/bin/time', 'time');
  const cli = strataCli(args);
  if (!args.strataCmd && !existsSync(path.join(args.root, 'dist', 'src', 'cli', 'main.js'))) {
    throw new BenchError(
      'strata CLI not built: dist/src/cli/main.js is missing (npm run build; is src/cli/main.ts there?)',
    );
  }

  const tmpDir = path.join(args.work, 'tmp');
  await rm(tmpDir, { recursive: true, force: true });
  await mkdir(tmpDir, { recursive: true });
  let proxy: CountingProxy | undefined;
  cleanup = async () => {
    await proxy?.stop();
    await stopAll();
    await rm(tmpDir, { recursive: true, force: true });
  };

  // The registry every scenario reads from, on fresh storage so that runs do not inherit state.
  const reg = await Registry.start(path.join(args.work, 'registry'), { fresh: true });
  log(`registry: docker-registry on ${reg.host}`);
  await reg.seed(corpus.layout, corpus.ref, 'bench/app:1');
  const srcRef = `${reg.host}/bench/app:1`;

  const store = path.join(args.work, 'strata-store');
  const layout = path.join(args.work, 'skopeo-layout');
  const needsPushState = [...args.only].some((s) => s !== 'pull');
  if (needsPushState) {
    // Once: the image in a persistent strata store and in a skopeo OCI layout (push sources).
    await rm(store, { recursive: true, force: true });
    await rm(layout, { recursive: true, force: true });
    await mkdir(store, { recursive: true });
    log(`prepare: strata pull into ${store}; skopeo copy into ${layout}`);
    await timed(cli.pull(store, srcRef), 'prepare strata pull', tmpDir);
    await timed(SKOPEO.pull(srcRef, layout), 'prepare skopeo pull', tmpDir);
    for (const [who, dir] of [
      ['strata', store],
      ['skopeo', layout],
    ] as const) {
      await verifyLayout(dir, corpus).catch((err: unknown) => {
        throw new BenchError(`prepare ${who} pull: exit 0 but wrong result: ${(err as Error).message}`);
      });
    }
  }

  const scenarios: Scenario[] = [];
  if (args.only.has('startup')) {
    scenarios.push({
      id: 'startup',
      title: 'startup (`--version`, no I/O)',
      target: 'informational: the fixed cost in every row below',
      checks: { informational: true },
      cmd: (side) => (side === 'strata' ? cli.version() : ['skopeo', '--version']),
    });
  }
  if (args.only.has('pull')) {
    const dirs = new Map<string, string>();
    const key = (side: Side, i: number) => `${side}-${i}`;
    scenarios.push({
      id: 'pull',
      title: 'pull (fresh destination)',
      target: `≤ ${PULL_RATIO_TARGET.toFixed(2)}× skopeo, RSS ≤ ${RSS_TARGET_MIB} MiB`,
      checks: { rss: true, ratio: PULL_RATIO_TARGET },
      before: async (side, i) =>
        void dirs.set(key(side, i), await mkdtemp(path.join(tmpDir, `pull-${side}-${i}-`))),
      cmd: (side, i) => {
        const dir = dirs.get(key(side, i))!;
        return side === 'strata' ? cli.pull(dir, srcRef) : SKOPEO.pull(srcRef, dir);
      },
      verify: (side, i) => verifyLayout(dirs.get(key(side, i))!, corpus),
      after: async (side, i) => {
        await rm(dirs.get(key(side, i))!, { recursive: true, force: true });
        dirs.delete(key(side, i));
        return undefined;
      },
    });
  }
  if (args.only.has('push-new')) {
    scenarios.push({
      id: 'push-new',
      title: 'push to an empty repository (same registry)',
      target: `≤ ${RATIO_TARGET.toFixed(2)}× skopeo (cross-repo mount allowed)`,
      checks: {},
      cmd: (side, i) =>
        side === 'strata'
          ? cli.push(store, srcRef, `${reg.host}/push-strata-${i}:1`)
          : SKOPEO.push(layout, `${reg.host}/push-skopeo-${i}:1`),
      verify: (side, i) => verifyPushed(reg.host, `push-${side}-${i}`, corpus),
    });
  }
  if (args.only.has('push-cold')) {
    let cold: Registry | undefined;
    scenarios.push({
      id: 'push-cold',
      title: 'push (cold registry: every blob uploaded)',
      target: `≤ ${RATIO_TARGET.toFixed(2)}× skopeo, RSS ≤ ${RSS_TARGET_MIB} MiB`,
      checks: { rss: true },
      setup: async () => {
        cold = await Registry.start(path.join(args.work, 'registry-cold'), { fresh: true });
        log(`registry: cold docker-registry on ${cold.host} (wiped before every run)`);
      },
      before: async () => cold!.wipe(),
      cmd: (side, i) =>
        side === 'strata'
          ? cli.push(store, srcRef, `${cold!.host}/push-strata-${i}:1`)
          : SKOPEO.push(layout, `${cold!.host}/push-skopeo-${i}:1`),
      verify: (side, i) => verifyPushed(cold!.host, `push-${side}-${i}`, corpus),
      // The registry started empty: what it now stores is what was uploaded (proof of a real upload).
      after: async () => ({ how: 'stored', blobBytes: await storedBlobBytes(cold!.dataDir) }),
      teardown: async () => cold?.stop(),
    });
  }
  if (args.only.has('repush')) {
    scenarios.push({
      id: 'repush',
      title: 're-push (every blob already there)',
      target: `≤ ${REPUSH_SECONDS_TARGET} s whole process, 0 blob bytes sent`,
      checks: { zeroBlobBytes: true, seconds: REPUSH_SECONDS_TARGET },
      setup: async () => {
        proxy = await CountingProxy.start(reg.port);
        log(`proxy: counting proxy on ${proxy.host} → ${reg.host}`);
        await run([
          'skopeo',
          'copy',
          '--quiet',
          '--dest-tls-verify=false',
          `oci:${layout}:bench`,
          `docker://${reg.host}/bench/repush:1`,
        ]);
        proxy.take();
      },
      before: async () => void proxy!.take(),
      cmd: (side) =>
        side === 'strata'
          ? cli.push(store, srcRef, `${proxy!.host}/bench/repush:1`)
          : SKOPEO.push(layout, `${proxy!.host}/bench/repush:1`),
      verify: () => verifyPushed(reg.host, 'bench/repush', corpus),
      after: async () => {
        const c = proxy!.take();
        return { how: 'sent', blobBytes: c.blobBytes, proxy: c };
      },
    });
  }

  const results: ScenarioResult[] = [];
  for (const sc of scenarios) results.push(await runScenario(sc, args.runs, tmpDir));

  const out = [
    `# Strata benchmark${corpus.params.quick ? ' (--quick smoke run)' : ''}`,
    '',
    '| scenario | strata median s | skopeo median s | ratio (strata/skopeo) | strata peak RSS MiB | skopeo peak RSS MiB | target |',
    '|---|---:|---:|---:|---:|---:|---|',
    ...results.map(resultRow),
    '',
    '## Runs',
    '',
    '| scenario | side | timed runs (s, in order) | min s | max s | bytes |',
    '|---|---|---|---:|---:|---|',
    ...results.flatMap(detailRows),
    '',
    `## Corpus: image \`${corpus.ref}\` (${corpus.layers.length} layers, manifest \`${corpus.manifestDigest.slice(0, 19)}…\`)`,
    '',
    ...corpusTable(corpus),
    '',
    '## Machine',
    '',
    ...(await machineFacts(args, cli, corpus)),
    '',
  ].join('\n');
  process.stdout.write(out);
  await writeFile(path.join(args.work, 'results.md'), out);
  log(`results written to ${path.join(args.work, 'results.md')}`);
}

async function shutdown(code: number): Promise<never> {
  try {
    await cleanup?.();
  } catch (err) {
    log(`cleanup: ${(err as Error).message}`);
  }
  process.exit(code);
}

process.on('exit', () => {
  killRunningSync();
  killAllSync();
});
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    log(`${sig}: stopping`);
    killRunningSync();
    void shutdown(130);
  });
}

main().then(
  () => shutdown(0),
  (err: unknown) => {
    if (err instanceof BenchError) {
      process.stderr.write(`bench: ${err.message}\n`);
      if (err.detail) process.stderr.write(`--- output tail ---\n${err.detail}\n`);
    } else {
      process.stderr.write(`bench: unexpected error: ${(err as Error)?.stack ?? String(err)}\n`);
    }
    return shutdown(1);
  },
);
