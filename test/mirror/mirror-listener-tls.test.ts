/**
 * TLS on the mirror's own listener (`--tls-cert`/`--tls-key`): skopeo pulls through `strata mirror serve` over HTTPS
 * trusting the test CA (cert dir), byte-identical to the upstream; a plain-HTTP request gets no answer from it; a
 * replaced certificate is served to new connections without a restart; half a pair is refused.
 */
import type { ChildProcess } from 'node:child_process';
import { copyFile, mkdir, readFile, rm } from 'node:fs/promises';
import { request } from 'node:https';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { mirrorSettings, startMirrorServer } from '../../src/mirror/index.js';
import { startCliServer } from '../support/cli.js';
import { startDockerRegistry, type DockerRegistry } from '../support/docker-registry.js';
import { tempDir } from '../support/images.js';
import { makeTestPki } from '../support/test-pki.js';
import { hubUpstream, pushRandomImage, skopeo, type PushedImage } from './mirror-support.js';

let work: string;
let upstream: DockerRegistry;
let img: PushedImage;
let cli: { child: ChildProcess; url: string } | undefined;

beforeAll(async () => {
  work = await tempDir('strata-mirror-listener-tls-');
  for (const dir of ['pki', 'pki2']) {
    await mkdir(join(work, dir));
    await makeTestPki(join(work, dir)); // pki2: another CA, for the renewed certificate
  }
  upstream = await startDockerRegistry();
  img = await pushRandomImage(upstream.host, 'team/secure', 'v1', 256 * 1024);
}, 60_000);

afterAll(async () => {
  cli?.child.kill('SIGTERM');
  await upstream?.stop();
  await rm(work, { recursive: true, force: true });
});

/** GET over HTTPS trusting `ca`; resolves with the status, or rejects on a TLS failure. */
function httpsGet(url: string, ca: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca, agent: false, timeout: 5000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

describe('mirror: TLS on the listener', () => {
  it('skopeo pulls through strata mirror serve --tls-cert/--tls-key, trusting the CA', async () => {
    const pki = join(work, 'pki');
    cli = await startCliServer([
      'mirror',
      'serve',
      '--listen',
      '127.0.0.1:0',
      '--store',
      join(work, 'store'),
      '--upstream',
      `docker.io=${upstream.url}`,
      '--default-upstream',
      'docker.io',
      '--tls-cert',
      join(pki, 'server.crt'),
      '--tls-key',
      join(pki, 'server.key'),
    ]);
    expect(cli.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const host = new URL(cli.url).host;
    const certDir = join(work, 'skopeo-certs');
    await mkdir(certDir, { recursive: true });
    await copyFile(join(pki, 'ca.crt'), join(certDir, 'ca.crt'));
    const inspected = JSON.parse(
      await skopeo(['inspect', '--raw', '--cert-dir', certDir, `docker://${host}/team/secure:v1`]),
    ) as { layers: { digest: string }[] };
    expect(inspected.layers[0]!.digest).toBe(img.layer.digest);
    const dest = join(work, 'pulled');
    await skopeo([
      'copy',
      '--preserve-digests',
      '--src-cert-dir',
      certDir,
      `docker://${host}/team/secure:v1`,
      `oci:${dest}:v1`,
    ]);
    const index = JSON.parse(await readFile(join(dest, 'index.json'), 'utf8')) as {
      manifests: { digest: string }[];
    };
    expect(index.manifests[0]!.digest).toBe(img.manifest.digest);
    // Without the CA the certificate is refused; plain HTTP gets no registry answer.
    await expect(skopeo(['inspect', '--raw', `docker://${host}/team/secure:v1`])).rejects.toThrow(
      /certificate|x509/,
    );
    const plain = await fetch(`http://${host}/v2/`, { signal: AbortSignal.timeout(5000) }).then(
      (r) => r.status,
      () => 0,
    );
    expect(plain).not.toBe(200);
  }, 60_000);

  it('serves a replaced certificate to new connections without a restart', async () => {
    const live = join(work, 'live');
    await mkdir(live, { recursive: true });
    await copyFile(join(work, 'pki', 'server.crt'), join(live, 'tls.crt'));
    await copyFile(join(work, 'pki', 'server.key'), join(live, 'tls.key'));
    const mirror = await startMirrorServer({
      store: await FsStore.open(join(work, 'store2')),
      ...hubUpstream(upstream.url),
      tls: { certFile: join(live, 'tls.crt'), keyFile: join(live, 'tls.key') },
      tlsRecheckMs: 100,
    });
    try {
      const oldCa = await readFile(join(work, 'pki', 'ca.crt'));
      const newCa = await readFile(join(work, 'pki2', 'ca.crt'));
      expect(await httpsGet(`${mirror.url}/v2/`, oldCa)).toBe(200);
      await expect(httpsGet(`${mirror.url}/v2/`, newCa)).rejects.toThrow();
      await copyFile(join(work, 'pki2', 'server.key'), join(live, 'tls.key'));
      await copyFile(join(work, 'pki2', 'server.crt'), join(live, 'tls.crt'));
      let status = 0;
      for (let deadline = Date.now() + 10_000; status !== 200 && Date.now() < deadline;) {
        status = await httpsGet(`${mirror.url}/v2/`, newCa).catch(() => 0);
        if (status !== 200) await new Promise((r) => setTimeout(r, 100));
      }
      expect(status).toBe(200);
    } finally {
      await mirror.close();
    }
  }, 30_000);

  it('refuses half a pair and unreadable files', async () => {
    await expect(mirrorSettings({ upstream: ['a=http://127.0.0.1:1'], tlsCert: '/x.crt' })).rejects.toThrow(
      /--tls-cert and --tls-key go together/,
    );
    await expect(
      startMirrorServer({
        store: await FsStore.open(join(work, 'store3')),
        upstreams: [{ name: 'docker.io', url: upstream.url }],
        tls: { certFile: join(work, 'missing.crt'), keyFile: join(work, 'missing.key') },
      }),
    ).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });
});
