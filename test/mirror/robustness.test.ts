import { request } from 'node:http';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RegistryBackend } from '../../src/mirror/index.js';
import {
  logLines,
  ociError,
  prepareImage,
  putManifest,
  rawErrorCode,
  rawRequest,
  startHarness,
  type Harness,
} from './support.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const MiB = 1024 * 1024;

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h.close();
});

describe('registry server: requests that must not crash it', () => {
  it('answers 413 to a chunked manifest PUT over 4 MiB and keeps serving on the same connection', async () => {
    // Regression: the size-limit path read `req.socket.destroyed` after the body stream had been destroyed
    // (`TypeError: Cannot read properties of null`), an unhandled rejection that killed `registry serve`.
    const pieces = Array.from({ length: 80 }, () => Buffer.alloc(64 * 1024, 0x20)); // 5 MiB of JSON whitespace
    const res = await rawRequest(h.server.url, {
      method: 'PUT',
      path: '/v2/big/manifest/manifests/v1',
      headers: { 'Content-Type': OCI_MANIFEST },
      body: pieces,
    });
    expect(res.status).toBe(413);
    expect(rawErrorCode(res)).toBe('MANIFEST_INVALID');
    // The same with a Content-Length announcing it, refused before reading.
    const announced = await rawRequest(h.server.url, {
      method: 'PUT',
      path: '/v2/big/manifest/manifests/v1',
      headers: { 'Content-Type': OCI_MANIFEST, 'Content-Length': String(5 * MiB) },
      body: Buffer.alloc(5 * MiB, 0x20),
    });
    expect(announced.status).toBe(413);
    expect((await h.fetch('/v2/')).status).toBe(200);
    expect((await h.fetch('/v2/big/manifest/manifests/v1')).status).toBe(404);
  });

  it('survives a client that resets the connection in the middle of a chunked manifest PUT', async () => {
    await new Promise<void>((resolve) => {
      const base = new URL(h.server.url);
      const req = request({
        host: base.hostname,
        port: base.port,
        method: 'PUT',
        path: '/v2/reset/me/manifests/v1',
        headers: { 'Content-Type': OCI_MANIFEST },
        agent: false,
      });
      req.on('error', () => resolve());
      req.write(Buffer.alloc(256 * 1024, 0x20), () => {
        setTimeout(() => req.destroy(), 50);
      });
      req.on('close', () => resolve());
    });
    await new Promise((r) => setTimeout(r, 100));
    expect((await h.fetch('/v2/')).status).toBe(200);
    expect((await h.fetch('/v2/reset/me/manifests/v1')).status).toBe(404);
  });

  it('answers malformed percent-encoding and odd targets with OCI errors, not a crash', async () => {
    const badEscape = await rawRequest(h.server.url, { path: '/v2/a%zz/tags/list' });
    expect(badEscape.status).toBe(400);
    expect(rawErrorCode(badEscape)).toBe('NAME_INVALID');
    const absolute = await rawRequest(h.server.url, { path: `${h.server.url}/v2/` });
    expect(absolute.status).toBe(200);
    const nul = await rawRequest(h.server.url, { path: '/v2/a%00b/tags/list' });
    expect(nul.status).toBe(400);
    expect((await h.fetch('/v2/')).status).toBe(200);
  });

  it('turns an error escaping the handlers into a 500 JSON answer and an error log line', async () => {
    const { lines, sink } = logLines();
    const logger = pino({ level: 'debug' }, sink);
    // A logger whose debug level throws breaks the server's own error path: the last resort must still answer.
    const child = logger.child({});
    const broken = Object.assign(Object.create(logger) as typeof logger, {
      child: () =>
        Object.assign(Object.create(child) as typeof child, {
          debug: () => {
            throw new Error('logger broke');
          },
        }),
    });
    const failing = new Proxy({} as RegistryBackend, {
      get: () => () => {
        throw new TypeError('synchronous bug in a backend');
      },
    });
    const b = await startHarness({ logger: broken, backend: failing });
    try {
      const res = await b.fetch('/v2/team/app/tags/list');
      expect(res.status).toBe(500);
      expect(await res.json()).toEqual({ errors: [{ code: 'UNKNOWN', message: 'internal server error' }] });
      const gone = await b.fetch('/v2/team/app/nothing-here');
      expect(gone.status).toBe(500);
      expect((await ociError(gone)).code).toBe('UNKNOWN');
      expect(lines.filter((l) => l.level === 50).length).toBeGreaterThanOrEqual(2);
    } finally {
      await b.close();
    }
  });
});

