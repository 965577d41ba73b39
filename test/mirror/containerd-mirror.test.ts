/**
 * §6 end to end: a real containerd pulls `docker.io/…` images through the hosts.toml that `strata mirror config`
 * rendered, pointing at a `strata mirror serve` process whose docker.io upstream is a local docker-registry standing
 * in for Docker Hub (with a recording proxy in front, to count what reaches the "hub"). Cold pull, warm pull from a
 * new containerd root (no blob reaches the hub), and a pull with the hub gone (the cached tag is served stale).
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { startCliServer } from '../support/cli.js';
import { startDockerRegistry, type DockerRegistry } from '../support/docker-registry.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { makeLayer, makeLayeredImage, tempDir } from '../support/images.js';
import { unmountAllUnder } from '../support/root.js';
import { configureMirror, startContainerd, type Containerd } from './containerd-support.js';
import { skopeo } from './mirror-support.js';

const IMAGE = 'docker.io/library/app:v1';

let work: string;
let hub: DockerRegistry;
let hubProxy: FaultProxy;
let mirror: { child: ChildProcess; url: string } | undefined;
let certs: string;
let digest: string;
let blobs: string[];
const containerds: Containerd[] = [];

/** Starts `strata mirror serve ARGS` and resolves with the URL it prints on stdout. */
function serveMirror(args: string[]): Promise<{ child: ChildProcess; url: string }> {
  return startCliServer(['mirror', 'serve', ...args]);
}

/** A fresh containerd (new root: nothing cached) pulls IMAGE through the rendered hosts.toml; returns its view. */
async function pullWithNewContainerd(name: string): Promise<{ target: string; content: string[] }> {
  const ctd = await startContainerd(join(work, name));
  containerds.push(ctd);
  try {
    await ctd.ctr(['images', 'pull', '--hosts-dir', certs, '--platform', 'linux/amd64', IMAGE], 60_000);
    // `ctr images ls` columns: REF TYPE DIGEST SIZE PLATFORMS LABELS.
    const row = (await ctd.ctr(['images', 'ls'])).split('\n').find((l) => l.startsWith(`${IMAGE} `));
    const target = row?.split(/\s+/)[2] ?? '';
    const content = (await ctd.ctr(['content', 'ls', '-q'])).split('\n').filter(Boolean);
    return { target, content };
  } finally {
    await ctd.stop();
  }
}

const hubBlobGets = (): string[] =>
  hubProxy.requests.filter((r) => r.method === 'GET' && /\/blobs\/sha256:/.test(r.path)).map((r) => r.path);

beforeAll(async () => {
  work = await tempDir('strata-mirror-ctd-');
  hub = await startDockerRegistry();
  hubProxy = await startFaultProxy(hub.url);
  // A real two-layer image (tar layers containerd can unpack), pushed by skopeo to the "hub" as library/app:v1.
  const src = await FsStore.open(join(work, 'src'));
  const base = await makeLayer(src, async (root) => {
    await mkdir(join(root, 'etc'));
    await writeFile(join(root, 'etc', 'hello'), 'hello from the mirror\n');
  });
  const data = await makeLayer(src, async (root) => {
    await mkdir(join(root, 'data'));
    await writeFile(join(root, 'data', 'blob.bin'), randomBytes(2 * 1024 * 1024));
  });
  const manifest = await makeLayeredImage(src, 'app:v1', [base, data]);
  digest = manifest.digest;
  blobs = [base.descriptor.digest, data.descriptor.digest];
  await skopeo([
    'copy',
    '--dest-tls-verify=false',
    `oci:${src.root}:app:v1`,
    `docker://${hub.host}/library/app:v1`,
  ]);

  // The hub serves the manifest byte for byte: its digest is the one every pull below must end with.
  const head = await fetch(`${hub.url}/v2/library/app/manifests/v1`, {
    method: 'HEAD',
    headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
  });
  expect(head.headers.get('docker-content-digest')).toBe(digest);

  // 1 s tag TTL: the warm pull revalidates the tag upstream, the offline pull must fall back to the stale one.
  mirror = await serveMirror([
    '--listen',
    '127.0.0.1:0',
    '--store',
    join(work, 'mirror-store'),
    '--upstream',
    `docker.io=${hubProxy.url}`,
    '--default-upstream',
    'docker.io',
    '--tag-ttl',
    '1s',
  ]);
  certs = join(work, 'certs.d');
  await configureMirror(certs, mirror.url);
}, 60_000);

afterAll(async () => {
  for (const c of containerds) await c.stop();
  const child = mirror?.child;
  if (child && child.exitCode === null) {
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  }
  await hubProxy?.stop();
  await hub?.stop();
  if (work) {
    unmountAllUnder(work);
    await rm(work, { recursive: true, force: true });
  }
}, 30_000);

describe('containerd pulls docker.io images through strata mirror serve', () => {
  it('cold: the pull succeeds with the hub digest, every blob fetched from the hub once', async () => {
    hubProxy.reset();
    const cold = await pullWithNewContainerd('ctd-cold');
    expect(cold.target).toBe(digest);
    for (const b of [digest, ...blobs]) expect(cold.content).toContain(b);
    // The mirror filled from the hub: each layer crossed it exactly once.
    for (const b of blobs) expect(hubBlobGets().filter((p) => p.includes(b))).toHaveLength(1);
  }, 60_000);

  it('warm: a new containerd root is served from the mirror cache, no blob GET reaches the hub', async () => {
    await new Promise((r) => setTimeout(r, 1100)); // past the tag TTL: the tag is revalidated, blobs are not
    hubProxy.reset();
    const warm = await pullWithNewContainerd('ctd-warm');
    expect(warm.target).toBe(digest);
    for (const b of [digest, ...blobs]) expect(warm.content).toContain(b);
    expect(hubBlobGets()).toEqual([]);
    expect(hubProxy.requests.some((r) => r.path.includes('/manifests/v1'))).toBe(true);
  }, 60_000);

  it('offline: with the hub stopped, the cached tag still pulls (stale) with the same digest', async () => {
    await new Promise((r) => setTimeout(r, 1100)); // the tag is stale: the mirror must try the hub and fall back
    await hubProxy.stop();
    await hub.stop();
    const offline = await pullWithNewContainerd('ctd-offline');
    expect(offline.target).toBe(digest);
    for (const b of [digest, ...blobs]) expect(offline.content).toContain(b);
  }, 60_000);
});
