/**
 * `npm run bench -- --only operator` (issue 14 §5): the ImageBuild controller at scale against a real control plane.
 * etcd, kube-apiserver (audit-logging every request of the controller's user) and kube-controller-manager (the real
 * Job controller) from the envtest binaries; the CRDs; N ImageBuilds; an instant test node that binds each build pod
 * and finishes it at once with a valid build report; `strata controller` as a real process authenticated as its own
 * user and bound to the shipped ClusterRole. Measured: the controller's writes per object to steady state, counted at
 * the server by the audit log; the time until every ImageBuild is Ready; the controller's peak RSS; then a resync and
 * a restart with nothing changed (target: no write). See bench/README.md.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { V1Job, V1Pod } from '@kubernetes/client-node';
import { encodeBuildReport } from '../src/api/v1alpha1/build-result.js';
import { Informer, KubeClient, type KubeObject } from '../src/kube/index.js';
import { startControlPlane, type ControlPlane } from '../test/support/kube/control-plane.js';
import { startTestNode, STRATA_TEST_IMAGE, type TestNode } from '../test/support/kube/test-node.js';
import { peakRssKiB } from './mirror.js';
import { BenchError, log, MiB } from './util.js';

// ---------------------------------------------------------------------------------------------
// Targets (issue 14 §5)

/** Writes (POST/PUT/PATCH/DELETE) per ImageBuild to reach steady state, Events not counted (reported apart). */
export const WRITES_PER_OBJECT_TARGET = 3;
/** Every ImageBuild Ready within this many seconds of the controller's start. */
export const STEADY_SECONDS_TARGET = 60;
/** The controller process's peak RSS. */
export const CONTROLLER_RSS_TARGET_MIB = 200;

/** The controller's identity: a client certificate with this CN, as a Deployment's service account would be. */
const CONTROLLER_USER = 'strata-controller';
const NAMESPACE = 'bench';
/** The repository the fake reports say they pushed to (nothing is pushed: the node runs nothing). */
const REPO = 'registry.bench.invalid/bench';
/** A phase is over when the controller has made no request for this long. */
const QUIET_MS = 5_000;

/** Options of {@link runOperatorBench}. */
export interface OperatorBenchOptions {
  readonly root: string;
  /** Work dir (its `operator/` holds the audit log and the controller's log of the last run). */
  readonly work: string;
  readonly objects: number;
  readonly concurrency: number;
  /** The controller's `--sync-period` for the resync phase. */
  readonly syncPeriodS: number;
  /** Longest wait for any phase. */
  readonly timeoutMs: number;
}

/** What one phase's audit records add up to. */
interface RequestTally {
  /** `verb resource[/subresource]` → count, for writes (create, update, patch, delete, deletecollection). */
  writes: Map<string, number>;
  /** Same, for reads (get, list, watch). */
  reads: Map<string, number>;
  /** Writes the server refused (`code` → count), e.g. 409 conflicts. */
  refused: Map<number, number>;
}

interface AuditEvent {
  stage?: string;
  verb?: string;
  user?: { username?: string };
  objectRef?: { resource?: string; subresource?: string };
  responseStatus?: { code?: number };
}

const WRITE_VERBS = new Set(['create', 'update', 'patch', 'delete', 'deletecollection']);

/** Reads the audit log from `offset` on; returns the tally of the controller's requests and the new offset. */
async function readAudit(file: string, offset: number): Promise<{ tally: RequestTally; offset: number }> {
  const tally: RequestTally = { writes: new Map(), reads: new Map(), refused: new Map() };
  const size = await stat(file).then(
    (s) => s.size,
    () => 0,
  );
  if (size <= offset) return { tally, offset };
  const lines = createInterface({ input: createReadStream(file, { start: offset, end: size - 1 }) });
  let consumed = offset;
  for await (const line of lines) {
    consumed += Buffer.byteLength(line) + 1;
    if (!line) continue;
    let e: AuditEvent;
    try {
      e = JSON.parse(line) as AuditEvent;
    } catch {
      // A line still being written: read it next time.
      consumed -= Buffer.byteLength(line) + 1;
      break;
    }
    if (e.user?.username !== CONTROLLER_USER || !e.verb) continue;
    // One record per request: a watch when its response starts, anything else when it completes.
    if (e.stage !== (e.verb === 'watch' ? 'ResponseStarted' : 'ResponseComplete')) continue;
    const what = `${e.verb} ${e.objectRef?.resource ?? '?'}${e.objectRef?.subresource ? `/${e.objectRef.subresource}` : ''}`;
    const write = WRITE_VERBS.has(e.verb);
    const into = write ? tally.writes : tally.reads;
    into.set(what, (into.get(what) ?? 0) + 1);
    const code = e.responseStatus?.code ?? 0;
    if (write && (code < 200 || code > 299)) tally.refused.set(code, (tally.refused.get(code) ?? 0) + 1);
  }
  return { tally, offset: Math.min(consumed, size) };
}

