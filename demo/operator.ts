/**
 * The quickstart's operator act (`bash scripts/demo.sh`, after the engine acts): a local Kubernetes control plane
 * from the envtest binaries, the CRDs and the seeds' hello world as an ImageBuild applied with kubectl,
 * `strata controller` turning it into a Job, the node stand-in (test/support/kube/test-node.ts, there is no
 * kubelet) running the Job's pod — a real `strata build --spec` that pushes to the embedded registry — and
 * `kubectl get imagebuilds` showing Ready and the digest, checked against the registry's own answer. Everything it
 * starts is stopped and its temp dirs removed, on success, failure, SIGINT or SIGTERM.
 *
 * Usage: `node dist/demo/operator.js --registry HOST:PORT [--timeout SECONDS]`. Exit status: 0 done, 1 failed,
 * {@link EXIT_UNAVAILABLE} when it cannot run here (not root, no envtest binaries; it says why), 130 interrupted.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { parseArgs } from 'node:util';
import { BatchV1Api, CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import { envtestAssets } from '../test/support/kube/assets.js';
import { startControlPlane, type ControlPlane } from '../test/support/kube/control-plane.js';
import { REPO_ROOT } from '../test/support/kube/repo-root.js';
import { startTestNode, strataRunner, type TestNode } from '../test/support/kube/test-node.js';

/** Exit status when the act cannot run on this machine (scripts/demo.sh then says it was skipped). */
export const EXIT_UNAVAILABLE = 3;
/** The build image the controller names; the node stand-in runs it as the local CLI (`node bin/strata.js`). */
const BUILD_IMAGE = 'strata.dev/strata:local';
const EXAMPLE = 'examples/imagebuild-hello-cluster.yaml';
/** The registry the example names; the act points it at the embedded one. */
const EXAMPLE_REGISTRY = 'localhost:5000';
const NAME = 'hello-cluster';
const NAMESPACE = 'default';
const POLL_MS = 500;
const REGISTRY_TIMEOUT_MS = 10_000;

/** What the act shows, in a few lines (printed first). */
const INTRO = [
  'A local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager v1.28: the envtest binaries)',
  'gets the Strata CRDs and an ImageBuild; `strata controller` makes a Job of it. There is no kubelet: a node',
  `stand-in binds the Job's pod and runs it as a local process (the image ${BUILD_IMAGE} is this CLI), a`,
  '`strata build --spec` that pushes to the embedded registry; the controller writes the digest back.',
].join('\n');

type DemoErrorCode = 'UNAVAILABLE' | 'INTERRUPTED' | 'TIMEOUT' | 'BUILD_FAILED' | 'DIGEST_MISMATCH';

/** Why the act stopped early; `code` decides the exit status. */
export class DemoError extends Error {
  constructor(
    readonly code: DemoErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'DemoError';
  }
}

const bold = (s: string): string => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const say = (s = ''): void => void process.stdout.write(`${s}\n`);
const rel = (p: string): string => relative(REPO_ROOT, p) || '.';

interface ImageBuildView {
  spec: { output: { images: string[] } };
  status?: {
    phase?: string;
    digest?: string;
    image?: string;
    conditions?: Array<{ type: string; status: string; reason?: string; message?: string }>;
  };
}

/** The act's resources, stopped in reverse order of creation. */
class Stack {
  private readonly stops: Array<{ what: string; stop: () => Promise<void> }> = [];
  push(what: string, stop: () => Promise<void>): void {
    this.stops.push({ what, stop });
  }
  /** Stops everything pushed so far; returns how many there were. */
  async unwind(): Promise<number> {
    const stops = this.stops.splice(0).reverse();
    for (const { what, stop } of stops)
      await stop().catch((err: unknown) => say(`(stopping ${what}: ${String(err)})`));
    return stops.length;
  }
}

/** Sleeps `ms`, or throws INTERRUPTED when the act is told to stop. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new DemoError('INTERRUPTED', 'interrupted'));
    const done = (): void => {
      signal.removeEventListener('abort', abort);
      resolve();
    };
    const abort = (): void => {
      clearTimeout(timer);
      reject(new DemoError('INTERRUPTED', 'interrupted'));
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', abort, { once: true });
  });
}

function checkInterrupted(signal: AbortSignal): void {
  if (signal.aborted) throw new DemoError('INTERRUPTED', 'interrupted');
}

/** The things this machine must have: root (the node stand-in mounts pod volumes) and the envtest binaries. */
function checkHost(): void {
  if (process.getuid?.() !== 0)
    throw new DemoError(
      'UNAVAILABLE',
      'it needs root (its node stand-in runs the build pod in a private mount namespace)',
    );
  try {
    envtestAssets();
  } catch (err) {
    throw new DemoError('UNAVAILABLE', (err as Error).message);
  }
}

