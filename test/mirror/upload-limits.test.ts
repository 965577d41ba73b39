import { readdir } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { rawErrorCode, rawRequest, sha, startHarness, type Harness } from './support.js';

const MINUTE = 60 * 1000;

/** POSTs an upload start from the given loopback source address. */
function startUpload(h: Harness, from: string, repo = 'team/app'): ReturnType<typeof rawRequest> {
  return rawRequest(h.server.url, { method: 'POST', path: `/v2/${repo}/blobs/uploads/`, localAddress: from });
}

async function uploadDirs(h: Harness): Promise<string[]> {
  return (await readdir(join(h.store.root, 'uploads'))).sort();
}

describe('registry server: upload sessions per client', () => {
  it('256 abandoned upload POSTs from one client do not lock out another client', async () => {
    let now = 1_000_000;
    const h = await startHarness({ now: () => now }); // the defaults: 64 per client, 10 min idle
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 256; i++) statuses.push((await startUpload(h, '127.0.0.1')).status);
      expect(statuses.slice(0, 64).every((s) => s === 202)).toBe(true);
      expect(statuses.slice(64).every((s) => s === 429)).toBe(true);
      const refused = await startUpload(h, '127.0.0.1');
      expect(rawErrorCode(refused)).toBe('TOOMANYREQUESTS');
      expect(refused.headers['retry-after']).toBeDefined();

      // Another client pushes a blob at once, chunked and monolithic.
      const data = Buffer.from('pushed by the second client');
      const other = await startUpload(h, '127.0.0.2');
      expect(other.status).toBe(202);
      const put = await rawRequest(h.server.url, {
        method: 'PUT',
        path: `${other.headers.location as string}?digest=${sha(data)}`,
        body: data,
        localAddress: '127.0.0.2',
      });
      expect(put.status).toBe(201);
      const mono = await rawRequest(h.server.url, {
        method: 'POST',
        path: `/v2/team/app/blobs/uploads/?digest=${sha('monolithic')}`,
        body: Buffer.from('monolithic'),
        localAddress: '127.0.0.2',
      });
      expect(mono.status).toBe(201);
      expect((await h.fetch(`/v2/team/app/blobs/${sha(data)}`)).status).toBe(200);
      expect(await uploadDirs(h)).toHaveLength(64); // the first client's 64; nothing left of the others

      // Idle sessions expire in minutes: the first client can push again, and their files are gone.
      now += 10 * MINUTE + 1;
      const again = await startUpload(h, '127.0.0.1');
      expect(again.status).toBe(202);
      expect(await uploadDirs(h)).toEqual([again.headers['docker-upload-uuid']]);
    } finally {
      await h.close();
    }
  });

  it('counts only idle time: a session that keeps receiving chunks outlives the timeout', async () => {
    let now = 1_000_000;
    const h = await startHarness({
      now: () => now,
      uploadTimeoutMs: 5 * MINUTE,
      maxUploadSessionsPerClient: 2,
    });
    try {
      const busy = await h.fetch('/v2/team/app/blobs/uploads/', { method: 'POST' });
      const idle = await h.fetch('/v2/team/app/blobs/uploads/', { method: 'POST' });
      expect([busy.status, idle.status]).toEqual([202, 202]);
      const third = await h.fetch('/v2/team/app/blobs/uploads/', { method: 'POST' });
      expect(third.status).toBe(429);

      const data = Buffer.from('0123456789');
      let location = busy.headers.get('location')!;
      for (let i = 0; i < data.length; i++) {
        now += 2 * MINUTE; // ten chunks over 20 minutes, never 5 idle minutes in a row
        const patch = await h.fetch(location, {
          method: 'PATCH',
          body: data.subarray(i, i + 1),
          headers: { 'Content-Range': `${i}-${i}` },
        });
        expect(patch.status, `chunk ${i}`).toBe(202);
        location = patch.headers.get('location')!;
      }
      // The idle one is gone (404, and its slot is free); the busy one completes.
      expect((await h.fetch(idle.headers.get('location')!)).status).toBe(404);
      expect((await h.fetch('/v2/team/app/blobs/uploads/', { method: 'POST' })).status).toBe(202);
      const done = await h.fetch(`${location}?digest=${sha(data)}`, { method: 'PUT' });
      expect(done.status).toBe(201);
    } finally {
      await h.close();
    }
  });

  it('keeps a ceiling over all clients', async () => {
    const h = await startHarness({ maxUploadSessions: 3, maxUploadSessionsPerClient: 2 });
    try {
      expect((await startUpload(h, '127.0.0.1')).status).toBe(202);
      expect((await startUpload(h, '127.0.0.1')).status).toBe(202);
      expect((await startUpload(h, '127.0.0.2')).status).toBe(202);
      const full = await startUpload(h, '127.0.0.3');
      expect(full.status).toBe(429);
      expect(rawErrorCode(full)).toBe('TOOMANYREQUESTS');
    } finally {
      await h.close();
    }
  });

  it('cuts a PATCH that stalls for the idle timeout, so its session can expire', async () => {
    const h = await startHarness({ uploadTimeoutMs: 400 });
    try {
      const start = await h.fetch('/v2/team/app/blobs/uploads/', { method: 'POST' });
      const location = start.headers.get('location')!;
      const base = new URL(h.server.url);
      const started = Date.now();
      const outcome = await new Promise<string>((resolve) => {
        const req = request({
          host: base.hostname,
          port: base.port,
          method: 'PATCH',
          path: location,
          headers: { 'Content-Length': '100', 'Content-Range': '0-99' },
          agent: false,
          signal: AbortSignal.timeout(10_000),
        });
        req.on('response', (res) => resolve(`answered ${res.statusCode}`));
        req.on('error', (err) => resolve((err as NodeJS.ErrnoException).code ?? err.message));
        req.write(Buffer.alloc(10)); // then nothing more: a stalled client
      });
      expect(outcome).toBe('ECONNRESET'); // cut by the server, not by our own 10 s timeout
      expect(Date.now() - started).toBeLessThan(5000);
      await new Promise((r) => setTimeout(r, 500));
      expect((await h.fetch(location)).status).toBe(404);
      expect(await uploadDirs(h)).toEqual([]);
    } finally {
      await h.close();
    }
  });
});

