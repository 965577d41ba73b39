/**
 * Cold-blob fills against a real upstream (docker-registry) behind a counting proxy and a lying one: 50 concurrent
 * clients → one upstream GET; two mirror processes sharing a store → still one; clients disconnecting mid-blob do
 * not stop the fill; a wrong digest or a short body caches nothing and the clients get an error.
 */
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdir, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { startMirrorServer, type MirrorServer } from '../../src/mirror/index.js';
import { startBlobProxy, type BlobProxy } from '../support/blob-proxy.js';
import { startDockerRegistry, type DockerRegistry } from '../support/docker-registry.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { tempDir } from '../support/images.js';
import { startCliServer } from '../support/cli.js';
import { pushRandomImage } from './mirror-support.js';

const MiB = 1024 * 1024;

let upstream: DockerRegistry;
let counting: BlobProxy;
let liar: FaultProxy;
let mirror: MirrorServer;
let store: FsStore;
let work: string;

beforeAll(async () => {
  work = await tempDir('strata-mirror-fill-');
  upstream = await startDockerRegistry();
  counting = await startBlobProxy(upstream.url);
  liar = await startFaultProxy(upstream.url);
  store = await FsStore.open(join(work, 'store'));
  mirror = await startMirrorServer({
    store,
    upstreams: [
      { name: 'docker.io', url: counting.url },
      { name: 'quay.io', url: liar.url },
    ],
    defaultUpstream: 'docker.io',
  });
}, 60_000);

afterAll(async () => {
  await mirror?.close();
  await counting?.stop();
  await liar?.stop();
  await upstream?.stop();
  await rm(work, { recursive: true, force: true });
});

/** GETs a blob and hashes the body; `abortAfter` bytes → the client goes away. */
function getBlob(
  base: string,
  path: string,
  abortAfter?: number,
): Promise<{ status: number; bytes: number; sha: string; complete: boolean }> {
  return new Promise((resolve) => {
    const hash = createHash('sha256');
    let bytes = 0;
    const req = request(new URL(path, base), (res) => {
      res.on('data', (c: Buffer) => {
        bytes += c.length;
        hash.update(c);
        if (abortAfter !== undefined && bytes >= abortAfter) req.destroy();
      });
      let settled = false;
      const done = (complete: boolean): void => {
        if (settled) return;
        settled = true;
        resolve({ status: res.statusCode ?? 0, bytes, sha: `sha256:${hash.digest('hex')}`, complete });
      };
      res.on('end', () => done(res.complete));
      res.on('error', () => done(false));
      res.on('close', () => {
        if (!res.complete) done(false);
      });
    });
    req.on('error', () => resolve({ status: 0, bytes, sha: '', complete: false }));
    req.end();
  });
}

/**
 * GETs `start`–`end` (inclusive) of a blob: `firstByte` resolves with the status when the first body byte arrives,
 * `body` with the bytes when the response completes (rejects when it is cut or not 206).
 */
function getRange(
  base: string,
  path: string,
  start: number,
  end: number,
): { firstByte: Promise<{ status: number }>; body: Promise<Buffer> } {
  let onFirst!: (v: { status: number }) => void;
  const firstByte = new Promise<{ status: number }>((r) => (onFirst = r));
  const body = new Promise<Buffer>((resolve, reject) => {
    const req = request(new URL(path, base), { headers: { range: `bytes=${start}-${end}` } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => {
        if (chunks.length === 0) onFirst({ status: res.statusCode ?? 0 });
        chunks.push(c);
      });
      res.on('end', () => {
        onFirst({ status: res.statusCode ?? 0 });
        if (res.statusCode === 206 && res.complete) resolve(Buffer.concat(chunks));
        else reject(new Error(`HTTP ${res.statusCode}, complete ${res.complete}`));
      });
      res.on('error', reject);
      res.on('close', () => {
        if (!res.complete) reject(new Error('cut'));
      });
    });
    req.on('error', reject);
    req.end();
  });
  body.catch(() => onFirst({ status: 0 }));
  return { firstByte, body };
}

/** Waits (up to 5 s) until `check` holds: a client may finish its verified bytes just before the fill's rename. */
async function eventually(check: () => Promise<boolean>): Promise<boolean> {
  for (let deadline = Date.now() + 5000; Date.now() < deadline;) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return check();
}

