/**
 * What a build author cannot reach, through real `strata build` runs: files outside the context through a
 * symlinked `.dockerignore` (dir and tarball contexts; a malformed pattern names its line, never its text), and a
 * network wider than the build's (`RUN --network=host` under `--network none` / `spec.network: none`).
 */
import { execFileSync } from 'node:child_process';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { copyFile, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeBuildReport } from '../../src/api/v1alpha1/build-result.js';
import { runCli, type CliRun } from '../support/cli.js';
import { tempDir } from '../support/images.js';
import { requirePeer } from '../support/peers.js';
import { requireRootAndOverlay, unmountAllUnder } from '../support/root.js';
import { requireRunc } from './run-support.js';

/** Content of a file outside every context: a `[` makes it a malformed pattern, were it ever parsed. */
const SECRET = 'TOPSECRET-[-0xC0FFEE';
let work: string;
let env: Record<string, string>;
let secretFile: string;
let server: Server;
let port: number;
/** Connections the host-side server accepted: a step that reached the host's loopback counts one. */
let hits = 0;

/** A fresh context directory with `files` (a `->` value makes a symlink). */
async function context(files: Record<string, string>): Promise<string> {
  const dir = await tempDir('strata-isolation-ctx-');
  for (const [name, content] of Object.entries(files)) {
    await mkdir(join(dir, name, '..'), { recursive: true });
    if (content.startsWith('->')) await symlink(content.slice(2), join(dir, name));
    else await writeFile(join(dir, name), content);
  }
  return dir;
}

/** A ConfigMap mount (as the kubelet makes it, flattened) holding `tree` as a gzip tarball under one key. */
async function tarballConfigMap(tree: string): Promise<string> {
  const mount = await tempDir('strata-isolation-cm-');
  execFileSync('tar', ['-czf', join(mount, 'ctx.tar.gz'), '-C', tree, '.']);
  return mount;
}

/** `strata build --spec` as a build pod runs it, on a configMap tarball context. */
function podBuild(mount: string, report: string, spec: Record<string, unknown>): Promise<CliRun> {
  const ib = {
    apiVersion: 'strata.dev/v1alpha1',
    kind: 'ImageBuild',
    metadata: { name: 'iso', namespace: 'builds', uid: 'u-iso', generation: 1 },
    spec: {
      context: { configMap: { name: 'ctx', key: 'ctx.tar.gz' } },
      output: { images: ['r.example/iso:v1'] },
      ...spec,
    },
  };
  const args = ['build', '--spec', 'env:IB', '--termination-message-path', report, '--context-mount', mount];
  return runCli(args, { ...env, IB: JSON.stringify(ib) });
}

function everything(run: CliRun): string {
  return `${run.stdout}\n${run.stderr}`;
}

