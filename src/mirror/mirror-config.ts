/**
 * `strata mirror serve` settings from flags and an optional YAML file (the chart mounts one); flags win.
 *
 * ```yaml
 * listen: 0.0.0.0:5000
 * metricsListen: 0.0.0.0:9102 # also serve /healthz, /readyz and /metrics here (optional)
 * store: /var/lib/strata/store
 * defaultUpstream: docker.io
 * tagTtl: 5m
 * maxSize: 50g             # LRU eviction of cached content beyond this
 * hosted: [team]            # repository prefixes served by the embedded registry (pull and push)
 * htpasswd: /etc/strata/htpasswd   # clients authenticate with Basic (bcrypt entries); re-read on change
 * maxConnections: 1000      # past it the longest-idle connection is closed
 * idleTimeout: 30s          # connections with no request in flight are closed after this
 * maxHeaderSize: 16k        # larger request headers answer 431
 * tlsCert: /etc/strata/tls/tls.crt  # serve HTTPS with this certificate chain (PEM) and key; both or neither,
 * tlsKey: /etc/strata/tls/tls.key   # re-read when the files change (a Secret update)
 * upstreams:
 *   - name: docker.io
 *     url: https://registry-1.docker.io
 *     credentials: /etc/strata/pull-secret/.dockerconfigjson
 *     certsDir: /etc/strata/certs.d
 *     insecure: false
 *     timeouts: { connect: 10s, responseHeaders: 30s, idle: 60s }
 * ```
 */
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { parseByteSize } from '../config/size.js';
import { TerminalError } from '../engine/errors.js';
import { normalizeUpstream, parseUpstreamFlag, type UpstreamConfig } from './upstreams.js';

/** The merged settings of a mirror. */
export interface MirrorSettings {
  readonly listen?: string;
  /** `HOST:PORT` of a second listener for `/healthz`, `/readyz` and `/metrics`. */
  readonly metricsListen?: string;
  readonly store?: string;
  readonly upstreams: UpstreamConfig[];
  readonly defaultUpstream?: string;
  readonly hosted: string[];
  readonly tagTtlMs?: number;
  /** Size limit of the cached content in bytes. */
  readonly maxBytes?: number;
  /** htpasswd file clients authenticate against. */
  readonly htpasswd?: string;
  readonly maxConnections?: number;
  readonly idleTimeoutMs?: number;
  readonly maxHeaderBytes?: number;
  /** PEM certificate chain and key files: the listener serves HTTPS. */
  readonly tls?: { readonly certFile: string; readonly keyFile: string };
}

/** Flags as the CLI parsed them (all optional: the file may say them). */
export interface MirrorFlags {
  readonly listen?: string;
  readonly metricsListen?: string;
  readonly store?: string;
  readonly upstream?: string[];
  readonly defaultUpstream?: string;
  readonly hosted?: string[];
  readonly tagTtl?: string;
  readonly maxSize?: string;
  readonly htpasswd?: string;
  readonly maxConnections?: string;
  readonly idleTimeout?: string;
  readonly maxHeaderSize?: string;
  readonly tlsCert?: string;
  readonly tlsKey?: string;
}

/** Parses `250ms`, `30s`, `5m`, `1h` or a number of seconds into milliseconds; INVALID_ARGUMENT otherwise. */
export function parseDuration(value: string | number, what: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(String(value).trim());
  if (!m)
    throw new TerminalError(
      'INVALID_ARGUMENT',
      `invalid ${what} ${JSON.stringify(value)}: want e.g. 30s, 5m`,
    );
  const scale = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? 's']!;
  return Math.round(Number(m[1]) * scale);
}

