/**
 * Per-upstream TLS and timeouts: an upstream docker-registry that requires a client certificate is reached with
 * the CA and client certificate of the upstream's certs.d directory (and refused without them); an upstream that
 * accepts connections and never answers fails fast with the upstream's own timeouts.
 */
import { copyFile, mkdir, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient, StaticCredentials } from '../../src/engine/registry/index.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { startMirrorServer, type MirrorServer } from '../../src/mirror/index.js';
import { startDockerRegistry, type DockerRegistry } from '../support/docker-registry.js';
import { tempDir } from '../support/images.js';
import { makeTestPki } from '../support/test-pki.js';
import { pushRandomImage } from './mirror-support.js';

let work: string;
let mtls: DockerRegistry;
let mirror: MirrorServer;
let silent: Server;
const sockets: Socket[] = [];

beforeAll(async () => {
  work = await tempDir('strata-mirror-tls-');
  const f = (n: string): string => join(work, n);
  await makeTestPki(work);
  mtls = await startDockerRegistry({
    tls: { cert: f('server.crt'), key: f('server.key'), ca: f('ca.crt'), clientCas: f('ca.crt') },
  });
  const certsD = join(work, 'certs.d', mtls.host);
  await mkdir(certsD, { recursive: true });
  await copyFile(f('ca.crt'), join(certsD, 'ca.crt'));
  await copyFile(f('client.crt'), join(certsD, 'client.cert'));
  await copyFile(f('client.key'), join(certsD, 'client.key'));

  silent = createServer((s) => void sockets.push(s)); // accepts, never answers
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  const silentPort = (silent.address() as { port: number }).port;

  mirror = await startMirrorServer({
    store: await FsStore.open(join(work, 'store')),
    upstreams: [
      { name: 'secure.test', url: mtls.url, certsDir: join(work, 'certs.d') },
      { name: 'nocert.test', url: mtls.url, certsDir: join(work, 'empty.d') },
      {
        name: 'hung.test',
        url: `http://127.0.0.1:${silentPort}`,
        timeouts: { connectMs: 500, responseHeadersMs: 300, idleMs: 300 },
      },
    ],
  });
}, 60_000);

afterAll(async () => {
  await mirror?.close();
  for (const s of sockets) s.destroy();
  silent?.close();
  await mtls?.stop();
  await rm(work, { recursive: true, force: true });
});

describe('mirror: upstream TLS and timeouts', () => {
  it('reaches an mTLS upstream with its certs.d CA and client certificate, and not without them', async () => {
    // Push through a client that has the certificates (the mirror's own client is not used for that).
    const pusher = new RegistryClient({
      plainHttpLoopback: false,
      certsDirs: [join(work, 'certs.d')],
      credentials: new StaticCredentials({}),
    });
    let img;
    try {
      img = await pushWith(pusher);
    } finally {
      await pusher.close();
    }
    const res = await fetch(`${mirror.url}/v2/secure.test/team/app/manifests/v1`);
    expect(res.status).toBe(200);
    expect(res.headers.get('docker-content-digest')).toBe(img.manifest.digest);
    const blob = await fetch(`${mirror.url}/v2/secure.test/team/app/blobs/${img.layer.digest}`);
    expect(Buffer.from(await blob.arrayBuffer()).equals(img.layerBytes)).toBe(true);
    const refused = await fetch(`${mirror.url}/v2/nocert.test/team/app/manifests/v1`);
    expect(refused.status).toBe(502);
  }, 30_000);

  it('gives up on an upstream that never answers within its timeouts, answering 502', async () => {
    const started = Date.now();
    const res = await fetch(`${mirror.url}/v2/hung.test/team/app/manifests/v1`);
    expect(res.status).toBe(502);
    const body = (await res.json()) as { errors: Array<{ message: string }> };
    expect(body.errors[0]!.message).toMatch(/hung\.test/);
    expect(Date.now() - started).toBeLessThan(10_000);
  }, 20_000);
});

/** pushRandomImage over TLS: the helper's client is plain-HTTP-loopback, so push with `client` instead. */
async function pushWith(client: RegistryClient): ReturnType<typeof pushRandomImage> {
  return pushRandomImage(mtls.host, 'team/app', 'v1', 64 * 1024, client);
}
