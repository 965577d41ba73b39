/**
 * The Secrets a StrataNode names (ADR 0028): `kubernetes.io/dockerconfigjson` Secrets read with `get secrets` in the
 * source object's namespace. Their `auths` become a credentials file for an engine registry client (mode 0600, in the
 * node store's agent dir) and, for the cluster mirror, a hosts.toml `Authorization` header. Never logged.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { KubeClient } from '../kube/client.js';
import { hasCode } from '../kube/errors.js';
import { writeFileAtomic } from '../mirror/node-config/apply.js';

/** A Secret larger than this is refused (a dockerconfigjson is a few KiB). */
const MAX_SECRET_BYTES = 1024 * 1024;

/** The `auths` of a docker config: registry key → entry (`auth` = base64 `user:password`, or username/password). */
export type DockerAuths = Record<string, Record<string, unknown>>;

/** Why a Secret could not be used: its reason for the status. */
export class SecretProblem extends Error {
  constructor(
    readonly reason: 'SecretNotFound' | 'SecretInvalid' | 'SecretUnreadable',
    message: string,
  ) {
    super(message);
  }
}

/** Reads `namespace/name` and answers its docker `auths`; throws {@link SecretProblem}. */
export async function readDockerAuths(
  client: KubeClient,
  namespace: string,
  name: string,
  signal?: AbortSignal,
): Promise<DockerAuths> {
  let secret: { data?: Record<string, string>; type?: string };
  try {
    secret = await client.request(
      'get',
      'GET',
      `/api/v1/namespaces/${encodeURIComponent(namespace)}/secrets/${encodeURIComponent(name)}`,
      {
        ...(signal ? { signal } : {}),
      },
    );
  } catch (err) {
    if (hasCode(err, 'NOT_FOUND'))
      throw new SecretProblem('SecretNotFound', `Secret ${namespace}/${name} does not exist`);
    throw new SecretProblem('SecretUnreadable', `Secret ${namespace}/${name}: ${(err as Error).message}`);
  }
  const raw = secret.data?.['.dockerconfigjson'] ?? secret.data?.['config.json'];
  if (raw === undefined || raw.length > MAX_SECRET_BYTES)
    throw new SecretProblem('SecretInvalid', `Secret ${namespace}/${name} has no .dockerconfigjson`);
  try {
    const doc = JSON.parse(Buffer.from(raw, 'base64').toString('utf8')) as { auths?: unknown };
    if (!isRecord(doc.auths)) throw new Error();
    // Every entry an object: a `null` or a string would break whoever reads it (the header, the engine's client).
    if (!Object.values(doc.auths).every(isRecord)) throw new Error();
    return doc.auths as DockerAuths;
  } catch {
    throw new SecretProblem(
      'SecretInvalid',
      `Secret ${namespace}/${name}: .dockerconfigjson is not a docker config`,
    );
  }
}

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** Host of a docker config key (`https://index.docker.io/v1/` → `index.docker.io`, `host:5000` unchanged). */
function keyHost(key: string): string {
  try {
    return key.includes('://') ? new URL(key).host : key.replace(/\/.*$/, '');
  } catch {
    return key;
  }
}

/** base64 (standard alphabet, padded or not): all a Basic credential may be. */
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * The `Authorization: Basic …` value for `host` from `auths`, or undefined when they hold none for it. An `auth`
 * that is not base64 throws {@link SecretProblem} SecretInvalid (it would go into hosts.toml as a header value).
 */
export function basicAuthorization(
  auths: DockerAuths,
  host: string,
  secret = 'the Secret',
): string | undefined {
  for (const [key, entry] of Object.entries(auths)) {
    if (keyHost(key).toLowerCase() !== host.toLowerCase()) continue;
    if (typeof entry.auth === 'string' && entry.auth !== '') {
      if (!BASE64.test(entry.auth))
        throw new SecretProblem('SecretInvalid', `${secret}: the auth of ${key} is not base64`);
      return `Basic ${entry.auth}`;
    }
    if (typeof entry.username === 'string' && typeof entry.password === 'string')
      return `Basic ${Buffer.from(`${entry.username}:${entry.password}`).toString('base64')}`;
  }
  return undefined;
}

/**
 * Writes `auths` as a docker config file `<dir>/<name>.json` (0600, atomic) and answers its path; the engine's
 * client re-reads it when it changes.
 */
export async function writeCredentialsFile(dir: string, name: string, auths: DockerAuths): Promise<string> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, `${name}.json`);
  await writeFileAtomic(path, JSON.stringify({ auths }), { mode: 0o600 });
  return path;
}
