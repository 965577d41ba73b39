/**
 * The mirror's upstream table and request routing: which upstream registry (or the hosted registry) a request's
 * repository name belongs to — by containerd's `?ns=` parameter, by a path prefix naming the upstream, by a hosted
 * prefix, else the default upstream — and under which name the backend sees it.
 */
import { TerminalError } from '../engine/errors.js';
import { DOCKER_HUB } from '../engine/oci/reference.js';
import { DistributionError } from './errors.js';
import { isValidRepositoryName } from './routes.js';

/** One upstream registry as configured. */
export interface UpstreamConfig {
  /** The registry name clients use (`docker.io`, `quay.io`, `localhost:5000`), lowercase. */
  readonly name: string;
  /** Its Distribution API base URL (`https://registry-1.docker.io`, `http://127.0.0.1:5000`), no trailing slash. */
  readonly url: string;
  /** docker `config.json` or a mounted `dockerconfigjson` Secret file with its credentials (re-read on change). */
  readonly credentialsFile?: string;
  /** A certs.d-style directory (`<dir>/<host:port>/*.crt`, `*.cert` + `*.key`) for its CA and client certificate. */
  readonly certsDir?: string;
  /** Skip TLS certificate verification. */
  readonly insecure?: boolean;
  /**
   * Prepended to every repository asked of this upstream (`docker.io` → `/v2/docker.io/library/nginx/…`): the
   * upstream is another Strata mirror that routes by a path prefix (the node agent's cluster mirror).
   */
  readonly repositoryPrefix?: string;
  /** Connect, response-headers and idle timeouts in ms (the engine client's defaults otherwise). */
  readonly timeouts?: {
    readonly connectMs?: number;
    readonly responseHeadersMs?: number;
    readonly idleMs?: number;
  };
}

/** Where a request goes. */
export type Destination =
  | {
      readonly kind: 'upstream';
      readonly upstream: UpstreamConfig;
      /** The repository on the upstream (`library/nginx`). */
      readonly repository: string;
    }
  | { readonly kind: 'hosted'; readonly repository: string };

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;

/**
 * The path component that stands for an upstream in the names the backend sees: the registry name itself when it
 * is a valid repository component (`docker.io`), else with every other character turned into `-`
 * (`localhost:5000` → `localhost-5000`).
 */
export function upstreamComponent(name: string): string {
  if (COMPONENT.test(name)) return name;
  return name
    .replace(/[^a-z0-9.]+/g, '-')
    .replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, '')
    .replace(/\.{2,}/g, '.');
}

/**
 * Routes repository names. Backend names are `<upstream component>/<upstream repository>` for upstream content
 * and the name itself for hosted repositories; {@link Router.destination} reverses {@link Router.map}.
 */
export class Router {
  private readonly byName = new Map<string, UpstreamConfig>();
  private readonly byComponent = new Map<string, UpstreamConfig>();
  private readonly defaultUpstream: UpstreamConfig | undefined;

  constructor(
    upstreams: readonly UpstreamConfig[],
    defaultUpstream: string | undefined,
    private readonly hostedPrefixes: readonly string[] = [],
  ) {
    for (const u of upstreams) {
      const c = upstreamComponent(u.name);
      if (this.byName.has(u.name) || this.byComponent.has(c) || c === '')
        throw new TerminalError('INVALID_ARGUMENT', `upstream ${u.name} is configured twice (or clashes)`);
      this.byName.set(u.name, u);
      this.byComponent.set(c, u);
    }
    if (defaultUpstream !== undefined) {
      this.defaultUpstream = this.byName.get(defaultUpstream.toLowerCase());
      if (!this.defaultUpstream)
        throw new TerminalError(
          'INVALID_ARGUMENT',
          `--default-upstream ${defaultUpstream} is not one of the upstreams (${[...this.byName.keys()].join(', ')})`,
        );
    }
  }

  /** The configured upstreams. */
  get upstreams(): UpstreamConfig[] {
    return [...this.byName.values()];
  }

