/** Routing and settings of `strata mirror serve`: pure functions, table tests. */
import { writeFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasCode } from '../../src/engine/errors.js';
import {
  mirrorSettings,
  parseDuration,
  parseUpstreamFlag,
  Router,
  upstreamComponent,
} from '../../src/mirror/index.js';
import { createServer } from 'node:net';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { startMirrorServer } from '../../src/mirror/index.js';
import { tempDir } from '../support/images.js';
import { codeOf } from '../support/outcomes.js';

const hub = { name: 'docker.io', url: 'https://registry-1.docker.io' };
const quay = { name: 'quay.io', url: 'https://quay.io' };
const local = { name: 'localhost:5000', url: 'http://127.0.0.1:5000' };

describe('mirror routing', () => {
  const router = new Router([hub, quay, local], 'docker.io', ['team']);

  it.each([
    // [name as sent, ns, backend name, destination]
    ['nginx', 'docker.io', 'docker.io/library/nginx', 'docker.io library/nginx'],
    ['library/nginx', 'docker.io', 'docker.io/library/nginx', 'docker.io library/nginx'],
    ['coreos/etcd', 'quay.io', 'quay.io/coreos/etcd', 'quay.io coreos/etcd'],
    ['app', 'localhost:5000', 'localhost-5000/app', 'localhost:5000 app'],
    ['docker.io/library/nginx', null, 'docker.io/library/nginx', 'docker.io library/nginx'],
    ['docker.io/nginx', null, 'docker.io/library/nginx', 'docker.io library/nginx'],
    ['quay.io/coreos/etcd', null, 'quay.io/coreos/etcd', 'quay.io coreos/etcd'],
    ['localhost:5000/a/b', null, 'localhost-5000/a/b', 'localhost:5000 a/b'],
    ['nginx', null, 'docker.io/library/nginx', 'docker.io library/nginx'],
    ['bitnami/redis', null, 'docker.io/bitnami/redis', 'docker.io bitnami/redis'],
    ['team/app', null, 'team/app', 'hosted team/app'],
    ['team', null, 'team', 'hosted team'],
    ['teams/app', null, 'docker.io/teams/app', 'docker.io teams/app'],
    // An unknown ns is not an upstream: the path decides.
    ['team/app', 'mirror.local:5002', 'team/app', 'hosted team/app'],
  ])('%s (ns=%s) → %s', (name, ns, backend, where) => {
    const mapped = router.map(name, ns);
    expect(mapped).toBe(backend);
    const d = router.destination(mapped);
    expect(d.kind === 'hosted' ? `hosted ${d.repository}` : `${d.upstream.name} ${d.repository}`).toBe(where);
  });

  it.each([
    ['docker.io/../etc', null],
    ['docker.io/Library/nginx', null],
    ['a//b', null],
    ['..', 'docker.io'],
    ['UPPER', null],
    ['localhost:5000/../x', null],
    ['', 'docker.io'],
  ])('refuses %j (ns=%s) with NAME_INVALID', (name, ns) => {
    expect(codeOf(() => router.map(name, ns))).toBe('NAME_INVALID');
  });

  it('without a default upstream, unprefixed names are hosted', () => {
    const r = new Router([hub], undefined);
    expect(r.destination(r.map('app', null))).toEqual({ kind: 'hosted', repository: 'app' });
  });

  it('refuses a default upstream that is not configured, and duplicate upstreams', () => {
    expect(codeOf(() => new Router([hub], 'quay.io'))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => new Router([hub, { ...hub, url: 'https://x' }], undefined))).toBe('INVALID_ARGUMENT');
  });

  it('names upstreams with valid path components', () => {
    expect(upstreamComponent('docker.io')).toBe('docker.io');
    expect(upstreamComponent('localhost:5000')).toBe('localhost-5000');
    expect(upstreamComponent('127.0.0.1:5000')).toBe('127.0.0.1-5000');
  });
});

