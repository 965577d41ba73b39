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
import {
  BUILD_BASE_REF,
  buildahCli,
  buildDockerfile,
  prepareBuildFixture,
  strataBuildCli,
  strataBuildMetadata,
  verifyBuildahBuilt,
  verifyStrataBuilt,
  type BuildFixture,
} from './build.js';
import { buildCorpus, SMALL_REF, type Corpus } from './corpus.js';
import { settleDisk } from './disk.js';
import { InProcessEngine, killWorkersSync } from './in-process.js';
import { killControllersSync, runOperatorBench, stopOperatorBench } from './operator.js';
import { runAgentsBench, stopAgentsBench } from './agents.js';
import {
  httpPull,
  httpPullMany,
  killAllMirrorsSync,
  MirrorProcess,
  peakRssKiB,
  stopAllMirrors,
} from './mirror.js';
import { CountingProxy } from './proxy.js';
import { killAllSync, Registry, stopAll, type RequestCounts } from './registry.js';
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
import { makeChanges, verifyCommitted, verifyRootfs } from './union.js';

// ---------------------------------------------------------------------------------------------
// Targets (what we aim for; the table says whether each was met)

/** strata median / skopeo median must not exceed this, unless a scenario sets its own (issue 2's targets). */
const RATIO_TARGET = 1.0;
/** Issue 11: pull must beat skopeo by this much. */
const PULL_RATIO_TARGET = 0.7;
/** Issue 11: a push that uploads every blob (cold registry) must beat skopeo by this much. */
const PUSH_COLD_RATIO_TARGET = 0.85;
/** Issue 11: two concurrent pulls of one image into one store, against one pull. */
const CONCURRENT_PULL_RATIO_TARGET = 1.1;
/** Peak RSS must stay under this whatever the layer size (the corpus has a 256 MiB layer). */
const RSS_TARGET_MIB = 150;
/** A re-push of an unchanged image must take no longer than this, whole process. */
const REPUSH_SECONDS_TARGET = 0.1;
/** Issue 11 (was 0.7 in issue 3): `strata unpack` against `umoci unpack`, first run and steady state. */
const UNPACK_RATIO_TARGET = 0.5;
/** Issue 3: `strata commit` against `umoci repack`. */
const COMMIT_RATIO_TARGET = 0.7;
/** Issue 3: an overlay container's creation (layers already unpacked), whole process, whatever the image size. */
const CREATE_SECONDS_TARGET = 0.1;
/** Issue 11: re-push of an unchanged image and overlay creation, one engine call in a warm process. */
const ENGINE_SECONDS_TARGET = 0.01;
/** Untimed warm-up calls before the engine-level rows' timed ones (module loading, JIT, kept connections). */
const ENGINE_WARMUPS = 3;
/** Issue 12: a cold `strata build` against `buildah bud --layers` (no build cache on either side). */
const BUILD_COLD_RATIO_TARGET = 0.7;
/** Issue 12: a fully cached build may take this much longer than resolving the base (`strata inspect`). */
const BUILD_CACHED_EXTRA_SECONDS = 0.5;
/** Issue 12: peak RSS of `strata build` (the process tree's largest process). */
const BUILD_RSS_TARGET_MIB = 200;
/**
 * Issue 14 §5 (targets in bench/operator.ts): the controller's `--max-concurrent-reconciles`. A reconcile is bound by
 * its API round trips (a Job create, then a status patch), not by CPU: 4 workers reach ~10 builds/s here.
 */
const OPERATOR_CONCURRENCY = 16;
/** The controller's `--sync-period` in the operator benchmark: short, so that the bench waits for one resync. */
const OPERATOR_SYNC_PERIOD_S = 30;

// ---------------------------------------------------------------------------------------------
// Arguments

const USAGE = `usage: npm run bench -- [options]     (or: node dist/bench/run.js [options])

  --runs N          timed runs per side and scenario (default 5, env STRATA_BENCH_RUNS); +1 warm-up
  --quick           small corpus (2,000 files, 32 MiB blob, generated rootfs: no debootstrap)
  --only LIST       comma-separated scenarios: startup,pull,pull-concurrent,push-new,
                    push-cold,repush,engine-repush,unpack-first,unpack,commit,create,
                    engine-create,build-resolve,build-cold,build-cached,mirror-cold,
                    mirror-warm,mirror-concurrent; "build" means the three build-* rows,
                    "mirror" the three mirror-* rows (default: all); "operator" alone runs
                    the operator scale benchmark instead (never part of the default run);
                    "agents" alone runs the node-agent benchmark (one image warmed on
                    --nodes simulated nodes; root, envtest, docker-registry, iptables)
  --nodes N         simulated nodes of the agents benchmark (default 20; --quick: 5)
  --objects N       ImageBuilds of the operator benchmark (default 1000; --quick: 100)
  --reconcilers N   the operator benchmark's --max-concurrent-reconciles (default 16)  --corpus-only     build (or find cached) the corpus, print its sizes, and stop
  --timeout S       a command running longer than S seconds fails the bench (default 600)
  --strata-cmd CMD  developer override of "node bin/strata.js" (a command prefix); the value
                    "skopeo" runs skopeo on the strata side too (harness self-test)
  -h, --help

Work dir: STRATA_BENCH_WORK, default <repo>/.bench-work (results in WORK/results.md).
Debian mirror for debootstrap: from /etc/apt sources, or STRATA_BENCH_MIRROR.`;

const SCENARIO_IDS = [
  'startup',
  'pull',
  'pull-concurrent',
  'push-new',
  'push-cold',
  'repush',
  'engine-repush',
  'unpack-first',
  'unpack',
  'commit',
  'create',
  'engine-create',
  'build-resolve',
  'build-cold',
  'build-cached',
  'mirror-cold',
  'mirror-warm',
  'mirror-concurrent',
] as const;
/** The union scenarios (issues 3, 11): they need root (overlay, ownership), umoci, and the real strata CLI. */
const UNION_IDS: readonly ScenarioId[] = ['unpack-first', 'unpack', 'commit', 'create', 'engine-create'];
/** The engine-level scenarios: the built engine in a worker process (bench/engine-worker.ts), not a command. */
const ENGINE_IDS: readonly ScenarioId[] = ['engine-repush', 'engine-create'];
/** Scenarios that need no prepared push source (the persistent strata store and skopeo layout). */
const NO_PUSH_STATE_IDS: readonly ScenarioId[] = [
  'startup',
  'pull',
  'pull-concurrent',
  'mirror-cold',
  'mirror-warm',
  'mirror-concurrent',
];
/** The pull-through mirror rows (issue 13 §7): strata mirror serve against distribution's proxy mode. */
const MIRROR_IDS: readonly ScenarioId[] = ['mirror-cold', 'mirror-warm', 'mirror-concurrent'];
/** How many pulls the concurrent mirror row starts at once. */
const MIRROR_CONCURRENT_PULLS = 50;
type ScenarioId = (typeof SCENARIO_IDS)[number];
/** The build rows (issue 12): strata build against buildah bud; root (runc, overlay), no corpus, no registry. */
const BUILD_IDS: readonly ScenarioId[] = ['build-resolve', 'build-cold', 'build-cached'];

