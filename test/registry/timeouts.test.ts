import { afterAll, describe, expect, it } from 'vitest';
import { readEnvironment } from '../../src/config/index.js';
import { describeError, StrataError } from '../../src/engine/errors.js';
import { digestOf, MediaType, parseReference } from '../../src/engine/oci/index.js';
import { RegistryClient, type RegistryClientOptions } from '../../src/engine/registry/index.js';
import {
  DEFAULT_HTTP_TIMEOUTS,
  httpTimeouts,
  parseHttpTimeouts,
} from '../../src/engine/registry/timeouts.js';
import {
  startHttpServer,
  startSilentServer,
  startTcpServer,
  trickle,
  type HostileServer,
} from './hostile-servers.js';
import { opener, readAll, recordingSleep, rejectionOf } from './helpers.js';

const servers: HostileServer[] = [];
const clients: RegistryClient[] = [];
const SMALL = { connectMs: 300, responseHeadersMs: 300, idleMs: 300 };

afterAll(async () => {
  for (const c of clients) await c.close();
  for (const s of servers) await s.stop();
});

async function serve<T extends HostileServer>(p: Promise<T>): Promise<T> {
  const s = await p;
  servers.push(s);
  return s;
}

/** A client with small timeouts, two retries and instant backoff (the sleeps are recorded). */
function client(extra: RegistryClientOptions = {}): { c: RegistryClient; delays: number[] } {
  const rec = recordingSleep();
  const c = new RegistryClient({ timeouts: SMALL, retry: { retries: 2 }, sleep: rec.sleep, ...extra });
  clients.push(c);
  return { c, delays: rec.delays };
}

function expectNetwork(err: Error, phase: string): StrataError {
  expect(err).toBeInstanceOf(StrataError);
  const e = err as StrataError;
  expect(e.code).toBe('NETWORK');
  expect(e.retryable).toBe(true);
  expect(e.message).toContain(`${phase} timeout`);
  return e;
}

const blob = Buffer.alloc(4096, 7);
const blobDesc = { mediaType: MediaType.OciLayerGzip, digest: digestOf(blob), size: blob.length };