async function ingestLeftovers(): Promise<string[]> {
  return (await readdir(join(store.root, 'ingest')).catch(() => [] as string[])).filter(
    (n) => !n.endsWith('.lock'),
  );
}

describe('mirror: cold blob fills', () => {
  it('50 concurrent clients on a cold blob: one upstream GET, every client gets the exact bytes', async () => {
    const img = await pushRandomImage(upstream.host, 'team/fifty', 'v1', 6 * MiB);
    counting.throttle(8 * MiB); // the fill takes most of a second: the clients really overlap it
    try {
      const path = `/v2/team/fifty/blobs/${img.layer.digest}`;
      const results = await Promise.all(Array.from({ length: 50 }, () => getBlob(mirror.url, path)));
      for (const r of results) {
        expect(r.status).toBe(200);
        expect(r.bytes).toBe(img.layer.size);
        expect(r.sha).toBe(img.layer.digest);
      }
    } finally {
      counting.throttle(undefined);
    }
    expect(await eventually(() => store.has(img.layer.digest))).toBe(true);
    expect(counting.gets(img.layer.digest)).toBe(1);
  }, 90_000); // 50 clients hashing 6 MiB each in this process: minutes on a loaded 2-core machine

  it('clients disconnecting mid-blob do not abort the fill; the others finish', async () => {
    const img = await pushRandomImage(upstream.host, 'team/quitters', 'v1', 4 * MiB);
    counting.throttle(4 * MiB);
    try {
      const path = `/v2/team/quitters/blobs/${img.layer.digest}`;
      // The first client (the one that started the fill) leaves first.
      const quitter = getBlob(mirror.url, path, 256 * 1024);
      await new Promise((r) => setTimeout(r, 100));
      const rest = Array.from({ length: 6 }, (_, i) => getBlob(mirror.url, path, i < 3 ? MiB : undefined));
      const results = await Promise.all([quitter, ...rest]);
      expect(results.slice(0, 4).every((r) => !r.complete)).toBe(true);
      for (const r of results.slice(4)) expect(r.sha).toBe(img.layer.digest);
    } finally {
      counting.throttle(undefined);
    }
    expect(await eventually(() => store.has(img.layer.digest))).toBe(true);
    expect(counting.gets(img.layer.digest)).toBe(1);
  }, 30_000);

  it('two mirror processes sharing one store make one upstream GET', async () => {
    const img = await pushRandomImage(upstream.host, 'team/shared', 'v1', 4 * MiB);
    const shared = join(work, 'shared-store');
    const a = await serve(shared);
    const b = await serve(shared);
    counting.throttle(4 * MiB);
    try {
      const path = `/v2/team/shared/blobs/${img.layer.digest}`;
      const results = await Promise.all(
        Array.from({ length: 16 }, (_, i) => getBlob(i % 2 ? a.url : b.url, path)),
      );
      for (const r of results) {
        expect(r.status).toBe(200);
        expect(r.sha).toBe(img.layer.digest);
      }
    } finally {
      counting.throttle(undefined);
    }
    const sharedStore = await FsStore.open(shared);
    expect(await eventually(() => sharedStore.has(img.layer.digest))).toBe(true);
    await Promise.all([stop(a.child), stop(b.child)]);
    expect(counting.gets(img.layer.digest)).toBe(1);
  }, 90_000);

  it('a range of a cold blob streams from the growing fill, byte-exact, with one upstream GET', async () => {
    const img = await pushRandomImage(upstream.host, 'team/ranges', 'v1', 6 * MiB);
    const path = `/v2/team/ranges/blobs/${img.layer.digest}`;
    counting.throttle(2 * MiB); // the fill takes about 3 s
    try {
      // A range near the start: its first bytes arrive long before the fill ends.
      const first = getRange(mirror.url, path, 0, 64 * 1024 - 1);
      const firstByte = await first.firstByte;
      expect(await store.has(img.layer.digest)).toBe(false); // the fill still runs: served from the ingest file
      expect(firstByte.status).toBe(206);
      // Ranges further in, and the whole blob, joining the same fill.
      const mid = getRange(mirror.url, path, 3 * MiB + 5, 4 * MiB + 17);
      const tail = getRange(mirror.url, path, 6 * MiB - 1000, 6 * MiB - 1);
      const whole = getBlob(mirror.url, path);
      expect((await first.body).equals(img.layerBytes.subarray(0, 64 * 1024))).toBe(true);
      expect((await mid.body).equals(img.layerBytes.subarray(3 * MiB + 5, 4 * MiB + 18))).toBe(true);
      expect((await tail.body).equals(img.layerBytes.subarray(6 * MiB - 1000))).toBe(true);
      expect((await whole).sha).toBe(img.layer.digest);
    } finally {
      counting.throttle(undefined);
    }
    expect(await eventually(() => store.has(img.layer.digest))).toBe(true);
    expect(counting.gets(img.layer.digest)).toBe(1);
  }, 30_000);

  it('a range of a cold blob from a lying upstream fails (cut or error), never completes with wrong bytes', async () => {
    const img = await pushRandomImage(upstream.host, 'team/liar', 'ranged', 2 * MiB);
    liar.reset();
    liar.addRule({ method: 'GET', path: /\/blobs\/sha256:/, fault: { kind: 'corrupt', at: 10 } });
    const r = getRange(mirror.url, `/v2/quay.io/team/liar/blobs/${img.layer.digest}`, 0, 99);
    const outcome = await r.body.then(
      () => 'complete',
      () => 'cut',
    );
    expect(outcome).toBe('cut');
    expect(await store.has(img.layer.digest)).toBe(false);
    expect(await ingestLeftovers()).toEqual([]);
    liar.reset();
  }, 30_000);

  it('an upstream sending a wrong digest caches nothing; small blobs answer 502, large ones are cut', async () => {
    const small = await pushRandomImage(upstream.host, 'team/liar', 'small', 64 * 1024);
    const large = await pushRandomImage(upstream.host, 'team/liar', 'large', 3 * MiB);
    liar.reset();
    liar.addRule({ method: 'GET', path: /\/blobs\/sha256:/, fault: { kind: 'corrupt', at: 10 } });
    const s = await getBlob(mirror.url, `/v2/quay.io/team/liar/blobs/${small.layer.digest}`);
    expect(s.status).toBe(502);
    const l = await Promise.all(
      [0, 1, 2].map(() => getBlob(mirror.url, `/v2/quay.io/team/liar/blobs/${large.layer.digest}`)),
    );
    for (const r of l) {
      expect(r.complete && r.status === 200).toBe(false); // an error status or a cut body, never a full wrong blob
      if (r.status === 200) expect(r.bytes).toBeLessThan(large.layer.size);
    }
    expect(await store.has(small.layer.digest)).toBe(false);
    expect(await store.has(large.layer.digest)).toBe(false);
    expect(await ingestLeftovers()).toEqual([]);
    // Nothing poisoned: once the upstream tells the truth, the blob is served and cached.
    liar.reset();
    const ok = await getBlob(mirror.url, `/v2/quay.io/team/liar/blobs/${large.layer.digest}`);
    expect(ok.sha).toBe(large.layer.digest);
    expect(await eventually(() => store.has(large.layer.digest))).toBe(true);
  }, 30_000);

  it('an upstream cutting the body short (every attempt) caches nothing and the client gets an error', async () => {
    const img = await pushRandomImage(upstream.host, 'team/short', 'v1', 2 * MiB);
    liar.reset();
    liar.addRule({ method: 'GET', path: /\/blobs\/sha256:/, fault: { kind: 'truncate', afterBytes: 1000 } });
    const r = await getBlob(mirror.url, `/v2/quay.io/team/short/blobs/${img.layer.digest}`);
    expect(r.status === 200 && r.complete).toBe(false);
    expect(r.status).toBe(502);
    expect(await store.has(img.layer.digest)).toBe(false);
    expect(await ingestLeftovers()).toEqual([]);
    liar.reset();
  }, 30_000);
});

/** Starts `strata mirror serve` on a free port over `storeDir`, in front of the counting proxy. */
function serve(storeDir: string): Promise<{ child: ChildProcess; url: string }> {
  return startCliServer([
    'mirror',
    'serve',
    '--listen',
    '127.0.0.1:0',
    '--store',
    storeDir,
    '--upstream',
    `docker.io=${counting.url}`,
    '--default-upstream',
    'docker.io',
  ]);
}

function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}
