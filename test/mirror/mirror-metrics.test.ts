/**
 * Mirror observability: `/metrics` counters move as a cold then a warm pull through the mirror should move them
 * (upstream: Debian's docker-registry), `/healthz` and `/readyz` (an unusable store makes it unready, a stopped
 * upstream does not), request ids in responses and access logs, `metricsListen`, stale serves and evictions.
 */
import { rename } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { MirrorMetrics, startMirrorServer, type MirrorServer } from '../../src/mirror/index.js';
import type { DockerRegistry } from '../support/docker-registry.js';
import { hubUpstream, pushRandomImage, startHub, type Hub, type PushedImage } from './mirror-support.js';
import { logLines } from './support.js';

const { lines, sink } = logLines();

let hub: Hub;
let upstream: DockerRegistry;
let mirror: MirrorServer;
let work: string;
let store: FsStore;
let image: PushedImage;
let clock = Date.now();
const LAYER = 256 * 1024;

beforeAll(async () => {
  hub = await startHub('strata-mirror-metrics-', async (upstream) => {
    image = await pushRandomImage(upstream.host, 'library/app', 'v1', LAYER);
  });
  ({ upstream, work, store } = hub);
  mirror = await hub.startMirror({
    tagTtlMs: 60_000,
    now: () => clock,
    logger: pino({ level: 'info' }, sink),
    metricsListen: { host: '127.0.0.1', port: 0 },
  });
}, 60_000);

afterAll(() => hub?.stop(mirror));

/** Parses Prometheus text into `name{labels}` → value (labels as written, sorted by prom-client). */
function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

