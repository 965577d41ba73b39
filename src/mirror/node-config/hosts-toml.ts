/**
 * containerd's registry host configuration (`certs.d/<registry>/hosts.toml`, containerd `docs/hosts.md`): a pure
 * renderer and parser. Values are encoded by a TOML library, never concatenated, so odd characters in URLs, paths
 * or headers cannot change the document's structure.
 */
import { parse, stringify, TomlError } from 'smol-toml';
import { TerminalError } from '../../engine/errors.js';

/** What a host may be asked to do; a mirror should never be given `push`. */
export type HostCapability = 'pull' | 'resolve' | 'push';

/** A client certificate: a PEM holding cert and key, or a `[cert, key]` pair of paths. */
export type ClientCertificate = string | readonly [cert: string, key: string];

/** One `[host."URL"]` table: a mirror tried before the registry's `server`, in order. */
export interface HostsTomlHost {
  /** `http://` or `https://` URL of the mirror (no credentials, query or fragment). */
  readonly url: string;
  /** Default `["pull", "resolve"]`. */
  readonly capabilities?: readonly HostCapability[];
  /** The URL's path is the API root (no `/v2` appended). */
  readonly overridePath?: boolean;
  /** Skip TLS certificate verification. */
  readonly skipVerify?: boolean;
  /** CA certificate file(s), absolute or relative to the hosts.toml. */
  readonly ca?: string | readonly string[];
  /** Client certificates. */
  readonly client?: readonly ClientCertificate[];
  /** Go duration such as `5s` or `1m30s`: how long a connection attempt may take before falling back. */
  readonly dialTimeout?: string;
  /** Extra request headers (name → value or values). */
  readonly header?: Readonly<Record<string, string | readonly string[]>>;
}

/** Input of {@link renderHostsToml}. */
export interface HostsTomlOptions {
  /** The registry host namespace (`docker.io`, `quay.io`, `host:5000`, or `_default`). */
  readonly registry: string;
  /**
   * The upstream tried after every host; default {@link upstreamServer}(registry). `null` omits it, so containerd
   * falls back to the registry's own name (and `_default` has no fallback).
   */
  readonly server?: string | null;
  /** Mirrors, in the order they are tried. */
  readonly hosts: readonly HostsTomlHost[];
  /** Who writes the file and how to undo it, for the comment on top (default: `strata mirror config`). */
  readonly writer?: { readonly by: string; readonly restore: string };
}

/** A hosts.toml read back by {@link parseHostsToml}. */
export interface HostsTomlConfig {
  readonly server?: string;
  readonly hosts: readonly HostsTomlHost[];
}

const REGISTRY =
  /^(?:_default|(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?))*(?::\d{1,5})?|\[[0-9a-fA-F:.]+\](?::\d{1,5})?)$/;
const GO_DURATION = /^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$/;
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const CAPABILITIES: readonly HostCapability[] = ['pull', 'resolve', 'push'];
/** containerd's directory name and the upstream for registries whose API lives elsewhere. */
const UPSTREAMS: Readonly<Record<string, string>> = { 'docker.io': 'https://registry-1.docker.io' };

function invalid(message: string): TerminalError {
  return new TerminalError('INVALID_ARGUMENT', message);
}

/**
 * Checks a registry host namespace (`host[:port]`, `[v6]:port` or `_default`) and answers it lower-cased; it names
 * a directory, so anything else (slashes, `..`) is refused.
 */
export function validateRegistryName(registry: string): string {
  if (!REGISTRY.test(registry) || registry.length > 255)
    throw invalid(`invalid registry ${JSON.stringify(registry)}: want a host name with an optional :port`);
  return registry === '_default' ? registry : registry.toLowerCase();
}

/** The URL containerd should fall back to for a registry: `docker.io` → `https://registry-1.docker.io`. */
export function upstreamServer(registry: string): string | undefined {
  const name = validateRegistryName(registry);
  if (name === '_default') return undefined;
  return UPSTREAMS[name] ?? `https://${name}`;
}

