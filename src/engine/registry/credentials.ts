/**
 * Registry credentials: the provider interface, a static map (tests, CLI flags) and docker's `config.json`.
 * Nothing here reads the process environment: callers pass it in ({@link defaultDockerConfigPath}).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TerminalError } from '../errors.js';
import { DOCKER_HUB } from '../oci/reference.js';

/** A username and password (or a personal access token used as password), sent as Basic auth or to a token realm. */
export interface BasicCredentials {
  readonly username: string;
  readonly password: string;
}

/** An OAuth2 refresh token (docker's `identitytoken`), exchanged at the token realm. */
export interface IdentityTokenCredentials {
  readonly identityToken: string;
}

/** What a {@link CredentialProvider} knows for one registry. */
export type Credentials = BasicCredentials | IdentityTokenCredentials;

/** Supplies credentials per registry host (as users write it: `docker.io`, `localhost:5000`). */
export interface CredentialProvider {
  /** Credentials for `registry`, or undefined for anonymous access. Must not throw for unknown registries. */
  get(registry: string): Promise<Credentials | undefined>;
}

/**
 * Normalizes a registry key the way docker does when looking up `auths`: scheme and path dropped, lowercase,
 * and Docker Hub's aliases (`index.docker.io`, `registry-1.docker.io`, `https://index.docker.io/v1/`) → `docker.io`.
 */
export function normalizeRegistryKey(key: string): string {
  let k = key.trim().toLowerCase();
  k = k.replace(/^[a-z][a-z0-9+.-]*:\/\//, '');
  const slash = k.indexOf('/');
  if (slash >= 0) k = k.slice(0, slash);
  if (k === 'index.docker.io' || k === 'registry-1.docker.io' || k === 'registry.hub.docker.com')
    return DOCKER_HUB;
  return k;
}

/** Fixed credentials per registry, e.g. from CLI flags or tests. Keys are normalized like docker's `auths`. */
export class StaticCredentials implements CredentialProvider {
  private readonly map: ReadonlyMap<string, Credentials>;

  /** `entries` maps registry hosts (or docker-style URLs) to credentials. */
  constructor(entries: Readonly<Record<string, Credentials>> = {}) {
    this.map = new Map(Object.entries(entries).map(([k, v]) => [normalizeRegistryKey(k), v]));
  }

  /** Credentials for `registry`, or undefined. */
  async get(registry: string): Promise<Credentials | undefined> {
    return this.map.get(normalizeRegistryKey(registry));
  }
}

/**
 * Where docker keeps `config.json`: `$DOCKER_CONFIG/config.json`, else `<home>/.docker/config.json`.
 * `env` is passed in (usually `process.env` from the composition root) so the engine never reads it itself.
 */
export function defaultDockerConfigPath(
  env: Readonly<Record<string, string | undefined>>,
  homeDir: string,
): string {
  const dir = env.DOCKER_CONFIG;
  return dir ? join(dir, 'config.json') : join(homeDir, '.docker', 'config.json');
}

interface AuthEntry {
  auth?: unknown;
  username?: unknown;
  password?: unknown;
  identitytoken?: unknown;
}

/** Decodes one `auths` entry; undefined when it holds nothing usable. */
export function decodeAuthEntry(entry: unknown): Credentials | undefined {
  if (typeof entry !== 'object' || entry === null) return undefined;
  const e = entry as AuthEntry;
  if (typeof e.identitytoken === 'string' && e.identitytoken !== '')
    return { identityToken: e.identitytoken };
  if (typeof e.auth === 'string' && e.auth !== '') {
    const decoded = Buffer.from(e.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon > 0) return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
    return undefined;
  }
  if (typeof e.username === 'string' && e.username !== '' && typeof e.password === 'string') {
    return { username: e.username, password: e.password };
  }
  return undefined;
}

/** Options of {@link DockerConfigCredentials}. */
export interface DockerConfigCredentialsOptions {
  /** Path of the `config.json` (see {@link defaultDockerConfigPath}). Also reads podman/skopeo `auth.json`. */
  readonly path: string;
}

/**
 * Credentials from a docker `config.json` (`auths` keyed by host or URL, base64 `auth` or `username`/`password`,
 * `identitytoken`). The file is read once, on first use; a missing file means anonymous access. Credential helpers
 * (`credsStore`, `credHelpers`) are not run.
 */
export class DockerConfigCredentials implements CredentialProvider {
  private readonly path: string;
  private loaded: Promise<ReadonlyMap<string, Credentials>> | undefined;

  constructor(options: DockerConfigCredentialsOptions) {
    this.path = options.path;
  }

  /** Credentials for `registry` from the file, or undefined. Throws INVALID_ARGUMENT if the file is not JSON. */
  async get(registry: string): Promise<Credentials | undefined> {
    this.loaded ??= this.load();
    const map = await this.loaded;
    return map.get(normalizeRegistryKey(registry));
  }

  private async load(): Promise<ReadonlyMap<string, Credentials>> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new Map();
      throw new TerminalError(
        'INVALID_ARGUMENT',
        `cannot read docker config ${this.path}: ${(err as Error).message}`,
      );
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      // Never echo the content: it holds secrets.
      throw new TerminalError('INVALID_ARGUMENT', `docker config ${this.path} is not valid JSON`);
    }
    const auths = typeof json === 'object' && json !== null ? (json as { auths?: unknown }).auths : undefined;
    const map = new Map<string, Credentials>();
    if (typeof auths !== 'object' || auths === null) return map;
    for (const [key, entry] of Object.entries(auths as Record<string, unknown>)) {
      const creds = decodeAuthEntry(entry);
      const k = normalizeRegistryKey(key);
      // An exact host key wins over a URL alias of the same host.
      if (creds && (!map.has(k) || !key.includes('://'))) map.set(k, creds);
    }
    return map;
  }
}