/** `strata controller` as its own process, its log in the control plane's dir (shown when the act fails). */
function startController(cp: ControlPlane): { child: ChildProcess; log: string; exited: Promise<void> } {
  const log = join(cp.dir, 'strata-controller.log');
  const out = createWriteStream(log);
  const child = spawn(
    process.execPath,
    [
      join(REPO_ROOT, 'bin/strata.js'),
      'controller',
      '--kubeconfig',
      cp.kubeconfigPath,
      '--build-image',
      BUILD_IMAGE,
      '--metrics-bind-address',
      '0',
      '--health-probe-bind-address',
      '0',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.stdout!.pipe(out, { end: false });
  child.stderr!.pipe(out, { end: false });
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', () => resolve());
  });
  return { child, log, exited };
}

async function stopChild(p: { child: ChildProcess; exited: Promise<void> }): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  p.child.kill('SIGTERM');
  const timer = setTimeout(() => p.child.kill('SIGKILL'), 15_000);
  await p.exited;
  clearTimeout(timer);
}

/** Shows a kubectl command as the user would type it, runs it, prints what it prints. */
async function kubectl(cp: ControlPlane, shown: string, args: string[], input?: string): Promise<string> {
  say();
  say(bold(`$ ${shown}`));
  const out = await cp.kubectlOk(args, input === undefined ? {} : { input });
  process.stdout.write(out);
  return out;
}

/** The build and one line per fact about it (Job created, pod bound and its phase, conditions that hold). */
async function observe(cp: ControlPlane): Promise<{ build: ImageBuildView; lines: string[] }> {
  const kc = cp.kubeConfig();
  const selector = `strata.dev/imagebuild=${NAME}`;
  const [jobs, pods, build] = await Promise.all([
    kc.makeApiClient(BatchV1Api).listNamespacedJob({ namespace: NAMESPACE, labelSelector: selector }),
    kc.makeApiClient(CoreV1Api).listNamespacedPod({ namespace: NAMESPACE, labelSelector: selector }),
    readBuild(cp),
  ]);
  const lines = jobs.items.map((j) => `job/${j.metadata!.name} created by strata controller`);
  for (const p of pods.items) {
    lines.push(`pod/${p.metadata!.name} created by the Job controller`);
    if (p.spec?.nodeName) lines.push(`pod/${p.metadata!.name} bound to node ${p.spec.nodeName}`);
    if (p.status?.phase && p.spec?.nodeName) lines.push(`pod/${p.metadata!.name} ${p.status.phase}`);
  }
  for (const c of build.status?.conditions ?? [])
    if (c.status === 'True') lines.push(`imagebuild/${NAME} ${c.type} (${c.reason ?? ''})`);
  return { build, lines };
}

async function readBuild(cp: ControlPlane): Promise<ImageBuildView> {
  return (await cp.kubeConfig().makeApiClient(CustomObjectsApi).getNamespacedCustomObject({
    group: 'strata.dev',
    version: 'v1alpha1',
    namespace: NAMESPACE,
    plural: 'imagebuilds',
    name: NAME,
  })) as ImageBuildView;
}

const condition = (b: ImageBuildView, type: string) => b.status?.conditions?.find((c) => c.type === type);

/** Polls until the build is Ready (returned) or Failed (thrown), printing each new fact once. */
async function untilFinished(
  cp: ControlPlane,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<ImageBuildView> {
  const seen = new Set<string>();
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    checkInterrupted(signal);
    // A failed poll (the apiserver busy on a loaded machine) is tried again until the deadline.
    const { build: b, lines } = (await observe(cp).catch(() => undefined)) ?? { lines: [] };
    for (const l of lines) if (!seen.has(l) && seen.add(l)) say(`  ${l}`);
    if (b && condition(b, 'Ready')?.status === 'True') return b;
    const failed = b && condition(b, 'Failed');
    if (failed?.status === 'True')
      throw new DemoError('BUILD_FAILED', `the build failed (${failed.reason}): ${failed.message}`);
    if (Date.now() > deadline)
      throw new DemoError('TIMEOUT', `the ImageBuild was not Ready after ${Math.round(timeoutMs / 1000)} s`);
    await pause(POLL_MS, signal);
  }
}

/** The registry's digest for `host/repo:tag`, as a client resolving the tag gets it. */
async function registryDigest(ref: string): Promise<string> {
  const slash = ref.indexOf('/');
  const colon = ref.lastIndexOf(':');
  const [host, repo, tag] = [ref.slice(0, slash), ref.slice(slash + 1, colon), ref.slice(colon + 1)];
  const res = await fetch(`http://${host}/v2/${repo}/manifests/${tag}`, {
    method: 'HEAD',
    headers: {
      accept: [
        'application/vnd.oci.image.manifest.v1+json',
        'application/vnd.oci.image.index.v1+json',
        'application/vnd.docker.distribution.manifest.v2+json',
      ].join(', '),
    },
    signal: AbortSignal.timeout(REGISTRY_TIMEOUT_MS),
  });
  const digest = res.headers.get('docker-content-digest');
  if (res.status !== 200 || !digest)
    throw new DemoError('DIGEST_MISMATCH', `the registry has no ${ref} (HTTP ${res.status})`);
  return digest;
}