function merge(a: RequestTally, b: RequestTally): RequestTally {
  const add = (x: Map<string | number, number>, y: Map<string | number, number>) => {
    for (const [k, v] of y) x.set(k, (x.get(k) ?? 0) + v);
  };
  add(a.writes, b.writes);
  add(a.reads, b.reads);
  add(a.refused as Map<string | number, number>, b.refused as Map<string | number, number>);
  return a;
}

const sum = (m: Map<unknown, number>, pick: (k: string) => boolean = () => true): number =>
  [...m].filter(([k]) => pick(String(k))).reduce((n, [, v]) => n + v, 0);
const isEvent = (k: string): boolean => k.endsWith(' events');

/** Follows the audit log: every phase starts a window and waits until the controller has been quiet. */
class AuditCounter {
  private offset = 0;
  constructor(private readonly file: string) {}

  /** Forgets everything logged so far (the next window starts now). */
  async mark(): Promise<void> {
    this.offset = (await readAudit(this.file, this.offset)).offset;
  }

  /**
   * Waits until `ready()` holds and then no request of the controller's reached the server for {@link QUIET_MS};
   * returns the tally since the last mark.
   */
  async settle(
    ready: () => boolean | Promise<boolean>,
    timeoutMs: number,
    what: string,
  ): Promise<RequestTally> {
    const deadline = Date.now() + timeoutMs;
    let total: RequestTally = { writes: new Map(), reads: new Map(), refused: new Map() };
    let lastActivity = Date.now();
    for (;;) {
      const r = await readAudit(this.file, this.offset);
      this.offset = r.offset;
      // Watches stay open and are logged once; anything else is activity.
      if (sum(r.tally.writes) + sum(r.tally.reads, (k) => !k.startsWith('watch ')) > 0)
        lastActivity = Date.now();
      total = merge(total, r.tally);
      if ((await ready()) && Date.now() - lastActivity >= QUIET_MS) return total;
      if (Date.now() > deadline)
        throw new BenchError(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
      await new Promise((res) => setTimeout(res, 500));
    }
  }
}

/** A free loopback port (for the controller's /metrics). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/** `strata controller` as a real process. */
class ControllerProcess {
  private readonly exited: Promise<number | null>;
  private constructor(
    readonly child: ChildProcess,
    readonly metricsPort: number,
  ) {
    this.exited = new Promise((r) => child.once('exit', (code) => r(code)));
  }

  static async start(
    root: string,
    kubeconfig: string,
    o: { concurrency: number; syncPeriodS: number; logFile: string },
  ): Promise<ControllerProcess> {
    const port = await freePort();
    const out = createWriteStream(o.logFile, { flags: 'a' });
    await new Promise((r) => out.once('open', r));
    const child = spawn(
      process.execPath,
      [
        // A CPU profile per controller process, for bench/cpuprofile.ts (see bench/README.md).
        ...(process.env.STRATA_BENCH_CPU_PROF
          ? ['--cpu-prof', `--cpu-prof-dir=${process.env.STRATA_BENCH_CPU_PROF}`]
          : []),
        path.join(root, 'bin', 'strata.js'),
        'controller',
        '--kubeconfig',
        kubeconfig,
        '--build-image',
        STRATA_TEST_IMAGE,
        '--metrics-bind-address',
        `127.0.0.1:${port}`,
        '--health-probe-bind-address',
        '0',
        '--max-concurrent-reconciles',
        String(o.concurrency),
        '--sync-period',
        `${o.syncPeriodS}s`,
      ],
      { stdio: ['ignore', 'ignore', out], env: { ...process.env, STRATA_LOG_LEVEL: 'info' } },
    );
    live.add(child);
    child.once('exit', () => live.delete(child));
    return new ControllerProcess(child, port);
  }

