/**
 * Tag → digest resolution for LayerCaches: one HEAD of the manifest per tag, straight to the image's registry
 * (through no mirror), with the cache's pull Secrets (`kubernetes.io/dockerconfigjson`, tried in order: the first
 * Secret with an entry for the registry wins), bounded timeouts and few retries (the reconcile retries with backoff).
 * A reference that carries a digest resolves to it without a call. The controller resolves once for the whole
 * cluster; the agents pull by digest (ADR 0030).
 */
import { StrataError, TerminalError } from '../../engine/errors.js';
import { parseReference } from '../../engine/oci/reference.js';
import { RegistryClient } from '../../engine/registry/client.js';
import {
  decodeAuthEntry,
  normalizeRegistryKey,
  type Credentials,
  type CredentialProvider,
} from '../../engine/registry/credentials.js';

/** Resolves image references to digests. */
export interface TagResolver {
  /** The digest `image` names now; rejects with the engine's error (a stable `code`) when it cannot say. */
  resolve(image: string, dockerConfigs: readonly string[], signal: AbortSignal): Promise<string>;
}

/** Credentials from the `.dockerconfigjson` texts of pull Secrets, first Secret first. */
export function credentialsFromDockerConfigs(configs: readonly string[]): CredentialProvider {
  const entries: Array<Map<string, Credentials>> = configs.map((text) => {
    const m = new Map<string, Credentials>();
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch {
      return m; // a malformed Secret gives nothing (never its contents in a message)
    }
    const auths = (doc as { auths?: Record<string, unknown> } | null)?.auths ?? {};
    for (const [k, v] of Object.entries(auths)) {
      const c = decodeAuthEntry(v);
      if (c) m.set(normalizeRegistryKey(k), c);
    }
    return m;
  });
  return {
    get: (registry: string) => {
      const key = normalizeRegistryKey(registry);
      for (const m of entries) if (m.has(key)) return Promise.resolve(m.get(key));
      return Promise.resolve(undefined);
    },
  };
}

/** Options of {@link registryResolver}. */
export interface RegistryResolverOptions {
  /** Registries reached over plain HTTP (test registries); loopback always is. */
  readonly plainHttpRegistries?: readonly string[];
  readonly connectTimeoutMs?: number;
  readonly responseTimeoutMs?: number;
}

/** The resolver over the engine's registry client: a fresh client per call (its credentials are the cache's). */
export function registryResolver(o: RegistryResolverOptions = {}): TagResolver {
  return {
    async resolve(image, dockerConfigs, signal) {
      const ref = parseReference(image);
      if (ref.digest) return ref.digest;
      const client = new RegistryClient({
        credentials: credentialsFromDockerConfigs(dockerConfigs),
        ...(o.plainHttpRegistries ? { plainHttpRegistries: o.plainHttpRegistries } : {}),
        timeouts: {
          connectMs: o.connectTimeoutMs ?? 10_000,
          responseHeadersMs: o.responseTimeoutMs ?? 30_000,
        },
        retry: { retries: 2, maxDelayMs: 2_000 },
        userAgent: 'strata-controller',
      });
      try {
        const desc = await client.headManifest(ref, { signal });
        if (!desc) throw new TerminalError('MANIFEST_UNKNOWN', `${image}: no such manifest`);
        return desc.digest;
      } finally {
        await client.close();
      }
    },
  };
}

/** A condition reason for a resolution failure (by the engine error's code, never its text). */
export function resolveFailureReason(err: unknown): string {
  const code = err instanceof StrataError ? err.code : undefined;
  switch (code) {
    case 'MANIFEST_UNKNOWN':
    case 'NAME_UNKNOWN':
    case 'NOT_FOUND':
      return 'ImageNotFound';
    case 'UNAUTHORIZED':
    case 'DENIED':
      return 'Unauthorized';
    case 'INVALID_REFERENCE':
      return 'InvalidReference';
    case 'NETWORK':
    case 'TOO_MANY_REQUESTS':
      return 'RegistryUnavailable';
    default:
      return 'ResolveFailed';
  }
}
