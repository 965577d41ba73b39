/**
 * `strata agent`: carries out its node's StrataNode (ADR 0028, 0029). It watches that one object (field selector
 * `metadata.name`), and on every change — level-triggered, serially — routes each registry (node-local endpoint →
 * cluster mirror → registry), restarts the node-local endpoint when its upstreams change, converges the node's
 * runtime configuration, restarts cache warming when the caches changed, and writes its status only when it changed.
 */
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { StrataNode, StrataNodeSpec } from '../api/v1alpha1/stratanode.js';
import { formatPlatform, hostPlatform } from '../engine/oci/platform.js';
import type { ContentStore } from '../engine/store/types.js';
import type { KubeClient } from '../kube/client.js';
import { hasCode } from '../kube/errors.js';
import { Informer } from '../kube/informer.js';
import { jsonEqual } from '../kube/json.js';
import { createUpstream, type Upstream } from '../mirror/upstream-client.js';
import { upstreamComponent, type UpstreamConfig } from '../mirror/upstreams.js';
import { LocalMirror } from './local-mirror.js';
import type { AgentMetrics } from './metrics.js';
import {
  convergeNodeConfig,
  NodeConfigState,
  planNodeConfig,
  restoreAllNodeConfig,
  type MirrorOutcome,
} from './node-config.js';
import { registryRoutes, routeUpstream, type RegistryRoute } from './routes.js';
import {
  basicAuthorization,
  readDockerAuths,
  SecretProblem,
  writeCredentialsFile,
  type DockerAuths,
} from './secrets.js';
import { buildStatus, STRATANODES, StatusWriter } from './status.js';
import { CacheWarmer, type RegistryAccess } from './warmer.js';

/** Options of {@link NodeAgent}. */
export interface NodeAgentOptions {
  readonly client: KubeClient;
  readonly nodeName: string;
  readonly store: ContentStore;
  /** Node paths of the spec are resolved under it. */
  readonly hostRoot: string;
  readonly listen: { readonly host: string; readonly port: number };
  readonly version: string;
  readonly metrics: AgentMetrics;
  readonly logger: Logger;
  /** Blobs warmed at once (default 3). */
  readonly concurrency?: number;
  /** Informer resync (default 10 min). */
  readonly resyncMs?: number;
  /** Shortest time between status writes (default 2 s). */
  readonly statusIntervalMs?: number;
}

/** The agent of one node. */
export class NodeAgent {
  readonly platform = formatPlatform(hostPlatform());
  private readonly informer: Informer<StrataNode>;
  private readonly mirror: LocalMirror;
  private readonly state: NodeConfigState;
  private readonly status: StatusWriter;
  private readonly warmer: CacheWarmer;
  private readonly credsDir: string;
  private mirrorOutcomes = new Map<string, MirrorOutcome>();
  private spec: StrataNodeSpec | undefined;
  private generation: number | undefined;
  private storeBytes: number | undefined;
  private routes: RegistryRoute[] = [];
  private upstreamConfigs = new Map<string, UpstreamConfig>();
  private clients = new Map<string, { key: string; upstream: Upstream }>();
  private warming: { caches: unknown; abort: AbortController; done: Promise<void> } | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;

  constructor(private readonly o: NodeAgentOptions) {
    this.informer = new Informer<StrataNode>({
      client: o.client,
      type: STRATANODES,
      fieldSelector: `metadata.name=${o.nodeName}`,
      ...(o.resyncMs !== undefined ? { resyncMs: o.resyncMs } : {}),
      logger: o.logger,
    });
    this.mirror = new LocalMirror({
      store: o.store,
      host: o.listen.host,
      port: o.listen.port,
      logger: o.logger,
    });
    this.state = new NodeConfigState(o.store.root);
    this.credsDir = join(o.store.root, 'strata', 'agent', 'credentials');
    this.status = new StatusWriter({
      client: o.client,
      nodeName: o.nodeName,
      ...(o.statusIntervalMs !== undefined ? { minIntervalMs: o.statusIntervalMs } : {}),
      logger: o.logger,
      onWrite: (ok) => o.metrics.statusWrites.inc({ result: ok ? 'ok' : 'error' }),
    });
    this.warmer = new CacheWarmer({
      store: o.store,
      platform: this.platform,
      ...(o.concurrency !== undefined ? { concurrency: o.concurrency } : {}),
      access: (registry) => this.access(registry),
      onChange: () => this.publish(),
      onPulled: (n) => o.metrics.pulledBytes.inc(n),
      onResult: (r) => o.metrics.pulls.inc({ result: r }),
      onEvict: (count, bytes) => {
        o.metrics.evictions.inc(count);
        o.metrics.evictedBytes.inc(bytes);
      },
      logger: o.logger.child({ component: 'warmer' }),
    });
  }

