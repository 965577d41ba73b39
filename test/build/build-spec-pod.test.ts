/** `strata build --spec env:VAR --termination-message-path F`: the build pod's side, run as the pod runs it. */
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeBuildReport } from '../../src/api/v1alpha1/build-result.js';
import { specEnvVars } from '../../src/api/v1alpha1/spec-env.js';
import { runCli } from '../support/cli.js';
import { tempDir } from '../support/images.js';

const HELLO = fileURLToPath(new URL('../../examples/hello', import.meta.url));
/** The context as a pod gets it: a ConfigMap's keys as files in a mounted directory. */
const CONTEXT = { configMap: { name: 'hello' } };
const MOUNT = ['--context-mount', HELLO];
let work: string;
let env: Record<string, string>;

function imageBuild(spec: Record<string, unknown>): string {
  return JSON.stringify({
    apiVersion: 'strata.dev/v1alpha1',
    kind: 'ImageBuild',
    metadata: { name: 'pod', namespace: 'builds', uid: 'u-1', generation: 4 },
    spec,
  });
}

beforeAll(async () => {
  work = await tempDir('strata-spec-pod-');
  env = { STRATA_STORE: join(work, 'store') };
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe('build --spec in a pod', () => {
  it('reads the ImageBuild from the environment and writes the digest report', async () => {
    const report = join(work, 'ok.log');
    const run = await runCli(
      ['build', '--spec', 'env:STRATA_IMAGEBUILD', '--termination-message-path', report, ...MOUNT],
      {
        ...env,
        STRATA_IMAGEBUILD: imageBuild({ context: CONTEXT, output: { images: ['r.example/pod:v1'] } }),
      },
    );
    expect(run.stderr).toContain('#2 [stage-0 2/3] COPY hello.txt /hello.txt');
    expect(run.code).toBe(0);
    const r = decodeBuildReport(await readFile(report, 'utf8'));
    expect(r).toMatchObject({ ok: true, steps: 3 });
    const digest = /digest: (sha256:[a-f0-9]{64})/.exec(run.stdout)![1];
    expect(r && r.ok && r.digest).toBe(digest);
    expect(r && r.ok && r.image).toBe(`r.example/pod@${digest}`);
    expect(run.stdout).toContain('observedGeneration: 4');
  });

  it('a failed build exits non-zero with its reason and the log tail in the report', async () => {
    const report = join(work, 'fail.log');
    const run = await runCli(['build', '--spec', 'env:IB', '--termination-message-path', report, ...MOUNT], {
      ...env,
      IB: imageBuild({
        context: CONTEXT,
        dockerfile: { inline: 'FROM scratch\nCOPY nothere /\n' },
        output: { images: ['r.example/pod:v1'] },
      }),
    });
    expect(run.code).not.toBe(0);
    const r = decodeBuildReport(await readFile(report, 'utf8'));
    expect(r).toMatchObject({ ok: false, reason: 'BuildContextInvalid' });
    expect(r && !r.ok && r.message).toMatch(/^#1 \[stage-0 1\/2\] FROM scratch\n[\s\S]*"nothere" not found$/);
  });

  it('a bad or missing spec is reported too (InvalidSpec); the pod flags need --spec', async () => {
    const report = join(work, 'bad.log');
    const bad = await runCli(['build', '--spec', 'env:IB', '--termination-message-path', report], {
      ...env,
      IB: imageBuild({ context: CONTEXT, output: { images: [] } }),
    });
    expect(bad.code).not.toBe(0);
    expect(decodeBuildReport(await readFile(report, 'utf8'))).toMatchObject({
      ok: false,
      reason: 'InvalidSpec',
    });
    expect(bad.stderr).toMatch(/\$IB: .*spec\.output\.images/);
    const unset = await runCli(['build', '--spec', 'env:NOT_SET_ANYWHERE'], env);
    expect(unset.code).not.toBe(0);
    expect(unset.stderr).toMatch(/env:NOT_SET_ANYWHERE: the environment variable is not set/);
    const flags = await runCli(['build', '--termination-message-path', report, HELLO], env);
    expect(flags.code).not.toBe(0);
    expect(flags.stderr).toMatch(/go with --spec/);
  });

  it.each([
    ['a dir', { dir: '/var/run/secrets/kubernetes.io/serviceaccount' }, 'spec.context.dir'],
    ['a tarball path', { tarball: '/var/run/strata/docker/config.json' }, 'spec.context.tarball'],
    ['a file:// repository', { git: { url: 'file:///var/run/strata/docker' } }, 'spec.context.git.url'],
  ])(
    'refuses %s context: the pod’s own disk is not a build context (InvalidSpec)',
    async (_what, context, field) => {
      const report = join(work, 'disk.log');
      const run = await runCli(['build', '--spec', 'env:IB', '--termination-message-path', report], {
        ...env,
        IB: imageBuild({ context, output: { images: ['r.example/pod:v1'] } }),
      });
      expect(run.code).not.toBe(0);
      expect(run.stderr).toContain(`--spec env:IB: ${field}:`);
      expect(decodeBuildReport(await readFile(report, 'utf8'))).toMatchObject({
        ok: false,
        reason: 'InvalidSpec',
      });
    },
  );

  it('joins a spec that came in parts (a long inline Dockerfile), as a real exec passes them', async () => {
    const dockerfile = `FROM scratch\n${'# a long comment line to pad the Dockerfile\n'.repeat(8000)}COPY hello.txt /\n`;
    const vars = specEnvVars(
      'IB',
      imageBuild({
        context: CONTEXT,
        dockerfile: { inline: dockerfile },
        output: { images: ['r.example/pod:v2'] },
      }),
    );
    expect(vars.length).toBeGreaterThan(3);
    const run = await runCli(['build', '--spec', 'env:IB', ...MOUNT], {
      ...env,
      ...Object.fromEntries(vars.map((v) => [v.name, v.value])),
    });
    expect(run.stderr).toContain('COPY hello.txt /');
    expect(run.code).toBe(0);
  });
});
