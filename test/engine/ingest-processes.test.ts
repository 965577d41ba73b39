/**
 * Ingests and leases across separate `strata` processes sharing one store: one fetch per blob however many pulls
 * run at once, a pull killed halfway resumes with `Range`, `rmi` racing a pull never breaks it, and a crashed
 * holder's lease and partial ingest are collected. Counts are taken at a proxy in front of a real registry.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import type { EngineEvent } from '../../src/engine/observe.js';
import { createObserver } from '../../src/engine/observe.js';
import type { Digest } from '../../src/engine/oci/digest.js';
import type { Descriptor } from '../../src/engine/oci/types.js';
import { RegistryClient } from '../../src/engine/registry/client.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { startBlobProxy, type BlobProxy } from '../support/blob-proxy.js';
import { runCli } from '../support/cli.js';
import { startDockerRegistry, type DockerRegistry } from '../support/docker-registry.js';
import { makeLayer, makeLayeredImage, tempDir, type TestLayer } from '../support/images.js';

const MiB = 1024 * 1024;
const CLI = fileURLToPath(new URL('../../bin/strata.js', import.meta.url));
const BUILT = fileURLToPath(new URL('../../dist/bundle/strata.js', import.meta.url));

let registry: DockerRegistry;
let proxy: BlobProxy;
let client: RegistryClient;
const dirs: string[] = [];
let base: TestLayer;
let top: TestLayer;
let appDigest: Digest;
let appConfig: Digest;
/** Proxy GET counts after the previous round of concurrent pulls. */
const countsBefore = new Map<string, number>();

async function fresh(prefix = 'strata-ingest-'): Promise<string> {
  const dir = await tempDir(prefix);
  dirs.push(dir);
  return dir;
}

