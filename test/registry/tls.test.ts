import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readEnvironment } from '../../src/config/index.js';
import { StrataError } from '../../src/engine/errors.js';
import { parseReference } from '../../src/engine/oci/index.js';
import { RegistryClient, type RepositoryRef } from '../../src/engine/registry/index.js';
import { startDockerRegistry, type DockerRegistry } from '../support/docker-registry.js';
import { makeTestPki } from '../support/test-pki.js';
import { makeImage, pushImage, readAll, recordingSleep, rejectionOf } from './helpers.js';

let dir: string;
let tlsRegistry: DockerRegistry;
let mtlsRegistry: DockerRegistry;
let plainRegistry: DockerRegistry;
/** certs.d with `ca.crt` for both TLS registries and `client.cert`/`client.key` for the mTLS one. */
let certsD: string;
/** certs.d with only `ca.crt` for the mTLS registry. */
let caOnlyD: string;
let emptyD: string;
const clients: RegistryClient[] = [];

function client(options: ConstructorParameters<typeof RegistryClient>[0]): RegistryClient {
  const c = new RegistryClient({
    plainHttpLoopback: false,
    retry: { baseDelayMs: 1, maxDelayMs: 5 },
    ...options,
  });
  clients.push(c);
  return c;
}

/** Pushes a one-layer image and pulls it back, byte for byte. */
async function pushAndPull(c: RegistryClient, host: string, repository: string): Promise<void> {
  const repo: RepositoryRef = { registry: host, repository };
  const image = makeImage([2048]);
  const digest = await pushImage(c, repo, image, 'v1');
  expect(digest).toBe(image.manifestDigest);
  const doc = await c.getManifest(parseReference(`${host}/${repository}:v1`));
  expect(doc.bytes.equals(image.manifest)).toBe(true);
  const layer = image.layers[0]!;
  expect((await readAll(await c.openBlob(repo, layer.desc))).equals(layer.bytes)).toBe(true);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'strata-tls-'));
  const f = (name: string): string => join(dir, name);
  await makeTestPki(dir);
  const tls = { cert: f('server.crt'), key: f('server.key'), ca: f('ca.crt') };
  [tlsRegistry, mtlsRegistry, plainRegistry] = await Promise.all([
    startDockerRegistry({ tls }),
    startDockerRegistry({ tls: { ...tls, clientCas: f('ca.crt') } }),
    startDockerRegistry(),
  ]);
  certsD = f('certs.d');
  caOnlyD = f('ca-only.d');
  emptyD = f('empty.d');
  await mkdir(emptyD);
  for (const host of [tlsRegistry.host, mtlsRegistry.host]) {
    await mkdir(join(certsD, host), { recursive: true });
    await copyFile(f('ca.crt'), join(certsD, host, 'ca.crt'));
  }
  await copyFile(f('client.crt'), join(certsD, mtlsRegistry.host, 'client.cert'));
  await copyFile(f('client.key'), join(certsD, mtlsRegistry.host, 'client.key'));
  await mkdir(join(caOnlyD, mtlsRegistry.host), { recursive: true });
  await copyFile(f('ca.crt'), join(caOnlyD, mtlsRegistry.host, 'ca.crt'));
}, 60_000);

afterAll(async () => {
  for (const c of clients) await c.close();
  await Promise.all([tlsRegistry?.stop(), mtlsRegistry?.stop(), plainRegistry?.stop()]);
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('RegistryClient over TLS (docker-registry)', () => {
  it('fails at once with a clear error when the CA is unknown', async () => {
    const rec = recordingSleep();
    const c = client({ certsDirs: [emptyD], sleep: rec.sleep });
    const started = Date.now();
    const err = await rejectionOf(c.ping(tlsRegistry.host));
    expect(err).toBeInstanceOf(StrataError);
    expect((err as StrataError).code).toBe('NETWORK');
    expect((err as StrataError).retryable).toBe(false);
    expect(err.message).toContain(tlsRegistry.host);
    expect(err.message).toMatch(/TLS certificate of .* not trusted \([A-Z_]+\)/);
    expect(err.message).toContain(`${emptyD}/${tlsRegistry.host}/ca.crt`);
    expect(err.message).toContain('insecure');
    expect(rec.delays).toEqual([]);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('trusts the CA from certs.d: push and pull', async () => {
    const c = client({ certsDirs: [emptyD, certsD] });
    await c.ping(tlsRegistry.host);
    await pushAndPull(c, tlsRegistry.host, 'tls/ca');
  });

  it('skips verification for an insecure registry', async () => {
    const c = client({ certsDirs: [emptyD], insecureRegistries: [tlsRegistry.host] });
    await pushAndPull(c, tlsRegistry.host, 'tls/insecure');
  });

  it('presents the client certificate from certs.d', async () => {
    const c = client({ certsDirs: [certsD] });
    await pushAndPull(c, mtlsRegistry.host, 'tls/mtls');
  });

  it('fails clearly without the client certificate the registry requires', async () => {
    const rec = recordingSleep();
    const c = client({ certsDirs: [caOnlyD], sleep: rec.sleep });
    const err = await rejectionOf(c.ping(mtlsRegistry.host));
    expect((err as StrataError).code).toBe('NETWORK');
    expect((err as StrataError).retryable).toBe(false);
    expect(err.message).toContain(mtlsRegistry.host);
    expect(err.message).toContain(`${caOnlyD}/${mtlsRegistry.host}/client.cert`);
    expect(rec.delays).toEqual([]);
  });

  it('refuses a client certificate without its key, without showing key material', async () => {
    const d = join(dir, 'no-key.d');
    await mkdir(join(d, mtlsRegistry.host), { recursive: true });
    await copyFile(join(dir, 'client.crt'), join(d, mtlsRegistry.host, 'client.cert'));
    const err = await rejectionOf(client({ certsDirs: [d] }).ping(mtlsRegistry.host));
    expect((err as StrataError).code).toBe('INVALID_ARGUMENT');
    expect(err.message).toMatch(/has no matching key .*client\.key/);
    expect(err.message).not.toContain('BEGIN');
  });

  it('falls back to plain HTTP for an insecure registry that does not speak TLS', async () => {
    const c = client({ certsDirs: [emptyD], insecureRegistries: [plainRegistry.host] });
    await pushAndPull(c, plainRegistry.host, 'tls/fallback');
    // Remembered: later calls go straight to HTTP.
    await c.ping(plainRegistry.host);
  });

  it('reads STRATA_CERTS_DIRS (colon-separated) with docker/containers defaults', () => {
    expect(readEnvironment({ HOME: '/h', STRATA_CERTS_DIRS: '/a: /b:' }).certsDirs).toEqual(['/a', '/b']);
    expect(readEnvironment({ HOME: '/h' }).certsDirs).toEqual([
      '/etc/containers/certs.d',
      '/etc/docker/certs.d',
    ]);
  });
});
