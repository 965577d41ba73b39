/**
 * `strata controller`: the operator process. Flag names follow controller-runtime's (`--kubeconfig`,
 * `--leader-elect`, `--metrics-bind-address`, `--health-probe-bind-address`, `--max-concurrent-reconciles`) and
 * kube-controller-manager's for the Lease timings. Runs every controller in src/controllers until SIGTERM/SIGINT
 * (graceful: in-flight reconciles finish for `--graceful-shutdown-timeout`, the Lease is released) or until the
 * Lease is lost (exit 1, so the pod restarts clean).
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Command } from 'commander';
import type { StrataEnvironment } from '../config/index.js';
import { StrataError, TerminalError, type StrataErrorCode } from '../engine/errors.js';
import type { KubeErrorCode } from '../kube/errors.js';
import { STRATA_VERSION } from './version.js';
import { collect } from './main.js';
import { parsePositiveInt } from './registry-commands.js';

interface ControllerFlags {
  kubeconfig?: string;
  namespace?: string[];
  leaderElect?: boolean;
  leaderElectionNamespace?: string;
  leaderElectionId: string;
  leaderElectLeaseDuration: string;
  leaderElectRenewDeadline: string;
  leaderElectRetryPeriod: string;
  metricsBindAddress: string;
  healthProbeBindAddress: string;
  maxConcurrentReconciles: string;
  gracefulShutdownTimeout: string;
  syncPeriod: string;
  buildImage: string;
  buildImagePullPolicy?: string;
  mirrorImage?: string;
  buildNodeSelector?: string[];
  buildToleration?: string[];
  buildServiceAccount?: string[];
  buildNetwork?: string[];
  buildMaxDuration?: string;
  logLevel: string;
}

/** `:8080` (all interfaces), `HOST:PORT`, or `0` (disabled, undefined). */
export function parseBindAddress(flag: string, value: string): { host: string; port: number } | undefined {
  if (value === '0') return undefined;
  const m = /^(\[[^\]]+\]|[^:]*):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535)
    throw new TerminalError(
      'INVALID_ARGUMENT',
      `invalid ${flag} ${JSON.stringify(value)}: want :PORT, HOST:PORT or 0`,
    );
  return { host: m[1] ? m[1].replace(/^\[|\]$/g, '') : '0.0.0.0', port };
}

/** `15s`, `500ms`, `2m`, or bare seconds. */
function parseSeconds(flag: string, value: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(value);
  if (!m)
    throw new TerminalError('INVALID_ARGUMENT', `invalid ${flag} ${JSON.stringify(value)}: want e.g. 15s`);
  const n = Number(m[1]);
  return m[2] === 'ms' ? n : m[2] === 'm' ? n * 60_000 : n * 1000;
}

const KUBE_TO_CLI: Record<KubeErrorCode, StrataErrorCode> = {
  CONFLICT: 'CONFLICT',
  NOT_FOUND: 'NOT_FOUND',
  GONE: 'NETWORK',
  FORBIDDEN: 'DENIED',
  INVALID: 'INVALID_ARGUMENT',
  UNAVAILABLE: 'NETWORK',
  NETWORK: 'NETWORK',
  ABORTED: 'ABORTED',
  CONFIG: 'INVALID_ARGUMENT',
  LEADERSHIP_LOST: 'CONFLICT',
  TERMINAL: 'INTERNAL',
};

/** The image build pods run unless `--build-image` names another: this release's. */
export const DEFAULT_BUILD_IMAGE = `ghcr.io/strata-dev/strata:${STRATA_VERSION}`;

const PULL_POLICIES = ['Always', 'IfNotPresent', 'Never'] as const;

