/**
 * A real Debian build: a `debootstrap --variant=minbase bookworm` root (made once per machine and cached) is
 * imported with `strata import`, and `RUN apt-get update && apt-get install` installs a package from a local flat
 * repository served on loopback by this test (no network needed once the base is cached). The step's layer must
 * hold the package's files and nothing of the build machinery.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, normalize } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { findLocalRef, loadLocalImage } from '../../src/engine/image/local.js';
import { RegistryClient } from '../../src/engine/registry/client.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { debianBaseTar } from '../support/debian.js';
import { tempDir } from '../support/images.js';
import { requirePeer } from '../support/peers.js';
import { requireRootAndOverlay, unmountAllUnder } from '../support/root.js';
import { layerEntries } from './layer-entries.js';
import { requireRunc } from './run-support.js';

const run = promisify(execFile);
const BASE = 'localhost/test/debian-minbase:bookworm';
const PKG = 'strata-hello';

/** A tiny package made here with `dpkg-deb --build`, and a flat repository (Packages, Release) holding it. */
async function makeRepository(dir: string): Promise<void> {
  const src = join(dir, 'src');
  await mkdir(join(src, 'DEBIAN'), { recursive: true });
  await mkdir(join(src, 'usr', 'bin'), { recursive: true });
  await mkdir(join(src, 'usr', 'share', 'doc', PKG), { recursive: true });
  await writeFile(
    join(src, 'DEBIAN', 'control'),
    [
      `Package: ${PKG}`,
      'Version: 1.0-1',
      'Architecture: all',
      'Maintainer: Strata Tests <tests@example.org>',
      'Depends: base-files',
      'Description: prints a greeting (a strata test package)',
      '',
    ].join('\n'),
  );
  await writeFile(join(src, 'usr', 'bin', PKG), '#!/bin/sh\necho "hello from a local apt repository"\n');
  await chmod(join(src, 'usr', 'bin', PKG), 0o755);
  await writeFile(join(src, 'usr', 'share', 'doc', PKG, 'README'), 'made by apt.test.ts\n');
  const repo = join(dir, 'repo');
  await mkdir(repo);
  const deb = join(repo, `${PKG}_1.0-1_all.deb`);
  await run('dpkg-deb', ['--root-owner-group', '--build', src, deb]);
  const control = (await run('dpkg-deb', ['-f', deb])).stdout.trimEnd();
  const bytes = await readFile(deb);
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  const md5 = createHash('md5').update(bytes).digest('hex');
  const packages = `${control}\nFilename: ./${PKG}_1.0-1_all.deb\nSize: ${bytes.length}\nMD5sum: ${md5}\nSHA256: ${sha256}\n\n`;
  await writeFile(join(repo, 'Packages'), packages);
  const p = Buffer.from(packages);
  await writeFile(
    join(repo, 'Release'),
    `Origin: strata-test\nLabel: strata-test\nSuite: ./\nSHA256:\n ${createHash('sha256').update(p).digest('hex')} ${p.length} Packages\n`,
  );
}

/** Serves `root` read-only on 127.0.0.1 (GET/HEAD of plain files; nothing outside it). */
async function serve(root: string, requests: string[]): Promise<Server> {
  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname));
    requests.push(path);
    const file = join(root, path);
    stat(file).then(
      (st) => {
        if (!st.isFile() || !file.startsWith(`${root}/`)) throw new Error('not a file');
        res.writeHead(200, { 'content-length': st.size, 'content-type': 'application/octet-stream' });
        if (req.method === 'HEAD') res.end();
        else createReadStream(file).pipe(res);
      },
      () => {
        res.writeHead(404).end();
      },
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

let work: string;
let engine: Engine;
let server: Server;
const requests: string[] = [];

beforeAll(async () => {
  requireRootAndOverlay();
  requireRunc();
  requirePeer('dpkg-deb');
  work = await tempDir('strata-apt-');
  engine = new Engine({ store: await FsStore.open(join(work, 'store')), registry: new RegistryClient() });
  const tar = await debianBaseTar();
  await engine.import(createReadStream(tar), BASE);
  await makeRepository(work);
  server = await serve(join(work, 'repo'), requests);
}, 200_000);

afterAll(async () => {
  await new Promise((resolve) => server?.close(resolve));
  if (work) {
    unmountAllUnder(work);
    await rm(work, { recursive: true, force: true });
  }
});

describe('a Debian base and apt-get install', () => {
  it('installs a package from a loopback repository; the layer holds its files and no build machinery', async () => {
    const port = (server.address() as AddressInfo).port;
    const dockerfile = [
      `FROM ${BASE}`,
      'ARG REPO',
      `RUN echo "deb [trusted=yes] $REPO ./" > /etc/apt/sources.list && rm -f /etc/apt/sources.list.d/* \\`,
      ` && apt-get update && apt-get install -y --no-install-recommends ${PKG} && ${PKG} > /greeting.txt`,
      `CMD ["${PKG}"]`,
    ].join('\n');
    const ctx = await tempDir('strata-apt-ctx-');
    const result = await engine.build({
      contextDir: ctx,
      dockerfile,
      buildArgs: { REPO: `http://127.0.0.1:${port}/` },
      network: 'host',
      tags: ['localhost/test/apt-hello:1'],
    });
    await rm(ctx, { recursive: true, force: true });
    expect(result.layers).toBe(2);
    expect(requests).toContain(`/${PKG}_1.0-1_all.deb`);

    const image = await loadLocalImage(
      engine.store,
      await findLocalRef(engine.store, 'localhost/test/apt-hello:1'),
    );
    const layer = image.manifest.manifest.layers.at(-1)!;
    const entries = await layerEntries(engine.store, layer.digest);
    // The package's files and dpkg's record of them, and what the RUN wrote.
    expect(entries).toEqual(
      expect.arrayContaining([
        `usr/bin/${PKG}`,
        `usr/share/doc/${PKG}/README`,
        `var/lib/dpkg/info/${PKG}.list`,
        'var/lib/dpkg/status',
        'greeting.txt',
      ]),
    );
    // Nothing of the machinery RUN needed: no resolver/hosts files, mount points, /dev, /proc, /sys, runtime files.
    const machinery = entries.filter((e) =>
      /^(etc\/(resolv\.conf|hosts|hostname)|dev|proc|sys|mnt|run\/(runc|strata|containerd))(\/|$)|(^|\/)\.wh\.(dev|proc|sys|resolv\.conf|hosts|hostname)$|(^|\/)(runc|config\.json)$/.test(
        e,
      ),
    );
    expect(machinery).toEqual([]);

    const dir = join(work, 'unpacked');
    await engine.unpack('localhost/test/apt-hello:1', dir);
    expect(await readFile(join(dir, 'greeting.txt'), 'utf8')).toBe('hello from a local apt repository\n');
    expect(await readFile(join(dir, 'etc', 'apt', 'sources.list'), 'utf8')).toBe(
      `deb [trusted=yes] http://127.0.0.1:${port}/ ./\n`,
    );
    expect((await stat(join(dir, 'usr', 'bin', PKG))).mode & 0o777).toBe(0o755);
  }, 180_000);
});
