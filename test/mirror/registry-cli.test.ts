import type { ChildProcess } from 'node:child_process';
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, startCliServer } from '../support/cli.js';
import { rawErrorCode, rawRequest, tempDir } from './support.js';

let work: string;
beforeAll(async () => {
  work = await tempDir('strata-registry-cli-');
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** Starts `strata registry serve` with extra flags; resolves with its URL once it printed it. */
function serve(root: string, flags: string[] = []): Promise<{ child: ChildProcess; url: string }> {
  return startCliServer(['registry', 'serve', '--listen', '127.0.0.1:0', '--root', root, ...flags]);
}

function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

describe('strata registry gc', () => {
  it('refuses a --root that does not exist, and creates nothing there', async () => {
    const missing = join(work, 'no', 'such', 'registry');
    const run = await runCli(['--json', 'registry', 'gc', '--root', missing]);
    expect(run.code).toBe(1);
    expect(JSON.parse(run.stdout.trim().split('\n').pop()!)).toMatchObject({
      type: 'error',
      code: 'NOT_FOUND',
    });
    expect(run.stderr).toContain(missing);
    await expect(stat(join(work, 'no'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('refuses a directory that is not a registry storage, and leaves it empty', async () => {
    const empty = join(work, 'empty');
    await mkdir(empty);
    const run = await runCli(['--json', 'registry', 'gc', '--root', empty, '--dry-run']);
    expect(run.code).toBe(1);
    expect(JSON.parse(run.stdout.trim().split('\n').pop()!)).toMatchObject({ code: 'NOT_FOUND' });
    expect(await readdir(empty)).toEqual([]);
  });

  it('collects a storage that `registry serve` made', async () => {
    const root = join(work, 'served');
    const { child } = await serve(root);
    await stop(child);
    const run = await runCli(['registry', 'gc', '--root', root, '--dry-run']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^Would delete 0 blobs/);
  });
});

describe('strata registry serve', () => {
  it('survives a chunked manifest PUT over 4 MiB (413) and honours the upload limit flags', async () => {
    const { child, url } = await serve(join(work, 'limits'), ['--max-uploads-per-client', '1']);
    try {
      const pieces = Array.from({ length: 80 }, () => Buffer.alloc(64 * 1024, 0x20));
      const big = await rawRequest(url, {
        method: 'PUT',
        path: '/v2/big/manifests/v1',
        headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
        body: pieces,
      });
      expect(big.status).toBe(413);
      expect(rawErrorCode(big)).toBe('MANIFEST_INVALID');
      expect((await rawRequest(url, { path: '/v2/' })).status).toBe(200);
      expect(child.exitCode).toBeNull();

      const first = await rawRequest(url, { method: 'POST', path: '/v2/a/blobs/uploads/' });
      const second = await rawRequest(url, { method: 'POST', path: '/v2/a/blobs/uploads/' });
      expect([first.status, second.status]).toEqual([202, 429]);
    } finally {
      await stop(child);
    }
  });

  it('refuses a malformed limit as a usage error', async () => {
    const run = await runCli(['registry', 'serve', '--root', join(work, 'x'), '--upload-timeout', '0']);
    expect(run.code).toBe(2);
  });

  it('honours --max-uploads-per-repo and refuses a malformed one', async () => {
    const { child, url } = await serve(join(work, 'per-repo'), ['--max-uploads-per-repo', '1']);
    try {
      const first = await rawRequest(url, { method: 'POST', path: '/v2/a/blobs/uploads/' });
      const second = await rawRequest(url, {
        method: 'POST',
        path: '/v2/a/blobs/uploads/',
        localAddress: '127.0.0.2',
      });
      const other = await rawRequest(url, { method: 'POST', path: '/v2/b/blobs/uploads/' });
      expect([first.status, second.status, other.status]).toEqual([202, 429, 202]);
      expect(rawErrorCode(second)).toBe('TOOMANYREQUESTS');
    } finally {
      await stop(child);
    }
    const run = await runCli(['registry', 'serve', '--root', join(work, 'y'), '--max-uploads-per-repo', 'x']);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/--max-uploads-per-repo/);
  });

  it('requires Basic auth for pulls and pushes with --htpasswd', async () => {
    const { execFileSync } = await import('node:child_process');
    const { writeFile } = await import('node:fs/promises');
    const { requirePeer } = await import('../support/peers.js');
    const file = join(work, 'htpasswd');
    await writeFile(
      file,
      execFileSync(requirePeer('htpasswd'), ['-Bbn', '-C', '5', 'pusher', 'pw'], { encoding: 'utf8' }),
    );
    const { child, url } = await serve(join(work, 'auth'), ['--htpasswd', file, '--max-connections', '10']);
    try {
      const denied = await rawRequest(url, { method: 'POST', path: '/v2/a/blobs/uploads/' });
      expect(denied.status).toBe(401);
      expect(denied.headers['www-authenticate']).toBe('Basic realm="strata"');
      const headers = { Authorization: `Basic ${Buffer.from('pusher:pw').toString('base64')}` };
      expect((await rawRequest(url, { method: 'POST', path: '/v2/a/blobs/uploads/', headers })).status).toBe(
        202,
      );
    } finally {
      await stop(child);
    }
    const run = await runCli(['registry', 'serve', '--root', join(work, 'z'), '--max-connections', '0']);
    expect(run.code).toBe(2);
  });
});