/** Registers `strata controller`. */
export function registerControllerCommand(program: Command, env: StrataEnvironment): void {
  program
    .command('controller')
    .description(
      "run the Kubernetes operator: the controllers of Strata's custom resources, with leader election, " +
        'Prometheus metrics and health probes, until SIGTERM',
    )
    .option(
      '--kubeconfig <file>',
      'kubeconfig to use (else in-cluster, else $KUBECONFIG, else ~/.kube/config)',
    )
    .option('--namespace <ns>', 'watch only this namespace (repeatable; default: all namespaces)', collect)
    .option('--leader-elect', 'run controllers only while holding a Lease, so replicas can stand by', false)
    .option(
      '--leader-election-namespace <ns>',
      "the Lease's namespace (default: the pod's own, else default)",
    )
    .option('--leader-election-id <name>', "the Lease's name", 'strata-controller.strata.dev')
    .option('--leader-elect-lease-duration <duration>', 'how long a Lease is valid without renewal', '15s')
    .option(
      '--leader-elect-renew-deadline <duration>',
      'how long the leader tries to renew before it gives up',
      '10s',
    )
    .option('--leader-elect-retry-period <duration>', 'time between Lease attempts', '2s')
    .option('--metrics-bind-address <addr>', 'serve /metrics here (:PORT, HOST:PORT; 0 disables)', ':8080')
    .option('--health-probe-bind-address <addr>', 'serve /healthz and /readyz here (0 disables)', ':8081')
    .option('--max-concurrent-reconciles <n>', 'workers per controller', '1')
    .option(
      '--graceful-shutdown-timeout <duration>',
      'how long in-flight reconciles may finish on SIGTERM',
      '30s',
    )
    .option(
      '--sync-period <duration>',
      'how often every cached object is reconciled again with nothing changed (a resync, no API call by itself; 0 disables)',
      '10m',
    )
    .option('--build-image <ref>', 'the Strata image that ImageBuild pods run', DEFAULT_BUILD_IMAGE)
    .option('--build-image-pull-policy <policy>', 'Always, IfNotPresent or Never (default: IfNotPresent)')
    .option('--mirror-image <ref>', 'the Strata image RegistryMirror pods run (default: --build-image)')
    .option(
      '--build-node-selector <key=value>',
      'a node label every build pod requires, e.g. a dedicated build pool (repeatable; build pods are privileged)',
      collect,
    )
    .option(
      '--build-toleration <key[=value][:effect]>',
      "a toleration every build pod gets, e.g. for the build pool's taint (repeatable)",
      collect,
    )
    .option(
      '--build-service-account <name>',
      'a ServiceAccount an ImageBuild may name in spec.serviceAccountName (repeatable; default: none may be named)',
      collect,
    )
    .option(
      '--build-max-duration <duration>',
      "the longest a build may run (e.g. 2h): the Job's deadline when the spec sets none; longer ones are refused",
    )
    .option(
      '--build-network <host|none>',
      'a RUN network an ImageBuild may ask for (repeatable; default: host and none)',
      collect,
    )
    .action(async (flags: ControllerFlags, cmd: Command) => {
      // The global --log-level when given; else $STRATA_LOG_LEVEL (default info), as servers log.
      const given = cmd.parent?.getOptionValueSource('logLevel') === 'cli';
      flags.logLevel = given ? cmd.optsWithGlobals<{ logLevel: string }>().logLevel : env.logLevel;
      try {
        await runController(flags, env);
      } catch (err) {
        throw asCliError(err);
      }
    });
}

