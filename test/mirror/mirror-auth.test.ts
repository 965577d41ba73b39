/**
 * Client authentication of `mirror serve` (htpasswd, bcrypt, re-read on change), and the separation of credentials:
 * the client's never reach the upstream (counted at a proxy in front of it), the upstream's never reach the client.
 */
import { execFileSync } from 'node:child_process';
import { rm, writeFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient, StaticCredentials } from '../../src/engine/registry/index.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { startMirrorServer, type MirrorServer } from '../../src/mirror/index.js';
import { parseBasic, parseHtpasswd } from '../../src/mirror/htpasswd.js';
import { startDockerRegistry, type DockerRegistry } from '../support/docker-registry.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { tempDir } from '../support/images.js';
import { requirePeer } from '../support/peers.js';
import { pushRandomImage, skopeo } from './mirror-support.js';

const UPSTREAM_USER = { username: 'mirror', password: 'upstream-s3cret' };
const CLIENT = { username: 'alice', password: 'client-pa55' };
const basic = (u: string, p: string): string => `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}`;

/** One `htpasswd -B` line, as an operator would write it. */
function htpasswdLine(user: string, password: string): string {
  // Cost 5 keeps the test fast; the server reads whatever cost the file says.
  return execFileSync(requirePeer('htpasswd'), ['-Bbn', '-C', '5', user, password], {
    encoding: 'utf8',
  }).trim();
}

let upstream: DockerRegistry;
let proxy: FaultProxy;
let mirror: MirrorServer;
let work: string;
let htpasswd: string;
let image: Awaited<ReturnType<typeof pushRandomImage>>;

beforeAll(async () => {
  work = await tempDir('strata-mirror-auth-');
  upstream = await startDockerRegistry({ auth: UPSTREAM_USER });
  proxy = await startFaultProxy(upstream.url);
  const creds = join(work, 'config.json');
  await writeFile(
    creds,
    JSON.stringify({
      auths: {
        [proxy.host]: {
          auth: Buffer.from(`${UPSTREAM_USER.username}:${UPSTREAM_USER.password}`).toString('base64'),
        },
      },
    }),
  );
  htpasswd = join(work, 'htpasswd');
  await writeFile(htpasswd, `# users\n${htpasswdLine(CLIENT.username, CLIENT.password)}\nold:{SHA}weak\n`);
  const pusher = new RegistryClient({
    retry: { retries: 0 },
    credentials: new StaticCredentials({ [upstream.host]: UPSTREAM_USER }),
  });
  try {
    image = await pushRandomImage(upstream.host, 'library/app', 'v1', 64 * 1024, pusher);
  } finally {
    await pusher.close();
  }
  mirror = await startMirrorServer({
    store: await FsStore.open(join(work, 'store')),
    upstreams: [{ name: 'docker.io', url: proxy.url, credentialsFile: creds }],
    defaultUpstream: 'docker.io',
    htpasswd,
  });
}, 60_000);

