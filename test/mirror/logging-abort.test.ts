import { request } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { logLines, sha, startHarness, type Harness } from './support.js';

const { lines, sink } = logLines();

let h: Harness;
beforeAll(async () => {
  h = await startHarness({ logger: pino({ level: 'debug' }, sink) });
});
afterAll(async () => {
  await h.close();
});

async function waitFor<T>(probe: () => T | undefined, ms = 3000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error('timed out waiting');
    await sleep(10);
  }
}

describe('registry server: access logs and aborted requests', () => {
  it('writes one structured access log line per request, bound to the registry component', async () => {
    const res = await h.fetch('/v2/team/app/tags/list', {
      headers: { Authorization: 'Basic c2VjcmV0OnNlY3JldA==' },
    });
    await res.arrayBuffer();
    const entry = await waitFor(() =>
      lines.find((l) => l.msg === 'request' && l.path === '/v2/team/app/tags/list'),
    );
    expect(entry).toMatchObject({ component: 'registry', method: 'GET', status: 404, error: 'NAME_UNKNOWN' });
    expect(typeof entry.durationMs).toBe('number');
    expect(JSON.stringify(lines)).not.toContain('c2VjcmV0');
  });

  it('keeps nothing of a PATCH whose client went away mid-body, and keeps serving', async () => {
    const start = await h.fetch('/v2/team/abort/blobs/uploads/', { method: 'POST' });
    const location = start.headers.get('location')!;
    const ok = await h.fetch(location, {
      method: 'PATCH',
      body: Buffer.from('12345'),
      headers: { 'Content-Range': '0-4' },
    });
    expect(ok.status).toBe(202);

    await new Promise<void>((resolve) => {
      const req = request(h.url(location), {
        method: 'PATCH',
        headers: { 'Content-Length': '1000000', 'Content-Range': '5-1000004' },
      });
      req.on('error', () => resolve());
      req.write(Buffer.alloc(64 * 1024, 1), () => {
        setTimeout(() => {
          req.destroy();
          resolve();
        }, 50);
      });
    });
    // The partial chunk is rolled back: once the aborted request is done (the session is no longer busy), the
    // upload continues at byte 5 and the blob holds exactly the acknowledged bytes.
    let next = 0;
    for (let i = 0; i < 100 && next !== 202; i++) {
      const res = await h.fetch(location, {
        method: 'PATCH',
        body: Buffer.from('67890'),
        headers: { 'Content-Range': '5-9' },
      });
      next = res.status;
      await res.arrayBuffer();
      if (next !== 202) await sleep(20);
    }
    expect(next).toBe(202);
    const put = await h.fetch(`${location}?digest=${sha('1234567890')}`, { method: 'PUT' });
    expect(put.status).toBe(201);
    expect(lines.some((l) => l.msg === 'internal error')).toBe(false);
    expect((await h.fetch('/v2/')).status).toBe(200);
  });
});
