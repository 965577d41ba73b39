/** LayerCache status aggregation from StrataNodes, tag resolution plans, pull-secret credentials. */
import { describe, expect, it } from 'vitest';
import type { StrataNode } from '../../../src/api/v1alpha1/stratanode.js';
import { resolutionPlan } from '../../../src/controllers/layercache/controller.js';
import {
  credentialsFromDockerConfigs,
  resolveFailureReason,
} from '../../../src/controllers/layercache/resolve.js';
import { cacheStatus, MAX_FAILURES, type Resolution } from '../../../src/controllers/layercache/status.js';
import { cacheImageSources } from '../../../src/controllers/layercache/workloads.js';
import { TerminalError } from '../../../src/engine/errors.js';
import { cache, DIGEST_A, DIGEST_B, node, strataNode, workload } from '../stratanode/fixtures.js';

type State = 'Pending' | 'Pulling' | 'Ready' | 'Failed';

function report(
  name: string,
  images: Array<[string, string, State, string?]>,
  platform = 'linux/amd64',
): StrataNode {
  return strataNode(name, {
    platform,
    caches: [
      {
        name: 'apps/warm',
        generation: 3,
        images: images.map(([image, digest, state, reason]) => ({
          image,
          digest,
          platforms: [
            { platform, state, bytes: 1000, ...(reason ? { reason, message: `${reason} on ${name}` } : {}) },
          ],
        })),
      },
    ],
  });
}

const cond = (s: ReturnType<typeof cacheStatus>, t: string) => s.conditions!.find((c) => c.type === t);

describe('cacheStatus', () => {
  const lc = cache('warm', { images: ['nginx:1'] });
  const resolutions = new Map<string, Resolution>([
    ['nginx:1', { digest: DIGEST_A, resolvedAt: '2026-12-02T10:00:00Z' }],
  ]);
  const sources = cacheImageSources(lc, []);

  it('per platform ready/total and bytes; a report on another digest does not count', () => {
    const sns: Record<string, StrataNode> = {
      a: report('a', [['nginx:1', DIGEST_A, 'Ready']]),
      b: report('b', [['nginx:1', DIGEST_B, 'Ready']]), // the previous digest: stale
      c: report('c', [['nginx:1', DIGEST_A, 'Pulling']]),
    };
    const s = cacheStatus(lc, {
      sources,
      resolutions,
      nodes: [node('a'), node('b'), node('c')],
      strataNode: (n) => sns[n],
      nowMs: 0,
    });
    expect(s.images).toEqual([
      {
        image: 'nginx:1',
        digest: DIGEST_A,
        resolvedAt: '2026-12-02T10:00:00Z',
        platforms: [{ platform: 'linux/amd64', nodesReady: 1, nodesTotal: 3, bytes: 1000 }],
      },
    ]);
    expect([s.nodesReady, s.nodesTotal]).toEqual([1, 3]);
    expect(cond(s, 'Progressing')).toMatchObject({
      status: 'True',
      reason: 'Warming',
      message: '1/3 nodes warmed',
    });
  });

  it('Ready when every selected node holds every image; a node gone drops out of the counts', () => {
    const sns: Record<string, StrataNode> = {
      a: report('a', [['nginx:1', DIGEST_A, 'Ready']]),
      b: report('b', [['nginx:1', DIGEST_A, 'Pending']]),
    };
    let s = cacheStatus(lc, {
      sources,
      resolutions,
      nodes: [node('a'), node('b')],
      strataNode: (n) => sns[n],
      nowMs: 0,
    });
    expect([s.nodesReady, s.nodesTotal]).toEqual([1, 2]);
    s = cacheStatus(lc, { sources, resolutions, nodes: [node('a')], strataNode: (n) => sns[n], nowMs: 0 });
    expect([s.nodesReady, s.nodesTotal]).toEqual([1, 1]);
    expect(cond(s, 'Ready')).toMatchObject({ status: 'True', reason: 'Warmed' });
  });

  it('1,000 nodes: the first 10 failures by node name, failedNodes counts all, fast', () => {
    const nodes = Array.from({ length: 1000 }, (_, i) => node(`n${String(i).padStart(4, '0')}`));
    const sns = new Map(
      nodes.map((n, i) => [
        n.metadata.name,
        i % 4 === 0
          ? report(n.metadata.name, [['nginx:1', DIGEST_A, 'Failed', 'BudgetExceeded']])
          : report(n.metadata.name, [['nginx:1', DIGEST_A, 'Ready']]),
      ]),
    );
    const t0 = performance.now();
    const s = cacheStatus(lc, { sources, resolutions, nodes, strataNode: (n) => sns.get(n), nowMs: 0 });
    expect(performance.now() - t0).toBeLessThan(500);
    const img = s.images![0]!;
    expect(img.failedNodes).toBe(250);
    expect(img.failures).toHaveLength(MAX_FAILURES);
    expect(img.failures![0]).toEqual({
      node: 'n0000',
      platform: 'linux/amd64',
      reason: 'BudgetExceeded',
      message: 'BudgetExceeded on n0000',
    });
    expect(img.failures![9]!.node).toBe('n0036');
    expect(img.platforms).toEqual([
      { platform: 'linux/amd64', nodesReady: 750, nodesTotal: 1000, bytes: 1000 },
    ]);
    expect([s.nodesReady, s.nodesTotal]).toEqual([750, 1000]);
    expect(cond(s, 'Failed')).toMatchObject({ status: 'True', reason: 'WarmFailed' });
    expect(JSON.stringify(s).length).toBeLessThan(4000); // bounded: does not grow with nodes
  });

  it('spec.platforms: every node counts for each; an unresolvable image fails the cache with its reason', () => {
    const multi = cache('warm', { images: ['nginx:1', 'gone:1'], platforms: ['linux/amd64', 'linux/arm64'] });
    const r = new Map<string, Resolution>([
      ['nginx:1', { digest: DIGEST_A }],
      ['gone:1', { error: { reason: 'ImageNotFound', message: 'gone:1: no such manifest' } }],
    ]);
    const s = cacheStatus(multi, {
      sources: cacheImageSources(multi, []),
      resolutions: r,
      nodes: [node('a')],
      strataNode: () => undefined,
      nowMs: 0,
    });
    expect(s.images![0]!.platforms!.map((p) => [p.platform, p.nodesReady, p.nodesTotal])).toEqual([
      ['linux/amd64', 0, 1],
      ['linux/arm64', 0, 1],
    ]);
    expect(s.images![1]).toEqual({ image: 'gone:1' });
    expect(cond(s, 'Failed')).toMatchObject({
      reason: 'ImageNotFound',
      message: 'cannot resolve gone:1: gone:1: no such manifest',
    });
  });

  it('workload images count on the nodes their template can run on', () => {
    const wl = cache('warm', { workloads: { selector: {}, kinds: ['Deployment'] } });
    const src = cacheImageSources(wl, [
      workload('Deployment', 'app', {}, { images: ['app:1'], nodeSelector: { zone: 'z1' } }),
    ]);
    const s = cacheStatus(wl, {
      sources: src,
      resolutions: new Map([['app:1', { digest: DIGEST_A }]]),
      nodes: [node('a', { zone: 'z1' }), node('b')],
      strataNode: (n) => (n === 'a' ? report('a', [['app:1', DIGEST_A, 'Ready']]) : report('b', [])),
      nowMs: 0,
    });
    expect(s.images![0]!.platforms).toEqual([
      { platform: 'linux/amd64', nodesReady: 1, nodesTotal: 1, bytes: 1000 },
    ]);
    expect([s.nodesReady, s.nodesTotal]).toEqual([2, 2]);
  });
});

