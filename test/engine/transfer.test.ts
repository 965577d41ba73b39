import { execFileSync } from 'node:child_process';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import type { ProgressEvent } from '../../src/engine/image/events.js';
import { hostPlatform } from '../../src/engine/oci/platform.js';
import { RegistryClient } from '../../src/engine/registry/client.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { startDockerRegistry, type DockerRegistry } from '../support/docker-registry.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { makeImage, makeMultiPlatformImage, tempDir } from '../support/images.js';
import { requirePeer } from '../support/peers.js';

const HOST = hostPlatform();
const OTHER =
  HOST.architecture === 'arm64'
    ? { os: 'linux', architecture: 'amd64' }
    : { os: 'linux', architecture: 'arm64' };

let regA: DockerRegistry;
let regB: DockerRegistry;
let client: RegistryClient;
const dirs: string[] = [];

async function freshEngine(): Promise<Engine> {
  const dir = await tempDir('strata-store-');
  dirs.push(dir);
  return new Engine({ store: await FsStore.open(dir), registry: client });
}

beforeAll(async () => {
  [regA, regB] = await Promise.all([startDockerRegistry(), startDockerRegistry()]);
  client = new RegistryClient({ chunkSize: 1024 * 1024 });
});

afterAll(async () => {
  await client?.close();
  await Promise.all([regA?.stop(), regB?.stop()]);
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe('push and pull against a real registry', () => {
  it('pushes, skips what exists on re-push, mounts across repositories, and pulls back byte for byte', async () => {
    const src = await freshEngine();
    const local = await makeImage(src.store, 'example.com/app:1', {
      'etc/hello': 'hi',
      'big.bin': 3 * 1024 * 1024,
    });
    const first = await src.push('example.com/app:1', `${regA.host}/team/app:1`);
    expect(first.digest).toBe(local.digest);
    expect(first.blobs.copied).toBe(2);
    expect(first.bytesTransferred).toBeGreaterThan(3 * 1024 * 1024);

    const events: ProgressEvent[] = [];
    const again = await src.push('example.com/app:1', `${regA.host}/team/app:1`, {
      onEvent: (e) => events.push(e),
    });
    expect(again.blobs).toMatchObject({ copied: 0, exists: 2 });
    expect(again.bytesTransferred).toBe(0);
    expect(events.at(-1)).toMatchObject({ type: 'done', digest: local.digest });

    const mounted = await src.push('example.com/app:1', `${regA.host}/other/app:2`);
    expect(mounted.blobs).toMatchObject({ copied: 0, mounted: 2 });

    const dst = await freshEngine();
    const pulled = await dst.pull(`${regA.host}/other/app:2`);
    expect(pulled.digest).toBe(local.digest);
    expect(await dst.store.getRef(`${regA.host}/other/app:2`)).toMatchObject({ digest: local.digest });
    for await (const b of src.store.listBlobs())
      expect(await dst.store.stat(b.digest)).toEqual({ size: b.size });
    const repull = await dst.pull(`${regA.host}/other/app:2`);
    expect(repull.blobs.copied).toBe(0);

    const byDigest = await dst.pull(`${regA.host}/team/app@${local.digest}`);
    expect(byDigest.blobs.copied).toBe(0);
    expect(await dst.store.getRef(`${regA.host}/team/app@${local.digest}`)).toMatchObject({
      digest: local.digest,
    });
  });

  it('handles a two-platform index: host platform by default, one chosen platform, or all; copy preserves digests', async () => {
    const src = await freshEngine();
    const { index, children } = await makeMultiPlatformImage(src.store, 'example.com/multi:1', [HOST, OTHER]);
    const pushed = await src.push('example.com/multi:1', `${regA.host}/multi/app:1`);
    expect(pushed.digest).toBe(index.digest);
    expect(pushed.manifests).toHaveLength(2);

    const host = await freshEngine();
    const r = await host.pull(`${regA.host}/multi/app:1`);
    expect(r.digest).toBe(index.digest); // the ref keeps the index: its digest is the image's identity
    expect(r.manifests.map((m) => m.digest)).toEqual([children[0]!.digest]);
    expect(await host.store.has(children[1]!.digest)).toBe(false);
    const info = await host.inspect(`${regA.host}/multi/app:1`);
    expect(info.Architecture).toBe(HOST.architecture);
    expect(info.RepoDigests).toEqual([`${regA.host}/multi/app@${index.digest}`]);

    const other = await freshEngine();
    await other.pull(`${regA.host}/multi/app:1`, { platforms: [OTHER] });
    expect((await other.inspect(`${regA.host}/multi/app:1`, OTHER)).Architecture).toBe(OTHER.architecture);
    expect(await other.store.has(children[0]!.digest)).toBe(false);

    const all = await freshEngine();
    const allResult = await all.pull(`${regA.host}/multi/app:1`, { platforms: 'all' });
    expect(allResult.manifests).toHaveLength(2);

    await expect(
      host.pull(`${regA.host}/multi/app:1`, { platforms: [{ os: 'linux', architecture: 's390x' }] }),
    ).rejects.toMatchObject({
      code: 'PLATFORM_NOT_FOUND',
      message: expect.stringContaining(`${HOST.os}/${HOST.architecture}`),
    });

    // A store holding one platform pushes that platform's manifest (as docker does) and says so.
    const notes: string[] = [];
    const partial = await host.push(`${regA.host}/multi/app:1`, `${regA.host}/single/app:1`, {
      onEvent: (e) => e.type === 'note' && notes.push(e.message),
    });
    expect(partial.digest).toBe(children[0]!.digest);
    expect(notes.join()).toMatch(/only/);

    const copied = await src.copy(`${regA.host}/multi/app:1`, `${regB.host}/mirror/app:1`);
    expect(copied.digest).toBe(index.digest);
    const raw = execFileSync(requirePeer('skopeo'), [
      'inspect',
      '--raw',
      '--tls-verify=false',
      `docker://${regB.host}/mirror/app:1`,
    ]);
    expect(raw.equals(await src.store.readBlob(index.digest))).toBe(true);
    execFileSync('skopeo', [
      'inspect',
      '--tls-verify=false',
      '--override-arch',
      OTHER.architecture,
      `docker://${regB.host}/mirror/app:1`,
    ]);
  });
});

describe('interoperability with skopeo', () => {
  it('skopeo reads our store and what we pushed; we pull what skopeo pushed', async () => {
    const skopeo = requirePeer('skopeo');
    const e = await freshEngine();
    const d = await makeImage(e.store, 'example.com/interop:1', { 'a.txt': 'a', 'b/c.txt': 'c' });
    execFileSync(skopeo, [
      'copy',
      '--quiet',
      '--dest-tls-verify=false',
      `oci:${e.store.root}:example.com/interop:1`,
      `docker://${regA.host}/skopeo/interop:1`,
    ]);
    await e.push('example.com/interop:1', `${regA.host}/strata/interop:1`);
    const inspected = JSON.parse(
      execFileSync(skopeo, ['inspect', '--tls-verify=false', `docker://${regA.host}/strata/interop:1`], {
        encoding: 'utf8',
      }),
    ) as { Digest: string; Layers: string[] };
    expect(inspected.Digest).toBe(d.digest);

    const back = await freshEngine();
    const pulled = await back.pull(`${regA.host}/skopeo/interop:1`);
    expect(pulled.digest).toBe(d.digest);
    const out = await tempDir('strata-skopeo-out-');
    dirs.push(out);
    execFileSync(skopeo, [
      'copy',
      '--quiet',
      `oci:${back.store.root}:${regA.host}/skopeo/interop:1`,
      `oci:${out}:x`,
    ]);
    expect(await readdir(join(out, 'blobs', 'sha256'))).toHaveLength(3);
  });
});

describe('a registry that lies', () => {
  let proxy: FaultProxy;
  beforeAll(async () => {
    proxy = await startFaultProxy(regA.url);
  });
  afterAll(() => proxy?.stop());

  it('a corrupted layer fails the pull with DIGEST_MISMATCH and leaves nothing partial in the store', async () => {
    const src = await freshEngine();
    const d = await makeImage(src.store, 'example.com/liar:1', { 'data.bin': 200_000 });
    await src.push('example.com/liar:1', `${regA.host}/liar/app:1`);
    const manifest = JSON.parse((await src.store.readBlob(d.digest)).toString()) as {
      layers: Array<{ digest: string }>;
    };
    const layer = manifest.layers[0]!.digest;
    proxy.addRule({
      method: 'GET',
      path: new RegExp(`/blobs/${layer}`),
      fault: { kind: 'corrupt', at: 1000 },
    });
    const dst = await freshEngine();
    await expect(dst.pull(`${proxy.host}/liar/app:1`)).rejects.toMatchObject({
      code: 'DIGEST_MISMATCH',
      message: expect.stringContaining(layer),
    });
    expect(await dst.store.getRef(`${proxy.host}/liar/app:1`)).toBeUndefined();
    expect(await dst.store.has(layer as never)).toBe(false);
    const leftovers: string[] = [];
    for (const sub of await readdir(dst.store.root))
      if (sub !== 'blobs' && sub !== 'oci-layout' && sub !== 'index.json')
        for (const f of await readdir(join(dst.store.root, sub), { recursive: true }))
          leftovers.push(`${sub}/${f}`);
    // The lease directory stays, empty once the pull released its lease; a lease file left would be a leak.
    expect(leftovers.filter((f) => !f.endsWith('.lock') && f !== 'strata/leases')).toEqual([]);
  });
});
