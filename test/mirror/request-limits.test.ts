/**
 * Request limits of the registry server (and so of `mirror serve`): a bound on open connections that closes the
 * longest-idle ones first so that a normal client keeps being served next to hundreds of idle sockets, an idle
 * timeout, a header size limit, and hostile names and digests answered with clean OCI errors.
 */
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawErrorCode, rawRequest, startHarness, type Harness } from './support.js';

/** Opens `n` TCP connections to `url`; each optionally sends `prefix` (a request that never completes). */
async function openSockets(url: string, n: number, prefix?: string): Promise<Socket[]> {
  const { hostname, port } = new URL(url);
  return Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<Socket>((resolve, reject) => {
          const s = connect({ host: hostname, port: Number(port) }, () => {
            if (prefix) s.write(prefix);
            resolve(s);
          });
          s.on('error', () => undefined); // a reset by the server is expected
          s.once('error', reject);
        }),
    ),
  );
}

const open = (sockets: Socket[]): number => sockets.filter((s) => !s.destroyed && !s.readableEnded).length;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits until `check` holds or `ms` pass; returns whether it held. */
async function until(check: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

describe('registry server: connection bound and idle timeout', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({ maxConnections: 50, idleTimeoutMs: 1500 });
  });
  afterAll(async () => {
    await h.close();
  });

  it('keeps at most maxConnections open under 350 idle and half-sent connections and still serves a client', async () => {
    const idle = await openSockets(h.server.url, 300);
    const slow = await openSockets(h.server.url, 50, 'GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ');
    const all = [...idle, ...slow];
    try {
      // The server closed the surplus, oldest first: at most the limit remain.
      expect(await until(() => open(all) <= 50, 5000)).toBe(true);
      expect(open(idle.slice(0, 250))).toBe(0);
      for (let i = 0; i < 20; i++) {
        const res = await rawRequest(h.server.url, { path: '/v2/', timeoutMs: 5000 });
        expect(res.status).toBe(200);
      }
      // Idle connections go after the idle timeout, whether they sent nothing or half a request.
      expect(await until(() => open(all) === 0, 5000)).toBe(true);
    } finally {
      for (const s of all) s.destroy();
    }
  });

  it('refuses a new connection only when every open one has a request in flight', async () => {
    const b = await startHarness({ maxConnections: 3, idleTimeoutMs: 5000 });
    const base = new URL(b.server.url);
    try {
      const locations: string[] = [];
      for (let i = 0; i < 3; i++) {
        const res = await rawRequest(b.server.url, { method: 'POST', path: '/v2/busy/repo/blobs/uploads/' });
        expect(res.status).toBe(202);
        locations.push(String(res.headers.location));
      }
      // Three PATCHes whose bodies are still arriving: three busy connections.
      const pending = locations.map((loc) => {
        const req = request({
          host: base.hostname,
          port: base.port,
          method: 'PATCH',
          path: loc,
          agent: false,
          headers: { 'Content-Type': 'application/octet-stream' },
        });
        req.write(Buffer.from('part one '));
        const done = new Promise<number>((resolve, reject) => {
          req.on('response', (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          });
          req.on('error', reject);
        });
        return { req, done };
      });
      await sleep(200);
      await expect(rawRequest(b.server.url, { path: '/v2/', timeoutMs: 3000 })).rejects.toThrow();
      for (const p of pending) p.req.end(Buffer.from('part two'));
      expect(await Promise.all(pending.map((p) => p.done))).toEqual([202, 202, 202]);
      // Finished uploads leave idle connections: a new client evicts one of them.
      expect((await rawRequest(b.server.url, { path: '/v2/' })).status).toBe(200);
    } finally {
      await b.close();
    }
  });
});

describe('registry server: header size limit', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({ maxHeaderBytes: 4096 });
  });
  afterAll(async () => {
    await h.close();
  });

  it('answers 431 to headers over the limit and keeps serving', async () => {
    const big = await rawRequest(h.server.url, { path: '/v2/', headers: { 'X-Big': 'a'.repeat(6000) } });
    expect(big.status).toBe(431);
    const many = await rawRequest(h.server.url, {
      path: '/v2/',
      headers: Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`X-H${i}`, 'v'.repeat(20)])),
    });
    expect(many.status).toBe(431);
    const hugeAuth = await rawRequest(h.server.url, {
      path: '/v2/',
      headers: { Authorization: `Basic ${'A'.repeat(8000)}` },
    });
    expect(hugeAuth.status).toBe(431);
    const fine = await rawRequest(h.server.url, { path: '/v2/', headers: { 'X-Fine': 'a'.repeat(2000) } });
    expect(fine.status).toBe(200);
  });

  it('applies Node’s 16 KiB default when no limit is set', async () => {
    const d = await startHarness();
    try {
      expect(
        (await rawRequest(d.server.url, { path: '/v2/', headers: { 'X-A': 'a'.repeat(12_000) } })).status,
      ).toBe(200);
      expect(
        (await rawRequest(d.server.url, { path: '/v2/', headers: { 'X-A': 'a'.repeat(20_000) } })).status,
      ).toBe(431);
    } finally {
      await d.close();
    }
  });
});

describe('registry server: hostile names and digests', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness();
  });
  afterAll(async () => {
    await h.close();
  });

  it('answers bad digests with DIGEST_INVALID or NAME/MANIFEST errors, never a file lookup outside the store', async () => {
    const cases: Array<[string, string, number, string]> = [
      ['GET', '/v2/a/b/blobs/sha256:zz', 400, 'DIGEST_INVALID'],
      ['GET', `/v2/a/b/blobs/sha256:${'0'.repeat(63)}`, 400, 'DIGEST_INVALID'],
      ['GET', `/v2/a/b/blobs/sha256:${'A'.repeat(64)}`, 400, 'DIGEST_INVALID'],
      ['GET', `/v2/a/b/blobs/sha256:..%2F..%2F..%2Fetc%2Fpasswd`, 400, 'DIGEST_INVALID'],
      ['GET', `/v2/a/b/blobs/md5:${'0'.repeat(32)}`, 400, 'DIGEST_INVALID'],
      ['DELETE', '/v2/a/b/blobs/sha256:zz', 400, 'DIGEST_INVALID'],
      ['GET', `/v2/a/b/referrers/sha256:zz`, 400, 'DIGEST_INVALID'],
      ['PUT', `/v2/a/b/blobs/uploads/nope?digest=sha256:zz`, 404, 'BLOB_UPLOAD_UNKNOWN'],
      ['GET', `/v2/${'a'.repeat(300)}/tags/list`, 400, 'NAME_INVALID'],
      ['GET', '/v2/A/b/tags/list', 400, 'NAME_INVALID'],
      ['GET', '/v2/a//b/tags/list', 400, 'NAME_INVALID'],
      // An invalid tag names nothing: no lookup on reads, refused on writes.
      ['GET', '/v2/a/b/manifests/..', 404, 'MANIFEST_UNKNOWN'],
      ['PUT', '/v2/a/b/manifests/..', 400, 'MANIFEST_INVALID'],
      ['GET', `/v2/a/b/manifests/sha256:${'g'.repeat(64)}`, 400, 'DIGEST_INVALID'],
    ];
    for (const [method, path, status, code] of cases) {
      const res = await rawRequest(h.server.url, { method, path });
      expect(`${method} ${path} -> ${res.status} ${rawErrorCode(res)}`).toBe(
        `${method} ${path} -> ${status} ${code}`,
      );
    }
    expect((await h.fetch('/v2/')).status).toBe(200);
  });
});
