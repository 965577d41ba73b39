/**
 * What a pull says when things are not as asked: nested indexes, a single-platform image for another platform,
 * and registries that cut blobs short, refuse connections or do not exist.
 */
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import type { ProgressEvent } from '../../src/engine/image/events.js';
import { descriptorOf } from '../../src/engine/image/store-endpoint.js';
import { describeError, StrataError } from '../../src/engine/errors.js';
import { digestOf, MediaType, parseManifest } from '../../src/engine/oci/index.js';
import { hostPlatform } from '../../src/engine/oci/platform.js';
import { RegistryClient } from '../../src/engine/registry/client.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { startDockerRegistry, type DockerRegistry } from '../support/docker-registry.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { makeImage, makeMultiPlatformImage, tempDir } from '../support/images.js';

const HOST = hostPlatform();
const OTHER =
  HOST.architecture === 'arm64'
    ? { os: 'linux', architecture: 'amd64' }
    : { os: 'linux', architecture: 'arm64' };
const fmt = (p: { os: string; architecture: string }): string => `${p.os}/${p.architecture}`;

let reg: DockerRegistry;
let proxy: FaultProxy;
let client: RegistryClient;
const dirs: string[] = [];

async function freshEngine(c: RegistryClient = client): Promise<Engine> {
  const dir = await tempDir('strata-store-');
  dirs.push(dir);
  return new Engine({ store: await FsStore.open(dir), registry: c });
}

beforeAll(async () => {
  reg = await startDockerRegistry();
  proxy = await startFaultProxy(reg.url);
  client = new RegistryClient({ retry: { baseDelayMs: 1, maxDelayMs: 2 } });
});

afterAll(async () => {
  await client?.close();
  await proxy?.stop();
  await reg?.stop();
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe('nested indexes', () => {
  it('descends into an index of indexes to find the platform, and lists every platform it offers', async () => {
    const src = await freshEngine();
    const inner = await makeMultiPlatformImage(src.store, 'example.com/inner:1', [HOST, OTHER]);
    // The outer index names the inner one, once with the host's platform and once without any (both occur).
    const outerBytes = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciIndex,
        manifests: [{ ...inner.index, platform: HOST }, inner.index],
      }),
    );
    const outer = parseManifest(outerBytes, digestOf(outerBytes), MediaType.OciIndex);
    await src.store.putBytes(outerBytes);
    await src.store.setRef('example.com/nested:1', descriptorOf(outer));
    const pushed = await src.push('example.com/nested:1', `${reg.host}/nested/app:1`);
    expect(pushed.digest).toBe(outer.digest);

    const host = await freshEngine();
    const r = await host.pull(`${reg.host}/nested/app:1`);
    expect(r.digest).toBe(outer.digest);
    expect(r.manifests.map((m) => m.digest)).toEqual([inner.children[0]!.digest]);
    expect(await host.store.has(inner.index.digest)).toBe(true);
    expect(await host.store.has(inner.children[1]!.digest)).toBe(false);

    const other = await freshEngine();
    const o = await other.pull(`${reg.host}/nested/app:1`, { platforms: [OTHER] });
    expect(o.manifests.map((m) => m.digest)).toEqual([inner.children[1]!.digest]);

    const err = await host
      .pull(`${reg.host}/nested/app:1`, { platforms: [{ os: 'linux', architecture: 's390x' }] })
      .then(
        () => undefined,
        (e: unknown) => e as StrataError,
      );
    expect(err?.code).toBe('PLATFORM_NOT_FOUND');
    expect(err?.message).toBe(
      `${reg.host}/nested/app:1: no manifest for platform linux/s390x (the index offers: ${fmt(HOST)}, ${fmt(OTHER)})`,
    );
  });
});

describe('a single-platform image for another platform', () => {
  it('is pulled with a note, as podman warns; no note when the platform matches or all are asked for', async () => {
    const src = await freshEngine();
    await makeImage(src.store, 'example.com/foreign:1', { 'etc/arch': OTHER.architecture }, OTHER);
    const pushed = await src.push('example.com/foreign:1', `${reg.host}/foreign/app:1`);

    const notesOf = async (platforms?: Parameters<Engine['pull']>[1]): Promise<string[]> => {
      const notes: string[] = [];
      const e = await freshEngine();
      const r = await e.pull(`${reg.host}/foreign/app:1`, {
        ...platforms,
        onEvent: (ev: ProgressEvent) => ev.type === 'note' && notes.push(ev.message),
      });
      expect(r.digest).toBe(pushed.digest);
      expect(await e.store.getRef(`${reg.host}/foreign/app:1`)).toBeDefined();
      return notes;
    };
    expect(await notesOf()).toEqual([
      `image platform (${fmt(OTHER)}) does not match the expected platform (${fmt(HOST)}): ${reg.host}/foreign/app:1 has a single manifest ${pushed.digest}`,
    ]);
    expect(await notesOf({ platforms: [{ os: 'linux', architecture: 's390x' }] })).toHaveLength(1);
    expect(await notesOf({ platforms: [OTHER] })).toEqual([]);
    expect(await notesOf({ platforms: 'all' })).toEqual([]);
  });
});

describe('plain network messages', () => {
  it('a blob cut short on every attempt says what arrived, from where, and that retries ran out', async () => {
    const src = await freshEngine();
    const d = await makeImage(src.store, 'example.com/cut:1', { 'data.bin': 200_000 });
    await src.push('example.com/cut:1', `${reg.host}/cut/app:1`);
    const layer = (
      JSON.parse((await src.store.readBlob(d.digest)).toString()) as {
        layers: Array<{ digest: string; size: number }>;
      }
    ).layers[0]!;
    proxy.reset();
    proxy.addRule({
      method: 'GET',
      path: new RegExp(`/blobs/${layer.digest}`),
      fault: { kind: 'truncate', afterBytes: 0 },
    });
    const dst = await freshEngine();
    const err = (await dst.pull(`${proxy.host}/cut/app:1`).catch((e: unknown) => e)) as StrataError;
    expect(err.code).toBe('NETWORK');
    expect(describeError(err)).toBe(
      `pull ${proxy.host}/cut/app@${layer.digest}: ${proxy.host} closed the connection before the response ended; received 0 of ${layer.size} bytes (gave up after 5 attempts)`,
    );
    expect(await dst.store.getRef(`${proxy.host}/cut/app:1`)).toBeUndefined();
  });

  it('a refused connection and an unknown host name the registry and the reference, not getaddrinfo', async () => {
    const e = await freshEngine();
    const refused = (await e.pull('127.0.0.1:1/team/app:1').catch((x: unknown) => x)) as StrataError;
    expect(refused.code).toBe('NETWORK');
    expect(describeError(refused)).toBe(
      'pull 127.0.0.1:1/team/app:1: cannot connect to 127.0.0.1:1: connection refused (is a registry listening there?) (gave up after 5 attempts)',
    );
    const unknown = (await e.pull('nosuchhost.invalid/team/app:1').catch((x: unknown) => x)) as StrataError;
    expect(unknown.code).toBe('NETWORK');
    expect(unknown.retryable).toBe(false);
    expect(describeError(unknown)).toBe(
      'pull nosuchhost.invalid/team/app:1: cannot resolve nosuchhost.invalid: no such host (check the registry name)',
    );
  });
});