describe('resolutionPlan', () => {
  const now = Date.parse('2026-12-02T10:30:00Z');
  const lc = cache('warm', { images: ['a:1', 'b:1', `c@${DIGEST_B}`], refreshInterval: '1h' }, [
    { image: 'a:1', digest: DIGEST_A, resolvedAt: '2026-12-02T10:00:00Z' },
    { image: 'b:1', digest: DIGEST_A, resolvedAt: '2026-12-02T09:00:00Z' },
  ]);

  it('keeps fresh resolutions, re-resolves those past the interval, passes digests through', () => {
    const plan = resolutionPlan(lc, ['a:1', 'b:1', `c@${DIGEST_B}`, 'new:1'], now);
    expect(plan.due).toEqual(['b:1', 'new:1']);
    expect(plan.keep.get('a:1')).toEqual({ digest: DIGEST_A, resolvedAt: '2026-12-02T10:00:00Z' });
    expect(plan.keep.get(`c@${DIGEST_B}`)).toEqual({ digest: DIGEST_B });
    expect(plan.nextMs).toBe(30 * 60_000);
  });
});

describe('pull secrets and failure reasons', () => {
  it('the first Secret with an entry for the registry wins; malformed Secrets give nothing', async () => {
    const auth = (u: string) => Buffer.from(`${u}:pw`).toString('base64');
    const creds = credentialsFromDockerConfigs([
      'not json',
      JSON.stringify({ auths: { 'https://index.docker.io/v1/': { auth: auth('hub') } } }),
      JSON.stringify({ auths: { 'docker.io': { auth: auth('second') }, 'reg:5000': { auth: auth('reg') } } }),
    ]);
    expect(await creds.get('docker.io')).toEqual({ username: 'hub', password: 'pw' });
    expect(await creds.get('reg:5000')).toEqual({ username: 'reg', password: 'pw' });
    expect(await creds.get('quay.io')).toBeUndefined();
  });

  it.each([
    ['MANIFEST_UNKNOWN', 'ImageNotFound'],
    ['UNAUTHORIZED', 'Unauthorized'],
    ['NETWORK', 'RegistryUnavailable'],
    ['INTERNAL', 'ResolveFailed'],
  ] as const)('%s → %s', (code, reason) => {
    expect(resolveFailureReason(new TerminalError(code, 'x'))).toBe(reason);
  });
});