describe('registry server: upload sessions per repository', () => {
  it('a repository holds at most maxUploadSessionsPerRepository sessions, whoever opens them; others are unaffected', async () => {
    let now = 1_000_000;
    const h = await startHarness({ now: () => now, maxUploadSessionsPerRepository: 3 });
    try {
      const opened: Array<Awaited<ReturnType<typeof startUpload>>> = [];
      for (const from of ['127.0.0.1', '127.0.0.2', '127.0.0.3']) opened.push(await startUpload(h, from));
      expect(opened.map((r) => r.status)).toEqual([202, 202, 202]);

      // A fourth client, under its own limit, is refused for that repository: 429 with distribution's error body.
      const refused = await startUpload(h, '127.0.0.4');
      expect(refused.status).toBe(429);
      expect(refused.headers['retry-after']).toBeDefined();
      const body = JSON.parse(refused.body.toString('utf8')) as {
        errors: Array<{ code: string; message: string; detail?: { repository?: string } }>;
      };
      expect(body.errors[0]).toMatchObject({
        code: 'TOOMANYREQUESTS',
        message: expect.stringMatching(/team\/app \(limit 3 per repository\)/),
        detail: { repository: 'team/app' },
      });
      expect(await uploadDirs(h)).toHaveLength(3); // nothing made for the refused one

      // Another repository, from the same client, is not affected.
      expect((await startUpload(h, '127.0.0.4', 'team/other')).status).toBe(202);

      // A finished upload frees its place in the repository.
      const data = Buffer.from('finishes the first session');
      const put = await rawRequest(h.server.url, {
        method: 'PUT',
        path: `${opened[0]!.headers.location as string}?digest=${sha(data)}`,
        body: data,
        localAddress: '127.0.0.1',
      });
      expect(put.status).toBe(201);
      expect((await startUpload(h, '127.0.0.4')).status).toBe(202);
      expect((await startUpload(h, '127.0.0.5')).status).toBe(429);

      // Idle sessions expire and free the repository too.
      now += 10 * MINUTE + 1;
      expect((await startUpload(h, '127.0.0.5')).status).toBe(202);
    } finally {
      await h.close();
    }
  });

  it('the default (256) stays above the per-client default (64): one client never locks a repository', async () => {
    const h = await startHarness();
    try {
      for (let i = 0; i < 64; i++) expect((await startUpload(h, '127.0.0.1')).status).toBe(202);
      expect((await startUpload(h, '127.0.0.1')).status).toBe(429);
      expect((await startUpload(h, '127.0.0.2')).status).toBe(202);
    } finally {
      await h.close();
    }
  });
});