// Every route, reached through a name with dot segments, plain or percent-encoded. Each must answer 400
// NAME_INVALID and leave the repository `dots/b` (which the segments would resolve to) untouched.
const DOT_NAMES = [
  'dots/a/../b',
  'dots/./b',
  'dots/a/%2e%2e/b',
  'dots/a/%2E%2E/b',
  'dots/a/.%2e/b',
  'dots/%2e/b',
  'dots/a%2f..%2fb',
  'dots/a%2F%2E%2E%2Fb',
  'dots/b/c/..',
  '../dots/b',
  './dots/b',
];

describe('registry server: names with dot segments', () => {
  it('answers NAME_INVALID on every route and never reaches the repository they resolve to', async () => {
    const img = await prepareImage(h, 'dots/b', { layers: ['dot layer'] });
    expect((await putManifest(h, 'dots/b', 'v1', img.bytes, OCI_MANIFEST)).status).toBe(201);
    const session = await h.fetch('/v2/dots/b/blobs/uploads/', { method: 'POST' });
    expect(session.status).toBe(202);
    const uuid = session.headers.get('docker-upload-uuid')!;
    const layer = img.layers[0]!;

    const attempts: Array<{
      method: string;
      suffix: string;
      body?: Buffer;
      headers?: Record<string, string>;
    }> = [
      { method: 'POST', suffix: '/blobs/uploads/' },
      { method: 'POST', suffix: `/blobs/uploads/?digest=${layer}`, body: Buffer.from('dot layer') },
      { method: 'POST', suffix: `/blobs/uploads/?mount=${layer}&from=dots/b` },
      { method: 'GET', suffix: `/blobs/uploads/${uuid}` },
      {
        method: 'PATCH',
        suffix: `/blobs/uploads/${uuid}`,
        body: Buffer.from('x'),
        headers: { 'Content-Range': '0-0' },
      },
      { method: 'PUT', suffix: `/blobs/uploads/${uuid}?digest=${layer}` },
      { method: 'DELETE', suffix: `/blobs/uploads/${uuid}` },
      { method: 'GET', suffix: `/blobs/${layer}` },
      { method: 'HEAD', suffix: `/blobs/${layer}` },
      { method: 'DELETE', suffix: `/blobs/${layer}` },
      { method: 'GET', suffix: '/manifests/v1' },
      { method: 'HEAD', suffix: `/manifests/${img.digest}` },
      {
        method: 'PUT',
        suffix: '/manifests/v2',
        body: img.bytes,
        headers: { 'Content-Type': OCI_MANIFEST },
      },
      { method: 'DELETE', suffix: `/manifests/${img.digest}` },
      { method: 'GET', suffix: '/tags/list' },
      { method: 'GET', suffix: `/referrers/${img.digest}` },
    ];
    for (const name of DOT_NAMES) {
      for (const a of attempts) {
        const res = await rawRequest(h.server.url, {
          method: a.method,
          path: `/v2/${name}${a.suffix}`,
          ...(a.headers ? { headers: a.headers } : {}),
          ...(a.body ? { body: a.body } : {}),
        });
        const what = `${a.method} /v2/${name}${a.suffix}`;
        expect(res.status, what).toBe(400);
        if (a.method !== 'HEAD') expect(rawErrorCode(res), what).toBe('NAME_INVALID');
      }
    }

    // `dots/b` is as it was: tag, blob link and upload session intact; no repository was created elsewhere.
    expect((await h.fetch('/v2/dots/b/manifests/v1')).status).toBe(200);
    expect((await h.fetch('/v2/dots/b/manifests/v2')).status).toBe(404);
    expect((await h.fetch(`/v2/dots/b/blobs/${layer}`)).status).toBe(200);
    const status = await h.fetch(`/v2/dots/b/blobs/uploads/${uuid}`);
    expect(status.status).toBe(204);
    expect(status.headers.get('range')).toBe('0-0');
    const catalog = (await (await h.fetch('/v2/_catalog')).json()) as { repositories: string[] };
    expect(catalog.repositories.filter((r) => r.startsWith('dots'))).toEqual(['dots/b']);
  });
});
