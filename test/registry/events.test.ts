import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseReference } from '../../src/engine/oci/index.js';
import { createObserver, type EngineEvent } from '../../src/engine/observe.js';
import { RegistryClient, StaticCredentials } from '../../src/engine/registry/index.js';
import { startDockerRegistry, type DockerRegistry } from '../support/docker-registry.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { startTokenProxy, type TokenProxy } from '../support/token-proxy.js';
import { makeImage, pushImage, readAll, recordingSleep, rejectionOf, type TestImage } from './helpers.js';

const USER = 'strata';
const PASS = 'events-Pa55word';

let registry: DockerRegistry;
let tokens: TokenProxy;
let faults: FaultProxy;
let image: TestImage;
const closers: (() => Promise<void>)[] = [];

beforeAll(async () => {
  registry = await startDockerRegistry();
  tokens = await startTokenProxy({ upstream: registry.url, credentials: { username: USER, password: PASS } });
  faults = await startFaultProxy(registry.url);
  image = makeImage([1500, 200 * 1024]);
});

afterAll(async () => {
  for (const c of closers) await c();
  await faults?.stop();
  await tokens?.stop();
  await registry?.stop();
});

type HttpEvent = Extract<EngineEvent, { type: 'http-request' }>;
type RetryEvent = Extract<EngineEvent, { type: 'retry' }>;

/** A client reporting to a recording listener. */
function observed(extra: ConstructorParameters<typeof RegistryClient>[0] = {}): {
  client: RegistryClient;
  events: EngineEvent[];
  http: () => HttpEvent[];
  retries: () => RetryEvent[];
  delays: number[];
} {
  const events: EngineEvent[] = [];
  const rec = recordingSleep();
  const client = new RegistryClient({
    observer: createObserver({ listeners: [(e) => events.push(e)] }),
    sleep: rec.sleep,
    ...extra,
  });
  closers.push(() => client.close());
  return {
    client,
    events,
    http: () => events.filter((e): e is HttpEvent => e.type === 'http-request'),
    retries: () => events.filter((e): e is RetryEvent => e.type === 'retry'),
    delays: rec.delays,
  };
}

describe('http-request events', () => {
  it('reports every exchange (token realm included) with status, bytes and duration, never secrets or queries', async () => {
    const { client, events, http } = observed({
      credentials: new StaticCredentials({ [tokens.host]: { username: USER, password: PASS } }),
    });
    const repo = { registry: tokens.host, repository: 'events/app' };
    await pushImage(client, repo, image, 'v1');
    const doc = await client.getManifest(parseReference(`${tokens.host}/events/app:v1`));
    const layer = image.layers[1]!;
    expect((await readAll(await client.openBlob(repo, layer.desc))).equals(layer.bytes)).toBe(true);

    const all = http();
    expect(all.length).toBeGreaterThanOrEqual(8);
    for (const e of all) {
      expect(e.host).toBe(tokens.host);
      expect(e.path).toMatch(/^\/[^?]*$/);
      expect(e.durationMs).toBeGreaterThanOrEqual(0);
      expect(e.error).toBeUndefined();
    }
    // The first anonymous request learns the challenge; the realm answers with a token.
    expect(all.some((e) => e.status === 401)).toBe(true);
    const realm = all.filter((e) => e.path === '/token');
    expect(realm.length).toBeGreaterThanOrEqual(2); // push scope, then pull scope
    expect(realm.every((e) => e.method === 'GET' && e.status === 200 && e.bytes > 0)).toBe(true);
    // Bytes: received for GET, sent for PUT.
    const blobGet = all.find((e) => e.method === 'GET' && e.path.endsWith(`/blobs/${layer.desc.digest}`));
    expect(blobGet).toMatchObject({ status: 200, bytes: layer.desc.size });
    const manifestGet = all.find((e) => e.method === 'GET' && e.path === '/v2/events/app/manifests/v1');
    expect(manifestGet).toMatchObject({ status: 200, bytes: doc.bytes.length });
    const uploads = all.filter((e) => e.method === 'PUT' && e.path.includes('/blobs/uploads/'));
    expect(uploads.map((e) => e.bytes).sort((a, b) => a - b)).toEqual(
      [image.config.desc.size, ...image.layers.map((l) => l.desc.size)].sort((a, b) => a - b),
    );
    expect(all.find((e) => e.method === 'PUT' && e.path.endsWith('/manifests/v1'))).toMatchObject({
      status: 201,
      bytes: image.manifest.length,
    });
    const text = JSON.stringify(events);
    for (const secret of [PASS, 'Bearer', 'Basic', 'digest=', 'scope=', 'service=', 'authorization'])
      expect(text).not.toContain(secret);
  });

  it('reports a body cut short with its error code and the bytes that arrived', async () => {
    faults.reset();
    const repo = { registry: registry.host, repository: 'events/cut' };
    const seed = observed();
    await pushImage(seed.client, repo, image, 'v1');
    const layer = image.layers[1]!;
    faults.addRule({
      method: 'GET',
      path: /\/blobs\/sha256:/,
      times: 1,
      fault: { kind: 'truncate', afterBytes: 50_000 },
    });
    const { client, http } = observed();
    await readAll(await client.openBlob({ registry: faults.host, repository: 'events/cut' }, layer.desc));
    const gets = http().filter((e) => e.path.endsWith(`/blobs/${layer.desc.digest}`));
    expect(gets).toHaveLength(2);
    expect(gets[0]).toMatchObject({ status: 200, error: 'NETWORK' });
    expect(gets[0]!.bytes).toBeGreaterThan(0);
    expect(gets[0]!.bytes).toBeLessThanOrEqual(50_000);
    expect(gets[1]).toMatchObject({ status: 206, bytes: layer.desc.size - gets[0]!.bytes });
    expect(gets[1]!.error).toBeUndefined();
  });

  it('reports a connection refused as status 0 with NETWORK', async () => {
    const { client, http } = observed({ retry: { retries: 0 } });
    await rejectionOf(client.ping('127.0.0.1:1'));
    expect(http()).toEqual([
      expect.objectContaining({
        method: 'GET',
        host: '127.0.0.1:1',
        path: '/v2/',
        status: 0,
        error: 'NETWORK',
      }),
    ]);
  });
});

