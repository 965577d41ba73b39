/** `strata build`, `strata build --spec`, `strata run` and `strata builder prune` as a user runs them. */
import { execFileSync, spawn } from 'node:child_process';
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../support/cli.js';
import { tempDir } from '../support/images.js';
import { requireRootAndOverlay, unmountAllUnder } from '../support/root.js';
import { requireRunc } from './run-support.js';
import { requirePeer } from '../support/peers.js';

const CLI = fileURLToPath(new URL('../../bin/strata.js', import.meta.url));
let work: string;
let env: Record<string, string>;
let ctx: string;

beforeAll(async () => {
  requireRootAndOverlay();
  requireRunc();
  work = await tempDir('strata-build-cli-');
  env = { STRATA_STORE: join(work, 'store') };
  ctx = join(work, 'ctx');
  await mkdir(ctx);
  await copyFile(requirePeer('busybox'), join(ctx, 'busybox'));
  await writeFile(
    join(ctx, 'Dockerfile'),
    'FROM scratch\nCOPY busybox /bin/busybox\nCMD ["/bin/busybox", "sh", "-c", "echo ran; exit 7"]\n',
  );
});

afterAll(async () => {
  if (work) {
    unmountAllUnder(work);
    await rm(work, { recursive: true, force: true });
  }
});

