/**
 * `strata agent`: the per-node agent (a DaemonSet; ADR 0028, 0029). It carries out the node's StrataNode — the node's
 * runtime mirror configuration, the node-local read-only mirror endpoint, LayerCache warming — and writes its status.
 * `strata agent restore` undoes every node configuration file the agent wrote (manual cleanup).
 */
import { resolve } from 'node:path';
import type { Command } from 'commander';
import type { StrataEnvironment } from '../config/index.js';
import { StrataError, TerminalError } from '../engine/errors.js';
import { parseBindAddress } from './controller-command.js';
import { parsePositiveInt } from './registry-commands.js';
import { STRATA_VERSION } from './version.js';

/** The node store of a DaemonSet pod: a hostPath shared with build pods and the CLI. */
export const DEFAULT_AGENT_STORE = '/var/lib/strata';

interface AgentFlags {
  nodeName?: string;
  listen: string;
  opsListen: string;
  hostRoot: string;
  namespace?: string;
  daemonset: string;
  kubeconfig?: string;
  concurrency: string;
  syncPeriod: string;
  logLevel: string;
}

/** The store: `--store` when given on the command line, else {@link DEFAULT_AGENT_STORE} (not the CLI's default). */
function agentStore(cmd: Command): string {
  let root: Command = cmd;
  while (root.parent) root = root.parent;
  return root.getOptionValueSource('store') === 'cli'
    ? resolve(cmd.optsWithGlobals<{ store: string }>().store)
    : DEFAULT_AGENT_STORE;
}

/** `HOST:PORT` (port 0: a free one). */
function parseListen(flag: string, value: string): { host: string; port: number } {
  const at = value === '0' ? undefined : parseBindAddress(flag, value);
  if (!at)
    throw new TerminalError('INVALID_ARGUMENT', `invalid ${flag} ${JSON.stringify(value)}: want HOST:PORT`);
  return at;
}

/** Registers `strata agent` and `strata agent restore`. */
export function registerAgentCommand(program: Command, env: StrataEnvironment): void {
  const agent = program
    .command('agent')
    .description(
      "run the node agent: carry out this node's StrataNode (runtime mirror configuration, a node-local read-only " +
        'mirror endpoint, LayerCache warming into the node store) and report its status, until SIGTERM',
    )
    .option('--node-name <name>', 'the node (default $NODE_NAME)')
    .option('--listen <host:port>', 'the node-local mirror endpoint (port 0: a free one)', '127.0.0.1:5050')
    .option('--ops-listen <host:port>', '/healthz, /readyz and /metrics (port 0: a free one)', '0.0.0.0:9092')
    .option(
      '--host-root <dir>',
      "where the node's / is mounted: the spec's node paths are resolved under it",
      '/',
    )
    .option('--namespace <ns>', "the agent's namespace, to find its DaemonSet (default $POD_NAMESPACE)")
    .option(
      '--daemonset <name>',
      "the agent's DaemonSet: gone or deleting at SIGTERM = uninstall (restore the node)",
      'strata-agent',
    )
    .option(
      '--kubeconfig <file>',
      'kubeconfig to use (else in-cluster, else $KUBECONFIG, else ~/.kube/config)',
    )
    .option('--concurrency <n>', 'blobs warmed at once', '3')
    .option(
      '--sync-period <seconds>',
      'how often the StrataNode is reconciled again with nothing changed (no API write unless something differs)',
      '600',
    )
    .action(async (flags: AgentFlags, cmd: Command) => {
      const given = program.getOptionValueSource('logLevel') === 'cli';
      flags.logLevel = given ? cmd.optsWithGlobals<{ logLevel: string }>().logLevel : env.logLevel;
      await runAgent(flags, agentStore(cmd), env);
    });

  agent
    .command('restore')
    .description(
      'put back every node configuration file the agent wrote (hosts.toml, daemon.json), from its record in the ' +
        'store, or only under the given directories (node paths, e.g. /etc/containerd/certs.d)',
    )
    .option('--host-root <dir>', "where the node's / is mounted (default /)")
    .argument('[paths...]', 'node directories to restore (default: every one the agent recorded)')
    .action(async (paths: string[], flags: { hostRoot?: string }, cmd: Command) => {
      // Given after `restore` or before it (then it is the parent's option).
      const hostRoot = flags.hostRoot ?? agent.opts<{ hostRoot: string }>().hostRoot;
      const [{ NodeConfigState, restoreAllNodeConfig, underHostRoot }, { FsStore }] = await Promise.all([
        import('../agent/node-config.js'),
        import('../engine/store/fs-store.js'),
      ]);
      const store = await FsStore.open(agentStore(cmd));
      const only = paths.length > 0 ? paths.map((p) => underHostRoot(resolve(hostRoot), p)) : undefined;
      const r = await restoreAllNodeConfig(new NodeConfigState(store.root), only);
      for (const res of r.results)
        for (const a of res.actions)
          process.stdout.write(`${a.action} ${a.path}${a.backup ? ` (from ${a.backup})` : ''}\n`);
      for (const res of r.results)
        for (const w of res.warnings) process.stderr.write(`strata: warning: ${w}\n`);
      if (r.errors.length > 0) {
        const first = r.errors[0]!;
        throw first.err instanceof StrataError
          ? first.err
          : new StrataError('INTERNAL', `restore ${first.root}: ${(first.err as Error).message}`);
      }
    });
}