beforeAll(async () => {
  requireRootAndOverlay();
  requireRunc();
  work = await tempDir('strata-isolation-');
  env = { STRATA_STORE: join(work, 'store') };
  secretFile = join(work, 'outside', 'secret');
  await mkdir(join(work, 'outside'));
  await writeFile(secretFile, `${SECRET}\n`);
  server = createServer((socket) => {
    hits++;
    socket.end('reached\n');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
}, 60_000);

afterAll(async () => {
  server?.close();
  if (work) {
    unmountAllUnder(work);
    await rm(work, { recursive: true, force: true });
  }
});

describe('.dockerignore is read inside the context only', () => {
  /** A context whose build copies a.txt, with `extra` files (and links). */
  const ignoring = (extra: Record<string, string>): Promise<string> =>
    context({ Dockerfile: 'FROM scratch\nCOPY a.txt /\n', 'a.txt': 'a', ...extra });

  it.each([
    ['an absolute .dockerignore link', '.dockerignore', () => `->${secretFile}`],
    ['a ../ climbing .dockerignore link', '.dockerignore', () => `->../../../../../../..${secretFile}`],
    ['an absolute <Dockerfile>.dockerignore link', 'Dockerfile.dockerignore', () => `->${secretFile}`],
  ])(
    'dir context, %s: the outside file is never read (as missing)',
    async (_, name, link) => {
      const ctx = await ignoring({ [name]: link() });
      const run = await runCli(['build', '--no-cache', ctx], env);
      expect(everything(run)).not.toContain('TOPSECRET');
      expect(run.stderr).toContain('COPY a.txt /');
      expect(run.code).toBe(0);
    },
    60_000,
  );

  it('a link resolves with the context as / (BuildKit): absolute and climbing targets land inside', async () => {
    for (const link of ['/lists/ignore', '../../../../lists/ignore']) {
      const ctx = await ignoring({
        'lists/ignore': 'a.txt\n',
        '.dockerignore': `->${link}`,
      });
      const run = await runCli(['build', '--no-cache', ctx], env);
      expect(run.code).not.toBe(0);
      expect(run.stderr).toContain('"a.txt" not found (it is excluded by .dockerignore)');
    }
  }, 60_000);

  it('a malformed pattern names the file and line, not the text', async () => {
    const ctx = await ignoring({
      '.dockerignore': `ok\n# comment\n${SECRET}\n`,
    });
    const run = await runCli(['build', ctx], env);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain('.dockerignore line 3: unterminated character class');
    expect(everything(run)).not.toContain('TOPSECRET');
    await writeFile(join(ctx, 'Dockerfile.dockerignore'), 'x\\');
    const own = await runCli(['build', ctx], env);
    expect(own.stderr).toContain('Dockerfile.dockerignore line 1: the pattern ends with a backslash');
  }, 60_000);

  it('tarball context in a build pod: links out are not followed; the report never holds the file', async () => {
    const tree = await ignoring({
      '.dockerignore': `->${secretFile}`,
      'Dockerfile.dockerignore': `->../../../../../../..${secretFile}`,
    });
    const mount = await tarballConfigMap(tree);
    const report = join(work, 'tarball.log');
    const run = await podBuild(mount, report, {});
    expect(everything(run)).not.toContain('TOPSECRET');
    expect(await readFile(report, 'utf8')).not.toContain('TOPSECRET');
    expect(decodeBuildReport(await readFile(report, 'utf8'))).toMatchObject({ ok: true });
    expect(run.code).toBe(0);
  }, 60_000);
});

describe("RUN --network cannot widen the build's network", () => {
  let ctx: string;
  // busybox nc (its wget crashes, static, on this host): exit 0 when it connected, 1 when it could not.
  const connect = (flag: string): string =>
    `RUN ${flag} ["/bin/busybox", "nc", "-w", "5", "127.0.0.1", "${port}"]`;
  const dockerfile = (run: string): string => `FROM scratch\nCOPY busybox /bin/busybox\n${run}\n`;

  beforeAll(async () => {
    ctx = await context({});
    await copyFile(requirePeer('busybox'), join(ctx, 'busybox'));
  });

  async function build(network: string, run: string): Promise<CliRun> {
    await writeFile(join(ctx, 'Dockerfile'), dockerfile(run));
    return runCli(['build', '--no-cache', '--network', network, ctx], env);
  }

  it('--network none: RUN --network=host fails naming the step, before running anything', async () => {
    const before = hits;
    const run = await build('none', connect('--network=host'));
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain(
      "Dockerfile:3: stage-0: RUN --network=host is not allowed: the build's network is none",
    );
    expect(hits).toBe(before);
  }, 60_000);

  it('--network none: RUN --network=default (and no flag) has no network', async () => {
    const before = hits;
    for (const flag of ['--network=default', '']) {
      const run = await build('none', connect(flag));
      expect(run.code).not.toBe(0);
      expect(run.stderr).toMatch(/Dockerfile:3: stage-0 step 3\/3: RUN .*nc.* exited with code 1/);
    }
    expect(hits).toBe(before);
  }, 60_000);

  it('--network host: RUN --network=host reaches the host; RUN --network=none never does', async () => {
    const before = hits;
    const ok = await build('host', connect('--network=host'));
    expect(ok.code).toBe(0);
    expect(hits).toBe(before + 1);
    const none = await build('host', connect('--network=none'));
    expect(none.code).not.toBe(0);
    expect(hits).toBe(before + 1);
  }, 60_000);

  it('an ImageBuild with network: none in a build pod fails RUN --network=host the same way', async () => {
    await writeFile(join(ctx, 'Dockerfile'), dockerfile(connect('--network=host')));
    const mount = await tarballConfigMap(ctx);
    const report = join(work, 'net.log');
    const before = hits;
    const run = await podBuild(mount, report, { network: 'none' });
    expect(run.code).not.toBe(0);
    const r = decodeBuildReport(await readFile(report, 'utf8'));
    expect(r).toMatchObject({ ok: false, reason: 'DockerfileInvalid' });
    expect(r && !r.ok && r.message).toContain(
      "RUN --network=host is not allowed: the build's network is none",
    );
    expect(hits).toBe(before);
  }, 60_000);
});
