/**
 * The registry build cache end to end, against a real CNCF distribution registry: a build in store A exports its
 * cache (`cacheTo`), builds in empty stores import it (`cacheFrom`) — RUN steps through runc, so a hit really
 * skips the step. Checks hits, digests, which blobs travel, and that missing or broken caches only warn.
 */
import { writeFile, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { RegistryClient } from '../../src/engine/registry/client.js';
import { createObserver, type EngineEvent } from '../../src/engine/observe.js';
import { parseReference } from '../../src/engine/oci/reference.js';
import { MediaType } from '../../src/engine/oci/media-types.js';
import type { ImageIndex } from '../../src/engine/oci/types.js';
import { CACHE_KEY_ANNOTATION } from '../../src/engine/build/executor/registry-cache-format.js';
import { tempDir } from '../support/images.js';
import { runCli, type CliRun } from '../support/cli.js';
import { startDockerRegistry, type DockerRegistry } from '../support/docker-registry.js';
import { unmountAllUnder } from '../support/root.js';
import { makeBusyboxRoot, requireRunc } from './run-support.js';

interface Recorded {
  readonly events: EngineEvent[];
  readonly warnings: Array<{ obj: Record<string, unknown>; msg: string | undefined }>;
}

let work: string;
let reg: DockerRegistry;
let base: string;
let stores = 0;

const noop = (): void => undefined;

/** An engine over a fresh empty store, recording its events and warnings. */
async function freshEngine(): Promise<{ engine: Engine } & Recorded> {
  const events: EngineEvent[] = [];
  const warnings: Recorded['warnings'] = [];
  // One observer for engine, store and client, so the client's HTTP exchanges are recorded too.
  const observer = createObserver({
    logger: { debug: noop, info: noop, error: noop, warn: (obj, msg) => warnings.push({ obj, msg }) },
    listeners: [(e) => events.push(e)],
  });
  const engine = new Engine({
    store: await FsStore.open(join(work, `store-${++stores}`), { observer }),
    registry: new RegistryClient({ observer }),
    observer,
  });
  return { engine, events, warnings };
}

async function context(files: Record<string, string>): Promise<string> {
  const dir = await tempDir('strata-regcache-ctx-');
  for (const [name, content] of Object.entries(files)) {
    await mkdir(join(dir, name, '..'), { recursive: true });
    await writeFile(join(dir, name), content);
  }
  return dir;
}

const dockerfile = (): string =>
  [
    `FROM ${base}`,
    'COPY a.txt /a.txt',
    'RUN cat /a.txt /a.txt > /b.txt',
    'ENV GREETING=hello',
    'COPY c.txt /c.txt',
    'RUN cat /c.txt >> /b.txt',
    'CMD ["cat", "/b.txt"]',
    '',
  ].join('\n');

/** Non-FROM steps of {@link dockerfile}: all cacheable. */
const STEPS = 6;

/** Blob digests fetched with GET from `repo` on the test registry. */
function blobGets(events: readonly EngineEvent[], repo: string): string[] {
  const prefix = `/v2/${repo}/blobs/`;
  return events
    .filter((e) => e.type === 'http-request' && e.method === 'GET' && e.path.startsWith(prefix))
    .map((e) => (e as { path: string }).path.slice(prefix.length));
}

/** Every blob (configs and layers) of the step images a cache index names. */
async function indexBlobs(ref: string): Promise<{ keys: string[]; blobs: Set<string> }> {
  const client = new RegistryClient();
  const doc = await client.getManifest(parseReference(ref));
  if (doc.kind !== 'index') throw new Error(`${ref} is not an index`);
  const blobs = new Set<string>();
  const r = parseReference(ref);
  for (const d of doc.index.manifests) {
    const m = await client.getManifest({ registry: r.registry, repository: r.repository, digest: d.digest });
    if (m.kind !== 'manifest') throw new Error('step is not a manifest');
    blobs.add(m.manifest.config.digest);
    for (const l of m.manifest.layers) blobs.add(l.digest);
  }
  return { keys: doc.index.manifests.map((d) => d.annotations![CACHE_KEY_ANNOTATION]!), blobs };
}

let exported: { digest: string; ctx: string };

beforeAll(async () => {
  requireRunc();
  work = await tempDir('strata-regcache-');
  reg = await startDockerRegistry();
  base = `${reg.host}/base:1`;
  const { engine } = await freshEngine();
  const root = await makeBusyboxRoot(join(work, 'busybox-root'));
  await engine.importDirectory(root, base);
  await engine.push(base);
  // Store A: build and export (mode=min: one stage, so every step).
  const ctx = await context({ 'a.txt': 'aaa\n', 'c.txt': 'ccc\n' });
  const a = await freshEngine();
  const result = await a.engine.build({
    contextDir: ctx,
    dockerfile: dockerfile(),
    cacheTo: [`${reg.host}/cache`],
  });
  expect(result.cacheHits).toBe(0);
  expect(result.cacheExports).toEqual([
    expect.objectContaining({ reference: `${reg.host}/cache:buildcache`, entries: STEPS, pushed: STEPS }),
  ]);
  exported = { digest: result.digest, ctx };
}, 60_000);

afterAll(async () => {
  await reg?.stop();
  if (work) {
    unmountAllUnder(work);
    await rm(work, { recursive: true, force: true });
  }
});

describe('registry build cache', () => {
  it('an empty store importing the cache hits every step, gives the same digest and fetches only the step blobs', async () => {
    const b = await freshEngine();
    const result = await b.engine.build({
      contextDir: exported.ctx,
      dockerfile: dockerfile(),
      cacheFrom: [`${reg.host}/cache`],
    });
    expect(result.cacheHits).toBe(STEPS);
    expect(result.cacheImported).toBe(STEPS);
    expect(result.digest).toBe(exported.digest);
    expect(b.warnings).toEqual([]);
    // No step ran: every one but FROM reported 'cached'.
    const steps = b.events.filter((e) => e.type === 'build-step' && !e.instruction.startsWith('FROM'));
    expect(steps.filter((e) => e.type === 'build-step' && e.status === 'cached')).toHaveLength(STEPS);
    expect(steps.filter((e) => e.type === 'build-step' && e.status === 'done')).toHaveLength(0);
    // Only the step images' own blobs came from the cache repository, each once; the base layer came with FROM.
    const { keys, blobs } = await indexBlobs(`${reg.host}/cache:buildcache`);
    expect(keys).toHaveLength(STEPS);
    const baseGets = blobGets(b.events, 'base');
    const expected = [...blobs].filter((d) => !baseGets.includes(d)).sort();
    const cacheGets = blobGets(b.events, 'cache');
    expect(expected).toHaveLength(blobs.size - 1); // all but the base layer
    expect([...cacheGets].sort()).toEqual(expected);
    expect(new Set(cacheGets).size).toBe(cacheGets.length);
    // The imported entries are now local: a second build needs no registry cache and makes no request.
    const before = b.events.length;
    const again = await b.engine.build({ contextDir: exported.ctx, dockerfile: dockerfile() });
    expect(again.cacheHits).toBe(STEPS);
    expect(again.digest).toBe(exported.digest);
    expect(b.events.slice(before).some((e) => e.type === 'http-request')).toBe(false);
    // Re-exporting an unchanged cache pushes no step image again and gives the same index.
    const re = await b.engine.build({
      contextDir: exported.ctx,
      dockerfile: dockerfile(),
      cacheTo: [`type=registry,ref=${reg.host}/cache:buildcache,mode=max`],
    });
    expect(re.cacheExports[0]).toMatchObject({ entries: STEPS, pushed: 0 });
  }, 60_000);

  it('a changed source misses from its COPY on, after hits up to there', async () => {
    const ctx = await context({ 'a.txt': 'aaa\n', 'c.txt': 'changed\n' });
    const c = await freshEngine();
    const result = await c.engine.build({
      contextDir: ctx,
      dockerfile: dockerfile(),
      cacheFrom: [`${reg.host}/cache`],
    });
    expect(result.cacheHits).toBe(3); // COPY a.txt, RUN, ENV
    expect(result.cacheImported).toBe(3);
    expect(result.digest).not.toBe(exported.digest);
    // Only the second RUN ran.
    const runs = c.events.filter(
      (e) => e.type === 'build-step' && e.status === 'done' && e.instruction.startsWith('RUN'),
    );
    expect(runs).toHaveLength(1);
  }, 60_000);

  it('a missing cache reference warns and builds every step', async () => {
    const d = await freshEngine();
    const result = await d.engine.build({
      contextDir: exported.ctx,
      dockerfile: dockerfile(),
      cacheFrom: [`${reg.host}/nothing-here`, `${reg.host}/cache:no-such-tag`],
    });
    expect(result.cacheHits).toBe(0);
    expect(d.warnings.map((w) => w.obj.cache)).toEqual([
      `${reg.host}/nothing-here:buildcache`,
      `${reg.host}/cache:no-such-tag`,
    ]);
  }, 60_000);

  it('mode=min exports the target stage only, mode=max every stage; an import hits what was exported', async () => {
    const df = [
      `FROM ${base} AS builder`,
      'COPY a.txt /x',
      'ENV UNUSED=1',
      `FROM ${base}`,
      'COPY --from=builder /x /y',
      'CMD ["cat", "/y"]',
      '',
    ].join('\n');
    const a = await freshEngine();
    const made = await a.engine.build({
      contextDir: exported.ctx,
      dockerfile: df,
      cacheTo: [`${reg.host}/modes:min`, `${reg.host}/modes:max,mode=max`],
    });
    expect(made.cacheExports.map((e) => [e.reference, e.entries])).toEqual([
      [`${reg.host}/modes:min`, 2],
      [`${reg.host}/modes:max`, 4],
    ]);
    const fromMin = await freshEngine();
    const min = await fromMin.engine.build({
      contextDir: exported.ctx,
      dockerfile: df,
      cacheFrom: [`${reg.host}/modes:min`],
    });
    // The builder stage ran (and gave the same /x), so the final stage's keys matched.
    expect(min.cacheHits).toBe(2);
    expect(min.digest).toBe(made.digest);
    const fromMax = await freshEngine();
    const max = await fromMax.engine.build({
      contextDir: exported.ctx,
      dockerfile: df,
      cacheFrom: [`${reg.host}/modes:max`],
    });
    expect(max.cacheHits).toBe(4);
    expect(max.digest).toBe(made.digest);
  }, 60_000);

  it('strata build --spec reads and writes spec.cache.repository', async () => {
    const spec = (store: string): Promise<CliRun> =>
      runCli(['--json', 'build', '--spec', join(exported.ctx, '..', 'spec.yaml')], {
        STRATA_STORE: join(work, store),
        STRATA_LOG_LEVEL: 'error',
      });
    await writeFile(
      join(exported.ctx, '..', 'spec.yaml'),
      [
        'apiVersion: strata.dev/v1alpha1',
        'kind: ImageBuild',
        'metadata:',
        '  name: cached',
        'spec:',
        '  context:',
        `    dir: ${exported.ctx}`,
        '  dockerfile:',
        '    inline: |',
        ...dockerfile()
          .trimEnd()
          .split('\n')
          .map((l) => `      ${l}`),
        '  output:',
        '    images: [spec/cached:1]',
        '  cache:',
        `    repository: ${reg.host}/spec-cache`,
        '',
      ].join('\n'),
    );
    const first = await spec('cli-a');
    expect(first.code).toBe(0);
    // The first run finds no cache yet: a warning (pino JSON on stderr) naming it, not a failure.
    const logged = first.stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { level: number; cache?: string });
    expect(logged).toEqual([
      expect.objectContaining({ level: 40, cache: `${reg.host}/spec-cache:buildcache` }),
    ]);
    const second = await spec('cli-b');
    expect(second.code).toBe(0);
    const result = (out: string): string => out.trimEnd().split('\n').at(-1)!;
    const status = (JSON.parse(result(second.stdout)) as { status: { cacheHits: number; digest: string } })
      .status;
    expect(status.cacheHits).toBe(STEPS);
    expect(status.digest).toBe(
      (JSON.parse(result(first.stdout)) as { status: { digest: string } }).status.digest,
    );
  }, 60_000);

  it('a corrupt cache (an image, not an index; an entry that is no step of its parent) warns and builds', async () => {
    const client = new RegistryClient();
    const cache = parseReference(`${reg.host}/cache:buildcache`);
    const good = await client.getManifest(cache);
    if (good.kind !== 'index') throw new Error('no index');
    // The first step's key now names the second step's image: two layers over the base, so no step of it.
    const index = JSON.parse(good.bytes.toString('utf8')) as ImageIndex;
    const second = index.manifests[1]!;
    const forged: ImageIndex = {
      ...index,
      manifests: [{ ...index.manifests[0]!, digest: second.digest, size: second.size }],
    };
    await client.putManifest(
      parseReference(`${reg.host}/cache:forged`),
      Buffer.from(JSON.stringify(forged)),
      MediaType.OciIndex,
    );
    const e = await freshEngine();
    const result = await e.engine.build({
      contextDir: exported.ctx,
      dockerfile: dockerfile(),
      cacheFrom: [base, `${reg.host}/cache:forged`],
    });
    expect(result.cacheHits).toBe(0);
    expect(e.warnings.map((w) => w.obj.cache)).toEqual([base, `${reg.host}/cache:forged`]);
    // The image named as a cache was refused for what it is, with the reason in the error's code.
    expect(e.warnings[0]!.obj.err).toMatchObject({ code: 'MANIFEST_INVALID' });
    expect(e.warnings[1]!.obj.key).toBe(index.manifests[0]!.annotations![CACHE_KEY_ANNOTATION]);
  }, 60_000);
});
