/**
 * One engine {@link RegistryClient} per upstream: its credentials (re-read when the file changes), certificates,
 * timeouts and scheme. Clients' own credentials never reach an upstream: only the configured ones are sent.
 */
import { stat } from 'node:fs/promises';
import { apiHost, DOCKER_HUB } from '../engine/oci/reference.js';
import {
  DockerConfigCredentials,
  RegistryClient,
  type CredentialProvider,
  type Credentials,
} from '../engine/registry/index.js';
import type { Observer } from '../engine/observe.js';
import type { UpstreamConfig } from './upstreams.js';

/** A configured upstream with the client that talks to it. */
export interface Upstream {
  readonly config: UpstreamConfig;
  readonly client: RegistryClient;
  /** The registry name to give the client (it derives the API host and the credentials key from it). */
  readonly registry: string;
}

/** How often (at most) the credentials file is checked for changes. */
const RECHECK_MS = 1000;

/**
 * A docker `config.json` / `dockerconfigjson` file, re-read when its identity, size or mtime changes (a
 * Kubernetes Secret update swaps a symlink: the stat changes). Entries are looked up under the client's registry
 * name and under the upstream's configured name.
 */
export class ReloadingDockerConfig implements CredentialProvider {
  private current: DockerConfigCredentials | undefined;
  private stamp = '';
  private checkedAt = 0;

  constructor(
    private readonly path: string,
    private readonly aliases: readonly string[] = [],
    private readonly now: () => number = Date.now,
  ) {}

  async get(registry: string): Promise<Credentials | undefined> {
    const provider = await this.provider();
    for (const key of [registry, ...this.aliases]) {
      const found = await provider.get(key);
      if (found) return found;
    }
    return undefined;
  }

  private async provider(): Promise<DockerConfigCredentials> {
    const t = this.now();
    if (this.current && t - this.checkedAt < RECHECK_MS) return this.current;
    this.checkedAt = t;
    const st = await stat(this.path).catch(() => undefined);
    const stamp = st ? `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}` : 'absent';
    if (!this.current || stamp !== this.stamp) {
      this.stamp = stamp;
      this.current = new DockerConfigCredentials({ path: this.path });
    }
    return this.current;
  }
}

/** Options shared by every upstream client. */
export interface UpstreamClientOptions {
  readonly userAgent?: string;
  /** Retries of transient upstream failures (default 2: a mirror answers rather than waits). */
  readonly retries?: number;
  /** Hears the client's events (each HTTP exchange: for the mirror's upstream metrics). */
  readonly observer?: Observer;
}

/** Builds the client of one upstream. */
export function createUpstream(config: UpstreamConfig, options: UpstreamClientOptions = {}): Upstream {
  const url = new URL(config.url);
  // `docker.io` with the hub's API host keeps its name: the client and docker's config key it that way.
  const registry = config.name === DOCKER_HUB && apiHost(DOCKER_HUB) === url.host ? DOCKER_HUB : url.host;
  const client = new RegistryClient({
    ...(config.credentialsFile
      ? { credentials: new ReloadingDockerConfig(config.credentialsFile, [config.name, url.host]) }
      : {}),
    // The URL's scheme decides, also for loopback hosts (an https upstream on 127.0.0.1 stays https).
    plainHttpLoopback: false,
    ...(url.protocol === 'http:' ? { plainHttpRegistries: [url.host] } : {}),
    ...(config.insecure ? { insecureRegistries: [url.host] } : {}),
    ...(config.certsDir ? { certsDirs: [config.certsDir] } : {}),
    ...(config.timeouts ? { timeouts: config.timeouts } : {}),
    userAgent: options.userAgent ?? 'strata-mirror/0.1',
    ...(options.observer ? { observer: options.observer } : {}),
    retry: { retries: options.retries ?? 2, baseDelayMs: 100, maxDelayMs: 2000, maxRetryAfterMs: 5000 },
  });
  return { config, client, registry };
}