/** Checks a mirror URL: http(s), a host, no credentials, query or fragment. Answers it unchanged. */
export function validateMirrorUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw invalid(
      `invalid mirror URL ${JSON.stringify(url)}: want http://HOST[:PORT] or https://HOST[:PORT]`,
    );
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')
    throw invalid(`invalid mirror URL ${JSON.stringify(url)}: the scheme must be http or https`);
  if (parsed.username || parsed.password)
    throw invalid(`invalid mirror URL ${JSON.stringify(url)}: credentials do not belong in a URL`);
  if (parsed.search || parsed.hash || /[?#]/.test(url))
    throw invalid(`invalid mirror URL ${JSON.stringify(url)}: no query or fragment allowed`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u0020\u007f]/.test(url))
    throw invalid(`invalid mirror URL ${JSON.stringify(url)}: no spaces or control characters allowed`);
  return url;
}

/** A file path value: non-empty, no control characters (TOML could quote them, containerd would not find them). */
function validatePath(what: string, path: string): string {
  // eslint-disable-next-line no-control-regex
  if (path === '' || /[\u0000-\u001f\u007f]/.test(path))
    throw invalid(
      `invalid ${what} path ${JSON.stringify(path)}: want a non-empty path without control characters`,
    );
  return path;
}

/** Checks a Go duration (`5s`, `1m30s`, `500ms`) as containerd's `dial_timeout` wants it. */
export function validateDialTimeout(value: string): string {
  if (!GO_DURATION.test(value))
    throw invalid(
      `invalid dial timeout ${JSON.stringify(value)}: want a Go duration such as 5s, 500ms or 1m30s`,
    );
  return value;
}

function hostTable(host: HostsTomlHost): Record<string, unknown> {
  const caps = host.capabilities ?? ['pull', 'resolve'];
  for (const c of caps)
    if (!CAPABILITIES.includes(c))
      throw invalid(`invalid capability ${JSON.stringify(c)} for ${host.url}: want pull, resolve or push`);
  const table: Record<string, unknown> = { capabilities: [...new Set(caps)] };
  if (host.overridePath) table.override_path = true;
  if (host.skipVerify) table.skip_verify = true;
  if (host.ca !== undefined)
    table.ca =
      typeof host.ca === 'string' ? validatePath('ca', host.ca) : host.ca.map((p) => validatePath('ca', p));
  if (host.client && host.client.length > 0)
    table.client = host.client.map((c) =>
      typeof c === 'string'
        ? validatePath('client certificate', c)
        : [validatePath('client certificate', c[0]), c[1] === '' ? '' : validatePath('client key', c[1])],
    );
  if (host.dialTimeout !== undefined) table.dial_timeout = validateDialTimeout(host.dialTimeout);
  if (host.header && Object.keys(host.header).length > 0) {
    const header: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(host.header)) {
      if (!HEADER_NAME.test(name)) throw invalid(`invalid header name ${JSON.stringify(name)}`);
      const values = typeof value === 'string' ? [value] : [...value];
      for (const v of values)
        // eslint-disable-next-line no-control-regex
        if (/[\r\n\u0000]/.test(v)) throw invalid(`invalid value of header ${name}: no line breaks allowed`);
      header[name] = typeof value === 'string' ? value : values;
    }
    table.header = header;
  }
  return table;
}

/**
 * Renders `certs.d/<registry>/hosts.toml`: `server` (the registry's upstream), then one `[host."URL"]` table per
 * mirror in order. Throws INVALID_ARGUMENT naming the bad value (registry, URL, path, duration, header).
 */
export function renderHostsToml(options: HostsTomlOptions): string {
  const registry = validateRegistryName(options.registry);
  const server = options.server === undefined ? upstreamServer(registry) : options.server;
  if (server !== null && server !== undefined) validateMirrorUrl(server);
  const doc: Record<string, unknown> = {};
  if (server) doc.server = server;
  const hosts: Record<string, unknown> = {};
  for (const host of options.hosts) {
    const url = validateMirrorUrl(host.url);
    if (Object.hasOwn(hosts, url)) throw invalid(`mirror ${url} is given twice for ${registry}`);
    hosts[url] = hostTable(host);
  }
  if (Object.keys(hosts).length > 0) doc.host = hosts;
  const w = options.writer ?? { by: 'strata mirror config', restore: 'strata mirror config --restore' };
  return `# Written by ${w.by} for ${registry}; ${w.restore} puts back what was here.\n${stringify(doc).trimEnd()}\n`;
}

