/**
 * Registry credentials: the provider interface, a static map (tests, CLI flags) and docker's `config.json`.
 * Nothing here reads the process environment: callers pass it in ({@link defaultDockerConfigPath}); credential helper
 * processes inherit it unless {@link DockerConfigCredentialsOptions.env} is given.
 */
import { execFile } from 'node:child_process';
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
  /**
   * Environment of credential helper processes. Default: inherited from this process, as docker does (helpers
   * such as `pass` or `secretservice` need `HOME`, `DBUS_SESSION_BUS_ADDRESS`, …).
   */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** `PATH` searched for `docker-credential-<name>` and given to helpers (overrides `env.PATH`). */
  readonly helperPath?: string;
  /** Kill a helper that has not answered after this long. Default 30 s. */
  readonly helperTimeoutMs?: number;
}

/** The server URL docker hands a credential helper for Docker Hub (docker's `registry.IndexServer`). */
export const DOCKER_HUB_HELPER_URL = 'https://index.docker.io/v1/';
/** What docker-credential-helpers print (to stdout, exiting non-zero) when they hold nothing for a server. */
const CREDENTIALS_NOT_FOUND = 'credentials not found in native keychain';
/** docker's `<token>` username: the helper's `Secret` is an identity (refresh) token. */
const TOKEN_USERNAME = '<token>';
const HELPER_MAX_OUTPUT = 1024 * 1024;
const DEFAULT_HELPER_TIMEOUT_MS = 30_000;

interface DockerConfig {
  readonly auths: ReadonlyMap<string, Credentials>;
  /** `credHelpers`, keys normalized like `auths`. */
  readonly credHelpers: ReadonlyMap<string, string>;
  /** `credsStore` (empty means none, as in docker). */
  readonly credsStore: string | undefined;
}

/**
 * Credentials from a docker `config.json`, resolved like docker's `ConfigFile.GetCredentialsStore`:
 * a registry listed in `credHelpers` uses that helper; otherwise, when `credsStore` is set, that helper is used for
 * every registry; otherwise the `auths` entry (keyed by host or URL, base64 `auth` or `username`/`password`,
 * `identitytoken`). When a helper has nothing for a registry the result is anonymous: like docker's native store,
 * the `auths` entry is not consulted then. The file is read once, on first use; a missing file means anonymous
 * access. Helper answers are cached per registry for the provider's life (failures are not cached).
 */
export class DockerConfigCredentials implements CredentialProvider {
  private readonly path: string;
  private readonly env: Readonly<Record<string, string | undefined>> | undefined;
  private readonly helperPath: string | undefined;
  private readonly helperTimeoutMs: number;
  private loaded: Promise<DockerConfig> | undefined;
  private readonly helperCache = new Map<string, Promise<Credentials | undefined>>();

  constructor(options: DockerConfigCredentialsOptions) {
    this.path = options.path;
    this.env = options.env;
    this.helperPath = options.helperPath;
    this.helperTimeoutMs = options.helperTimeoutMs ?? DEFAULT_HELPER_TIMEOUT_MS;
  }

  /**
   * Credentials for `registry`, or undefined. Throws INVALID_ARGUMENT if the file is not JSON, or when a configured
   * credential helper is missing or fails.
   */
  async get(registry: string): Promise<Credentials | undefined> {
    this.loaded ??= this.load();
    const config = await this.loaded;
    const key = normalizeRegistryKey(registry);
    const helper = config.credHelpers.get(key) ?? config.credsStore;
    if (helper === undefined) return config.auths.get(key);
    let cached = this.helperCache.get(key);
    if (!cached) {
      cached = this.runHelper(helper, key);
      this.helperCache.set(key, cached);
      // A failure (locked keychain, timeout) may pass: let the next call ask again.
      void cached.catch(() => this.helperCache.delete(key));
    }
    return cached;
  }