describe('retry events', () => {
  it('reports each retry before its sleep: attempt, maximum, delay, code and reason', async () => {
    faults.reset();
    const repo = { registry: registry.host, repository: 'events/retry' };
    await pushImage(observed().client, repo, image, 'v1');
    faults.addRule({
      method: 'GET',
      path: /\/manifests\/v1$/,
      times: 2,
      fault: { kind: 'status', status: 500 },
    });
    const { client, retries, http, delays } = observed();
    const doc = await client.getManifest(parseReference(`${faults.host}/events/retry:v1`));
    expect(doc.digest).toBe(image.manifestDigest);
    const r = retries();
    expect(r.map((e) => e.attempt)).toEqual([1, 2]);
    expect(r.map((e) => e.delayMs)).toEqual(delays);
    for (const e of r) {
      expect(e).toMatchObject({
        what: `pull ${faults.host}/events/retry:v1`,
        maxAttempts: 5,
        code: 'REGISTRY_ERROR',
      });
      expect(e.reason).toContain('HTTP 500');
    }
    expect(http().map((e) => e.status)).toEqual([500, 500, 200]);
  });

  it('reports blob resumes as retries, and none once attempts are exhausted', async () => {
    faults.reset();
    const repo = { registry: registry.host, repository: 'events/resume' };
    await pushImage(observed().client, repo, image, 'v1');
    faults.addRule({ method: 'GET', path: /\/blobs\/sha256:/, fault: { kind: 'truncate', afterBytes: 0 } });
    const { client, retries } = observed({ retry: { retries: 2 } });
    const layer = image.layers[1]!;
    const err = await rejectionOf(
      readAll(await client.openBlob({ registry: faults.host, repository: 'events/resume' }, layer.desc)),
    );
    expect(err.message).toContain('gave up after 3 attempts');
    const r = retries();
    expect(r.map((e) => [e.attempt, e.maxAttempts, e.code])).toEqual([
      [1, 3, 'NETWORK'],
      [2, 3, 'NETWORK'],
    ]);
    expect(r[0]!.reason).toContain(`received 0 of ${layer.desc.size} bytes`);
  });
});

describe('listeners that throw', () => {
  it('never break a request; the failure is logged at debug and other listeners still hear everything', async () => {
    const heard: EngineEvent[] = [];
    const debug: string[] = [];
    const noop = (): void => undefined;
    const observer = createObserver({
      logger: { debug: (_o, msg) => void debug.push(msg ?? ''), info: noop, warn: noop, error: noop },
      listeners: [
        () => {
          throw new Error('listener bug');
        },
        (e) => heard.push(e),
      ],
    });
    const client = new RegistryClient({ observer });
    closers.push(() => client.close());
    const repo = { registry: registry.host, repository: 'events/throw' };
    await pushImage(client, repo, image, 'v1');
    const layer = image.layers[1]!;
    expect((await readAll(await client.openBlob(repo, layer.desc))).equals(layer.bytes)).toBe(true);
    expect(heard.filter((e) => e.type === 'http-request').length).toBeGreaterThanOrEqual(5);
    expect(debug.length).toBe(heard.length);
    expect(debug.every((m) => m.includes('listener threw'))).toBe(true);
  });
});