/** Reads and checks a YAML config file. */
export async function loadMirrorConfigFile(
  path: string,
): Promise<MirrorFlags & { upstreamConfigs: UpstreamConfig[] }> {
  let doc: unknown;
  try {
    doc = parseYaml(await readFile(path, 'utf8'));
  } catch (err) {
    throw new TerminalError('INVALID_ARGUMENT', `mirror config ${path}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (doc === null || doc === undefined) doc = {};
  if (typeof doc !== 'object' || Array.isArray(doc))
    throw new TerminalError('INVALID_ARGUMENT', `mirror config ${path}: want a mapping at the top level`);
  const c = doc as Record<string, unknown>;
  const known = [
    'listen',
    'metricsListen',
    'store',
    'defaultUpstream',
    'tagTtl',
    'maxSize',
    'hosted',
    'upstreams',
    ...LIMIT_KEYS,
  ];
  for (const k of Object.keys(c))
    if (!known.includes(k))
      throw new TerminalError('INVALID_ARGUMENT', `mirror config ${path}: unknown key ${JSON.stringify(k)}`);
  const str = (k: string): string | undefined => {
    const v = c[k];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string' && typeof v !== 'number')
      throw new TerminalError('INVALID_ARGUMENT', `mirror config ${path}: ${k} must be a string`);
    return String(v);
  };
  const hosted = c.hosted ?? [];
  if (!Array.isArray(hosted) || hosted.some((h) => typeof h !== 'string'))
    throw new TerminalError('INVALID_ARGUMENT', `mirror config ${path}: hosted must be a list of prefixes`);
  const ups = c.upstreams ?? [];
  if (!Array.isArray(ups))
    throw new TerminalError('INVALID_ARGUMENT', `mirror config ${path}: upstreams must be a list`);
  const upstreamConfigs = ups.map((u, i) => upstreamFromYaml(u, `mirror config ${path}: upstreams[${i}]`));
  const listen = str('listen');
  const metricsListen = str('metricsListen');
  const store = str('store');
  const defaultUpstream = str('defaultUpstream');
  const tagTtl = str('tagTtl');
  const maxSize = str('maxSize');
  const limits: Record<string, string> = {};
  for (const k of LIMIT_KEYS) {
    const v = str(k);
    if (v !== undefined) limits[k] = v;
  }
  return {
    ...limits,
    ...(maxSize !== undefined ? { maxSize } : {}),
    ...(listen !== undefined ? { listen } : {}),
    ...(metricsListen !== undefined ? { metricsListen } : {}),
    ...(store !== undefined ? { store } : {}),
    ...(defaultUpstream !== undefined ? { defaultUpstream } : {}),
    ...(tagTtl !== undefined ? { tagTtl } : {}),
    hosted: hosted as string[],
    upstreamConfigs,
  };
}

/** Client authentication, TLS and request limits (see {@link limitSettings}). */
const LIMIT_KEYS = [
  'htpasswd',
  'maxConnections',
  'idleTimeout',
  'maxHeaderSize',
  'tlsCert',
  'tlsKey',
] as const;

/** The authentication, TLS and connection settings of the merged flags, checked. */
function limitSettings(
  f: MirrorFlags,
): Pick<MirrorSettings, 'htpasswd' | 'maxConnections' | 'idleTimeoutMs' | 'maxHeaderBytes' | 'tls'> {
  const out: {
    htpasswd?: string;
    maxConnections?: number;
    idleTimeoutMs?: number;
    maxHeaderBytes?: number;
    tls?: { certFile: string; keyFile: string };
  } = {};
  if (f.htpasswd !== undefined) out.htpasswd = f.htpasswd;
  if ((f.tlsCert === undefined) !== (f.tlsKey === undefined))
    throw new TerminalError('INVALID_ARGUMENT', '--tls-cert and --tls-key go together: give both or neither');
  if (f.tlsCert !== undefined && f.tlsKey !== undefined) out.tls = { certFile: f.tlsCert, keyFile: f.tlsKey };
  if (f.maxConnections !== undefined) {
    const n = Number(f.maxConnections);
    if (!Number.isSafeInteger(n) || n < 1)
      throw new TerminalError(
        'INVALID_ARGUMENT',
        `invalid --max-connections ${f.maxConnections}: want n >= 1`,
      );
    out.maxConnections = n;
  }
  if (f.idleTimeout !== undefined) {
    out.idleTimeoutMs = parseDuration(f.idleTimeout, '--idle-timeout');
    if (out.idleTimeoutMs < 1) throw new TerminalError('INVALID_ARGUMENT', '--idle-timeout must be positive');
  }
  if (f.maxHeaderSize !== undefined) {
    out.maxHeaderBytes = parseByteSize(f.maxHeaderSize, '--max-header-size');
    // Below 1 KiB ordinary clients fail; above 1 MiB the limit stops protecting anything.
    if (out.maxHeaderBytes < 1024 || out.maxHeaderBytes > 1024 * 1024)
      throw new TerminalError('INVALID_ARGUMENT', '--max-header-size must be between 1k and 1m');
  }
  return out;
}

function upstreamFromYaml(u: unknown, where: string): UpstreamConfig {
  if (!u || typeof u !== 'object' || Array.isArray(u))
    throw new TerminalError('INVALID_ARGUMENT', `${where}: want a mapping with name and url`);
  const o = u as Record<string, unknown>;
  const allowed = ['name', 'url', 'credentials', 'certsDir', 'insecure', 'timeouts'];
  for (const k of Object.keys(o))
    if (!allowed.includes(k))
      throw new TerminalError('INVALID_ARGUMENT', `${where}: unknown key ${JSON.stringify(k)}`);
  if (typeof o.name !== 'string' || typeof o.url !== 'string')
    throw new TerminalError('INVALID_ARGUMENT', `${where}: name and url are required strings`);
  const t = o.timeouts as Record<string, unknown> | undefined;
  const timeouts: { connectMs?: number; responseHeadersMs?: number; idleMs?: number } = {};
  if (t !== undefined) {
    if (!t || typeof t !== 'object')
      throw new TerminalError('INVALID_ARGUMENT', `${where}: timeouts must be a mapping`);
    for (const [k, field] of [
      ['connect', 'connectMs'],
      ['responseHeaders', 'responseHeadersMs'],
      ['idle', 'idleMs'],
    ] as const) {
      const v = t[k];
      if (v !== undefined) timeouts[field] = parseDuration(v as string, `${where}: timeouts.${k}`);
    }
  }
  return normalizeUpstream(
    {
      name: o.name,
      url: o.url,
      ...(typeof o.credentials === 'string' ? { credentialsFile: o.credentials } : {}),
      ...(typeof o.certsDir === 'string' ? { certsDir: o.certsDir } : {}),
      ...(o.insecure === true ? { insecure: true } : {}),
      ...(t !== undefined ? { timeouts } : {}),
    },
    where,
  );
}

/** Merges the file (when given) and the flags: flags win; `--upstream NAME=…` replaces the file's entry NAME. */
export async function mirrorSettings(flags: MirrorFlags, configFile?: string): Promise<MirrorSettings> {
  const file = configFile ? await loadMirrorConfigFile(configFile) : undefined;
  const byName = new Map<string, UpstreamConfig>();
  for (const u of file?.upstreamConfigs ?? []) byName.set(u.name, u);
  for (const f of flags.upstream ?? []) {
    const u = parseUpstreamFlag(f);
    byName.set(u.name, { ...byName.get(u.name), ...u });
  }
  const tagTtl = flags.tagTtl ?? file?.tagTtl;
  const maxSize = flags.maxSize ?? file?.maxSize;
  const listen = flags.listen ?? file?.listen;
  const metricsListen = flags.metricsListen ?? file?.metricsListen;
  const store = flags.store ?? file?.store;
  const defaultUpstream = flags.defaultUpstream ?? file?.defaultUpstream;
  return {
    ...(listen !== undefined ? { listen } : {}),
    ...(metricsListen !== undefined ? { metricsListen } : {}),
    ...(store !== undefined ? { store } : {}),
    ...(defaultUpstream !== undefined ? { defaultUpstream } : {}),
    ...(tagTtl !== undefined ? { tagTtlMs: parseDuration(tagTtl, '--tag-ttl') } : {}),
    ...(maxSize !== undefined ? { maxBytes: parseByteSize(maxSize, '--max-size') } : {}),
    ...limitSettings({
      ...Object.fromEntries(LIMIT_KEYS.map((k) => [k, file?.[k]]).filter(([, v]) => v !== undefined)),
      ...Object.fromEntries(LIMIT_KEYS.map((k) => [k, flags[k]]).filter(([, v]) => v !== undefined)),
    }),
    upstreams: [...byName.values()],
    hosted: [...(file?.hosted ?? []), ...(flags.hosted ?? [])],
  };
}
