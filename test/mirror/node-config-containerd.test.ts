/**
 * A real containerd (its own root, state and sockets under a temp dir) pulls a `docker.io/…` image through the
 * hosts.toml that `strata mirror config` rendered, from a local registry standing in for the mirror: docker.io is not
 * reachable here, so the pull succeeding with the right digest, and the mirror's access log showing `?ns=docker.io`,
 * prove that containerd read our file.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configureMirror, startContainerd, type Containerd } from './containerd-support.js';
import { prepareImage, putManifest, startHarness, tempDir, type Harness } from './support.js';

describe('containerd pulls through the rendered hosts.toml', () => {
  let dir: string;
  let containerd: Containerd | undefined;
  let mirror: Harness;
  const requests: string[] = [];

  beforeAll(async () => {
    dir = await tempDir('strata-ctd-');
    containerd = await startContainerd(join(dir, 'containerd'));
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) {
          const rec = JSON.parse(line) as { msg?: string; path?: string };
          if (rec.msg === 'request' && rec.path) requests.push(rec.path);
        }
        done();
      },
    });
    mirror = await startHarness({ logger: pino({ level: 'info' }, sink) });
  }, 30_000);

  afterAll(async () => {
    await containerd?.stop();
    await mirror?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('ctr content fetch --hosts-dir DIR docker.io/library/demo:1 is served by the mirror', async () => {
    const image = await prepareImage(mirror, 'library/demo', { pretty: false });
    expect((await putManifest(mirror, 'library/demo', '1', image.bytes, image.mediaType)).status).toBe(201);

    const certs = join(dir, 'certs.d');
    await configureMirror(certs, mirror.server.url);

    const stdout = await containerd!.ctr(
      ['content', 'fetch', '--hosts-dir', certs, 'docker.io/library/demo:1'],
      30_000,
    );
    expect(stdout).toContain('done');
    // The manifest is JSON text, so ctr's stdout read as UTF-8 round-trips byte for byte.
    const info = await containerd!.ctr(['content', 'get', image.digest], 10_000);
    expect(Buffer.compare(Buffer.from(info, 'utf8'), image.bytes)).toBe(0);
    expect(
      requests.some((p) => p.startsWith('/v2/library/demo/manifests/1') && p.includes('ns=docker.io')),
    ).toBe(true);
    expect(requests.some((p) => p.startsWith(`/v2/library/demo/blobs/${image.layers[0]}`))).toBe(true);
  }, 30_000);
});