async function runController(flags: ControllerFlags, env: StrataEnvironment): Promise<void> {
  const metricsAt = parseBindAddress('--metrics-bind-address', flags.metricsBindAddress);
  const probesAt = parseBindAddress('--health-probe-bind-address', flags.healthProbeBindAddress);
  const concurrency = parsePositiveInt('--max-concurrent-reconciles', flags.maxConcurrentReconciles);
  const lease = {
    leaseDurationMs: parseSeconds('--leader-elect-lease-duration', flags.leaderElectLeaseDuration),
    renewDeadlineMs: parseSeconds('--leader-elect-renew-deadline', flags.leaderElectRenewDeadline),
    retryPeriodMs: parseSeconds('--leader-elect-retry-period', flags.leaderElectRetryPeriod),
  };
  const graceMs = parseSeconds('--graceful-shutdown-timeout', flags.gracefulShutdownTimeout);
  const resyncMs = parseSeconds('--sync-period', flags.syncPeriod);
  const pullPolicy = flags.buildImagePullPolicy as (typeof PULL_POLICIES)[number] | undefined;
  if (pullPolicy !== undefined && !PULL_POLICIES.includes(pullPolicy))
    throw new TerminalError(
      'INVALID_ARGUMENT',
      `invalid --build-image-pull-policy ${JSON.stringify(pullPolicy)}: want ${PULL_POLICIES.join(', ')}`,
    );
  const [
    { pino, destination },
    kube,
    { OpsEndpoints, startOpsServer },
    { controllers },
    { readFile },
    { buildPolicy },
  ] = await Promise.all([
    import('pino'),
    import('../kube/index.js'),
    import('../ops/endpoints.js'),
    import('../controllers/index.js'),
    import('node:fs/promises'),
    import('../controllers/imagebuild/policy.js'),
  ]);
  let policy;
  try {
    policy = buildPolicy({
      nodeSelector: flags.buildNodeSelector,
      tolerations: flags.buildToleration,
      serviceAccounts: flags.buildServiceAccount,
      networks: flags.buildNetwork,
      maxDuration: flags.buildMaxDuration,
    });
  } catch (err) {
    throw new TerminalError('INVALID_ARGUMENT', (err as Error).message);
  }
  const logger = pino({ level: flags.logLevel, base: { name: 'strata-controller' } }, destination(2));
  const { kubeConfig, source } = kube.loadKubeConfig({
    ...(flags.kubeconfig ? { flag: flags.kubeconfig } : {}),
    inCluster: env.inCluster,
    envPaths: env.kubeconfigPaths,
    defaultPath: env.defaultKubeconfig,
  });
  const metrics = new kube.KubeMetrics();
  const client = new kube.KubeClient({
    kubeConfig,
    onRequest: (r) => metrics.apiRequest(r),
    userAgent: 'strata-controller',
  });
  const identity = `${hostname()}_${randomUUID()}`;
  let leaseNamespace = flags.leaderElectionNamespace;
  if (flags.leaderElect && !leaseNamespace)
    leaseNamespace = env.inCluster
      ? (await readFile('/var/run/secrets/kubernetes.io/serviceaccount/namespace', 'utf8')).trim()
      : 'default';
  const manager = new kube.Manager({
    client,
    identity,
    namespaces: flags.namespace ?? [],
    concurrency,
    shutdownGraceMs: graceMs,
    resyncMs,
    metrics,
    logger,
    ...(flags.leaderElect
      ? { leaderElection: { namespace: leaseNamespace!, name: flags.leaderElectionId, ...lease } }
      : {}),
  });
  const settings = {
    buildImage: flags.buildImage,
    mirrorImage: flags.mirrorImage ?? flags.buildImage,
    ...(pullPolicy ? { buildImagePullPolicy: pullPolicy } : {}),
    buildPolicy: policy,
  };
  for (const c of controllers(settings)) manager.register(c);

  const ops = new OpsEndpoints({ notReady: () => manager.notReady(), metrics: () => metrics.render() });
  const servers = [];
  try {
    if (metricsAt) servers.push(await startOpsServer(ops, metricsAt.host, metricsAt.port));
    if (probesAt) servers.push(await startOpsServer(ops, probesAt.host, probesAt.port));
    logger.info(
      {
        kubeconfig: source,
        server: client.server,
        identity,
        namespaces: flags.namespace?.length ? flags.namespace : 'all',
        buildPolicy: policy,
        controllers: manager.controllerNames,
        ...(flags.leaderElect ? { lease: `${leaseNamespace}/${flags.leaderElectionId}` } : {}),
        ...(metricsAt ? { metrics: servers[0]!.url } : {}),
        ...(probesAt ? { probes: servers[servers.length - 1]!.url } : {}),
      },
      'controller starting',
    );
    if (Object.keys(policy.nodeSelector).length === 0)
      logger.warn(
        'build pods are privileged and may run on any node: give them a dedicated pool with --build-node-selector',
      );
    if (manager.controllerNames.length === 0)
      logger.warn(
        'no controllers are registered in this build: running leader election, metrics and probes only',
      );
    const abort = new AbortController();
    const stop = (sig: string): void => {
      logger.info({ signal: sig }, 'stopping: finishing in-flight reconciles, then releasing the Lease');
      abort.abort();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
    await manager.run(abort.signal);
    logger.info('controller stopped');
  } finally {
    await Promise.all(servers.map((s) => s.close()));
  }
}

/** A KubeError becomes a StrataError with the nearest code, so the CLI edge reports it like any other. */
function asCliError(err: unknown): unknown {
  if (err instanceof StrataError || !(err instanceof Error) || !('code' in err)) return err;
  const code = KUBE_TO_CLI[(err as { code: KubeErrorCode }).code];
  return code ? new StrataError(code, `controller: ${err.message}`, { cause: err }) : err;
}