interface Args {
  runs: number;
  quick: boolean;
  only: Set<ScenarioId>;
  /** --only was given (else every scenario this machine can run). */
  onlyGiven: boolean;
  corpusOnly: boolean;
  /** `--only operator`: the operator scale benchmark (bench/operator.ts) instead of the rows. */
  operator: boolean;
  /** `--only agents`: the node-agent benchmark (bench/agents.ts) instead of the rows. */
  agents: boolean;
  /** Simulated nodes of the agents benchmark. */
  nodes: number;
  /** ImageBuilds of the operator benchmark. */
  objects: number;
  /** The operator benchmark's `--max-concurrent-reconciles`. */
  reconcilers: number;
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
      objects: { type: 'string' },
      nodes: { type: 'string' },
      reconcilers: { type: 'string' },
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
  const words = (values.only ?? SCENARIO_IDS.join(',')).split(',').filter(Boolean);
  const operator = words.includes('operator');
  if (operator && words.length > 1)
    throw new BenchError('--only operator runs alone (it has its own report)');
  const agents = words.includes('agents');
  if (agents && words.length > 1) throw new BenchError('--only agents runs alone (it has its own report)');
  const nodes = Number(values.nodes ?? (values.quick ? 5 : 20));
  if (!Number.isInteger(nodes) || nodes < 1)
    throw new BenchError(`--nodes must be a positive integer, got "${values.nodes}"`);
  const objects = Number(values.objects ?? (values.quick ? 100 : 1000));
  if (!Number.isInteger(objects) || objects < 1)
    throw new BenchError(`--objects must be a positive integer, got "${values.objects}"`);
  const reconcilers = Number(values.reconcilers ?? OPERATOR_CONCURRENCY);
  if (!Number.isInteger(reconcilers) || reconcilers < 1)
    throw new BenchError(`--reconcilers must be a positive integer, got "${values.reconcilers}"`);
  // "build" names every build row; build-cached's target is relative to build-resolve, so it brings it along.
  const expanded = words.flatMap((w) =>
    w === 'build'
      ? [...BUILD_IDS]
      : w === 'mirror'
        ? [...MIRROR_IDS]
        : w === 'build-cached'
          ? ['build-resolve', w]
          : [w],
  );
  for (const s of operator || agents ? [] : expanded) {
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
    onlyGiven: values.only !== undefined,
    corpusOnly: values['corpus-only'] ?? false,
    operator,
    agents,
    nodes,
    objects,
    reconcilers,
    strataCmd: values['strata-cmd'],
    work: path.resolve(process.env.STRATA_BENCH_WORK ?? path.join(root, '.bench-work')),
    root,
  };
}

// ---------------------------------------------------------------------------------------------
// The two sides

/** strata, and the tool it is compared with (skopeo, umoci; a scenario without a peer runs strata only). */
type Side = 'strata' | 'peer';

/** How the strata side is invoked: the real CLI, or (developer override) another command. */
interface StrataCli {
  describe: string;
  /** The command prefix (absent in the skopeo self-test, which has no union verbs). */
  prefix?: string[];
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
    prefix,
    version: () => [...prefix, '--version'],
    pull: (store, ref) => [...prefix, '--store', store, 'pull', ref],
    push: (store, src, dst) => [...prefix, '--store', store, 'push', src, dst],
  };
}

/** The container verbs (issue 3) of the strata CLI over one store. */
function strataUnion(prefix: string[], store: string) {
  const s = [...prefix, '--store', store];
  return {
    unpack: (ref: string, dir: string) => [...s, 'unpack', ref, dir],
    create: (ref: string, name: string, driver?: string) => [
      ...s,
      'create',
      ref,
      '--name',
      name,
      ...(driver ? ['--driver', driver] : []),
    ],
    commit: (name: string, ref: string) => [...s, 'commit', name, ref],
    mount: (name: string) => [...s, '--json', 'mount', name],
    rm: (name: string) => [...s, 'rm', name],
    rmi: (ref: string) => [...s, 'rmi', ref],
    ps: () => [...s, '--json', 'ps'],
  };
}

const UMOCI = {
  unpack: (layout: string, tag: string, bundle: string) => [
    'umoci',
    'unpack',
    '--image',
    `${layout}:${tag}`,
    bundle,
  ],
  repack: (layout: string, tag: string, bundle: string) => [
    'umoci',
    'repack',
    '--image',
    `${layout}:${tag}`,
    bundle,
  ],
};

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
  return timedAll([argv], label, tmpDir);
}

/**
 * Starts every command at once (each under GNU time) and waits for all: the wall time until the last one ends,
 * and the largest peak RSS of any of them. Any failure fails the run.
 */
async function timedAll(argvs: string[][], label: string, tmpDir: string): Promise<Sample> {
  const tfiles = argvs.map((_a, k) => path.join(tmpDir, `time-${process.pid}-${k}.txt`));
  await Promise.all(tfiles.map((f) => rm(f, { force: true })));
  const t0 = process.hrtime.bigint();
  const results = await Promise.all(
    argvs.map((argv, k) => runCapture([timeBin, '-f', '%e %M', '-o', tfiles[k]!, ...argv], { timeoutMs })),
  );
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  let rssKiB = 0;
  for (const [k, r] of results.entries()) {
    const argv = argvs[k]!;
    const who = argvs.length > 1 ? `${label} (command ${k + 1} of ${argvs.length})` : label;
    if (r.code !== 0 || r.timedOut) {
      const why = r.timedOut ? `timed out after ${timeoutMs / 1000} s` : `exit ${r.code}`;
      throw new BenchError(`${who} failed (${why}): ${argv.join(' ')}`, r.tail.text(40));
    }
    const tout = await readFile(tfiles[k]!, 'utf8').catch(() => '');
    const last = tout.trim().split('\n').pop() ?? '';
    const m = /^([\d.]+) (\d+)$/.exec(last);
    if (!m) throw new BenchError(`cannot parse GNU time output for ${who}: "${tout.trim()}"`);
    rssKiB = Math.max(rssKiB, Number(m[2]));
  }
  return { seconds, rssKiB };
}

// ---------------------------------------------------------------------------------------------
// Scenarios

interface Scenario {
  id: ScenarioId;
  /** Names the scenario in progress lines when one id has several rows (default: the id). */
  label?: string;
  title: string;
  /** The peer tool's name (progress lines); undefined: strata runs alone (no ratio). */
  peer: string | undefined;
  /** The strata side's name in progress lines and the Runs table (default "strata"). */
  strataName?: string;
  target: string;
  /** Which targets apply besides the ratio. */
  checks: {
    rss?: boolean;
    /** Every run's count (blob bytes sent, upload requests) must be 0. */
    zeroCount?: boolean;
    informational?: boolean;
    ratio?: number;
    seconds?: number;
    /** The RSS bound when `rss` is set (default RSS_TARGET_MIB). */
    rssMiB?: number;
  };
  /** Untimed warm-up runs before the timed ones (default 1); run indexes below this are warm-ups. */
  warmups?: number;
  /** Once before the warm-up. */
  setup?(): Promise<void>;
  /** Before each run, untimed (e.g. a fresh destination, a wiped registry). */
  before?(side: Side, i: number): Promise<void>;
  /** What a run times, one of: a command; several commands started together (timed until the last ends); or */
  cmd?(side: Side, i: number): string[];
  cmds?(side: Side, i: number): string[][];
  /** a measurement made elsewhere (the engine worker's timed call). */
  exec?(side: Side, i: number): Promise<Sample>;
  /** After each run, untimed: checks that the command really did its job (an exit 0 is not enough). */
  verify?(side: Side, i: number): Promise<void>;
  /** After each run, untimed; may return byte counts (sent through the proxy, or stored). */
  after?(side: Side, i: number): Promise<ByteCount | undefined>;
  teardown?(): Promise<void>;
}

