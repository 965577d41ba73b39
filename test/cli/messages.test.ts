/** What the CLI says: usage errors, plain messages for system errors, gc's report, --help, --log-level. */
import { execFile } from 'node:child_process';
import { chmod, mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, type CliRun } from '../support/cli.js';
import { makeTarball, tempDir } from '../support/images.js';

const CLI = fileURLToPath(new URL('../../bin/strata.js', import.meta.url));
let work: string;
let env: Record<string, string>;

beforeAll(async () => {
  work = await tempDir('strata-cli-messages-');
  env = { STRATA_STORE: join(work, 'store') };
  const r = await runCli(
    ['import', await makeTarball({ 'etc/hostname': 'x', 'big.bin': 50_000 }), 'msg/app:1'],
    env,
  );
  expect(r.code, r.stderr).toBe(0);
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** The lines of a stream's text. */
const lines = (text: string): string[] => text.trim().split('\n');

describe('usage errors', () => {
  it('print one line and a hint naming the verb, not the whole help; exit 2', async () => {
    const missing = await runCli(['pull'], env);
    expect(missing.code).toBe(2);
    expect(lines(missing.stderr)).toEqual([
      "strata: missing required argument 'ref'",
      "see 'strata pull --help'",
    ]);
    const unknown = await runCli(['frobnicate'], env);
    expect(unknown.code).toBe(2);
    expect(lines(unknown.stderr)).toEqual(["strata: unknown command 'frobnicate'", "see 'strata --help'"]);
    const option = await runCli(['registry', 'serve', '--bogus'], env);
    expect(lines(option.stderr)).toEqual([
      "strata: unknown option '--bogus'",
      "see 'strata registry serve --help'",
    ]);
    const level = await runCli(['--log-level', 'loud', 'images'], env);
    expect(level.code).toBe(2);
    expect(level.stderr).toMatch(/debug, info, warn, error, silent/);
    expect(lines(level.stderr)).toHaveLength(2);
  });

  it('an invalid value found by the verb is a usage error with the same hint', async () => {
    const r = await runCli(['create', '--driver', 'zfs', 'msg/app:1'], env);
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toEqual([
      'strata: --driver zfs: use overlay or vfs',
      "see 'strata create --help'",
    ]);
  });

  it('--help describes the verbs that exist, the operator among them', async () => {
    const r = await runCli(['--help'], env);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/run\s+the\s+Kubernetes\s+operator\s+\(controller\)/);
    const verbs = [...r.stdout.matchAll(/^ {2}([a-z]+)[| ]/gm)].map((m) => m[1]);
    expect(verbs).toEqual(
      expect.arrayContaining([
        'pull',
        'push',
        'images',
        'commit',
        'save',
        'load',
        'gc',
        'build',
        'run',
        'mirror',
        'controller',
      ]),
    );
    expect(verbs).toContain('mirror');
    expect(r.stdout).toContain('--log-level <level>');
  });
});

describe('plain messages instead of raw Node errors', () => {
  it('unpacking onto a file names the path and says what is wrong (ALREADY_EXISTS)', async () => {
    const file = join(work, 'a-file');
    await writeFile(file, 'x');
    const r = await runCli(['--json', 'unpack', 'msg/app:1', file], env);
    expect(r.code).toBe(1);
    expect(lines(r.stderr)).toEqual([
      `strata: unpack msg/app:1 ${file}: ${file} already exists and is not a directory`,
    ]);
    expect(JSON.parse(lines(r.stdout).at(-1)!)).toMatchObject({ type: 'error', code: 'ALREADY_EXISTS' });
  });

  it('a store the user may not create says so, naming the store (PERMISSION_DENIED)', async () => {
    const locked = join(work, 'locked');
    await mkdir(locked);
    await chmod(locked, 0o555);
    const store = join(locked, 'store');
    // Root may write anywhere: run the CLI as nobody then.
    const asNobody = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
    const r = await new Promise<CliRun>((resolve) => {
      execFile(
        process.execPath,
        [CLI, '--json', '--store', store, 'images'],
        { ...asNobody, env: { ...process.env, HOME: '/tmp' } },
        (err, stdout, stderr) => resolve({ code: err ? Number(err.code) : 0, stdout, stderr }),
      );
    });
    expect(r.code).toBe(1);
    expect(lines(r.stderr)).toEqual([`strata: store ${store}: permission denied (${store})`]);
    expect(JSON.parse(lines(r.stdout).at(-1)!)).toMatchObject({ code: 'PERMISSION_DENIED' });
  });

  it('a registry that refuses connections is named, without the raw ECONNREFUSED text', async () => {
    // A port that was free a moment ago: nothing listens there.
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const r = await runCli(['pull', `127.0.0.1:${port}/x/y:1`], env);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`strata: pull 127.0.0.1:${port}/x/y:1:`);
    expect(r.stderr).toContain(`cannot connect to 127.0.0.1:${port}: connection refused`);
    expect(r.stderr).not.toMatch(/connect ECONNREFUSED/);
  });
});

describe('gc says what stays', () => {
  it('reports blobs in use, blobs the grace period keeps, and the layer cache with its bytes', async () => {
    const cli = async (...args: string[]): Promise<string> => {
      const r = await runCli(args, env);
      expect(r.code, r.stderr).toBe(0);
      return r.stdout;
    };
    // An image untagged without pruning: its blobs are unreferenced but young, so gc keeps them.
    await cli('import', await makeTarball({ 'tmp.txt': 'gone soon' }), 'msg/tmp:1');
    await cli('rmi', '--no-prune', 'msg/tmp:1');
    await cli('create', '--driver', 'vfs', '--name', 'gcbox', 'msg/app:1');
    const report = JSON.parse(await cli('--json', 'gc')) as {
      removed: string[];
      report: {
        inUse: { count: number };
        graceKept: { count: number; bytes: number };
        layerCache: { count: number; bytes: number };
        lines: string[];
      };
    };
    expect(report.removed).toEqual([]);
    // msg/app:1: its manifest, config and layer.
    expect(report.report.inUse.count).toBe(3);
    expect(report.report.graceKept.count).toBe(3);
    expect(report.report.layerCache.count).toBe(1);
    // The vfs tree holds the image's files (50,000 random bytes and the hostname) plus its small `done` marker.
    expect(report.report.layerCache.bytes).toBeGreaterThanOrEqual(50_001);
    expect(report.report.layerCache.bytes).toBeLessThan(51_001);
    const text = await cli('gc', '--dry-run');
    expect(text).toMatch(/^Would delete 0 blobs, 0B$/m);
    expect(text).toMatch(/^Kept 3 blobs \(.+\) used by 1 image ref and 1 container$/m);
    expect(text).toMatch(/^Kept 3 unreferenced blobs \(.+\) younger than the 1 h grace period/m);
    expect(text).toMatch(/^Layer cache: 1 unpacked layer, 50\.[0-9]kB on disk/m);
    await cli('rm', 'gcbox');
  });

  it('a real gc prunes the size records of deleted blobs', async () => {
    const sizes = join(env.STRATA_STORE!, 'strata/sizes');
    await runCli(['images'], env); // measures msg/app:1's layer
    const before = await readdir(sizes);
    expect(before).toHaveLength(1);
    const r = await runCli(['rmi', 'msg/app:1'], env);
    expect(r.code, r.stderr).toBe(0);
    expect((await runCli(['gc'], env)).code).toBe(0);
    expect(await readdir(sizes)).toEqual([]);
  });
});