describe('strata build (CLI)', () => {
  it('prints docker-style plain progress and the digest; writes --iidfile and --metadata-file; a rebuild is CACHED', async () => {
    const iid = join(work, 'iid');
    const meta = join(work, 'meta.json');
    const first = await runCli(
      ['build', '-t', 'demo/cli:1', '--iidfile', iid, '--metadata-file', meta, ctx],
      env,
    );
    expect(first.stderr).toContain('#1 [stage-0 1/3] FROM scratch');
    expect(first.stderr).toContain('#2 [stage-0 2/3] COPY busybox /bin/busybox');
    expect(first.stderr).toMatch(/#2 DONE \d+\.\d+s/);
    expect(first.code).toBe(0);
    const digest = first.stdout.trim();
    expect(digest).toMatch(/^sha256:[a-f0-9]{64}$/);
    expect(await readFile(iid, 'utf8')).toBe(digest);
    const metadata = JSON.parse(await readFile(meta, 'utf8')) as Record<string, unknown>;
    expect(metadata['containerimage.digest']).toBe(digest);
    expect(metadata['image.name']).toBe('docker.io/demo/cli:1');

    const again = await runCli(['build', '-t', 'demo/cli:1', ctx], env);
    expect(again.stderr).toContain('#2 CACHED');
    expect(again.stdout.trim()).toBe(digest);
  }, 60_000);

  it('--json writes build-step events and a result', async () => {
    const run = await runCli(['--json', 'build', ctx], env);
    expect(run.code).toBe(0);
    const lines = run.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { type: string; status?: string; verb?: string; cacheHits?: number });
    expect(lines.filter((l) => l.type === 'build-step').length).toBeGreaterThanOrEqual(3);
    expect(lines.at(-1)).toMatchObject({ type: 'result', verb: 'build', cacheHits: 2 });
  }, 60_000);

  it('strata run prints the command output and exits with its status', async () => {
    const run = await runCli(['run', '--rm', 'demo/cli:1'], env);
    expect(run.stdout).toBe('ran\n');
    expect(run.code).toBe(7);
    const override = await runCli(
      ['run', '--rm', 'demo/cli:1', '--', '/bin/busybox', 'echo', '-n', 'other'],
      env,
    );
    expect(override.stdout).toBe('other');
    expect(override.code).toBe(0);
    const withEnv = await runCli(
      [
        'run',
        '--rm',
        '-e',
        'GREETING=hi',
        '-e',
        'PATH=/bin',
        'demo/cli:1',
        '--',
        '/bin/busybox',
        'sh',
        '-c',
        'echo $GREETING $PATH',
      ],
      env,
    );
    expect(withEnv.stdout).toBe('hi /bin\n');
    expect((await runCli(['ps'], env)).stdout.trim().split('\n')).toHaveLength(1); // the header only
  }, 60_000);

  it('builder prune forgets the cache', async () => {
    const prune = await runCli(['builder', 'prune'], env);
    expect(prune.code).toBe(0);
    expect(prune.stdout).toMatch(/^Removed [1-9]\d* build cache entries, freed \S+ in [1-9]\d* blobs/);
    const rebuilt = await runCli(['build', ctx], env);
    expect(rebuilt.stderr).not.toContain('CACHED');
  }, 60_000);

  it('build --spec runs an ImageBuild file and prints its status; a failing spec prints Failed with a reason', async () => {
    const ok = await runCli(['build', '--spec', 'examples/imagebuild-hello.yaml'], env);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/^status:\n {2}phase: Succeeded\n {2}digest: sha256:[a-f0-9]{64}\n/);
    expect(ok.stdout).toContain('image: localhost:5000/examples/hello@sha256:');
    const spec = join(work, 'bad.yaml');
    await writeFile(
      spec,
      [
        'apiVersion: strata.dev/v1alpha1',
        'kind: ImageBuild',
        'metadata: {name: bad, generation: 3}',
        'spec:',
        `  context: {dir: ${JSON.stringify(ctx)}}`,
        '  dockerfile: {inline: "FROM scratch\\nNOPE x\\n"}',
        '  output: {images: [example.com/bad:1]}',
        '',
      ].join('\n'),
    );
    const bad = await runCli(['build', '--spec', spec], env);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toContain('phase: Failed');
    expect(bad.stdout).toContain('reason: DockerfileInvalid');
    expect(bad.stdout).toContain('observedGeneration: 3');
    expect(bad.stderr).toMatch(/Dockerfile:2/);
  }, 60_000);

  it.each(['SIGTERM', 'SIGHUP', 'SIGINT'] as const)(
    '%s during a RUN kills the step, unmounts and removes its container, and tags nothing',
    async (signal) => {
      const dir = join(work, `sig-${signal}`);
      await mkdir(dir);
      await copyFile(requirePeer('busybox'), join(dir, 'busybox'));
      const marker = `sleep ${{ SIGTERM: 6101, SIGHUP: 6102, SIGINT: 6103 }[signal]}`;
      await writeFile(
        join(dir, 'Dockerfile'),
        `FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "sh", "-c", "/bin/busybox ${marker} & /bin/busybox ${marker}"]\n`,
      );
      const child = spawn(process.execPath, [CLI, 'build', '-t', `sig/${signal.toLowerCase()}:1`, dir], {
        env: { ...process.env, ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      const running = new Promise<void>((resolve) =>
        child.stderr.on('data', (d: Buffer) => {
          stderr += d.toString();
          if (/#3 \[/.test(stderr)) setTimeout(resolve, 1000);
        }),
      );
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      await running;
      child.kill(signal);
      if (signal === 'SIGINT') setTimeout(() => child.kill('SIGINT'), 50); // a second Ctrl-C must not cut cleanup
      expect(await exited).toBe(130);
      // `[s]leep`: pgrep's own shell, whose command line holds the pattern, must not match it. The kernel tears a
      // PID namespace down asynchronously once its init is gone: allow it a moment.
      const pattern = `[s]${marker.slice(1)}`;
      const left = (): string =>
        execFileSync('sh', ['-c', `pgrep -af '${pattern}' || true`], { encoding: 'utf8' }).trim();
      for (let i = 0; i < 30 && left() !== ''; i++) await new Promise((r) => setTimeout(r, 100));
      expect(left()).toBe('');
      expect((await runCli(['ps'], env)).stdout.trim().split('\n')).toHaveLength(1); // the header only
      expect(await readFile('/proc/self/mountinfo', 'utf8')).not.toContain(join(work, 'store'));
      expect((await runCli(['inspect', `sig/${signal.toLowerCase()}:1`], env)).code).toBe(1);
    },
    60_000,
  );

  it('usage errors are one line', async () => {
    const none = await runCli(['build'], env);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/give a build context directory/);
    const both = await runCli(['build', '--spec', 'x.yaml', ctx], env);
    expect(both.stderr).toMatch(/--spec takes the context from the spec/);
  });
});