  /** The node-local endpoint's URL. */
  get endpoint(): string {
    return this.mirror.url;
  }

  /** Starts the endpoint and the watch; resolves once the first reconcile ran. */
  async start(): Promise<void> {
    await this.mirror.configure([]);
    this.informer.addHandlers({
      onAdd: () => this.schedule(),
      onUpdate: () => this.schedule(),
      onDelete: () => this.schedule(),
    });
    this.informer.start();
    await this.informer.waitForSync();
    this.storeBytes = await this.measureStore();
    this.schedule();
    await this.idle();
  }

  /** Resolves when no reconcile is running or queued. */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  /** Whether the agent can serve (the endpoint listens and the watch has synced). */
  notReady(): string | undefined {
    if (!this.informer.hasSynced()) return 'the StrataNode watch has not synced';
    if (!this.mirror.current) return 'the node-local mirror is not listening';
    return undefined;
  }

  private schedule(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = (async () => {
      do {
        this.again = false;
        try {
          await this.reconcile();
        } catch (err) {
          this.o.logger.error({ err }, 'reconcile failed');
        }
      } while (this.again && !this.stopped);
    })().finally(() => (this.running = undefined));
  }

  private async reconcile(): Promise<void> {
    const obj = this.informer.store.get(this.o.nodeName);
    this.status.known(obj?.status);
    this.spec = obj?.spec;
    this.generation = obj?.metadata.generation;
    const routes = registryRoutes(this.spec);
    const secretProblems = new Map<string, SecretProblem>();
    const headers = new Map<string, string>();
    const upstreams: UpstreamConfig[] = [];
    const secretCache = new Map<string, Promise<DockerAuths>>();
    const auths = (key: string): Promise<DockerAuths> => {
      let p = secretCache.get(key);
      if (!p) {
        const [ns, name] = key.split('/') as [string, string];
        p = readDockerAuths(this.o.client, ns, name);
        secretCache.set(key, p);
      }
      return p;
    };
    for (const m of this.spec?.mirrors ?? []) {
      if (!m.credentialsSecret) continue;
      const ns = m.name.split('/')[0]!;
      try {
        const a = await auths(`${ns}/${m.credentialsSecret}`);
        const header = basicAuthorization(a, new URL(m.endpoint).host, `Secret ${ns}/${m.credentialsSecret}`);
        if (header) headers.set(m.name, header);
      } catch (err) {
        if (err instanceof SecretProblem) secretProblems.set(m.name, err);
        else throw err;
      }
    }
    for (const route of routes) {
      let merged: DockerAuths = {};
      const sources = route.mirror
        ? route.mirror.credentialsSecret
          ? [`${route.mirror.name.split('/')[0]}/${route.mirror.credentialsSecret}`]
          : []
        : route.caches.flatMap((c) => {
            const entry = this.spec?.caches?.find((x) => x.name === c);
            return (entry?.pullSecrets ?? []).map((s) => `${c.split('/')[0]}/${s}`);
          });
      for (const s of sources) {
        try {
          merged = { ...(await auths(s)), ...merged };
        } catch (err) {
          if (!(err instanceof SecretProblem)) throw err;
          this.o.logger.warn({ secret: s, reason: err.reason }, 'a pull Secret cannot be used');
        }
      }
      const file =
        Object.keys(merged).length > 0
          ? await writeCredentialsFile(this.credsDir, upstreamComponent(route.registry), merged)
          : undefined;
      upstreams.push(routeUpstream(route, file));
    }
    this.routes = routes;
    this.upstreamConfigs = new Map(upstreams.map((u) => [u.name, u]));
    await this.mirror.configure(upstreams);

    const unplanned = new Map<string, MirrorOutcome>();
    const planned = planNodeConfig(this.spec, {
      hostRoot: this.o.hostRoot,
      local: this.mirror.url,
      headers,
      onEntryError: (entry, err) => {
        this.o.logger.warn({ err, entry }, 'a mirror entry cannot be configured');
        unplanned.set(entry, {
          configured: false,
          reason: 'ConfigFailed',
          message: String((err as Error).message).slice(0, 1000),
        });
      },
    });
    const result = await convergeNodeConfig(planned, this.state, this.o.hostRoot);
    for (const r of result.results)
      for (const a of r.actions)
        if (a.action !== 'unchanged' && a.action !== 'keep')
          this.o.metrics.nodeConfigWrites.inc({ action: a.action });
    for (const r of result.results)
      for (const w of r.warnings) this.o.logger.warn({ warning: w }, 'node configuration');
    for (const e of result.errors)
      this.o.logger.error({ err: e.err, root: e.root }, 'node configuration failed');
    const outcomes = new Map<string, MirrorOutcome>();
    for (const m of this.spec?.mirrors ?? []) {
      const problem = secretProblems.get(m.name);
      outcomes.set(
        m.name,
        problem
          ? { configured: false, reason: problem.reason, message: problem.message }
          : (unplanned.get(m.name) ?? result.outcomes.get(m.name) ?? { configured: true }),
      );
    }
    this.mirrorOutcomes = outcomes;

    const caches = this.spec?.caches ?? [];
    if (!this.warming || !jsonEqual(this.warming.caches, caches)) await this.restartWarming(caches);
    this.publish();
    this.o.logger.debug({ generation: this.generation, registries: routes.length }, 'reconciled');
  }