  /** Reconciles finished so far, any result (`strata_reconcile_total`); -1 while /metrics does not answer. */
  async reconciles(): Promise<number> {
    try {
      const r = await fetch(`http://127.0.0.1:${this.metricsPort}/metrics`, {
        signal: AbortSignal.timeout(5000),
      });
      const text = await r.text();
      let n = 0;
      for (const m of text.matchAll(/^strata_reconcile_total\{[^}]*\} (\d+(?:\.\d+)?(?:e\+\d+)?)$/gm))
        n += Number(m[1]);
      return n;
    } catch {
      return -1;
    }
  }

  /** The process's peak resident set so far (VmHWM), KiB. */
  peakRssKiB(): Promise<number> {
    return peakRssKiB(this.child.pid);
  }

  /** User + system CPU seconds so far. */
  async cpuSeconds(): Promise<number> {
    const text = await readFile(`/proc/${this.child.pid}/stat`, 'utf8').catch(() => '');
    // utime and stime, fields 14 and 15, in clock ticks (100 per second on Linux).
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  }

  /** SIGTERM (graceful: in-flight reconciles finish), SIGKILL after 30 s. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 30_000);
    await this.exited;
    clearTimeout(timer);
  }
}

const live = new Set<ChildProcess>();

/** Kills controllers still running (bench exit). */
export function killControllersSync(): void {
  for (const c of live) c.kill('SIGKILL');
}

/** The ImageBuild the bench creates: a ConfigMap context and an inline Dockerfile, pushed nowhere real. */
function imageBuild(name: string): object {
  return {
    apiVersion: 'strata.dev/v1alpha1',
    kind: 'ImageBuild',
    metadata: { name, namespace: NAMESPACE },
    spec: {
      context: { configMap: { name: 'bench-context' } },
      dockerfile: { inline: 'FROM scratch\nCOPY hello.txt /hello.txt\n' },
      output: { images: [`${REPO}/${name}:v1`], push: false },
      timestamp: 0,
    },
  };
}

/** What the instant node reports for a build pod: success, a digest derived from the ImageBuild's name. */
function instantReport(pod: V1Pod): { exitCode: number; message: string } {
  const name = pod.metadata?.labels?.['strata.dev/imagebuild'] ?? pod.metadata?.name ?? 'unknown';
  const digest = `sha256:${createHash('sha256').update(name).digest('hex')}`;
  const at = new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
  return {
    exitCode: 0,
    message: encodeBuildReport({
      v: 1,
      ok: true,
      digest,
      image: `${REPO}/${name}@${digest}`,
      steps: 2,
      cacheHits: 2,
      startedAt: at,
      finishedAt: at,
    }),
  };
}

type Build = KubeObject & {
  metadata: { name: string; generation?: number };
  status?: { observedGeneration?: number; conditions?: { type: string; status: string }[] };
};
const isReady = (b: Build): boolean =>
  b.status?.observedGeneration === b.metadata.generation &&
  !!b.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');

/** Runs `fn` over `items`, `n` at a time. */
async function pool<T>(items: readonly T[], n: number, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

/** The controller's RBAC: the shipped ClusterRole bound to its user, else cluster-admin (and the report says so). */
async function bindController(cp: ControlPlane, root: string): Promise<string> {
  const dir = path.join(root, 'deploy', 'rbac');
  const files = existsSync(dir) ? (await readdir(dir)).filter((f) => f.endsWith('.yaml')) : [];
  if (files.length === 0) {
    await cp.kubectlOk([
      'create',
      'clusterrolebinding',
      'bench-controller',
      '--clusterrole=cluster-admin',
      `--user=${CONTROLLER_USER}`,
    ]);
    return 'cluster-admin (no deploy/rbac/ on this branch)';
  }
  await cp.kubectlOk(['create', 'namespace', 'strata-system']);
  for (const f of files) await cp.kubectlOk(['apply', '-f', path.join(dir, f)]);
  await cp.kubectlOk([
    'create',
    'clusterrolebinding',
    'bench-controller',
    '--clusterrole=strata-controller',
    `--user=${CONTROLLER_USER}`,
  ]);
  return `the shipped ClusterRole \`strata-controller\` (${files.map((f) => `deploy/rbac/${f}`).join(', ')})`;
}

const AUDIT_POLICY = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    users: [${CONTROLLER_USER}]
  - level: None
`;

/** One phase's numbers. */
interface Phase {
  name: string;
  tally: RequestTally;
  seconds: number;
  reconciles: number;
  rssKiB: number;
}

/** Stops what a running benchmark started (a signal's cleanup); undefined when none runs. */
let stopRunning: (() => Promise<void>) | undefined;

/** Stops the running operator benchmark's controller, node and control plane (SIGINT/SIGTERM). */
export async function stopOperatorBench(): Promise<void> {
  await stopRunning?.();
}

/** Runs the whole operator benchmark and returns its report (Markdown). */
export async function runOperatorBench(o: OperatorBenchOptions): Promise<string> {
  for (const f of ['dist/bundle/strata.js', 'dist/test/support/kube/control-plane.js'])
    if (!existsSync(path.join(o.root, f))) throw new BenchError(`${f} is missing: npm run build`);
  const dir = path.join(o.work, 'operator');
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const policy = path.join(dir, 'audit-policy.yaml');
  const auditLog = path.join(dir, 'audit.log');
  await writeFile(policy, AUDIT_POLICY);

  let cp: ControlPlane | undefined;
  let node: TestNode | undefined;
  let controller: ControllerProcess | undefined;
  const watchers: Informer<KubeObject>[] = [];
  const stopAll = async (): Promise<void> => {
    stopRunning = undefined;
    await controller?.stop().catch(() => undefined);
    await Promise.all(watchers.map((w) => w.stop()));
    await node?.stop();
    await cp?.stop();
  };
  stopRunning = stopAll;
  try {
    log('operator: starting etcd, kube-apiserver (audit log) and kube-controller-manager');
    cp = await startControlPlane({
      controllerManager: true,
      apiServerFlags: [
        `--audit-policy-file=${policy}`,
        `--audit-log-path=${auditLog}`,
        '--audit-log-maxsize=0',
      ],
      // The Job controller's defaults (20 QPS, 5 concurrent syncs) would make the bench measure kube-controller-manager.
      controllerManagerFlags: ['--kube-api-qps=1000', '--kube-api-burst=2000', '--concurrent-job-syncs=50'],
    });
    const crds = path.join(o.root, 'crds');
    await cp.kubectlOk(['apply', '-f', crds]);
    await cp.kubectlOk(['wait', '--for=condition=Established', '--timeout=60s', '-f', crds]);
    const rbac = await bindController(cp, o.root);
    const kubeconfig = await cp.userKubeconfig(CONTROLLER_USER);
    await cp.kubectlOk(['create', 'namespace', NAMESPACE]);
    await cp.kubectlOk([
      '-n',
      NAMESPACE,
      'create',
      'configmap',
      'bench-context',
      '--from-literal=hello.txt=hello\n',
    ]);

    // The ImageBuilds, created before the controller starts (untimed).
    const admin = new KubeClient({ kubeConfig: cp.kubeConfig(), userAgent: 'strata-bench' });
    const names = Array.from({ length: o.objects }, (_, i) => `build-${String(i).padStart(5, '0')}`);
    const t0 = Date.now();
    await pool(names, 32, async (name) => {
      await admin.request('create', 'POST', `/apis/strata.dev/v1alpha1/namespaces/${NAMESPACE}/imagebuilds`, {
        body: imageBuild(name),
      });
    });
    log(`operator: ${o.objects} ImageBuilds created in ${((Date.now() - t0) / 1000).toFixed(1)} s (untimed)`);

    // The bench's own view (watches with admin credentials: not counted): readiness, and the Jobs and pods on the
    // way to it for the progress lines.
    const watch = async <T extends KubeObject>(apiVersion: string, kind: string, plural: string) => {
      const inf = new Informer<T>({
        client: admin,
        type: { apiVersion, kind, plural, namespaced: true },
        namespaces: [NAMESPACE],
        resyncMs: 0,
      });
      watchers.push(inf as unknown as Informer<KubeObject>);
      inf.start();
      await inf.waitForSync();
      return inf.store;
    };
    const builds = await watch<Build>('strata.dev/v1alpha1', 'ImageBuild', 'imagebuilds');
    const jobs = await watch<V1Job & KubeObject>('batch/v1', 'Job', 'jobs');
    const pods = await watch<V1Pod & KubeObject>('v1', 'Pod', 'pods');
    const readyCount = (): number => builds.list().filter(isReady).length;
    const completeCount = (): number =>
      jobs
        .list()
        .filter((j) => j.status?.conditions?.some((c) => c.type === 'Complete' && c.status === 'True'))
        .length;
    const progress = (): string => {
      const ps = pods.list();
      return (
        `Jobs ${jobs.size} (complete ${completeCount()}), pods ${ps.length} (bound ${ps.filter((p) => p.spec?.nodeName).length}, ` +
        `succeeded ${ps.filter((p) => p.status?.phase === 'Succeeded').length}), Ready ${readyCount()}/${o.objects}`
      );
    };
    node = await startTestNode(cp.kubeConfig(), {
      name: 'bench-node',
      capacity: { pods: String(o.objects * 2) },
      instant: instantReport,
    });

    const audit = new AuditCounter(auditLog);
    const controllerLog = path.join(dir, 'controller.log');
    const startController = () =>
      ControllerProcess.start(o.root, kubeconfig, {
        concurrency: o.concurrency,
        syncPeriodS: o.syncPeriodS,
        logFile: controllerLog,
      });

    // Phase 1: from nothing to every ImageBuild Ready, then quiet.
    await audit.mark();
    const start = Date.now();
    controller = await startController();
    let readyAt = 0;
    let lastLog = 0;
    // Where the time goes: the controller creates the Jobs; kube-controller-manager and the node complete them.
    const milestones = { jobsCreated: 0, jobsComplete: 0 };
    const steady = await audit.settle(
      () => {
        const n = readyCount();
        if (Date.now() - lastLog > 5000) {
          lastLog = Date.now();
          log(`  ${((Date.now() - start) / 1000).toFixed(0).padStart(3)} s: ${progress()}`);
        }
        if (n === o.objects && !readyAt) readyAt = Date.now();
        if (!milestones.jobsCreated && jobs.size >= o.objects) milestones.jobsCreated = Date.now();
        if (!milestones.jobsComplete && completeCount() >= o.objects) milestones.jobsComplete = Date.now();
        return n === o.objects;
      },
      o.timeoutMs,
      `${o.objects} ImageBuilds Ready`,
    );
    const c1 = controller;
    const phases: Phase[] = [
      {
        name: 'to steady state',
        tally: steady,
        seconds: (readyAt - start) / 1000,
        reconciles: await c1.reconciles(),
        rssKiB: await c1.peakRssKiB(),
      },
    ];
    log(`operator: all Ready after ${phases[0]!.seconds.toFixed(1)} s; ${sum(steady.writes)} writes`);

    // Phase 2: one resync with nothing changed (every cached object handed to the reconciler again).
    await audit.mark();
    const before = await c1.reconciles();
    const resyncStart = Date.now();
    const resync = await audit.settle(
      async () => (await c1.reconciles()) >= before + o.objects,
      o.syncPeriodS * 1000 + o.timeoutMs,
      'a resync',
    );
    phases.push({
      name: `resync (\`--sync-period ${o.syncPeriodS}s\`), nothing changed`,
      tally: resync,
      seconds: (Date.now() - resyncStart - QUIET_MS) / 1000,
      reconciles: (await c1.reconciles()) - before,
      rssKiB: await c1.peakRssKiB(),
    });
    const cpu1 = await c1.cpuSeconds();
    await c1.stop();
    log(`operator: resync: ${sum(resync.writes)} writes`);