afterAll(async () => {
  await mirror?.close();
  await proxy?.stop();
  await upstream?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

const get = (path: string, authorization?: string): Promise<Response> =>
  fetch(new URL(path, mirror.url), authorization ? { headers: { authorization } } : {});

describe('mirror serve --htpasswd', () => {
  it('answers 401 with a Basic challenge without valid credentials, /v2/ included, as distribution does', async () => {
    for (const [path, auth] of [
      ['/v2/', undefined],
      ['/v2/', basic(CLIENT.username, 'wrong')],
      ['/v2/', basic('nobody', CLIENT.password)],
      ['/v2/', basic('old', 'weak')], // a non-bcrypt entry is ignored, never accepted
      ['/v2/', 'Bearer abc'],
      ['/v2/', 'Basic !!!'],
      ['/v2/library/app/manifests/v1', undefined],
      ['/v2/no/such/repo/tags/list', undefined], // names are not probed before authentication
      ['/v2/_catalog', undefined],
    ] as const) {
      const res = await get(path, auth);
      expect(res.status, `${path} ${auth}`).toBe(401);
      expect(res.headers.get('www-authenticate')).toBe('Basic realm="strata"');
      expect(((await res.json()) as { errors: Array<{ code: string }> }).errors[0]!.code).toBe(
        'UNAUTHORIZED',
      );
    }
    const ok = await get('/v2/', basic(CLIENT.username, CLIENT.password));
    expect(ok.status).toBe(200);
  });

  it('serves an authenticated client; its credentials never reach the upstream, the upstream ones never reach it', async () => {
    proxy.reset();
    const client = new RegistryClient({
      retry: { retries: 0 },
      credentials: new StaticCredentials({ [mirror.host]: CLIENT }),
    });
    const seen: string[] = [];
    try {
      const repo = { registry: mirror.host, repository: 'library/app' };
      const m = await client.getManifest({ ...repo, tag: 'v1' } as never);
      expect(m.digest).toBe(image.manifest.digest);
      const res = await fetch(new URL(`/v2/library/app/blobs/${image.layer.digest}`, mirror.url), {
        headers: { authorization: basic(CLIENT.username, CLIENT.password) },
      });
      expect(res.status).toBe(200);
      expect(Buffer.from(await res.arrayBuffer()).equals(image.layerBytes)).toBe(true);
      for (const [k, v] of res.headers) seen.push(`${k}: ${v}`);
      const manifest = await get('/v2/library/app/manifests/v1', basic(CLIENT.username, CLIENT.password));
      for (const [k, v] of manifest.headers) seen.push(`${k}: ${v}`);
      seen.push(await manifest.text());
    } finally {
      await client.close();
    }
    const records = proxy.requests;
    expect(records.length).toBeGreaterThan(0);
    expect(
      records.some((r) => r.authorization === basic(UPSTREAM_USER.username, UPSTREAM_USER.password)),
    ).toBe(true);
    for (const r of records) {
      expect(r.authorization ?? '').not.toContain(
        Buffer.from(`${CLIENT.username}:`).toString('base64').slice(0, 6),
      );
      expect(r.authorization).not.toBe(basic(CLIENT.username, CLIENT.password));
    }
    const leaked = seen.join('\n');
    expect(leaked).not.toContain(UPSTREAM_USER.password);
    expect(leaked).not.toContain(
      Buffer.from(`${UPSTREAM_USER.username}:${UPSTREAM_USER.password}`).toString('base64'),
    );
    expect(leaked).not.toContain(proxy.host); // no upstream challenge or Location relayed
  });

  it('works with skopeo (a real client following the Basic challenge)', async () => {
    const out = await skopeo([
      'inspect',
      '--raw',
      '--tls-verify=false',
      '--creds',
      `${CLIENT.username}:${CLIENT.password}`,
      `docker://${mirror.host}/library/app:v1`,
    ]);
    expect(JSON.parse(out)).toMatchObject({ schemaVersion: 2 });
    await expect(
      skopeo([
        'inspect',
        '--raw',
        '--tls-verify=false',
        '--creds',
        `${CLIENT.username}:nope`,
        `docker://${mirror.host}/library/app:v1`,
      ]),
    ).rejects.toThrow(/unauthorized|authentication/i);
  }, 60_000);

  it('re-reads the htpasswd file when it changes: new users get in, removed ones are out', async () => {
    const next = join(work, 'htpasswd.next');
    await writeFile(next, `${htpasswdLine('bob', 'bob-pw')}\n`);
    await rename(next, htpasswd); // as a Secret update swaps the file
    await new Promise((r) => setTimeout(r, 1100)); // checked at most once a second
    expect((await get('/v2/', basic('bob', 'bob-pw'))).status).toBe(200);
    expect((await get('/v2/', basic(CLIENT.username, CLIENT.password))).status).toBe(401);
    // A file that disappears denies everyone rather than opening the mirror.
    await rm(htpasswd);
    await new Promise((r) => setTimeout(r, 1100));
    expect((await get('/v2/', basic('bob', 'bob-pw'))).status).toBe(401);
    await writeFile(htpasswd, `${htpasswdLine(CLIENT.username, CLIENT.password)}\n`);
    await new Promise((r) => setTimeout(r, 1100));
    expect((await get('/v2/', basic(CLIENT.username, CLIENT.password))).status).toBe(200);
  });

  it('refuses to start with a missing htpasswd file', async () => {
    await expect(
      startMirrorServer({
        store: await FsStore.open(join(work, 'store2')),
        upstreams: [{ name: 'docker.io', url: proxy.url }],
        htpasswd: join(work, 'absent'),
      }),
    ).rejects.toThrow(/ENOENT/);
  });
});

describe('htpasswd parsing', () => {
  it('keeps bcrypt entries only and reports the other lines', () => {
    const line = htpasswdLine('carol', 'x');
    const { users, skipped } = parseHtpasswd(
      `${line}\n\n# c\nmd5:$apr1$abc$def\nnocolon\n:$2y$05$${'a'.repeat(53)}\n`,
    );
    expect([...users.keys()]).toEqual(['carol']);
    expect(skipped).toEqual([4, 5, 6]);
  });

  it('parses Basic headers strictly', () => {
    expect(parseBasic(basic('u', 'p:q'))).toEqual({ username: 'u', password: 'p:q' });
    expect(parseBasic('basic ' + Buffer.from('u:').toString('base64'))).toEqual({
      username: 'u',
      password: '',
    });
    expect(parseBasic(undefined)).toBeUndefined();
    expect(parseBasic('Basic ' + Buffer.from(':p').toString('base64'))).toBeUndefined();
    expect(parseBasic('Basic a b')).toBeUndefined();
    expect(parseBasic('Basic ' + 'A'.repeat(5000))).toBeUndefined();
  });
});