  /** Runs `docker-credential-<helper> get` with the server URL on stdin. */
  private runHelper(helper: string, key: string): Promise<Credentials | undefined> {
    const bin = `docker-credential-${helper}`;
    const fail = (reason: string, cause?: unknown): TerminalError =>
      new TerminalError('INVALID_ARGUMENT', `docker credential helper ${bin} for ${key}: ${reason}`, {
        ...(cause === undefined ? {} : { cause }),
        detail: { helper: bin, registry: key },
      });
    if (helper === '' || /[/\\]/.test(helper)) {
      return Promise.reject(fail('invalid helper name in docker config (must be a bare name)'));
    }
    const serverUrl = key === DOCKER_HUB ? DOCKER_HUB_HELPER_URL : key;
    // Without `env` the helper inherits this process's environment (Node's default for child processes).
    const env =
      this.helperPath === undefined ? this.env : { ...(this.env ?? process.env), PATH: this.helperPath };
    return new Promise((resolve, reject) => {
      const child = execFile(
        bin,
        ['get'],
        {
          ...(env === undefined ? {} : { env }),
          timeout: this.helperTimeoutMs,
          killSignal: 'SIGKILL',
          maxBuffer: HELPER_MAX_OUTPUT,
          encoding: 'utf8',
          windowsHide: true,
        },
        (err, stdout) => {
          if (err) {
            // Never echo stdout or stderr: a misbehaving helper may print the secret.
            const e = err as NodeJS.ErrnoException & { killed?: boolean; signal?: string | null };
            if (e.code === 'ENOENT') {
              reject(fail(`${bin} not found on PATH (install it or fix credsStore/credHelpers)`));
            } else if (e.code === 'EACCES') {
              reject(fail(`${bin} is not executable`));
            } else if (e.code === 'ERR_CHILD_PROCESS_STDIO_MAXBUFFER') {
              reject(fail(`output exceeds ${HELPER_MAX_OUTPUT} bytes`));
            } else if (e.killed) {
              reject(fail(`no answer within ${this.helperTimeoutMs} ms`));
            } else if (stdout.trim() === CREDENTIALS_NOT_FOUND) {
              resolve(undefined);
            } else {
              const how =
                typeof e.code === 'number'
                  ? `exit status ${e.code}`
                  : e.signal
                    ? `signal ${e.signal}`
                    : 'error';
              reject(fail(`\`${bin} get\` failed (${how})`));
            }
            return;
          }
          try {
            resolve(parseHelperOutput(stdout));
          } catch {
            reject(fail('output is not a JSON credentials object'));
          }
        },
      );
      // A helper may exit without reading stdin; the exit status tells what happened.
      child.stdin?.on('error', () => undefined);
      child.stdin?.end(serverUrl);
    });
  }

  private async load(): Promise<DockerConfig> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT')
        return { auths: new Map(), credHelpers: new Map(), credsStore: undefined };
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
    const root = typeof json === 'object' && json !== null ? (json as Record<string, unknown>) : {};
    const credsStore =
      typeof root.credsStore === 'string' && root.credsStore !== '' ? root.credsStore : undefined;
    return { auths: decodeAuths(root.auths), credHelpers: decodeCredHelpers(root.credHelpers), credsStore };
  }
}

/** Parses a helper's `{ ServerURL, Username, Secret }`; `<token>` → identity token; nothing → undefined. */
function parseHelperOutput(stdout: string): Credentials | undefined {
  const json = JSON.parse(stdout) as unknown;
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error('not an object');
  const { Username: username, Secret: secret } = json as { Username?: unknown; Secret?: unknown };
  const user = typeof username === 'string' ? username : '';
  const pass = typeof secret === 'string' ? secret : '';
  if (user === TOKEN_USERNAME) return pass === '' ? undefined : { identityToken: pass };
  if (user === '' && pass === '') return undefined;
  return { username: user, password: pass };
}

function decodeAuths(auths: unknown): Map<string, Credentials> {
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

function decodeCredHelpers(helpers: unknown): Map<string, string> {
  const map = new Map<string, string>();
  if (typeof helpers !== 'object' || helpers === null) return map;
  for (const [key, name] of Object.entries(helpers as Record<string, unknown>)) {
    if (typeof name !== 'string' || name === '') continue;
    const k = normalizeRegistryKey(key);
    if (!map.has(k) || !key.includes('://')) map.set(k, name);
  }
  return map;
}