/** Starts `strata ARGS` against `store`; resolves with its exit code (signals count as failures). */
function start(store: string, args: readonly string[]): { child: ChildProcess; done: Promise<number> } {
  const child = spawn(process.execPath, [CLI, '--store', store, ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<number>((resolve) =>
    child.on('close', (code, signal) => {
      if (code !== 0 && signal === null) process.stderr.write(`strata ${args.join(' ')}: ${stderr}\n`);
      resolve(code ?? 128);
    }),
  );
  return { child, done };
}

async function waitFor(check: () => boolean | Promise<boolean>, what: string, ms = 60_000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(path), h);
  return `sha256:${h.digest('hex')}`;
}

/** The image's manifest, config and layers are all in the store and verify. */
async function assertComplete(
  storeDir: string,
  name: string,
  manifest: Digest,
  layers: readonly TestLayer[],
) {
  const store = await FsStore.open(storeDir);
  expect((await store.getRef(name))?.digest).toBe(manifest);
  const doc = JSON.parse((await store.readBlob(manifest)).toString()) as { config: Descriptor };
  for (const d of [manifest, doc.config.digest, ...layers.map((l) => l.descriptor.digest)])
    expect(await sha256File(store.blobPath(d)), `${d} of ${name}`).toBe(d);
}

beforeAll(async () => {
  if (!existsSync(BUILT)) throw new Error(`${BUILT} is missing: run \`npm run build\` first`);
  registry = await startDockerRegistry();
  proxy = await startBlobProxy(registry.url);
  client = new RegistryClient({});
  const src = new Engine({ store: await FsStore.open(await fresh()), registry: client });
  base = await makeLayer(src.store, (root) => writeFile(join(root, 'base.bin'), randomBytes(4 * MiB)));
  top = await makeLayer(src.store, (root) => writeFile(join(root, 'app.bin'), randomBytes(2 * MiB)));
  await makeLayeredImage(src.store, 'example.com/base:1', [base]);
  appDigest = (await makeLayeredImage(src.store, 'example.com/app:1', [base, top])).digest;
  appConfig = (JSON.parse((await src.store.readBlob(appDigest)).toString()) as { config: Descriptor }).config
    .digest;
  await src.push('example.com/base:1', `${registry.host}/proc/base:1`);
  await src.push('example.com/app:1', `${registry.host}/proc/app:1`);
}, 120_000);

afterAll(async () => {
  proxy?.throttle(undefined);
  await client?.close();
  await proxy?.stop();
  await registry?.stop();
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe('ingests across processes', () => {
  it.each([2, 8])(
    '%i concurrent pulls of one image into one store download each blob exactly once',
    async (n) => {
      const store = await fresh();
      const name = `${proxy.host}/proc/app:1`;
      proxy.throttle(3 * MiB); // ~2 s per pull, so they overlap
      try {
        const runs = Array.from({ length: n }, () => start(store, ['pull', name]));
        expect(await Promise.all(runs.map((r) => r.done))).toEqual(Array(n).fill(0));
      } finally {
        proxy.throttle(undefined);
      }
      const doc = JSON.parse((await (await FsStore.open(store)).readBlob(appDigest)).toString()) as {
        config: Descriptor;
      };
      for (const d of [doc.config.digest, base.descriptor.digest, top.descriptor.digest])
        expect(proxy.gets(d) - (countsBefore.get(d) ?? 0), `GETs of ${d}`).toBe(1);
      await assertComplete(store, name, appDigest, [base, top]);
      for (const d of [doc.config.digest, base.descriptor.digest, top.descriptor.digest])
        countsBefore.set(d, proxy.gets(d));
      expect(await readdir(join(store, 'ingest'))).toEqual([]);
    },
    120_000,
  );

  it('rmi racing a pull that shares its layers, in separate processes, never breaks the pull (10 rounds)', async () => {
    proxy.throttle(8 * MiB);
    try {
      for (let i = 0; i < 10; i++) {
        const store = await fresh();
        expect(await start(store, ['pull', `${proxy.host}/proc/base:1`]).done).toBe(0);
        const pull = start(store, ['pull', `${proxy.host}/proc/app:1`]);
        await new Promise((r) => setTimeout(r, 200 + Math.random() * 400));
        const rmi = await runCli(['--store', store, 'rmi', `${proxy.host}/proc/base:1`]);
        expect(rmi.code, rmi.stderr).toBe(0);
        expect(await pull.done).toBe(0);
        await assertComplete(store, `${proxy.host}/proc/app:1`, appDigest, [base, top]);
        await rm(store, { recursive: true, force: true });
      }
    } finally {
      proxy.throttle(undefined);
    }
  }, 180_000);

  it("a SIGKILLed pull's lease expires and its content is then collected; its partial ingests go at once", async () => {
    const store = await fresh();
    const before = proxy.bytes(top.descriptor.digest);
    proxy.throttle(MiB);
    const pull = start(store, ['pull', `${proxy.host}/proc/app:1`]);
    try {
      await waitFor(() => proxy.bytes(top.descriptor.digest) - before > MiB / 2, 'half the top layer');
      await waitFor(async () => (await FsStore.open(store)).has(appConfig), 'the config');
      pull.child.kill('SIGKILL');
      await pull.done;
    } finally {
      proxy.throttle(undefined);
    }
    expect((await readdir(join(store, 'ingest'))).length).toBeGreaterThan(0);
    let offset = 0;
    const events: EngineEvent[] = [];
    // No grace period: only the dead pull's lease protects the base layer it stored.
    const s = await FsStore.open(store, {
      tempGraceMs: 0,
      now: () => Date.now() + offset,
      observer: createObserver({ listeners: [(e) => events.push(e)] }),
    });
    const first = await s.gc();
    expect(first.removed).toEqual([]);
    expect(await s.has(appConfig)).toBe(true);
    expect(await readdir(join(store, 'ingest'))).toEqual([]); // the dead writer's partial and lock
    offset = 20 * 60 * 1000; // past the CLI's 10-minute lease
    const second = await s.gc();
    expect(second.removed).toEqual([appConfig]);
    expect(events.some((e) => e.type === 'lease' && e.action === 'expire')).toBe(true);
  }, 120_000);
});

describe('a pull killed halfway resumes', () => {
  it('kill -9 at ~50% of a 256 MiB layer: the rerun fetches < 60% of it with Range, and the result verifies', async () => {
    const src = new Engine({ store: await FsStore.open(await fresh()), registry: client });
    const big = await makeLayer(
      src.store,
      async (root) => {
        // Written in pieces: the test never holds the whole layer's content twice.
        for (let i = 0; i < 16; i++) await writeFile(join(root, `part${i}`), randomBytes(16 * MiB));
      },
      'none',
    );
    const manifest = await makeLayeredImage(src.store, 'example.com/big:1', [big]);
    await src.push('example.com/big:1', `${registry.host}/proc/big:1`);
    const size = big.descriptor.size;
    const digest = big.descriptor.digest;
    const store = await fresh();
    const name = `${proxy.host}/proc/big:1`;
    proxy.throttle(48 * MiB);
    try {
      const pull = start(store, ['pull', name]);
      await waitFor(() => proxy.bytes(digest) >= size / 2, 'half the layer', 120_000);
      pull.child.kill('SIGKILL');
      await pull.done;
    } finally {
      proxy.throttle(undefined);
    }
    const sentBefore = proxy.bytes(digest);
    expect(sentBefore).toBeLessThan(0.7 * size);
    const rerun = await runCli(['--store', store, 'pull', name]);
    expect(rerun.code, rerun.stderr).toBe(0);
    const fetched = proxy.bytes(digest) - sentBefore;
    expect(fetched).toBeLessThan(0.6 * size);
    expect(proxy.requests.filter((r) => r.path.includes(digest) && r.range).length).toBeGreaterThan(0);
    await assertComplete(store, name, manifest.digest, [big]);
  }, 300_000);
});
