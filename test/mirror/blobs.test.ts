import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ociError, pushBlob, sha, startHarness, type Harness } from './support.js';

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h.close();
});

describe('registry server: base and blobs', () => {
  it('answers the ping with {} and the API version header', async () => {
    const res = await h.fetch('/v2/');
    expect(res.status).toBe(200);
    expect(res.headers.get('docker-distribution-api-version')).toBe('registry/2.0');
    expect(await res.json()).toEqual({});
  });

  it('takes a monolithic upload and serves the blob with its headers (GET and HEAD)', async () => {
    const data = randomBytes(5000);
    const digest = sha(data);
    const res = await h.fetch(`/v2/team/app/blobs/uploads/?digest=${digest}`, { method: 'POST', body: data });
    expect(res.status).toBe(201);
    expect(res.headers.get('location')).toBe(`/v2/team/app/blobs/${digest}`);
    expect(res.headers.get('docker-content-digest')).toBe(digest);

    const head = await h.fetch(`/v2/team/app/blobs/${digest}`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe('5000');
    expect(head.headers.get('docker-content-digest')).toBe(digest);
    expect(head.headers.get('content-type')).toBe('application/octet-stream');
    expect(head.headers.get('accept-ranges')).toBe('bytes');

    const get = await h.fetch(`/v2/team/app/blobs/${digest}`);
    expect(get.status).toBe(200);
    expect(Buffer.from(await get.arrayBuffer()).equals(data)).toBe(true);
    expect(await h.store.has(digest)).toBe(true);
  });

  it('takes a chunked upload: PATCHes with Content-Range, status GET, final PUT with a last chunk', async () => {
    const data = randomBytes(300_000);
    const digest = sha(data);
    const start = await h.fetch('/v2/team/app/blobs/uploads/', { method: 'POST' });
    expect(start.status).toBe(202);
    const location = start.headers.get('location')!;
    const uuid = start.headers.get('docker-upload-uuid')!;
    expect(location).toBe(`/v2/team/app/blobs/uploads/${uuid}`);
    expect(start.headers.get('range')).toBe('0-0');

    const p1 = await h.fetch(location, {
      method: 'PATCH',
      body: data.subarray(0, 100_000),
      headers: { 'Content-Range': '0-99999' },
    });
    expect(p1.status).toBe(202);
    expect(p1.headers.get('range')).toBe('0-99999');
    expect(p1.headers.get('docker-upload-uuid')).toBe(uuid);

    const status = await h.fetch(p1.headers.get('location')!);
    expect(status.status).toBe(204);
    expect(status.headers.get('range')).toBe('0-99999');
    expect(status.headers.get('docker-upload-uuid')).toBe(uuid);

    // A streamed chunk without Content-Range is appended too (docker's streaming PATCH).
    const p2 = await h.fetch(location, { method: 'PATCH', body: data.subarray(100_000, 250_000) });
    expect(p2.status).toBe(202);
    expect(p2.headers.get('range')).toBe('0-249999');

    const put = await h.fetch(`${location}?digest=${digest}`, {
      method: 'PUT',
      body: data.subarray(250_000),
      headers: { 'Content-Range': '250000-299999' },
    });
    expect(put.status).toBe(201);
    expect(put.headers.get('location')).toBe(`/v2/team/app/blobs/${digest}`);
    expect(put.headers.get('docker-content-digest')).toBe(digest);

    const get = await h.fetch(`/v2/team/app/blobs/${digest}`);
    expect(Buffer.from(await get.arrayBuffer()).equals(data)).toBe(true);
    // The session is gone once completed.
    expect((await h.fetch(location)).status).toBe(404);
  });

  it('refuses an out-of-order PATCH with 416 and keeps the session usable', async () => {
    const data = Buffer.from('0123456789abcdef');
    const start = await h.fetch('/v2/team/app/blobs/uploads/', { method: 'POST' });
    const location = start.headers.get('location')!;
    expect(
      (
        await h.fetch(location, {
          method: 'PATCH',
          body: data.subarray(0, 8),
          headers: { 'Content-Range': '0-7' },
        })
      ).status,
    ).toBe(202);
    const bad = await h.fetch(location, {
      method: 'PATCH',
      body: data.subarray(8),
      headers: { 'Content-Range': '10-17' },
    });
    expect(bad.status).toBe(416);
    expect(bad.headers.get('range')).toBe('0-7');
    expect((await ociError(bad)).code).toBe('BLOB_UPLOAD_INVALID');
    const again = await h.fetch(location, {
      method: 'PATCH',
      body: data.subarray(0, 8),
      headers: { 'Content-Range': '0-7' },
    });
    expect(again.status).toBe(416);
    const good = await h.fetch(location, {
      method: 'PATCH',
      body: data.subarray(8),
      headers: { 'Content-Range': '8-15' },
    });
    expect(good.status).toBe(202);
    expect(good.headers.get('range')).toBe('0-15');
    const put = await h.fetch(`${location}?digest=${sha(data)}`, { method: 'PUT' });
    expect(put.status).toBe(201);
  });

  it('answers DIGEST_INVALID for a wrong digest on PUT and stores nothing', async () => {
    const data = Buffer.from('the real content');
    const claimed = sha('something else');
    const start = await h.fetch('/v2/team/app/blobs/uploads/', { method: 'POST' });
    const location = start.headers.get('location')!;
    const put = await h.fetch(`${location}?digest=${claimed}`, { method: 'PUT', body: data });
    expect(put.status).toBe(400);
    expect((await ociError(put)).code).toBe('DIGEST_INVALID');
    expect(await h.store.has(claimed)).toBe(false);
    expect(await h.store.has(sha(data))).toBe(false);
    expect((await h.fetch(`/v2/team/app/blobs/${claimed}`, { method: 'HEAD' })).status).toBe(404);
    const status = await h.fetch(location);
    expect(status.status).toBe(404);
    expect((await ociError(status)).code).toBe('BLOB_UPLOAD_UNKNOWN');
    expect(await readdir(join(h.store.root, 'uploads'))).not.toContain(
      start.headers.get('docker-upload-uuid'),
    );
  });

  it('does not let a client claim a blob of another repository by its digest without the content', async () => {
    const secret = await pushBlob(h, 'tenant-a/private', 'secret layer');
    const res = await h.fetch(`/v2/tenant-b/app/blobs/uploads/?digest=${secret}`, {
      method: 'POST',
      body: Buffer.from('garbage'),
    });
    expect(res.status).toBe(400);
    expect((await ociError(res)).code).toBe('DIGEST_INVALID');
    const get = await h.fetch(`/v2/tenant-b/app/blobs/${secret}`);
    expect(get.status).toBe(404);
    // With the real content, the upload succeeds (and the store keeps one copy).
    await pushBlob(h, 'tenant-b/app', 'secret layer');
    expect((await h.fetch(`/v2/tenant-b/app/blobs/${secret}`)).status).toBe(200);
  });

  it('mounts a blob from a repository that has it (201) and falls back to an upload otherwise (202)', async () => {
    const digest = await pushBlob(h, 'src/repo', 'mount me');
    const mounted = await h.fetch(`/v2/dst/repo/blobs/uploads/?mount=${digest}&from=src/repo`, {
      method: 'POST',
    });
    expect(mounted.status).toBe(201);
    expect(mounted.headers.get('location')).toBe(`/v2/dst/repo/blobs/${digest}`);
    expect(mounted.headers.get('docker-content-digest')).toBe(digest);
    expect((await h.fetch(`/v2/dst/repo/blobs/${digest}`)).status).toBe(200);

    const fallback = await h.fetch(`/v2/other/repo/blobs/uploads/?mount=${digest}&from=nothing/here`, {
      method: 'POST',
    });
    expect(fallback.status).toBe(202);
    expect(fallback.headers.get('location')).toMatch(/^\/v2\/other\/repo\/blobs\/uploads\/[0-9a-f-]{36}$/);
    expect((await h.fetch(`/v2/other/repo/blobs/${digest}`)).status).toBe(404);
    await h.fetch(fallback.headers.get('location')!, { method: 'DELETE' });
  });

  it('answers 404 BLOB_UNKNOWN for a blob not linked to the repository', async () => {
    const digest = await pushBlob(h, 'linked/repo', 'linked only here');
    const res = await h.fetch(`/v2/unlinked/repo/blobs/${digest}`);
    expect(res.status).toBe(404);
    expect((await ociError(res)).code).toBe('BLOB_UNKNOWN');
    const head = await h.fetch(`/v2/unlinked/repo/blobs/${digest}`, { method: 'HEAD' });
    expect(head.status).toBe(404);
  });

  it('serves byte ranges with 206 and Content-Range, and 416 when unsatisfiable', async () => {
    const data = randomBytes(1000);
    const digest = await pushBlob(h, 'team/range', data);
    const path = `/v2/team/range/blobs/${digest}`;
    const r1 = await h.fetch(path, { headers: { Range: 'bytes=10-19' } });
    expect(r1.status).toBe(206);
    expect(r1.headers.get('content-range')).toBe('bytes 10-19/1000');
    expect(r1.headers.get('content-length')).toBe('10');
    expect(Buffer.from(await r1.arrayBuffer()).equals(data.subarray(10, 20))).toBe(true);

    const r2 = await h.fetch(path, { headers: { Range: 'bytes=990-' } });
    expect(r2.status).toBe(206);
    expect(r2.headers.get('content-range')).toBe('bytes 990-999/1000');
    expect(Buffer.from(await r2.arrayBuffer()).equals(data.subarray(990))).toBe(true);

    const r3 = await h.fetch(path, { headers: { Range: 'bytes=-5' } });
    expect(r3.status).toBe(206);
    expect(Buffer.from(await r3.arrayBuffer()).equals(data.subarray(995))).toBe(true);

    const r4 = await h.fetch(path, { headers: { Range: 'bytes=500-5000' } });
    expect(r4.status).toBe(206);
    expect(r4.headers.get('content-range')).toBe('bytes 500-999/1000');

    const bad = await h.fetch(path, { headers: { Range: 'bytes=1000-1001' } });
    expect(bad.status).toBe(416);
    expect(bad.headers.get('content-range')).toBe('bytes */1000');
    await bad.arrayBuffer();
  });

  it('deletes a blob link with 202 and then answers 404', async () => {
    const digest = await pushBlob(h, 'team/del', 'delete me');
    const del = await h.fetch(`/v2/team/del/blobs/${digest}`, { method: 'DELETE' });
    expect(del.status).toBe(202);
    expect((await h.fetch(`/v2/team/del/blobs/${digest}`, { method: 'HEAD' })).status).toBe(404);
    const again = await h.fetch(`/v2/team/del/blobs/${digest}`, { method: 'DELETE' });
    expect(again.status).toBe(404);
  });

  it('cancels an upload with DELETE', async () => {
    const start = await h.fetch('/v2/team/app/blobs/uploads/', { method: 'POST' });
    const location = start.headers.get('location')!;
    expect((await h.fetch(location, { method: 'DELETE' })).status).toBe(204);
    const res = await h.fetch(location, { method: 'PATCH', body: Buffer.from('x') });
    expect(res.status).toBe(404);
    expect((await ociError(res)).code).toBe('BLOB_UPLOAD_UNKNOWN');
  });

  it('rejects invalid digests and unknown upload ids', async () => {
    const r1 = await h.fetch('/v2/team/app/blobs/sha256:nothex');
    expect(r1.status).toBe(400);
    expect((await ociError(r1)).code).toBe('DIGEST_INVALID');
    const r2 = await h.fetch('/v2/team/app/blobs/uploads/../../etc');
    expect(r2.status).toBe(404);
    const r3 = await h.fetch('/v2/team/app/blobs/uploads/00000000-0000-4000-8000-000000000000');
    expect(r3.status).toBe(404);
    expect((await ociError(r3)).code).toBe('BLOB_UPLOAD_UNKNOWN');
    const start = await h.fetch('/v2/team/app/blobs/uploads/', { method: 'POST' });
    // A session belongs to its repository.
    const uuid = start.headers.get('docker-upload-uuid')!;
    expect((await h.fetch(`/v2/team/other/blobs/uploads/${uuid}`)).status).toBe(404);
    const noDigest = await h.fetch(`${start.headers.get('location')!}`, { method: 'PUT' });
    expect(noDigest.status).toBe(400);
    expect((await ociError(noDigest)).code).toBe('DIGEST_INVALID');
  });
});

describe('registry server: upload session limits', () => {
  it('expires idle sessions lazily and bounds concurrent sessions with 429', async () => {
    let now = 1_000_000;
    const lim = await startHarness({ uploadTimeoutMs: 60_000, maxUploadSessions: 2, now: () => now });
    try {
      const a = await lim.fetch('/v2/x/y/blobs/uploads/', { method: 'POST' });
      const b = await lim.fetch('/v2/x/y/blobs/uploads/', { method: 'POST' });
      expect([a.status, b.status]).toEqual([202, 202]);
      const c = await lim.fetch('/v2/x/y/blobs/uploads/', { method: 'POST' });
      expect(c.status).toBe(429);
      expect((await ociError(c)).code).toBe('TOOMANYREQUESTS');
      now += 61_000;
      const gone = await lim.fetch(a.headers.get('location')!);
      expect(gone.status).toBe(404);
      const d = await lim.fetch('/v2/x/y/blobs/uploads/', { method: 'POST' });
      expect(d.status).toBe(202);
      expect(await readdir(join(lim.store.root, 'uploads'))).toEqual([d.headers.get('docker-upload-uuid')]);
    } finally {
      await lim.close();
    }
  });
});