/**
 * What a run moved: blob bytes `sent` through the counting proxy, `stored` by an empty registry or `served` by the
 * registry (downloads), or the number of `uploads` requests the registry saw.
 */
interface ByteCount {
  how: 'sent' | 'stored' | 'served' | 'uploads';
  value: number;
  /** Requests by "METHOD kind" (proxy or registry access log). */
  requests?: Record<string, number>;
  manifestBytes?: number;
  /** Shown after the count in the Runs table. */
  note?: string;
}

function describeCount(c: { how: ByteCount['how'] }): string {
  return c.how === 'uploads' ? 'upload requests' : `blob bytes ${c.how}`;
}

interface ScenarioResult {
  scenario: Scenario;
  samples: Record<Side, Sample[]>;
  counts: Record<Side, ByteCount[]>;
}

async function runScenario(sc: Scenario, runs: number, tmpDir: string): Promise<ScenarioResult> {
  const res: ScenarioResult = {
    scenario: sc,
    samples: { strata: [], peer: [] },
    counts: { strata: [], peer: [] },
  };
  const name = sc.label ?? sc.id;
  const warmups = sc.warmups ?? 1;
  log(
    `scenario ${name}: ${sc.title} — ${warmups} warm-up${warmups === 1 ? '' : 's'} + ${runs} runs ${sc.peer ? 'per side, alternating' : '(strata only)'}`,
  );
  await sc.setup?.();
  for (let i = 0; i < warmups + runs; i++) {
    // Alternate which side goes first, so neither always runs right after the other.
    const order: Side[] = !sc.peer ? ['strata'] : i % 2 === 0 ? ['strata', 'peer'] : ['peer', 'strata'];
    for (const side of order) {
      const who = side === 'strata' ? (sc.strataName ?? 'strata') : sc.peer!;
      await sc.before?.(side, i);
      const label = `${name} ${who} run ${i}`;
      const argvs = sc.cmds?.(side, i) ?? (sc.cmd ? [sc.cmd(side, i)] : []);
      if (!sc.exec && argvs.length === 0) throw new BenchError(`scenario ${name} has nothing to run`);
      const s = sc.exec ? await sc.exec(side, i) : await timedAll(argvs, label, tmpDir);
      await sc.verify?.(side, i).catch((err: unknown) => {
        throw new BenchError(
          `${label}: ${sc.exec ? 'no error' : 'exit 0'} but wrong result: ${(err as Error).message}`,
          argvs.map((a) => a.join(' ')).join('\n'),
        );
      });
      const c = await sc.after?.(side, i);
      await run(['sync']);
      const tag = i < warmups ? 'warm-up' : `run ${i - warmups + 1}/${runs}`;
      log(
        `  ${name} ${who.padEnd(6)} ${tag}: ${s.seconds.toFixed(4)} s, ${(s.rssKiB / 1024).toFixed(0)} MiB RSS` +
          (c ? `, ${describeCount(c)} ${c.value}` : ''),
      );
      if (i < warmups) continue;
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

/**
 * Lazily unmounts whatever is mounted under `dir` (container roots a failed or interrupted run left behind in
 * the strata store), deepest first, so that the store can be deleted.
 */
async function unmountUnder(dir: string): Promise<void> {
  const text = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  const prefix = path.resolve(dir) + '/';
  const points = text
    .split('\n')
    .map((l) =>
      l.split(' ')[4]?.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8))),
    )
    .filter((p): p is string => p !== undefined && p.startsWith(prefix))
    .sort((a, b) => b.length - a.length);
  for (const p of points) await runCapture(['umount', '-l', p]);
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
  const peer = r.samples.peer.length > 0;
  const km = median(r.samples.peer.map((s) => s.seconds));
  const ratio = sm / km;
  const srss = rssMiB(r.samples.strata);
  const krss = peer ? rssMiB(r.samples.peer) : NaN;
  const count = r.counts.strata.length ? Math.max(...r.counts.strata.map((c) => c.value)) : 0;
  const { rss, zeroCount, informational, seconds } = r.scenario.checks;
  const ratioOk = seconds !== undefined || ratio <= (r.scenario.checks.ratio ?? RATIO_TARGET);
  const met =
    ratioOk &&
    (!rss || srss <= (r.scenario.checks.rssMiB ?? RSS_TARGET_MIB)) &&
    (!zeroCount || count === 0) &&
    (seconds === undefined || sm <= seconds);
  const verdict = informational ? '' : met ? ' — met' : ' — **missed**';
  const dash = (x: number, digits: number) => (peer ? x.toFixed(digits) : '—');
  // Sub-second engine calls need more digits than whole processes.
  const digits = sm < 0.1 ? 4 : 3;
  return `| ${r.scenario.title} | ${sm.toFixed(digits)} | ${dash(km, digits)} | ${dash(ratio, 2)} | ${srss.toFixed(0)} | ${dash(krss, 0)} | ${r.scenario.target}${verdict} |`;
}