async function scrape(base = mirror.url): Promise<Map<string, number>> {
  const res = await fetch(`${base}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return parseMetrics(await res.text());
}

/** Sum of every series of `name` whose labels include all of `labels`. */
function sum(m: Map<string, number>, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const [key, value] of m) {
    const brace = key.indexOf('{');
    if ((brace < 0 ? key : key.slice(0, brace)) !== name) continue;
    if (Object.entries(labels).every(([k, v]) => key.includes(`${k}="${v}"`))) total += value;
  }
  return total;
}

/** Scrapes until `fills` more fills than in `before` have ended (at most 5 s). */
async function settled(before: Map<string, number>, fills: number): Promise<Map<string, number>> {
  const until = Date.now() + 5000;
  for (;;) {
    const m = await scrape();
    const ended = sum(m, 'strata_mirror_fills_total') - sum(before, 'strata_mirror_fills_total');
    if (ended >= fills || Date.now() > until) return m;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Pulls `library/app:v1` as a client does: the manifest by tag, then its config and layer. */
async function pull(base = mirror.url): Promise<void> {
  const res = await fetch(`${base}/v2/library/app/manifests/v1`, {
    headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' },
  });
  expect(res.status).toBe(200);
  const manifest = (await res.json()) as { config: { digest: string }; layers: Array<{ digest: string }> };
  for (const d of [manifest.config.digest, manifest.layers[0]!.digest]) {
    const blob = await fetch(`${base}/v2/library/app/blobs/${d}`);
    expect(blob.status).toBe(200);
    await blob.arrayBuffer();
  }
}

describe('mirror observability', () => {
  it('counts a cold pull as misses and upstream traffic, a warm pull as hits with no upstream request', async () => {
    const m0 = await scrape();
    await pull();
    // A fill is counted when it has released its lease, just after the client got the last byte.
    const m1 = await settled(m0, 2);
    const delta = (name: string, labels?: Record<string, string>): number =>
      sum(m1, name, labels) - sum(m0, name, labels);
    expect(delta('strata_mirror_cache_misses_total', { kind: 'manifest' })).toBe(1);
    expect(delta('strata_mirror_cache_misses_total', { kind: 'blob' })).toBe(2);
    expect(delta('strata_mirror_cache_hits_total')).toBe(0);
    expect(delta('strata_mirror_upstream_requests_total', { upstream: 'docker.io', method: 'GET' })).toBe(3);
    expect(delta('strata_mirror_upstream_bytes_total', { upstream: 'docker.io' })).toBeGreaterThanOrEqual(
      LAYER,
    );
    expect(delta('strata_mirror_fills_total', { result: 'ok' })).toBe(2);
    expect(delta('strata_mirror_requests_total', { route: 'blob', method: 'GET', status: '200' })).toBe(2);
    expect(delta('strata_mirror_requests_total', { route: 'manifest', status: '200' })).toBe(1);
    expect(delta('strata_mirror_served_bytes_total', { route: 'blob' })).toBeGreaterThan(LAYER);
    expect(sum(m1, 'strata_mirror_fills_in_flight')).toBe(0);

    await pull();
    const m2 = await scrape();
    const warm = (name: string, labels?: Record<string, string>): number =>
      sum(m2, name, labels) - sum(m1, name, labels);
    expect(warm('strata_mirror_cache_hits_total', { kind: 'manifest' })).toBe(1);
    expect(warm('strata_mirror_cache_hits_total', { kind: 'blob' })).toBe(2);
    expect(warm('strata_mirror_cache_misses_total')).toBe(0);
    expect(warm('strata_mirror_upstream_requests_total')).toBe(0);
    expect(warm('strata_mirror_upstream_bytes_total')).toBe(0);
    expect(warm('strata_mirror_served_bytes_total', { route: 'blob' })).toBeGreaterThan(LAYER);
    // Scrapes are counted too (by the next one).
    expect(warm('strata_mirror_requests_total', { route: 'metrics', status: '200' })).toBeGreaterThanOrEqual(
      1,
    );
    expect(sum(m2, 'strata_mirror_store_bytes')).toBeGreaterThanOrEqual(0);
  });

  it('answers /healthz and /readyz, on the mirror and on the metrics listener', async () => {
    for (const base of [mirror.url, mirror.metricsUrl!]) {
      for (const path of ['/healthz', '/readyz']) {
        const res = await fetch(`${base}${path}`);
        expect(res.status).toBe(200);
        expect(await res.text()).toBe('ok\n');
      }
      expect((await fetch(`${base}/healthz`, { method: 'POST' })).status).toBe(405);
    }
    const other = await fetch(`${mirror.metricsUrl!}/v2/`);
    expect(other.status).toBe(404); // the metrics listener serves no registry
    expect(sum(await scrape(mirror.metricsUrl!), 'strata_mirror_cache_hits_total')).toBeGreaterThan(0);
    // A repository named like an endpoint stays a repository.
    const repo = await fetch(`${mirror.url}/v2/healthz/manifests/latest`);
    expect(repo.status).toBe(404);
    expect(((await repo.json()) as { errors: Array<{ code: string }> }).errors[0]!.code).toBe(
      'MANIFEST_UNKNOWN',
    );
  });

  it('is unready while the store cannot be written, and ready again once it can', async () => {
    const moved = `${store.root}.away`;
    await rename(store.root, moved);
    try {
      await new Promise((r) => setTimeout(r, 1100)); // past the probe cache
      const res = await fetch(`${mirror.url}/readyz`);
      expect(res.status).toBe(503);
      expect(await res.text()).toMatch(/^store unusable: ENOENT/);
      expect((await fetch(`${mirror.url}/healthz`)).status).toBe(200);
    } finally {
      await rename(moved, store.root);
    }
    await new Promise((r) => setTimeout(r, 1100));
    expect((await fetch(`${mirror.url}/readyz`)).status).toBe(200);
  });

  it('echoes a sane X-Request-Id, replaces a hostile one, and logs it on the request line', async () => {
    const echoed = await fetch(`${mirror.url}/v2/`, { headers: { 'X-Request-Id': 'trace-42.a:b' } });
    expect(echoed.headers.get('x-request-id')).toBe('trace-42.a:b');
    const hostile = await fetch(`${mirror.url}/v2/`, { headers: { 'X-Request-Id': 'a b"\t{}' } });
    const made = hostile.headers.get('x-request-id')!;
    expect(made).toMatch(/^[0-9a-f-]{36}$/);
    const generated = (await fetch(`${mirror.url}/v2/`)).headers.get('x-request-id')!;
    expect(generated).toMatch(/^[0-9a-f-]{36}$/);
    expect(generated).not.toBe(made);
    await new Promise((r) => setTimeout(r, 50));
    const requestLines = lines.filter((l) => l.msg === 'request');
    for (const id of ['trace-42.a:b', made, generated])
      expect(requestLines.find((l) => l.requestId === id)).toMatchObject({ path: '/v2/', status: 200 });
  });

  it('counts evictions when the cache is over its size limit', async () => {
    const small = await startMirrorServer({
      store: await FsStore.open(join(work, 'small-store')),
      ...hubUpstream(upstream.url),
      maxBytes: LAYER / 2,
      evictIntervalMs: 50,
    });
    try {
      await pull(small.url);
      const until = Date.now() + 5000;
      let m = await scrape(small.url);
      while (sum(m, 'strata_mirror_evictions_total') === 0 && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 50));
        m = await scrape(small.url);
      }
      expect(sum(m, 'strata_mirror_evictions_total')).toBeGreaterThan(0);
      expect(sum(m, 'strata_mirror_evicted_bytes_total')).toBeGreaterThanOrEqual(LAYER);
      // Each mirror has its own registry: the first one saw no eviction.
      expect(sum(await scrape(), 'strata_mirror_evictions_total')).toBe(0);
    } finally {
      await small.close();
    }
  });

  it('counts a stale serve when the upstream is gone, and stays ready', async () => {
    await upstream.stop();
    clock += 120_000; // past the tag TTL: the tag is revalidated, and the upstream is unreachable
    const before = await scrape();
    const res = await fetch(`${mirror.url}/v2/library/app/manifests/v1`, {
      headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('warning')).toMatch(/Response is Stale/);
    await res.arrayBuffer();
    const after = await scrape();
    expect(
      sum(after, 'strata_mirror_stale_serves_total') - sum(before, 'strata_mirror_stale_serves_total'),
    ).toBe(1);
    // Failed upstream exchanges are counted with status 0.
    expect(
      sum(after, 'strata_mirror_upstream_requests_total', { status: '0' }) -
        sum(before, 'strata_mirror_upstream_requests_total', { status: '0' }),
    ).toBeGreaterThan(0);
    expect((await fetch(`${mirror.url}/readyz`)).status).toBe(200);
  }, 30_000);
});

describe('MirrorMetrics', () => {
  it('reports evictions, store size and fill results from events, without process metrics when asked', async () => {
    const metrics = new MirrorMetrics({
      store,
      storeSampleMs: 0,
      processMetrics: false,
      fillsInFlight: () => 3,
    });
    metrics.mirrorEvent({ type: 'evict', digests: [image.layer.digest, image.manifest.digest], bytes: 1000 });
    metrics.mirrorEvent({ type: 'fill', digest: image.layer.digest, ok: false, existed: false });
    metrics.request({ route: 'blob', method: 'BREW', status: 200, bytes: 10, durationMs: 1 });
    const m = parseMetrics((await metrics.render()).body);
    expect(sum(m, 'strata_mirror_evictions_total')).toBe(2);
    expect(sum(m, 'strata_mirror_evicted_bytes_total')).toBe(1000);
    expect(sum(m, 'strata_mirror_fills_total', { result: 'failed' })).toBe(1);
    expect(sum(m, 'strata_mirror_fills_in_flight')).toBe(3);
    expect(sum(m, 'strata_mirror_requests_total', { method: 'OTHER' })).toBe(1); // no invented label values
    let blobs = 0;
    for await (const b of store.listBlobs()) blobs += b.size;
    expect(blobs).toBeGreaterThan(LAYER);
    expect(sum(m, 'strata_mirror_store_bytes')).toBe(blobs);
    expect([...m.keys()].some((k) => k.startsWith('strata_mirror_process_'))).toBe(false);
  });
});