  private async restartWarming(caches: NonNullable<StrataNodeSpec['caches']>): Promise<void> {
    if (this.warming) {
      this.warming.abort.abort();
      await this.warming.done.catch(() => undefined);
    }
    const abort = new AbortController();
    const done = this.warmer
      .run(caches, abort.signal)
      .catch((err: unknown) => {
        if (!abort.signal.aborted) this.o.logger.error({ err }, 'cache warming failed');
      })
      .then(async () => {
        if (abort.signal.aborted) return;
        this.storeBytes = await this.measureStore();
        this.o.metrics.storeBytes.set(this.storeBytes);
        this.publish();
      });
    this.warming = { caches, abort, done };
  }

  /** The registry client for warming `registry` (the route's upstream: cluster mirror or the registry). */
  private async access(registry: string): Promise<RegistryAccess> {
    const config = this.upstreamConfigs.get(registry);
    if (!config) throw new Error(`no route for registry ${registry}`);
    const key = JSON.stringify(config);
    let entry = this.clients.get(registry);
    if (!entry || entry.key !== key) {
      await entry?.upstream.client.close();
      entry = {
        key,
        upstream: createUpstream(config, { userAgent: `strata-agent/${this.o.version}`, retries: 3 }),
      };
      this.clients.set(registry, entry);
    }
    return {
      client: entry.upstream.client,
      registry: entry.upstream.registry,
      ...(config.repositoryPrefix ? { repositoryPrefix: config.repositoryPrefix } : {}),
    };
  }

  private async measureStore(): Promise<number> {
    let total = 0;
    for await (const b of this.o.store.listBlobs()) total += b.size;
    return total;
  }

  private publish(): void {
    if (this.stopped || !this.informer.store.get(this.o.nodeName)) return;
    this.status.desire(
      buildStatus({
        generation: this.generation,
        spec: this.spec,
        agentVersion: this.o.version,
        platform: this.platform,
        endpoint: this.mirror.url,
        storeBytes: this.storeBytes,
        mirrors: this.mirrorOutcomes,
        caches: this.warmer.progress,
        previous: this.status.current,
        nowMs: Date.now(),
      }),
    );
  }

  /**
   * Stops: the watch, warming (partial ingests stay for the next start to resume), the endpoint. With
   * `restore`, every node configuration file the agent wrote is put back first (an uninstall).
   */
  async stop(options: { restore: boolean }): Promise<void> {
    this.stopped = true;
    await this.informer.stop();
    await this.idle();
    this.warming?.abort.abort();
    await this.warming?.done.catch(() => undefined);
    if (options.restore) {
      const r = await restoreAllNodeConfig(this.state);
      for (const e of r.errors) this.o.logger.error({ err: e.err, root: e.root }, 'restore failed');
      this.o.logger.info(
        { files: r.results.flatMap((x) => x.actions.map((a) => `${a.action} ${a.path}`)) },
        'node configuration restored',
      );
    }
    await this.status.close();
    await this.mirror.close();
    await Promise.all([...this.clients.values()].map((c) => c.upstream.client.close()));
  }
}

/**
 * Whether the agent's DaemonSet is being removed (gone, or with a deletionTimestamp): an uninstall, so the node's
 * files are restored. An unknown namespace or an API error counts as "not an uninstall" (files stay: safe for a
 * restart, and `strata agent restore` cleans up by hand).
 */
export async function isUninstall(
  client: KubeClient,
  namespace: string | undefined,
  name: string,
  logger?: Logger,
): Promise<boolean> {
  if (!namespace) {
    logger?.warn(
      'no --namespace (nor $POD_NAMESPACE): cannot tell an uninstall from a restart; node files kept',
    );
    return false;
  }
  try {
    const ds = await client.request<{ metadata?: { deletionTimestamp?: string } }>(
      'get',
      'GET',
      `/apis/apps/v1/namespaces/${encodeURIComponent(namespace)}/daemonsets/${encodeURIComponent(name)}`,
      { timeoutMs: 10_000 },
    );
    return Boolean(ds.metadata?.deletionTimestamp);
  } catch (err) {
    if (hasCode(err, 'NOT_FOUND')) return true;
    logger?.warn({ err }, 'cannot read the DaemonSet: treating the stop as a restart; node files kept');
    return false;
  }
}
