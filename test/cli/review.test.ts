/** CLI behaviours fixed in review: usage conflicts, JSON errors, rmi across failures, foreign refs, Ctrl-C. */
import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { runCli } from '../support/cli.js';
import { makeTarball, tempDir } from '../support/images.js';

const CLI = fileURLToPath(new URL('../../bin/strata.js', import.meta.url));
let work: string;
let env: Record<string, string>;
let digest: string;

beforeAll(async () => {
  work = await tempDir('strata-cli-review-');
  env = { STRATA_STORE: join(work, 'store') };
  const tar = await makeTarball({ 'etc/hostname': 'x' });
  const imported = await runCli(['import', tar, 'demo/app:1'], env);
  expect(imported.code).toBe(0);
  digest = imported.stdout.trim();
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('strata CLI (review fixes)', () => {
  it('--platform with --all-platforms is a usage error (exit 2)', async () => {
    const r = await runCli(['pull', '--platform', 'linux/amd64', '--all-platforms', 'x/y:1'], env);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/cannot be used with/);
  });

  it('--json errors carry the stable code on stdout as well as one line on stderr', async () => {
    const r = await runCli(['--json', 'inspect', 'nothing/here:1'], env);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(JSON.parse(r.stdout.trim().split('\n').at(-1)!)).toMatchObject({
      type: 'error',
      code: 'NOT_FOUND',
      message: expect.stringContaining('nothing/here:1'),
    });
  });

  it('images lists a ref another tool wrote that is not a docker reference', async () => {
    const store = await FsStore.open(env.STRATA_STORE!);
    const d = await store.getRef('docker.io/demo/app:1');
    await store.setRef('MyTag', d!);
    const r = await runCli(['images'], env);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^MyTag\s+<none>/m);
    await store.deleteRef('MyTag');
  });

  it('rmi removes what it can, reports each failure, and exits 1; an ID naming several refs needs --force', async () => {
    expect((await runCli(['tag', 'demo/app:1', 'demo/app:2'], env)).code).toBe(0);
    const conflict = await runCli(['rmi', digest.slice(7, 19)], env);
    expect(conflict.code).toBe(1);
    expect(conflict.stderr).toMatch(/referenced by 2 refs/);

    const mixed = await runCli(['rmi', '--no-prune', 'nothing/here:1', 'demo/app:2'], env);
    expect(mixed.code).toBe(1);
    expect(mixed.stdout).toContain('Untagged: docker.io/demo/app:2');
    expect(mixed.stderr).toContain('nothing/here:1');

    expect((await runCli(['tag', 'demo/app:1', 'demo/app:3'], env)).code).toBe(0);
    const forced = await runCli(['rmi', '-f', digest.slice(7, 19)], env);
    expect(forced.code).toBe(0);
    expect(forced.stdout).toContain('Untagged: docker.io/demo/app:1');
    expect(forced.stdout).toContain('Untagged: docker.io/demo/app:3');
    expect(forced.stdout).toMatch(/Deleted: sha256:/);
  });

  it('Ctrl-C during a pull aborts it and exits 130', async () => {
    // A registry that accepts requests and never answers: the pull can only end by the interrupt.
    let seen!: () => void;
    const requested = new Promise<void>((resolve) => (seen = resolve));
    const server: Server = createServer(() => seen());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    try {
      const child = spawn(process.execPath, [CLI, 'pull', `127.0.0.1:${port}/hang/app:1`], {
        env: { ...process.env, ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      await requested;
      child.kill('SIGINT');
      expect(await exited).toBe(130);
      expect(stderr).toMatch(/interrupted|abort/);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