async function runAgent(flags: AgentFlags, storeRoot: string, env: StrataEnvironment): Promise<void> {
  const nodeName = flags.nodeName ?? env.nodeName;
  if (!nodeName) throw new TerminalError('INVALID_ARGUMENT', 'give --node-name NAME (or set $NODE_NAME)');
  const listen = parseListen('--listen', flags.listen);
  const opsAt = parseListen('--ops-listen', flags.opsListen);
  const concurrency = parsePositiveInt('--concurrency', flags.concurrency);
  const namespace = flags.namespace ?? env.podNamespace;
  const [
    { pino, destination },
    kube,
    { OpsEndpoints, startOpsServer },
    { FsStore },
    { NodeAgent, isUninstall },
    { AgentMetrics },
  ] = await Promise.all([
    import('pino'),
    import('../kube/index.js'),
    import('../ops/endpoints.js'),
    import('../engine/store/fs-store.js'),
    import('../agent/agent.js'),
    import('../agent/metrics.js'),
  ]);
  const logger = pino(
    { level: flags.logLevel, base: { name: 'strata-agent', node: nodeName } },
    destination(2),
  );
  const { kubeConfig } = kube.loadKubeConfig({
    ...(flags.kubeconfig ? { flag: flags.kubeconfig } : {}),
    inCluster: env.inCluster,
    envPaths: env.kubeconfigPaths,
    defaultPath: env.defaultKubeconfig,
  });
  const client = new kube.KubeClient({ kubeConfig, userAgent: `strata-agent/${STRATA_VERSION}` });
  const store = await FsStore.open(storeRoot);
  const metrics = new AgentMetrics();
  const agent = new NodeAgent({
    client,
    nodeName,
    store,
    hostRoot: resolve(flags.hostRoot),
    listen,
    version: STRATA_VERSION,
    metrics,
    logger,
    concurrency,
    resyncMs: parsePositiveInt('--sync-period', flags.syncPeriod) * 1000,
  });
  const ops = new OpsEndpoints({ notReady: () => agent.notReady(), metrics: () => metrics.render() });
  const opsServer = await startOpsServer(ops, opsAt.host, opsAt.port);
  const stopped = new Promise<string>((res) => {
    process.once('SIGTERM', () => res('SIGTERM'));
    process.once('SIGINT', () => res('SIGINT'));
  });
  try {
    await agent.start();
    logger.info(
      {
        store: store.root,
        endpoint: agent.endpoint,
        ops: opsServer.url,
        hostRoot: resolve(flags.hostRoot),
        platform: agent.platform,
      },
      'agent started',
    );
    const signal = await stopped;
    const uninstall = await isUninstall(client, namespace, flags.daemonset, logger);
    logger.info(
      { signal, uninstall },
      uninstall ? 'stopping: the DaemonSet is going away, restoring the node' : 'stopping',
    );
    await agent.stop({ restore: uninstall });
  } finally {
    await opsServer.close();
  }
}
