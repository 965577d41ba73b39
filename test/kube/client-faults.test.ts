import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KubeClient } from '../../src/kube/client.js';
import { KubeError } from '../../src/kube/errors.js';

/**
 * Faults a real API server does not produce on demand (a black hole, a half-open stream, garbage): a local HTTP
 * server plays them. Everything else is tested against the real kube-apiserver.
 */
describe('KubeClient under network faults', () => {
  let server: Server;
  let client: KubeClient;
  const held: ServerResponse[] = [];

  beforeAll(async () => {
    server = createServer((req, res) => {
      const path = req.url ?? '';
      if (path.startsWith('/api/v1/blackhole')) return void held.push(res); // never answers
      if (path.startsWith('/api/v1/halfopen')) {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.write('{"type":"ADDED","object":{"metadata":{"name":"a","resourceVersion":"1"}}}\n');
        return void held.push(res); // then silence, connection open
      }
      if (path.startsWith('/api/v1/garbage')) {
        res.writeHead(200);
        return void res.end('{"type":"ADDED","object":\n');
      }
      res.writeHead(403, { 'Content-Type': 'application/json' });
      res.end(
        JSON.stringify({
          kind: 'Status',
          status: 'Failure',
          reason: 'Forbidden',
          message: 'configmaps is forbidden',
        }),
      );
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const kc = new KubeConfig();
    kc.loadFromOptions({
      // client-node allows plain HTTP only with skipTLSVerify
      clusters: [
        {
          name: 'c',
          server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
          skipTLSVerify: true,
        },
      ],
      users: [{ name: 'u' }],
      contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
      currentContext: 'x',
    });
    client = new KubeClient({ kubeConfig: kc, timeoutMs: 300 });
  });
  afterAll(async () => {
    for (const r of held) r.destroy();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  const fail = (p: Promise<unknown>): Promise<KubeError> =>
    p.then(
      () => {
        throw new Error('expected a failure');
      },
      (e: unknown) => e as KubeError,
    );

  it('a request without an answer fails with NETWORK after its timeout', async () => {
    const t0 = Date.now();
    const err = await fail(client.request('get', 'GET', '/api/v1/blackhole'));
    expect(err).toBeInstanceOf(KubeError);
    expect(err.code).toBe('NETWORK');
    expect(err.message).toMatch(/no answer in time/);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it('a watch without headers fails after the request timeout, not after its long deadline', async () => {
    const t0 = Date.now();
    const err = await fail(client.watch('/api/v1/blackhole', {}, () => undefined, { deadlineMs: 60_000 }));
    expect(err.code).toBe('NETWORK');
    expect(err.message).toMatch(/no answer in time/);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it('a half-open watch stream fails at its deadline after delivering what came', async () => {
    const events: string[] = [];
    const err = await fail(
      client.watch('/api/v1/halfopen', {}, (e) => events.push(e.type), { deadlineMs: 700 }),
    );
    expect(err.code).toBe('NETWORK');
    expect(events).toEqual(['ADDED']);
  });

  it('a malformed event line fails the watch (the informer then retries) instead of being skipped', async () => {
    const err = await fail(client.watch('/api/v1/garbage', {}, () => undefined, { deadlineMs: 5000 }));
    expect(err.code).toBe('NETWORK');
    expect(err.message).toMatch(/malformed/);
  });

  it("an error answer carries the Status' reason and message", async () => {
    const err = await fail(client.request('list', 'GET', '/api/v1/configmaps'));
    expect(err.code).toBe('FORBIDDEN');
    expect(err.status).toBe(403);
    expect(err.reason).toBe('Forbidden');
    expect(err.message).toContain('configmaps is forbidden');
  });

  it('credentials client-node refuses (plain HTTP without skipTLSVerify) are a CONFIG error, not a network one', async () => {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'c', server: 'http://127.0.0.1:9' }],
      users: [{ name: 'u' }],
      contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
      currentContext: 'x',
    });
    const err = await fail(new KubeClient({ kubeConfig: kc }).request('get', 'GET', '/api'));
    expect(err.code).toBe('CONFIG');
  });
});