  /**
   * The backend name of a request's repository `name` (as sent, decoded) given containerd's `ns` parameter.
   * NAME_INVALID when the repository part breaks the grammar.
   */
  map(name: string, ns: string | null): string {
    const invalid = (): DistributionError =>
      new DistributionError('NAME_INVALID', `invalid repository name ${JSON.stringify(name)}`, {
        detail: { name },
      });
    const viaNs = ns ? this.byName.get(ns.toLowerCase()) : undefined;
    if (viaNs) return this.upstreamName(viaNs, name, invalid);
    const slash = name.indexOf('/');
    if (slash > 0) {
      const first = name.slice(0, slash).toLowerCase();
      const u = this.byName.get(first) ?? this.byComponent.get(first);
      if (u) return this.upstreamName(u, name.slice(slash + 1), invalid);
    }
    if (!isValidRepositoryName(name)) throw invalid();
    if (this.isHosted(name) || !this.defaultUpstream) return name;
    return this.upstreamName(this.defaultUpstream, name, invalid);
  }

  /** Where a backend name (from {@link map}) goes. */
  destination(backendName: string): Destination {
    const slash = backendName.indexOf('/');
    const u = slash > 0 ? this.byComponent.get(backendName.slice(0, slash)) : undefined;
    if (u) {
      const repository = backendName.slice(slash + 1);
      const prefix = u.repositoryPrefix;
      return { kind: 'upstream', upstream: u, repository: prefix ? `${prefix}/${repository}` : repository };
    }
    return { kind: 'hosted', repository: backendName };
  }

  private isHosted(name: string): boolean {
    return this.hostedPrefixes.some((p) => name === p || name.startsWith(p.endsWith('/') ? p : `${p}/`));
  }

  private upstreamName(u: UpstreamConfig, repository: string, invalid: () => Error): string {
    if (!isValidRepositoryName(repository)) throw invalid();
    // Docker Hub's official images live under `library/`; clients say `nginx`.
    const repo = u.name === DOCKER_HUB && !repository.includes('/') ? `library/${repository}` : repository;
    const mapped = `${upstreamComponent(u.name)}/${repo}`;
    if (!isValidRepositoryName(mapped)) throw invalid();
    return mapped;
  }
}

/** Parses `--upstream NAME=URL` (`docker.io=https://registry-1.docker.io`). */
export function parseUpstreamFlag(value: string): UpstreamConfig {
  const eq = value.indexOf('=');
  if (eq <= 0)
    throw new TerminalError('INVALID_ARGUMENT', `invalid --upstream ${JSON.stringify(value)}: want NAME=URL`);
  return normalizeUpstream({ name: value.slice(0, eq), url: value.slice(eq + 1) }, '--upstream');
}

/** Checks and normalizes an upstream (lowercase name, URL with an http(s) scheme and no path). */
export function normalizeUpstream(u: UpstreamConfig, source: string): UpstreamConfig {
  const name = u.name.trim().toLowerCase();
  if (!/^[a-z0-9.-]+(?::\d{1,5})?$|^\[[0-9a-f:]+\](?::\d{1,5})?$/.test(name))
    throw new TerminalError('INVALID_ARGUMENT', `${source}: invalid registry name ${JSON.stringify(u.name)}`);
  let url: URL;
  try {
    url = new URL(u.url);
  } catch {
    throw new TerminalError(
      'INVALID_ARGUMENT',
      `${source}: invalid URL ${JSON.stringify(u.url)} for ${name}`,
    );
  }
  if (
    (url.protocol !== 'http:' && url.protocol !== 'https:') ||
    (url.pathname !== '/' && url.pathname !== '')
  )
    throw new TerminalError(
      'INVALID_ARGUMENT',
      `${source}: upstream URL ${JSON.stringify(u.url)} for ${name} must be http(s)://host[:port] without a path`,
    );
  return { ...u, name, url: url.origin };
}