    // Phase 3: a restart with nothing changed (a new process lists everything and reconciles it).
    await audit.mark();
    const restartStart = Date.now();
    controller = await startController();
    const c2 = controller;
    const restart = await audit.settle(
      async () => (await c2.reconciles()) >= o.objects,
      o.timeoutMs,
      'the restarted controller',
    );
    phases.push({
      name: 'restart, nothing changed',
      tally: restart,
      seconds: (Date.now() - restartStart - QUIET_MS) / 1000,
      reconciles: await c2.reconciles(),
      rssKiB: await c2.peakRssKiB(),
    });
    log(`operator: restart: ${sum(restart.writes)} writes`);
    await c2.stop();
    if (readyCount() !== o.objects)
      throw new BenchError(`only ${readyCount()} of ${o.objects} ImageBuilds are still Ready`);
    const since = (t: number) => (t ? (t - start) / 1000 : NaN);
    return report(o, phases, rbac, cpu1, {
      jobsCreated: since(milestones.jobsCreated),
      jobsComplete: since(milestones.jobsComplete),
    });
  } finally {
    await stopAll();
  }
}

function fmtTally(m: Map<string, number>, objects: number): string {
  return [...m]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k} ${v} (${(v / objects).toFixed(2)}/object)`)
    .join('; ');
}

function report(
  o: OperatorBenchOptions,
  phases: Phase[],
  rbac: string,
  cpuSeconds: number,
  times: { jobsCreated: number; jobsComplete: number },
): string {
  const [steady, resync, restart] = phases as [Phase, Phase, Phase];
  const perObject = sum(steady.tally.writes, (k) => !isEvent(k)) / o.objects;
  const eventsPerObject = sum(steady.tally.writes, isEvent) / o.objects;
  const rssMiB = Math.max(...phases.map((p) => p.rssKiB)) / 1024;
  const verdict = (ok: boolean) => (ok ? 'met' : '**missed**');
  const rows = [
    `| writes per ImageBuild to steady state (Events apart) | ${perObject.toFixed(2)} | ≤ ${WRITES_PER_OBJECT_TARGET} — ${verdict(perObject <= WRITES_PER_OBJECT_TARGET)} |`,
    `| Events written per ImageBuild (informational) | ${eventsPerObject.toFixed(2)} | — |`,
    `| time until all ${o.objects} Ready (from the controller's start) | ${steady.seconds.toFixed(1)} s | ≤ ${STEADY_SECONDS_TARGET} s — ${verdict(steady.seconds <= STEADY_SECONDS_TARGET)} |`,
    `| … of which: all ${o.objects} Jobs created by the controller; all Complete (kube-controller-manager and the node) | ${times.jobsCreated.toFixed(1)} s; ${times.jobsComplete.toFixed(1)} s | informational |`,
    `| controller peak RSS (VmHWM) | ${rssMiB.toFixed(0)} MiB | ≤ ${CONTROLLER_RSS_TARGET_MIB} MiB — ${verdict(rssMiB <= CONTROLLER_RSS_TARGET_MIB)} |`,
    `| writes on a resync with nothing changed | ${sum(resync.tally.writes)} | 0 — ${verdict(sum(resync.tally.writes) === 0)} |`,
    `| writes on a restart with nothing changed | ${sum(restart.tally.writes)} | 0 — ${verdict(sum(restart.tally.writes) === 0)} |`,
  ];
  const detail = phases.map(
    (p) =>
      `| ${p.name} | ${p.seconds.toFixed(1)} | ${p.reconciles} | ${fmtTally(p.tally.writes, o.objects) || '—'} | ${[...p.tally.refused].map(([c, n]) => `${n}× HTTP ${c}`).join(', ') || '—'} | ${fmtTally(p.tally.reads, o.objects) || '—'} | ${(p.rssKiB / 1024).toFixed(0)} |`,
  );
  return [
    `# Strata operator benchmark: ${o.objects} ImageBuilds`,
    '',
    '| measure | result | target |',
    '|---|---:|---|',
    ...rows,
    '',
    '## Requests of the controller, by phase (audit log of the apiserver, user `strata-controller`)',
    '',
    '| phase | s | reconciles | writes (verb resource) | refused writes | reads | peak RSS MiB |',
    '|---|---:|---:|---|---|---|---:|',
    ...detail,
    '',
    '## Setup',
    '',
    `- control plane: envtest v1.28 etcd + kube-apiserver (audit policy: Metadata for the controller's user) + kube-controller-manager (\`--kube-api-qps=1000 --kube-api-burst=2000 --concurrent-job-syncs=50\`)`,
    `- controller: \`strata controller --max-concurrent-reconciles ${o.concurrency} --sync-period ${o.syncPeriodS}s\` (no leader election), user \`${CONTROLLER_USER}\` bound to ${rbac}; ${cpuSeconds.toFixed(1)} CPU s in the first process (steady state + resync)`,
    `- node: the test node's instant mode binds each build pod and writes it terminated (exit 0, a valid build report as the termination message) without running anything`,
    `- ImageBuilds created before the controller starts; "Ready" is the bench's own watch (admin user, not counted)`,
    `- date: ${new Date().toISOString()}; ${os.availableParallelism()} CPUs, ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${(os.totalmem() / 1024 / MiB).toFixed(1)} GiB; node ${process.version}`,
    `- load average at the end: ${os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')} (the machine is shared with other work: times are noisy)`,
    '',
  ].join('\n');
}