/** The act itself; `stack` collects what must be stopped. */
async function act(
  registry: string,
  timeoutMs: number,
  stack: Stack,
  signal: AbortSignal,
  onFailure: (show: () => Promise<void>) => void,
): Promise<void> {
  checkHost();
  say(INTRO);
  const cp = await startControlPlane({ controllerManager: true });
  stack.push('the control plane', () => cp.stop());
  checkInterrupted(signal);
  say(`control plane: ${cp.server} (export KUBECONFIG=${cp.kubeconfigPath} to look around while it runs)`);
  const node: TestNode = await startTestNode(cp.kubeConfig(), {
    name: 'demo-node',
    images: { [BUILD_IMAGE]: strataRunner },
  });
  stack.push('the node stand-in', () => node.stop());
  checkInterrupted(signal);

  const crds = join(REPO_ROOT, 'crds');
  await kubectl(cp, `kubectl apply -f ${rel(crds)}/`, ['apply', '-f', crds]);
  await kubectl(cp, `kubectl wait --for=condition=Established -f ${rel(crds)}/`, [
    'wait',
    '--for=condition=Established',
    '--timeout=60s',
    '-f',
    crds,
  ]);
  const hello = join(REPO_ROOT, 'examples/hello');
  await kubectl(cp, `kubectl create configmap hello --from-file=${rel(hello)}/`, [
    'create',
    'configmap',
    'hello',
    `--from-file=${hello}`,
  ]);
  const yaml = (await readFile(join(REPO_ROOT, EXAMPLE), 'utf8')).replaceAll(EXAMPLE_REGISTRY, registry);
  say();
  say(`${EXAMPLE}, its image in the embedded registry (${EXAMPLE_REGISTRY} → ${registry}):`);
  process.stdout.write(yaml.replace(/^#.*\n/gm, ''));
  await kubectl(
    cp,
    `sed 's/${EXAMPLE_REGISTRY}/${registry}/' ${EXAMPLE} | kubectl apply -f -`,
    ['apply', '-f', '-'],
    yaml,
  );
  checkInterrupted(signal);

  say();
  say(bold(`$ strata controller --kubeconfig $KUBECONFIG --build-image ${BUILD_IMAGE} &`));
  const controller = startController(cp);
  stack.push('strata controller', () => stopChild(controller));
  onFailure(async () => {
    const log = await readFile(controller.log, 'utf8').catch(() => '');
    say(`strata controller's log (last lines):\n${log.split('\n').slice(-20).join('\n')}`);
    for (const pod of node.ran()) {
      const [ns, name] = pod.split('/') as [string, string];
      say(`${pod}'s log:\n${(await node.logs(ns, name)).split('\n').slice(-20).join('\n')}`);
    }
  });
  const built = await untilFinished(cp, timeoutMs, signal);

  await kubectl(cp, 'kubectl get imagebuilds', ['get', 'imagebuilds']);
  await kubectl(cp, 'kubectl get jobs,pods', ['get', 'jobs,pods']);
  const ref = built.spec.output.images[0]!;
  const digest = await registryDigest(ref);
  if (digest !== built.status?.digest)
    throw new DemoError(
      'DIGEST_MISMATCH',
      `status.digest is ${built.status?.digest}, the registry says ${digest}`,
    );
  say();
  say(`the registry's digest for ${ref}: ${digest} — the one in status.digest (${built.status?.image})`);
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { registry: { type: 'string' }, timeout: { type: 'string', default: '180' } },
  });
  if (!values.registry || !Number(values.timeout)) {
    process.stderr.write('usage: node dist/demo/operator.js --registry HOST:PORT [--timeout SECONDS]\n');
    return 2;
  }
  const abort = new AbortController();
  // A terminal's Ctrl-C reaches every process of the group, scripts/demo.sh sends SIGTERM: either way, clean up.
  const stop = (): void => abort.abort();
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  const stack = new Stack();
  let explain: (() => Promise<void>) | undefined;
  try {
    await act(values.registry, Number(values.timeout) * 1000, stack, abort.signal, (f) => (explain = f));
    return 0;
  } catch (err) {
    const code = abort.signal.aborted ? 'INTERRUPTED' : err instanceof DemoError ? err.code : undefined;
    if (code === 'INTERRUPTED') {
      say('\ninterrupted: stopping the operator act');
      return 130;
    }
    if (code === 'UNAVAILABLE') {
      say(`(the operator act is skipped: ${(err as Error).message})`);
      return EXIT_UNAVAILABLE;
    }
    process.stderr.write(`operator act failed: ${err instanceof Error ? err.message : String(err)}\n`);
    await explain?.().catch(() => undefined);
    return 1;
  } finally {
    if (await stack.unwind())
      say('stopped strata controller, the node stand-in and the control plane; their files are removed');
  }
}

// Exit at once: client-node's keep-alive sockets would hold the process open for a while.
process.exit(await main());