describe('timeouts against servers that never answer or trickle', () => {
  it('a server that accepts and never answers fails with the response-headers timeout, retried', async () => {
    const silent = await serve(startSilentServer());
    const { c, delays } = client();
    const started = Date.now();
    const err = await rejectionOf(c.getManifest(parseReference(`${silent.host}/team/app:1`)));
    const e = expectNetwork(err, 'response-headers');
    expect(e.message).toBe(
      `pull ${silent.host}/team/app:1: ${silent.host} sent no response within 300 ms (response-headers timeout) (gave up after 3 attempts)`,
    );
    expect(e.detail).toMatchObject({ attempts: 3 });
    expect(delays).toHaveLength(2);
    expect(silent.connections).toBe(3);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('headers trickled a byte at a time still hit the response-headers timeout', async () => {
    const slow = await serve(
      startTcpServer((s) => {
        s.resume();
        trickle(s, Buffer.from('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n'.repeat(20)), 20);
      }),
    );
    const { c } = client({ retry: { retries: 0 } });
    const err = await rejectionOf(c.ping(slow.host));
    expectNetwork(err, 'response-headers');
    expect(err.message).toContain(`ping ${slow.host}: ${slow.host} sent no response within 300 ms`);
  });

  it('a TLS handshake that never completes fails with the connect timeout', async () => {
    const silent = await serve(startSilentServer());
    const { c } = client({ plainHttpLoopback: false, certsDirs: [], retry: { retries: 1 } });
    const err = await rejectionOf(c.ping(silent.host));
    const e = expectNetwork(err, 'connect');
    expect(e.message).toContain(`could not connect to ${silent.host} within 300 ms (connect timeout)`);
    expect(e.message).toContain('gave up after 2 attempts');
    expect(silent.connections).toBe(2);
  });

  it('a blob body trickled a byte every 20 ms is a read stall; resumes do not reset the attempts', async () => {
    const ranges: (string | undefined)[] = [];
    const slow = await serve(
      startHttpServer((req, res) => {
        ranges.push(req.headers.range);
        const from = Number(/bytes=(\d+)-/.exec(req.headers.range ?? '')?.[1] ?? 0);
        res.writeHead(from > 0 ? 206 : 200, {
          'content-length': String(blob.length - from),
          ...(from > 0 ? { 'content-range': `bytes ${from}-${blob.length - 1}/${blob.length}` } : {}),
        });
        trickle(res, blob.subarray(from), 20);
      }),
    );
    const { c, delays } = client();
    const stream = await c.openBlob({ registry: slow.host, repository: 'team/app' }, blobDesc);
    const err = await rejectionOf(readAll(stream));
    const e = expectNetwork(err, 'idle');
    expect(e.message).toContain(`pull ${slow.host}/team/app@${blobDesc.digest}: `);
    expect(e.message).toContain(
      `${slow.host} sent less than 1024 bytes in 300 ms (read stalled; idle timeout)`,
    );
    expect(e.message).toMatch(/received \d+ of 4096 bytes \(gave up after 3 attempts\)$/);
    expect(delays).toHaveLength(2);
    expect(ranges).toHaveLength(3);
    expect(ranges[1]).toMatch(/^bytes=\d+-$/);
  });

  it('a manifest body that trickles fails the same way', async () => {
    const slow = await serve(
      startHttpServer((_req, res) => {
        res.writeHead(200, { 'content-type': MediaType.OciManifest, 'content-length': '2000' });
        trickle(res, Buffer.alloc(2000, 0x20), 20);
      }),
    );
    const { c } = client({ retry: { retries: 0 } });
    const err = await rejectionOf(c.getManifest(parseReference(`${slow.host}/team/app:1`)));
    expectNetwork(err, 'idle');
    expect(err.message).toContain('read stalled');
  });

  it('a token realm that never answers, or trickles its token, fails naming the realm and the request', async () => {
    const silentRealm = await serve(startSilentServer());
    const tricklingRealm = await serve(
      startHttpServer((_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        trickle(res, Buffer.from(JSON.stringify({ token: 'x'.repeat(4000) })), 20);
      }),
    );
    const registryFor = (realm: string) =>
      serve(
        startHttpServer((_req, res) => {
          res.writeHead(401, {
            'www-authenticate': `Bearer realm="http://${realm}/token",service="test"`,
            'content-type': 'application/json',
          });
          res.end('{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}');
        }),
      );
    for (const [realm, phase, words] of [
      [silentRealm, 'response-headers', 'sent no response within 300 ms'],
      [tricklingRealm, 'idle', 'sent less than 1024 bytes in 300 ms'],
    ] as const) {
      const reg = await registryFor(realm.host);
      const { c, delays } = client();
      const err = await rejectionOf(c.getManifest(parseReference(`${reg.host}/team/app:1`)));
      const e = expectNetwork(err, phase);
      expect(e.message).toContain(`pull ${reg.host}/team/app:1: auth token realm ${realm.host}: `);
      expect(e.message).toContain(`${realm.host} ${words}`);
      // Retried by the request's own loop only: three attempts in all, not three per attempt.
      expect(e.message).toContain('gave up after 3 attempts');
      expect(delays).toHaveLength(2);
    }
    expect(silentRealm.connections).toBe(3);
  });

  it('an upload the server stops reading fails with the idle timeout while sending', async () => {
    const stuck = await serve(
      startHttpServer((req, res) => {
        if (req.method === 'POST') {
          res.writeHead(202, { location: '/v2/team/app/blobs/uploads/1', 'content-length': '0' });
          res.end();
          return;
        }
        req.pause(); // never reads the PUT body, never answers
      }),
    );
    const big = Buffer.alloc(32 * 1024 * 1024, 1);
    const { c } = client({ retry: { retries: 0 } });
    const err = await rejectionOf(
      c.uploadBlob(
        { registry: stuck.host, repository: 'team/app' },
        { mediaType: MediaType.OciLayerGzip, digest: digestOf(big), size: big.length },
        opener(big),
      ),
    );
    expectNetwork(err, 'idle');
    expect(err.message).toContain(`${stuck.host} accepted no request data for 300 ms`);
  });

  it('a slow reader is not a stalled server', async () => {
    // Larger than every buffer on the way, so the server is held back by TCP while the reader dawdles.
    const large = Buffer.alloc(16 * 1024 * 1024, 3);
    const fast = await serve(
      startHttpServer((_req, res) => {
        res.writeHead(200, { 'content-length': String(large.length) });
        res.end(large);
      }),
    );
    const { c } = client({ retry: { retries: 0 } });
    const desc = { mediaType: MediaType.OciLayerGzip, digest: digestOf(large), size: large.length };
    const stream = await c.openBlob({ registry: fast.host, repository: 'team/app' }, desc);
    await new Promise((r) => setTimeout(r, 1000)); // three idle windows without reading
    expect((await readAll(stream)).equals(large)).toBe(true);
  });
});

describe('timeout settings', () => {
  it('parses STRATA_HTTP_TIMEOUTS entries with units, and refuses nonsense naming the entry', () => {
    expect(parseHttpTimeouts('connect=10s, headers=1.5m,idle=250ms')).toEqual({
      connectMs: 10_000,
      responseHeadersMs: 90_000,
      idleMs: 250,
    });
    expect(parseHttpTimeouts('idle=90')).toEqual({ idleMs: 90_000 });
    for (const bad of ['connect=0', 'speed=3s', 'idle=-1s', 'headers=ten', 'connect']) {
      const err = (() => {
        try {
          parseHttpTimeouts(bad);
        } catch (e) {
          return e as StrataError;
        }
        throw new Error(`accepted ${bad}`);
      })();
      expect(err.code).toBe('INVALID_ARGUMENT');
      expect(err.message).toContain(JSON.stringify(bad));
    }
    expect(httpTimeouts({ idleMs: 5 })).toEqual({ ...DEFAULT_HTTP_TIMEOUTS, idleMs: 5 });
    expect(readEnvironment({ HOME: '/h', STRATA_HTTP_TIMEOUTS: 'connect=5s' }).httpTimeouts).toBe(
      'connect=5s',
    );
    expect(readEnvironment({ HOME: '/h' }).httpTimeouts).toBeUndefined();
  });

  it('describes a timeout in one line without raw Node text', async () => {
    const silent = await serve(startSilentServer());
    const { c } = client({ retry: { retries: 0 } });
    const line = describeError(await rejectionOf(c.ping(silent.host)));
    expect(line).toBe(
      `ping ${silent.host}: ${silent.host} sent no response within 300 ms (response-headers timeout)`,
    );
  });
});
