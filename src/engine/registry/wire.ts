/** Pure helpers for the Distribution API wire format: schemes, Link pagination, Range headers. */
import { apiHost } from '../oci/reference.js';

/** True for hosts that are always reached over plain HTTP: `localhost`, `127.0.0.0/8`, `::1`. */
export function isLoopbackHost(registry: string): boolean {
  const host = hostnameOf(registry);
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** The host name of `host[:port]` (IPv6 literals without brackets), lowercase. */
export function hostnameOf(registry: string): string {
  const r = registry.trim().toLowerCase();
  if (r.startsWith('[')) {
    const end = r.indexOf(']');
    return end < 0 ? r.slice(1) : r.slice(1, end);
  }
  const colon = r.lastIndexOf(':');
  return colon >= 0 && r.indexOf(':') === colon ? r.slice(0, colon) : r;
}

/** True when `host` (`host:port` or host) matches an entry of `registries` (by `host:port` or by host name alone). */
export function matchesRegistry(host: string, registries: readonly string[]): boolean {
  const h = host.toLowerCase();
  const name = hostnameOf(h);
  for (const entry of registries) {
    const e = entry
      .trim()
      .toLowerCase()
      .replace(/^[a-z]+:\/\//, '')
      .replace(/\/.*$/, '');
    if (e === h || e === name) return true;
  }
  return false;
}

/**
 * `http` for loopback hosts (unless `plainHttpLoopback` is false) and for the registries listed in
 * `plainHttpRegistries` (by `host:port` or by host name alone), `https` otherwise.
 */
export function registryScheme(
  host: string,
  plainHttpRegistries: readonly string[] = [],
  plainHttpLoopback = true,
): 'http' | 'https' {
  if (plainHttpLoopback && isLoopbackHost(host)) return 'http';
  return matchesRegistry(host, plainHttpRegistries) ? 'http' : 'https';
}

/**
 * The target of the `rel="next"` entry of a `Link` header (RFC 8288), as written (possibly relative);
 * undefined when there is none.
 */
export function parseLinkNext(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const re = /<([^>]*)>((?:\s*;\s*[^;,]+(?:=(?:"[^"]*"|[^;,]*))?)*)/g;
  for (let m = re.exec(header); m; m = re.exec(header)) {
    const params = m[2] ?? '';
    const rel = /;\s*rel\s*=\s*(?:"([^"]*)"|([^;,\s]+))/i.exec(params);
    const value = (rel?.[1] ?? rel?.[2] ?? '').toLowerCase().split(/\s+/);
    if (value.includes('next')) return m[1];
  }
  return undefined;
}

/**
 * The inclusive end of an upload's `Range: 0-N` header (also accepts `bytes=0-N`); undefined when absent or
 * malformed.
 */
export function parseUploadRangeEnd(header: string | undefined): number | undefined {
  if (!header) return undefined;
  const m = /^\s*(?:bytes\s*=\s*)?(\d+)-(\d+)\s*$/i.exec(header);
  if (!m) return undefined;
  const end = Number(m[2]);
  return Number.isSafeInteger(end) ? end : undefined;
}

/** Parses `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`); undefined when malformed. */
export function parseContentRange(
  header: string | undefined,
): { start: number; end: number; total?: number } | undefined {
  if (!header) return undefined;
  const m = /^\s*bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/i.exec(header);
  if (!m) return undefined;
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (end < start) return undefined;
  return m[3] === '*' ? { start, end } : { start, end, total: Number(m[3]) };
}

/**
 * The base URL of a registry's Distribution API (no trailing slash): `docker.io` → `https://registry-1.docker.io`,
 * `localhost:5000` → `http://localhost:5000`; plain-HTTP entries may name the registry or its API host.
 */
export function registryBaseUrl(
  registry: string,
  plainHttpRegistries: readonly string[] = [],
  plainHttpLoopback = true,
): string {
  const host = apiHost(registry);
  const plain =
    registryScheme(registry, plainHttpRegistries, plainHttpLoopback) === 'http' ||
    registryScheme(host, plainHttpRegistries, plainHttpLoopback) === 'http';
  return `${plain ? 'http' : 'https'}://${host}`;
}