function detailRows(r: ScenarioResult): string[] {
  const rows: string[] = [];
  for (const side of ['strata', 'peer'] as const) {
    const xs = r.samples[side].map((s) => s.seconds);
    if (xs.length === 0) continue;
    const counts = r.counts[side];
    let bytes = '';
    if (counts.length) {
      const last = counts[counts.length - 1]!;
      const lo = Math.min(...counts.map((c) => c.value));
      const hi = Math.max(...counts.map((c) => c.value));
      bytes = `${describeCount(last)}: ${lo === hi ? hi : `${lo}–${hi}`}`;
      if (last.note) bytes += ` (${last.note})`;
      if (last.manifestBytes !== undefined) bytes += `; manifest bytes ${last.manifestBytes}`;
      if (last.requests) {
        const reqs = Object.entries(last.requests)
          .sort()
          .map(([k, v]) => `${k}×${v}`)
          .join(', ');
        bytes += `; requests (last run): ${reqs}`;
      }
    }
    const digits = median(xs) < 0.1 ? 4 : 3;
    const f = (x: number) => x.toFixed(digits);
    rows.push(
      `| ${r.scenario.title} | ${side === 'strata' ? (r.scenario.strataName ?? 'strata') : r.scenario.peer} | ${xs.map(f).join(' ')} | ${f(Math.min(...xs))} | ${f(Math.max(...xs))} | ${bytes} |`,
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

async function machineFacts(args: Args, cli: StrataCli, c: Corpus | undefined): Promise<string[]> {
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
    `- runs: 1 warm-up + ${args.runs} timed per side, alternating` +
      (c
        ? `; corpus: ${c.params.quick ? '**quick** (smoke run, not representative)' : 'full'}, rootfs ${c.params.rootfs}, compressed with ${c.compressor}`
        : ''),
    ...(buildFixture
      ? [
          `- ${await firstLine(['buildah', '--version'])}; runc ${(await runCapture(['runc', '--version']).catch(() => undefined))?.tail.text(3).match(/runc version (\S+)/)?.[1] ?? 'unknown'}`,
        ]
      : []),
    `- load average at the end: ${os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')} (other work on this machine makes the numbers noisy)`,
    `- work dir: ${args.work}`,
  ];
}

// ---------------------------------------------------------------------------------------------
// Build rows (issue 12): strata build against buildah bud, same Dockerfile, base and context

/** The build fixture, once prepared (for the report). */
let buildFixture: BuildFixture | undefined;

function buildFixtureFacts(fx: BuildFixture): string[] {
  const p = fx.params;
  return [
    '## Build rows: the Dockerfile and its inputs',
    '',
    `- base \`${BUILD_BASE_REF}\`: ${p.base === 'busybox-static' ? 'busybox-static tree (**--quick**: not representative)' : 'debootstrap --variant=minbase bookworm'}, ${fmtBytes(fx.baseTarBytes)} uncompressed; \`strata import\` of its tarball, and that image saved as an OCI archive for \`buildah pull oci-archive:\``,
    `- context: ${p.contextFiles.toLocaleString('en')} files of 64 B – 64 KiB (${fmtBytes(fx.contextBytes)}) in nested dirs; the last RUN deletes ${fx.deletedFiles.toLocaleString('en')} of them`,
    `- first RUN: ${p.runFiles.toLocaleString('en')} small files and one ${fmtBytes(p.runBigBytes)} file from /dev/urandom`,
    '',
    '```dockerfile',
    buildDockerfile(p).trimEnd(),
    '```',
  ];
}

/**
 * The mirror rows (issue 13 §7): pulls of the corpus image through `strata mirror serve` and through
 * docker-registry in proxy mode (distribution's `proxy: remoteurl:`), both in front of the access-logged registry
 * standing in for the hub, by the in-process client of bench/mirror.ts (no client start-up timed). Cold: both
 * caches restarted empty before every run; warm: filled once, untimed; concurrent: 50 cold pulls at once. The
 * RSS columns are the servers' peaks (VmHWM), the count is what the hub served.
 */
function mirrorScenarios(
  args: Args,
  prefix: string[],
  corpus: Corpus,
  hubRegistry: () => Promise<Registry>,
): Scenario[] {
  const repo = 'bench/app';
  let hub: Registry | undefined;
  let mirror: MirrorProcess | undefined;
  let dist: Registry | undefined;
  const imageBlobBytes = corpus.layers.reduce((n, l) => n + l.size, 0);
  const setup = async (): Promise<void> => {
    hub ??= await hubRegistry();
    mirror ??= await MirrorProcess.start(prefix, path.join(args.work, 'mirror-strata'), `http://${hub.host}`);
    dist ??= await Registry.start(path.join(args.work, 'mirror-distribution'), {
      fresh: true,
      proxyRemote: `http://${hub.host}`,
    });
    log(
      `mirror: strata mirror serve on ${mirror.host}, docker-registry proxy on ${dist.host}, hub ${hub.host}`,
    );
  };
  const hostOf = (side: Side): string => (side === 'strata' ? mirror!.host : dist!.host);
  const serverRss = async (side: Side): Promise<number> =>
    side === 'strata' ? mirror!.peakRssKiB() : peakRssKiB(dist!.pid);
  const emptyCaches = async (): Promise<void> => {
    await mirror!.restartEmpty();
    await dist!.wipe();
  };
  const pulls =
    (n: number) =>
    async (side: Side): Promise<Sample> => {
      const t0 = process.hrtime.bigint();
      if (n === 1) await httpPull(hostOf(side), repo, '1', corpus.manifestDigest, timeoutMs);
      else await httpPullMany(n, hostOf(side), repo, '1', corpus.manifestDigest, timeoutMs);
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      return { seconds, rssKiB: await serverRss(side) };
    };
  // What the hub served during the run: 1.00× the image for a cold fill that fetches each blob once, 0 warm.
  const hubServed = async (): Promise<ByteCount> => {
    const c = await hub!.takeRequests();
    return {
      how: 'served',
      value: c.blobBytesServed,
      requests: c.requests,
      note: `hub served ${(c.blobBytesServed / imageBlobBytes).toFixed(2)}× the image's layers`,
    };
  };
  const common = {
    peer: 'docker-registry proxy',
    strataName: 'mirror',
    checks: { ratio: RATIO_TARGET },
    after: hubServed,
  } as const;
  const rows: Scenario[] = [];
  if (args.only.has('mirror-cold'))
    rows.push({
      ...common,
      id: 'mirror-cold',
      title: 'pull through a mirror, cold (empty cache; RSS: the server)',
      target: `≤ ${RATIO_TARGET.toFixed(2)}× docker-registry proxy`,
      setup,
      before: async () => {
        await emptyCaches();
        await hub!.takeRequests();
      },
      exec: pulls(1),
    });
  if (args.only.has('mirror-warm'))
    rows.push({
      ...common,
      id: 'mirror-warm',
      title: 'pull through a mirror, warm (image cached; RSS: the server)',
      target: `≤ ${RATIO_TARGET.toFixed(2)}× docker-registry proxy`,
      setup: async () => {
        await setup();
        await emptyCaches();
        for (const side of ['strata', 'peer'] as const)
          await httpPull(hostOf(side), repo, '1', corpus.manifestDigest, timeoutMs);
      },
      before: async () => void (await hub!.takeRequests()),
      exec: pulls(1),
    });
  if (args.only.has('mirror-concurrent'))
    rows.push({
      ...common,
      id: 'mirror-concurrent',
      title: `${MIRROR_CONCURRENT_PULLS} concurrent pulls through a mirror, cold (RSS: the server)`,
      target: `≤ ${RATIO_TARGET.toFixed(2)}× docker-registry proxy`,
      setup,
      before: async () => {
        await emptyCaches();
        await hub!.takeRequests();
      },
      exec: pulls(MIRROR_CONCURRENT_PULLS),
    });
  return rows;
}

/** The build rows selected by --only: resolve (informational), cold, fully cached. */
async function buildScenarios(args: Args, cli: StrataCli, tmpDir: string): Promise<Scenario[]> {
  const prefix = cli.prefix;
  if (!prefix) throw new BenchError('the build rows need the strata CLI (not --strata-cmd skopeo)');
  await requireTool('buildah', 'buildah');
  await requireTool('runc', 'runc');
  const fx = await prepareBuildFixture({ work: args.work, quick: args.quick, strataPrefix: prefix });
  buildFixture = fx;
  const strataOn = (store: string) => strataBuildCli(prefix, store);
  const describe = `${fx.params.contextFiles.toLocaleString('en')}-file COPY, RUN writing ${fmtBytes(fx.params.runBigBytes)}, RUN deleting`;

  // `buildah pull` leaves the base extracted in its storage; strata's store gets the same head start: the base
  // imported and its layer unpacked into the layer cache (a container made and removed), all untimed.
  const importBase = async (store: string): Promise<void> => {
    const cli = strataOn(store);
    await run(cli.import(fx.baseTar));
    await run(cli.createOnBase('bench-unpack-base'));
    await run(cli.rm('bench-unpack-base'));
  };
  // The resolve and cached rows share one strata store and one buildah root, the base imported once.
  let cached: { strata: string; buildah: string } | undefined;
  const ensureCached = async (): Promise<{ strata: string; buildah: string }> => {
    if (cached) return cached;
    const strata = path.join(await mkdtemp(path.join(tmpDir, 'build-cached-strata-')), 'store');
    const buildah = await mkdtemp(path.join(tmpDir, 'build-cached-buildah-'));
    await importBase(strata);
    await run(buildahCli(buildah).pull(fx.baseOci));
    cached = { strata, buildah };
    return cached;
  };
  const verifySide = async (side: Side, store: string): Promise<void> => {
    if (side === 'strata') verifyStrataBuilt(await run(strataOn(store).history()), fx.params);
    else verifyBuildahBuilt(await run(buildahCli(store).inspectOut()));
  };

  const scenarios: Scenario[] = [];
  if (args.only.has('build-resolve')) {
    scenarios.push({
      id: 'build-resolve',
      title: 'resolve the local base image (`strata inspect` vs `buildah inspect`)',
      peer: 'buildah',
      target: "informational: the fixed part of the cached build's target",
      checks: { informational: true },
      setup: async () => void (await ensureCached()),
      cmd: (side) =>
        side === 'strata'
          ? strataOn(cached!.strata).inspectBase()
          : buildahCli(cached!.buildah).inspectBase(),
    });
  }
  if (args.only.has('build-cold')) {
    const dirs = new Map<string, string>();
    const dir = (side: Side, i: number) => dirs.get(`${side}-${i}`)!;
    const store = (side: Side, i: number) =>
      side === 'strata' ? path.join(dir(side, i), 'store') : dir(side, i);
    scenarios.push({
      id: 'build-cold',
      title: `build, cold (${describe}) vs \`buildah bud --layers\``,
      peer: 'buildah',
      target: `≤ ${BUILD_COLD_RATIO_TARGET.toFixed(2)}× buildah, RSS ≤ ${BUILD_RSS_TARGET_MIB} MiB`,
      checks: { rss: true, ratio: BUILD_COLD_RATIO_TARGET, rssMiB: BUILD_RSS_TARGET_MIB },
      // Untimed: a fresh store / storage root holding only the base, as after `strata import` / `buildah pull`.
      before: async (side, i) => {
        dirs.set(`${side}-${i}`, await mkdtemp(path.join(tmpDir, `build-cold-${side}-${i}-`)));
        if (side === 'strata') await importBase(store(side, i));
        else await run(buildahCli(store(side, i)).pull(fx.baseOci));
        await run(['sync']);
      },
      cmd: (side, i) =>
        side === 'strata'
          ? strataOn(store(side, i)).build(fx.context, path.join(dir(side, i), 'metadata.json'))
          : buildahCli(store(side, i)).bud(fx.context, path.join(dir(side, i), 'iid')),
      verify: async (side, i) => {
        if (side === 'strata') {
          const m = await strataBuildMetadata(path.join(dir(side, i), 'metadata.json'));
          if (m.cacheHits !== 0) throw new Error(`a cold build reused ${m.cacheHits} cached steps`);
        }
        await verifySide(side, store(side, i));
      },
      after: async (side, i) => {
        await unmountUnder(dir(side, i));
        await rm(dir(side, i), { recursive: true, force: true });
        dirs.delete(`${side}-${i}`);
        return undefined;
      },
    });
  }
  if (args.only.has('build-cached')) {
    const first: Record<Side, string> = { strata: '', peer: '' };
    const out = (side: Side, i: number | string) => path.join(tmpDir, `build-cached-${side}-${i}`);
    scenarios.push({
      id: 'build-cached',
      title: `build, fully cached (same context again) vs \`buildah bud --layers\``,
      peer: 'buildah',
      // Replaced by runAll once build-resolve has run (the target is relative to it).
      target: `≤ resolving the base + ${BUILD_CACHED_EXTRA_SECONDS} s, RSS ≤ ${BUILD_RSS_TARGET_MIB} MiB`,
      checks: { rss: true, rssMiB: BUILD_RSS_TARGET_MIB, seconds: BUILD_CACHED_EXTRA_SECONDS },
      // Untimed: one build per side fills the cache; every later run must give the very same image.
      setup: async () => {
        const c = await ensureCached();
        await run(strataOn(c.strata).build(fx.context, out('strata', 'setup')));
        first.strata = (await strataBuildMetadata(out('strata', 'setup'))).config;
        await verifySide('strata', c.strata);
        await run(buildahCli(c.buildah).bud(fx.context, out('peer', 'setup')));
        first.peer = (await readFile(out('peer', 'setup'), 'utf8')).trim();
        await verifySide('peer', c.buildah);
      },
      cmd: (side, i) =>
        side === 'strata'
          ? strataOn(cached!.strata).build(fx.context, out(side, i))
          : buildahCli(cached!.buildah).bud(fx.context, out(side, i)),
      verify: async (side, i) => {
        if (side === 'strata') {
          const m = await strataBuildMetadata(out(side, i));
          if (m.config !== first.strata)
            throw new Error(`image ${m.config}, want the first build's ${first.strata}`);
          if (m.cacheHits < 3)
            throw new Error(`only ${m.cacheHits} of the 3 filesystem steps came from the cache`);
        } else {
          const iid = (await readFile(out(side, i), 'utf8')).trim();
          if (iid !== first.peer) throw new Error(`image ${iid}, want the first build's ${first.peer}`);
        }
      },
    });
  }
  return scenarios;
}

/** `--only build…`: only the build rows; no corpus, no registry, no skopeo. */
async function mainBuildOnly(args: Args): Promise<void> {
  timeBin = await requireTool('/usr/bin/time', 'time');
  const cli = strataCli(args);
  if (!args.strataCmd && !existsSync(path.join(args.root, 'dist', 'src', 'cli', 'main.js')))
    throw new BenchError('strata CLI not built: dist/src/cli/main.js is missing (npm run build)');
  if (process.getuid?.() !== 0)
    throw new BenchError('the build rows need root (runc, overlay): sudo npm run bench -- --only build');
  const tmpDir = path.join(args.work, 'tmp');
  await unmountUnder(tmpDir);
  await rm(tmpDir, { recursive: true, force: true });
  await mkdir(tmpDir, { recursive: true });
  cleanup = async () => {
    await unmountUnder(tmpDir);
    await rm(tmpDir, { recursive: true, force: true });
  };
  const results = await runAll(await buildScenarios(args, cli, tmpDir), args.runs, tmpDir);
  await report(args, cli, results, undefined);
}

/** `--only operator`: the operator scale benchmark; its report replaces the rows' (bench/operator.ts). */
async function mainOperator(args: Args): Promise<void> {
  cleanup = stopOperatorBench;
  const out = await runOperatorBench({
    root: args.root,
    work: args.work,
    objects: args.objects,
    concurrency: args.reconcilers,
    syncPeriodS: OPERATOR_SYNC_PERIOD_S,
    timeoutMs: Math.min(timeoutMs, 300_000),
  });
  process.stdout.write(out);
  await writeFile(path.join(args.work, 'operator-results.md'), out);
  log(`results written to ${path.join(args.work, 'operator-results.md')}`);
}

/** `--only agents`: one image warmed on simulated nodes; its report replaces the rows' (bench/agents.ts). */
async function mainAgents(args: Args): Promise<void> {
  cleanup = stopAgentsBench;
  const out = await runAgentsBench({
    work: args.work,
    nodes: args.nodes,
    layers: 4,
    layerBytes: (args.quick ? 4 : 16) * MiB,
    syncPeriodS: 20,
    timeoutMs: Math.min(timeoutMs, 600_000),
  });
  process.stdout.write(out);
  log(`results written to ${path.join(args.work, 'agents-results.md')}`);
}

// ---------------------------------------------------------------------------------------------
// Main

let cleanup: (() => Promise<void>) | undefined;

async function main(): Promise<void> {
  const args = parse(process.argv.slice(2));
  await mkdir(args.work, { recursive: true });
  if (args.operator) return mainOperator(args);
  if (args.agents) return mainAgents(args);
  if (!args.corpusOnly && [...args.only].every((id) => BUILD_IDS.includes(id))) return mainBuildOnly(args);
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

  const rootIds = [...UNION_IDS, ...BUILD_IDS].filter((id) => args.only.has(id));
  if (rootIds.length > 0 && process.getuid?.() !== 0) {
    // Overlay mounts and the files' owners (for both tools), and runc for the builds' RUN steps, need root.
    if (args.onlyGiven) throw new BenchError(`${rootIds.join(', ')} need root (sudo npm run bench)`);
    log(`not root: skipping ${rootIds.join(', ')} (they need root)`);
    for (const id of [...UNION_IDS, ...BUILD_IDS]) args.only.delete(id);
  }
  const engineIds = ENGINE_IDS.filter((id) => args.only.has(id));
  if (engineIds.length > 0 && args.strataCmd) {
    // The engine rows time the built engine itself: a command override does not apply to them.
    if (args.onlyGiven) throw new BenchError(`${engineIds.join(', ')} measure the engine: drop --strata-cmd`);
    log(`--strata-cmd: skipping ${engineIds.join(', ')} (they run the built engine, not a command)`);
    for (const id of ENGINE_IDS) args.only.delete(id);
  }

  const tmpDir = path.join(args.work, 'tmp');
  await rm(tmpDir, { recursive: true, force: true });
  await mkdir(tmpDir, { recursive: true });
  const store = path.join(args.work, 'strata-store');
  let proxy: CountingProxy | undefined;
  let worker: InProcessEngine | undefined;
  cleanup = async () => {
    await worker?.stop();
    // Container roots of the union scenarios (a failed run may leave them mounted).
    if (UNION_IDS.some((id) => args.only.has(id))) await unmountUnder(store);
    await proxy?.stop();
    await stopAllMirrors();
    await stopAll();
    // Container roots of a build row's steps (a failed run may leave them mounted).
    if (BUILD_IDS.some((id) => args.only.has(id))) await unmountUnder(tmpDir);
    await rm(tmpDir, { recursive: true, force: true });
  };

  // The registry every scenario reads from, on fresh storage so that runs do not inherit state.
  const reg = await Registry.start(path.join(args.work, 'registry'), { fresh: true });
  log(`registry: docker-registry on ${reg.host}`);
  await reg.seed(corpus.layout, corpus.ref, 'bench/app:1');
  const srcRef = `${reg.host}/bench/app:1`;

  const layout = path.join(args.work, 'skopeo-layout');
  const needsPushState = [...args.only].some((s) => !NO_PUSH_STATE_IDS.includes(s));
  if (needsPushState) {
    // Once: the image in a persistent strata store and in a skopeo OCI layout (push sources).
    await unmountUnder(store);
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

  // Issue 3 (unpack, commit, create): the strata side works on the same store (its containers and layer
  // cache live there); umoci on a copy of the skopeo layout, since `umoci repack` adds to its layout.
  const umociLayout = path.join(args.work, 'umoci-layout');
  const smallRef = `${reg.host}/${SMALL_REF}`;
  let su: ReturnType<typeof strataUnion> | undefined;
  if (UNION_IDS.some((id) => args.only.has(id))) {
    if (!cli.prefix)
      throw new BenchError('unpack, commit and create need the strata CLI (not --strata-cmd skopeo)');
    su = strataUnion(cli.prefix, store);
    if (args.only.has('unpack-first') || args.only.has('unpack') || args.only.has('commit')) {
      await requireTool('umoci', 'umoci');
      await rm(umociLayout, { recursive: true, force: true });
      await run(['cp', '-a', layout, umociLayout]);
    }
    if (args.only.has('create') || args.only.has('engine-create')) {
      if (!corpus.small) throw new BenchError('the corpus has no small image (corpus.json: "small")');
      await reg.seed(corpus.layout, SMALL_REF, SMALL_REF);
      log(`prepare: strata pull ${smallRef} into ${store}`);
      await timed(cli.pull(store, smallRef), 'prepare strata pull (small image)', tmpDir);
    }
  }

  // A registry that logs every request (pull-concurrent, engine-repush): counting there adds nothing to the
  // client's time, unlike the proxy (which the engine-level re-push, ≤ 10 ms, would feel).
  let counted: Registry | undefined;
  const countedRegistry = async (): Promise<Registry> => {
    if (!counted) {
      counted = await Registry.start(path.join(args.work, 'registry-counted'), {
        fresh: true,
        accessLog: true,
      });
      log(`registry: docker-registry with access log on ${counted.host}`);
      await counted.seed(corpus.layout, corpus.ref, 'bench/app:1');
      await counted.seed(corpus.layout, corpus.ref, 'bench/repush:1');
    }
    return counted;
  };
  const startWorker = (): InProcessEngine => (worker ??= InProcessEngine.start());
  const imageBlobBytes = corpus.layers.reduce((n, l) => n + l.size, 0);

  const scenarios: Scenario[] = [];
  if (args.only.has('startup')) {
    scenarios.push({
      id: 'startup',
      title: 'startup (`--version`, no I/O)',
      target: 'informational: the fixed cost in every row below',
      peer: 'skopeo',
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
      peer: 'skopeo',
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
  if (args.only.has('pull-concurrent')) {
    const dirs = new Map<string, string>();
    const key = (side: Side, i: number) => `${side}-${i}`;
    let ref = '';
    scenarios.push({
      id: 'pull-concurrent',
      title: 'two concurrent pulls of one image into one fresh store vs one pull',
      peer: 'one strata pull',
      strataName: '2 pulls',
      target: `≤ ${CONCURRENT_PULL_RATIO_TARGET.toFixed(2)}× one pull, RSS ≤ ${RSS_TARGET_MIB} MiB each`,
      checks: { rss: true, ratio: CONCURRENT_PULL_RATIO_TARGET },
      setup: async () => {
        ref = `${(await countedRegistry()).host}/bench/app:1`;
      },
      before: async (side, i) => {
        const dir = await mkdtemp(path.join(tmpDir, `pullc-${side}-${i}-`));
        // An empty OCI layout, as the node's store would already be: the row measures two pulls, not two
        // processes racing to turn an empty directory into a store (both sides get the same).
        await writeFile(path.join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
        await writeFile(path.join(dir, 'index.json'), '{"schemaVersion":2,"manifests":[]}');
        dirs.set(key(side, i), dir);
        await counted!.takeRequests(); // count this run only
      },
      cmds: (side, i) => {
        const one = cli.pull(dirs.get(key(side, i))!, ref);
        return side === 'strata' ? [one, one] : [one];
      },
      verify: (side, i) => verifyLayout(dirs.get(key(side, i))!, corpus),
      // What the registry served: 1× the image's blobs when the two pulls share their downloads.
      after: async (side, i) => {
        await rm(dirs.get(key(side, i))!, { recursive: true, force: true });
        dirs.delete(key(side, i));
        const c = await counted!.takeRequests();
        return {
          how: 'served',
          value: c.blobBytesServed,
          requests: c.requests,
          note: `${(c.blobBytesServed / imageBlobBytes).toFixed(2)}× the image's blobs`,
        };
      },
    });
  }
  if (args.only.has('push-new')) {
    scenarios.push({
      id: 'push-new',
      title: 'push to an empty repository (same registry)',
      target: `≤ ${RATIO_TARGET.toFixed(2)}× skopeo (cross-repo mount allowed)`,
      peer: 'skopeo',
      checks: {},
      cmd: (side, i) =>
        side === 'strata'
          ? cli.push(store, srcRef, `${reg.host}/push-strata-${i}:1`)
          : SKOPEO.push(layout, `${reg.host}/push-skopeo-${i}:1`),
      verify: (side, i) =>
        verifyPushed(reg.host, `push-${side === 'strata' ? 'strata' : 'skopeo'}-${i}`, corpus),
    });
  }
  if (args.only.has('push-cold')) {
    let cold: Registry | undefined;
    scenarios.push({
      id: 'push-cold',
      title: 'push (cold registry: every blob uploaded)',
      target: `≤ ${PUSH_COLD_RATIO_TARGET.toFixed(2)}× skopeo, RSS ≤ ${RSS_TARGET_MIB} MiB`,
      peer: 'skopeo',
      checks: { rss: true, ratio: PUSH_COLD_RATIO_TARGET },
      setup: async () => {
        cold = await Registry.start(path.join(args.work, 'registry-cold'), { fresh: true });
        log(`registry: cold docker-registry on ${cold.host} (wiped before every run)`);
      },
      before: async () => cold!.wipe(),
      cmd: (side, i) =>
        side === 'strata'
          ? cli.push(store, srcRef, `${cold!.host}/push-strata-${i}:1`)
          : SKOPEO.push(layout, `${cold!.host}/push-skopeo-${i}:1`),
      verify: (side, i) =>
        verifyPushed(cold!.host, `push-${side === 'strata' ? 'strata' : 'skopeo'}-${i}`, corpus),
      // The registry started empty: what it now stores is what was uploaded (proof of a real upload).
      after: async () => ({ how: 'stored', value: await storedBlobBytes(cold!.dataDir) }),
      teardown: async () => cold?.stop(),
    });
  }
  if (args.only.has('repush')) {
    scenarios.push({
      id: 'repush',
      title: 're-push (every blob already there)',
      target: `≤ ${REPUSH_SECONDS_TARGET} s whole process, 0 blob bytes sent`,
      peer: 'skopeo',
      checks: { zeroCount: true, seconds: REPUSH_SECONDS_TARGET },
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
        return { how: 'sent', value: c.blobBytes, requests: c.requests, manifestBytes: c.manifestBytes };
      },
    });
  }
  if (args.only.has('engine-repush')) {
    let dst = '';
    let pushed: RequestCounts | undefined;
    scenarios.push({
      id: 'engine-repush',
      title: 're-push, engine call in a warm process (every blob already there)',
      peer: undefined,
      target: `≤ ${ENGINE_SECONDS_TARGET * 1000} ms per call, 0 upload requests`,
      checks: { zeroCount: true, seconds: ENGINE_SECONDS_TARGET },
      warmups: ENGINE_WARMUPS,
      setup: async () => {
        dst = `${(await countedRegistry()).host}/bench/repush:1`;
        startWorker();
      },
      before: async () => void (await counted!.takeRequests()),
      exec: async () => {
        const s = await worker!.call({ op: 'push', store, source: srcRef, destination: dst }, timeoutMs);
        pushed = await counted!.takeRequests(); // before verify's own HEAD
        return s;
      },
      verify: () => verifyPushed(counted!.host, 'bench/repush', corpus),
      after: async () => {
        const c = pushed!;
        const uploads = Object.entries(c.requests)
          .filter(([k]) => k.endsWith(' upload'))
          .reduce((n, [, v]) => n + v, 0);
        return { how: 'uploads', value: uploads, requests: c.requests };
      },
    });
  }

  for (const first of [true, false]) {
    const id = first ? 'unpack-first' : 'unpack';
    if (!args.only.has(id)) continue;
    const dirs = new Map<string, string>();
    const key = (side: Side, i: number) => `${side}-${i}`;
    // Both tools create their output dir (strata: DIR; umoci: BUNDLE, with BUNDLE/rootfs and its config).
    const out = (side: Side, i: number) =>
      path.join(dirs.get(key(side, i))!, side === 'strata' ? 'rootfs' : 'bundle');
    scenarios.push({
      id,
      title: first
        ? 'unpack, first run (quiet disk before each run) vs `umoci unpack`'
        : 'unpack, steady state (runs back to back) vs `umoci unpack`',
      peer: 'umoci',
      target: `≤ ${UNPACK_RATIO_TARGET.toFixed(2)}× umoci, RSS ≤ ${RSS_TARGET_MIB} MiB`,
      checks: { rss: true, ratio: UNPACK_RATIO_TARGET },
      before: async (side, i) => {
        // First run: the kernel has finished with the previous run's tree (writeback, discards of its blocks).
        if (first) log(`  settled the disk in ${((await settleDisk(tmpDir)) / 1000).toFixed(1)} s (untimed)`);
        dirs.set(key(side, i), await mkdtemp(path.join(tmpDir, `unpack-${side}-${i}-`)));
      },
      cmd: (side, i) =>
        side === 'strata'
          ? su!.unpack(srcRef, out(side, i))
          : UMOCI.unpack(umociLayout, 'bench', out(side, i)),
      verify: (side, i) =>
        verifyRootfs(side === 'strata' ? out(side, i) : path.join(out(side, i), 'rootfs'), corpus),
      after: async (side, i) => {
        await rm(dirs.get(key(side, i))!, { recursive: true, force: true });
        dirs.delete(key(side, i));
        return undefined;
      },
    });
  }
  if (args.only.has('commit')) {
    const bundles = new Map<number, string>();
    const container = (i: number) => `bench-commit-${i}`;
    const strataRef = (i: number) => `${reg.host}/bench/commit-${i}:1`;
    const bundle = (i: number) => path.join(bundles.get(i)!, 'bundle');
    scenarios.push({
      id: 'commit',
      title: 'commit 1,000 added, 100 deleted, 10 changed files vs `umoci repack`',
      peer: 'umoci',
      target: `≤ ${COMMIT_RATIO_TARGET.toFixed(2)}× umoci repack, RSS ≤ ${RSS_TARGET_MIB} MiB`,
      checks: { rss: true, ratio: COMMIT_RATIO_TARGET },
      // Untimed: a container (strata: create + mount; umoci: unpack) with the changes made in its root.
      before: async (side, i) => {
        if (side === 'strata') {
          await run(su!.create(srcRef, container(i)));
          const lines = (await run(su!.mount(container(i)))).trim().split('\n');
          const root = (JSON.parse(lines[lines.length - 1]!) as { path: string }).path;
          await makeChanges(root);
        } else {
          bundles.set(i, await mkdtemp(path.join(tmpDir, `commit-umoci-${i}-`)));
          await run(UMOCI.unpack(umociLayout, 'bench', bundle(i)));
          await makeChanges(path.join(bundle(i), 'rootfs'));
        }
        await run(['sync']); // the timed commit does not pay for writing back the setup
      },
      cmd: (side, i) =>
        side === 'strata'
          ? su!.commit(container(i), strataRef(i))
          : UMOCI.repack(umociLayout, `commit-${i}`, bundle(i)),
      verify: (side, i) =>
        side === 'strata'
          ? verifyCommitted(store, strataRef(i), corpus)
          : verifyCommitted(umociLayout, `commit-${i}`, corpus),
      after: async (side, i) => {
        if (side === 'strata') {
          await run(su!.rm(container(i)));
          await run(su!.rmi(strataRef(i)));
        } else {
          await rm(bundles.get(i)!, { recursive: true, force: true });
          bundles.delete(i);
          await run(['umoci', 'rm', '--image', `${umociLayout}:commit-${i}`]);
          await run(['umoci', 'gc', '--layout', umociLayout]);
        }
        return undefined;
      },
    });
  }
  if (args.only.has('create')) {
    const totalSize = corpus.layers.reduce((n, l) => n + l.uncompressedSize, 0);
    const images = [
      ['full', srcRef, `${corpus.layers.length} layers, ${fmtBytes(totalSize)}`],
      ['small', smallRef, `1 layer, ${fmtBytes(corpus.small?.layers[0]?.uncompressedSize ?? 0)}`],
    ] as const;
    for (const [which, ref, what] of images) {
      const container = (i: number | string) => `bench-create-${which}-${i}`;
      scenarios.push({
        id: 'create',
        label: `create-${which}`,
        title: `overlay container creation (${what})`,
        peer: undefined,
        target: `≤ ${CREATE_SECONDS_TARGET} s whole process, RSS ≤ ${RSS_TARGET_MIB} MiB`,
        checks: { rss: true, seconds: CREATE_SECONDS_TARGET },
        // The image's layers are unpacked into the store's layer cache once, untimed: creation is then
        // independent of the image size (the warm-up run only warms the page cache).
        setup: async () => {
          await run(su!.create(ref, container('setup'), 'overlay'));
          await run(su!.rm(container('setup')));
        },
        cmd: (_side, i) => su!.create(ref, container(i), 'overlay'),
        verify: async (_side, i) => {
          const rows = JSON.parse(await run(su!.ps())) as { name: string; driver: string }[];
          const row = rows.find((r) => r.name === container(i));
          if (row?.driver !== 'overlay') throw new Error(`strata ps: no overlay container ${container(i)}`);
        },
        after: async (_side, i) => {
          await run(su!.rm(container(i)));
          return undefined;
        },
      });
    }
  }

  if (args.only.has('engine-create')) {
    for (const [which, ref] of [
      ['full', srcRef],
      ['small', smallRef],
    ] as const) {
      const container = (i: number | string) => `bench-engine-create-${which}-${i}`;
      scenarios.push({
        id: 'engine-create',
        label: `engine-create-${which}`,
        title: `overlay container creation, engine call in a warm process (${which} image)`,
        peer: undefined,
        target: `≤ ${ENGINE_SECONDS_TARGET * 1000} ms per call`,
        checks: { seconds: ENGINE_SECONDS_TARGET },
        warmups: ENGINE_WARMUPS,
        // As for create: the layers are unpacked into the layer cache once, untimed (by the CLI).
        setup: async () => {
          await run(su!.create(ref, container('setup'), 'overlay'));
          await run(su!.rm(container('setup')));
          startWorker();
        },
        exec: (_side, i) =>
          worker!.call(
            { op: 'create', store, reference: ref, name: container(i), driver: 'overlay' },
            timeoutMs,
          ),
        verify: async (_side, i) => {
          const rows = JSON.parse(await run(su!.ps())) as { name: string; driver: string }[];
          const row = rows.find((r) => r.name === container(i));
          if (row?.driver !== 'overlay') throw new Error(`strata ps: no overlay container ${container(i)}`);
        },
        after: async (_side, i) => {
          await worker!.call({ op: 'rm', store, name: container(i) }, timeoutMs);
          return undefined;
        },
      });
    }
  }

  if (MIRROR_IDS.some((id) => args.only.has(id))) {
    if (!cli.prefix) throw new BenchError('the mirror rows need the strata CLI (not --strata-cmd skopeo)');
    scenarios.push(...mirrorScenarios(args, cli.prefix, corpus, countedRegistry));
  }
  if (BUILD_IDS.some((id) => args.only.has(id))) scenarios.push(...(await buildScenarios(args, cli, tmpDir)));
  const results = await runAll(scenarios, args.runs, tmpDir);
  await report(args, cli, results, corpus);
}

/** Runs the scenarios in order; a build-resolve result sets the build-cached row's seconds target. */
async function runAll(scenarios: Scenario[], runs: number, tmpDir: string): Promise<ScenarioResult[]> {
  const results: ScenarioResult[] = [];
  for (const sc of scenarios) {
    const r = await runScenario(sc, runs, tmpDir);
    results.push(r);
    if (sc.id !== 'build-resolve') continue;
    const resolve = median(r.samples.strata.map((x) => x.seconds));
    const cached = scenarios.find((c) => c.id === 'build-cached');
    if (cached) {
      cached.checks.seconds = resolve + BUILD_CACHED_EXTRA_SECONDS;
      cached.target = `≤ ${cached.checks.seconds.toFixed(3)} s (resolving the base ${resolve.toFixed(3)} s + ${BUILD_CACHED_EXTRA_SECONDS} s), RSS ≤ ${BUILD_RSS_TARGET_MIB} MiB`;
    }
  }
  return results;
}

/** Prints the report (tables, corpus, machine) and writes it to WORK/results.md. */
async function report(
  args: Args,
  cli: StrataCli,
  results: ScenarioResult[],
  corpus: Corpus | undefined,
): Promise<void> {
  const quick = args.quick;
  const out = [
    `# Strata benchmark${quick ? ' (--quick smoke run)' : ''}`,
    '',
    '| scenario | strata median s | peer median s | ratio (strata/peer) | strata peak RSS MiB | peer peak RSS MiB | target |',
    '|---|---:|---:|---:|---:|---:|---|',
    ...results.map(resultRow),
    '',
    '## Runs',
    '',
    '| scenario | side | timed runs (s, in order) | min s | max s | bytes |',
    '|---|---|---|---:|---:|---|',
    ...results.flatMap(detailRows),
    '',
    ...(corpus
      ? [
          `## Corpus: image \`${corpus.ref}\` (${corpus.layers.length} layers, manifest \`${corpus.manifestDigest.slice(0, 19)}…\`)`,
          '',
          ...corpusTable(corpus),
          '',
        ]
      : []),
    ...(buildFixture ? [...buildFixtureFacts(buildFixture), ''] : []),
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
  killWorkersSync();
  killAllMirrorsSync();
  killAllSync();
  killControllersSync();
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
