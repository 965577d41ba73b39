/** `strata mirror serve` as a command: settings from a YAML file, flags over it, clear refusals. */
import type { ChildProcess } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, startCliServer } from '../support/cli.js';
import { freePort } from '../support/docker-registry.js';
import { tempDir } from '../support/images.js';
import { startHarness, type Harness } from './support.js';

let work: string;
let upstream: Harness;

beforeAll(async () => {
  work = await tempDir('strata-mirror-cli-');
  upstream = await startHarness();
  const body = Buffer.from('{"hello":"mirror"}');
  const { createHash } = await import('node:crypto');
  const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
  const res = await upstream.fetch(`/v2/team/app/blobs/uploads/?digest=${digest}`, { method: 'POST', body });
  expect(res.status).toBe(201);
}, 30_000);

afterAll(async () => {
  await upstream?.close();
  await rm(work, { recursive: true, force: true });
});

function serve(args: string[]): Promise<{ child: ChildProcess; url: string }> {
  return startCliServer(['mirror', 'serve', ...args]);
}

function stop(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    child.once('exit', (code) => resolve(code));
    child.kill('SIGTERM');
  });
}

describe('strata mirror serve', () => {
  it('takes its settings from --config, with --listen and --store from the command line', async () => {
    const config = join(work, 'mirror.yaml');
    await writeFile(
      config,
      [
        'listen: 127.0.0.1:1', // overridden below
        'defaultUpstream: upstream.test',
        'tagTtl: 30s',
        'maxSize: 1g',
        'hosted: [local]',
        'upstreams:',
        '  - name: upstream.test',
        `    url: ${upstream.server.url}`,
        '    timeouts: { connect: 5s }',
      ].join('\n'),
    );
    const { child, url } = await serve([
      '--config',
      config,
      '--listen',
      '127.0.0.1:0',
      '--store',
      join(work, 's'),
    ]);
    try {
      expect((await fetch(`${url}/v2/`)).status).toBe(200);
      const head = await fetch(`${url}/v2/team/app/blobs/sha256:${'0'.repeat(64)}`, { method: 'HEAD' });
      expect(head.status).toBe(404);
      const tags = await fetch(`${url}/v2/upstream.test/team/app/tags/list`);
      expect(tags.status).toBe(200); // known upstream, no tags yet
      expect((await fetch(`${url}/v2/local/x/blobs/uploads/`, { method: 'POST' })).status).toBe(202); // hosted
    } finally {
      expect(await stop(child)).toBe(0);
    }
  }, 30_000);

  it('serves /healthz, /readyz and /metrics on --metrics-listen as well as on --listen', async () => {
    const port = await freePort();
    const { child, url } = await serve([
      '--listen',
      '127.0.0.1:0',
      '--metrics-listen',
      `127.0.0.1:${port}`,
      '--upstream',
      `upstream.test=${upstream.server.url}`,
      '--default-upstream',
      'upstream.test',
      '--store',
      join(work, 'metrics-store'),
    ]);
    try {
      const blob = await fetch(`${url}/v2/team/app/blobs/sha256:${'0'.repeat(64)}`, { method: 'HEAD' });
      expect(blob.status).toBe(404);
      for (const base of [url, `http://127.0.0.1:${port}`]) {
        expect((await fetch(`${base}/healthz`)).status).toBe(200);
        expect((await fetch(`${base}/readyz`)).status).toBe(200);
        const text = await (await fetch(`${base}/metrics`)).text();
        expect(text).toMatch(/^strata_mirror_requests_total\{route="blob",method="HEAD",status="404"\} 1$/m);
        expect(text).toMatch(
          /^strata_mirror_upstream_requests_total\{upstream="upstream\.test",method="HEAD",status="404"\} 1$/m,
        );
      }
    } finally {
      expect(await stop(child)).toBe(0);
    }
  }, 30_000);

  it('refuses to start without an upstream, with a bad --upstream, --tag-ttl or config, naming what is wrong', async () => {
    const store = join(work, 'never');
    const cases: Array<[string[], RegExp]> = [
      [[], /--upstream/],
      [['--upstream', 'docker.io'], /--upstream "docker\.io": want NAME=URL/],
      [['--upstream', 'docker.io=ftp://x'], /must be http\(s\)/],
      [['--upstream', 'a=http://x', '--tag-ttl', 'soon'], /--tag-ttl/],
      [['--upstream', 'a=http://x', '--default-upstream', 'b'], /--default-upstream b/],
      [['--upstream', 'a=http://x', '--max-size', 'big'], /--max-size/],
      [['--upstream', 'a=http://x', '--metrics-listen', 'nowhere'], /invalid --metrics-listen "nowhere"/],
      [['--config', join(work, 'missing.yaml')], /missing\.yaml/],
      [['--upstream', 'a=http://x', '--max-connections', '0'], /--max-connections/],
      [['--upstream', 'a=http://x', '--idle-timeout', 'never'], /--idle-timeout/],
      [['--upstream', 'a=http://x', '--max-header-size', '10'], /--max-header-size/],
      [['--upstream', 'a=http://x', '--htpasswd', join(work, 'no-htpasswd')], /no-htpasswd/],
    ];
    for (const [args, message] of cases) {
      const r = await runCli(['--store', store, 'mirror', 'serve', '--listen', '127.0.0.1:0', ...args]);
      expect(r.code, args.join(' ')).not.toBe(0);
      expect(r.stderr + r.stdout, args.join(' ')).toMatch(message);
    }
  }, 30_000);

  it('requires Basic auth with --htpasswd and bounds connections with --max-connections', async () => {
    const { execFileSync } = await import('node:child_process');
    const { requirePeer } = await import('../support/peers.js');
    const file = join(work, 'htpasswd');
    const line = execFileSync(requirePeer('htpasswd'), ['-Bbn', '-C', '5', 'ci', 'ci-pw'], {
      encoding: 'utf8',
    });
    await writeFile(file, line);
    const { child, url } = await serve([
      '--upstream',
      `upstream.test=${upstream.server.url}`,
      '--default-upstream',
      'upstream.test',
      '--htpasswd',
      file,
      '--max-connections',
      '5',
      '--idle-timeout',
      '2s',
      '--listen',
      '127.0.0.1:0',
      '--store',
      join(work, 'auth-store'),
    ]);
    try {
      const denied = await fetch(`${url}/v2/`);
      expect(denied.status).toBe(401);
      expect(denied.headers.get('www-authenticate')).toBe('Basic realm="strata"');
      const authorization = `Basic ${Buffer.from('ci:ci-pw').toString('base64')}`;
      const tags = await fetch(`${url}/v2/team/app/tags/list`, { headers: { authorization } });
      expect(tags.status).toBe(200);
      expect((await fetch(`${url}/v2/`, { headers: { 'X-Big': 'a'.repeat(20_000) } })).status).toBe(431);
    } finally {
      expect(await stop(child)).toBe(0);
    }
  }, 30_000);
});