function asStringList(what: string, value: unknown): string[] {
  const list = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(list) || !list.every((v) => typeof v === 'string'))
    throw invalid(`hosts.toml: ${what} must be a string or a list of strings`);
  return list as string[];
}

/**
 * Parses a hosts.toml (ours or anyone's) into the same shape {@link renderHostsToml} takes, hosts in file order.
 * Throws INVALID_ARGUMENT for bad TOML or a field of the wrong type; unknown fields are ignored.
 */
export function parseHostsToml(text: string): HostsTomlConfig {
  let doc: Record<string, unknown>;
  try {
    doc = parse(text) as Record<string, unknown>;
  } catch (err) {
    const where = err instanceof TomlError ? ` at line ${err.line}` : '';
    throw new TerminalError('INVALID_ARGUMENT', `hosts.toml is not valid TOML${where}`, { cause: err });
  }
  if (doc.server !== undefined && typeof doc.server !== 'string')
    throw invalid('hosts.toml: server must be a string');
  const hosts: HostsTomlHost[] = [];
  const tables = doc.host ?? {};
  if (typeof tables !== 'object' || tables === null || Array.isArray(tables))
    throw invalid('hosts.toml: host must be a table of [host."URL"] tables');
  for (const [url, raw] of Object.entries(tables as Record<string, unknown>)) {
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
      throw invalid(`hosts.toml: host ${JSON.stringify(url)} must be a table`);
    const t = raw as Record<string, unknown>;
    const host: { -readonly [K in keyof HostsTomlHost]: HostsTomlHost[K] } = { url };
    if (t.capabilities !== undefined) {
      const caps = asStringList(`capabilities of ${url}`, t.capabilities);
      if (!caps.every((c): c is HostCapability => (CAPABILITIES as readonly string[]).includes(c)))
        throw invalid(`hosts.toml: unknown capability in ${url}`);
      host.capabilities = caps;
    }
    if (t.override_path !== undefined) host.overridePath = t.override_path === true;
    if (t.skip_verify !== undefined) host.skipVerify = t.skip_verify === true;
    if (t.ca !== undefined) host.ca = typeof t.ca === 'string' ? t.ca : asStringList(`ca of ${url}`, t.ca);
    if (t.client !== undefined) {
      const list = typeof t.client === 'string' ? [t.client] : t.client;
      if (!Array.isArray(list)) throw invalid(`hosts.toml: client of ${url} must be a string or a list`);
      host.client = list.map((c: unknown): ClientCertificate => {
        if (typeof c === 'string') return c;
        if (Array.isArray(c) && c.length === 2 && c.every((p) => typeof p === 'string'))
          return [c[0] as string, c[1] as string];
        throw invalid(`hosts.toml: client of ${url} must hold paths or [cert, key] pairs`);
      });
    }
    if (t.dial_timeout !== undefined) {
      if (typeof t.dial_timeout !== 'string')
        throw invalid(`hosts.toml: dial_timeout of ${url} must be a string`);
      host.dialTimeout = t.dial_timeout;
    }
    if (t.header !== undefined) {
      if (typeof t.header !== 'object' || t.header === null || Array.isArray(t.header))
        throw invalid(`hosts.toml: header of ${url} must be a table`);
      const header: Record<string, string | string[]> = {};
      for (const [name, v] of Object.entries(t.header as Record<string, unknown>))
        header[name] = typeof v === 'string' ? v : asStringList(`header ${name} of ${url}`, v);
      host.header = header;
    }
    hosts.push(host);
  }
  return { ...(typeof doc.server === 'string' ? { server: doc.server } : {}), hosts };
}