describe('mirror settings', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await tempDir('strata-mirror-config-');
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('parses --upstream NAME=URL and refuses bad ones', () => {
    expect(parseUpstreamFlag('Docker.io=https://registry-1.docker.io/')).toEqual({
      name: 'docker.io',
      url: 'https://registry-1.docker.io',
    });
    expect(parseUpstreamFlag('localhost:5000=http://127.0.0.1:5000')).toEqual(local);
    for (const bad of [
      'docker.io',
      '=http://x',
      'docker.io=ftp://x',
      'docker.io=https://x/path',
      'a b=http://x',
    ])
      expect(
        codeOf(() => parseUpstreamFlag(bad)),
        bad,
      ).toBe('INVALID_ARGUMENT');
  });

  it.each([
    ['5m', 300_000],
    ['30s', 30_000],
    ['250ms', 250],
    ['2h', 7_200_000],
    ['10', 10_000],
  ])('parses the duration %s', (text, ms) => {
    expect(parseDuration(text, 'x')).toBe(ms);
  });

  it('refuses a bad duration', () => {
    expect(codeOf(() => parseDuration('5 minutes', '--tag-ttl'))).toBe('INVALID_ARGUMENT');
  });

  it('reads a YAML config; flags win and replace the same upstream', async () => {
    const file = join(dir, 'mirror.yaml');
    await writeFile(
      file,
      [
        'listen: 0.0.0.0:5000',
        'metricsListen: 0.0.0.0:9102',
        'store: /var/lib/strata',
        'defaultUpstream: docker.io',
        'tagTtl: 10m',
        'hosted: [team]',
        'upstreams:',
        '  - name: docker.io',
        '    url: https://registry-1.docker.io',
        '    credentials: /etc/strata/pull/.dockerconfigjson',
        '    timeouts: { connect: 5s, idle: 1m }',
        '  - name: quay.io',
        '    url: https://quay.io',
        '    certsDir: /etc/strata/certs.d',
        '    insecure: true',
      ].join('\n'),
    );
    const s = await mirrorSettings(
      { listen: '127.0.0.1:5002', upstream: ['quay.io=http://127.0.0.1:9000'] },
      file,
    );
    expect(s).toEqual({
      listen: '127.0.0.1:5002',
      metricsListen: '0.0.0.0:9102',
      store: '/var/lib/strata',
      defaultUpstream: 'docker.io',
      tagTtlMs: 600_000,
      hosted: ['team'],
      upstreams: [
        {
          name: 'docker.io',
          url: 'https://registry-1.docker.io',
          credentialsFile: '/etc/strata/pull/.dockerconfigjson',
          timeouts: { connectMs: 5000, idleMs: 60_000 },
        },
        { name: 'quay.io', url: 'http://127.0.0.1:9000', certsDir: '/etc/strata/certs.d', insecure: true },
      ],
    });
  });

  it('reads the client auth and connection limits; flags win; bad values are refused', async () => {
    const file = join(dir, 'limits.yaml');
    await writeFile(
      file,
      ['htpasswd: /etc/strata/htpasswd', 'maxConnections: 200', 'idleTimeout: 10s', 'maxHeaderSize: 8k'].join(
        '\n',
      ),
    );
    expect(await mirrorSettings({ maxConnections: '300' }, file)).toMatchObject({
      htpasswd: '/etc/strata/htpasswd',
      maxConnections: 300,
      idleTimeoutMs: 10_000,
      maxHeaderBytes: 8192,
    });
    for (const flags of [
      { maxConnections: '0' },
      { maxConnections: 'many' },
      { idleTimeout: '0s' },
      { maxHeaderSize: '100' },
      { maxHeaderSize: '2m' },
    ]) {
      const err = await mirrorSettings(flags).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(hasCode(err, 'INVALID_ARGUMENT'), JSON.stringify(flags)).toBe(true);
    }
  });

  it('refuses unknown keys and malformed files, naming the file', async () => {
    const file = join(dir, 'bad.yaml');
    for (const text of [
      'upstream: []',
      'upstreams: [{ name: docker.io }]',
      'upstreams: {}',
      ': : :',
      '[1, 2]',
    ]) {
      await writeFile(file, text);
      const err = await mirrorSettings({}, file).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(hasCode(err, 'INVALID_ARGUMENT'), text).toBe(true);
      expect((err as Error).message).toContain(file);
    }
  });
});

describe('mirror start-up', () => {
  it('rejects when the port is taken, leaving nothing running', async () => {
    const dir = await tempDir('strata-mirror-port-');
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    try {
      const port = (taken.address() as { port: number }).port;
      const err = await startMirrorServer({
        store: await FsStore.open(join(dir, 'store')),
        upstreams: [hub],
        port,
      }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect((err as NodeJS.ErrnoException).code).toBe('EADDRINUSE');
      // The metrics listener's port taken: refused as well, the mirror's own listener closed again.
      const store = await FsStore.open(join(dir, 'store'));
      const metricsErr = await startMirrorServer({
        store,
        upstreams: [hub],
        metricsListen: { host: '127.0.0.1', port },
      }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect((metricsErr as NodeJS.ErrnoException).code).toBe('EADDRINUSE');
    } finally {
      taken.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
