/**
 * The quickstart's operator act as a user runs it: `bash scripts/demo.sh operator` (the embedded registry, then
 * demo/operator.ts: control plane, CRDs, the hello-world ImageBuild, `strata controller`, the node stand-in) ends
 * with the ImageBuild Ready, and its digest is the one a local `strata build --spec` of the same spec makes (the
 * example is reproducible: `timestamp: 0`). Then nothing is left behind — no process, no temp dir, no mount — also
 * when a Ctrl-C (SIGINT to the whole process group, as a terminal sends it) lands mid-act.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../support/cli.js';
import { requireRoot } from './support.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const DRIVER = join(ROOT, 'dist/demo/operator.js');
/** Generous: the act takes well under a minute on an idle machine, several on a loaded 2-core one. */
const RUN_TIMEOUT_MS = 420_000;

interface DemoRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  out: string;
  err: string;
}

let tmp: string;
/** The run in progress: interrupted like a user would (Ctrl-C) if a test gives up on it. */
let current: { child: ChildProcess; done: Promise<unknown> } | undefined;

/**
 * Runs `bash scripts/demo.sh operator` in its own process group with TMPDIR=`dir`; when `interruptOn` appears in
 * its output, sends SIGINT to the whole group.
 */
function runDemo(dir: string, interruptOn?: string): Promise<DemoRun> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['scripts/demo.sh', 'operator'], {
      cwd: ROOT,
      env: { ...process.env, TMPDIR: dir },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let out = '';
    let err = '';
    let interrupted = false;
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (interruptOn && !interrupted && out.includes(interruptOn)) {
        interrupted = true;
        process.kill(-child.pid!, 'SIGINT');
      }
    });
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => {
      process.kill(-child.pid!, 'SIGKILL');
      reject(new Error(`demo.sh operator still running after ${RUN_TIMEOUT_MS} ms:\n${out}\n${err}`));
    }, RUN_TIMEOUT_MS);
    const done = new Promise((exited) =>
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        current = undefined;
        resolve({ code, signal, out, err });
        exited(undefined);
      }),
    );
    current = { child, done };
  });
}

/** Processes a run left: anything with its TMPDIR in its environment, and build pods (their env is the pod's). */
function leftoverProcesses(dir: string): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const environ = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
      if (environ.includes(`TMPDIR=${dir}`) || environ.some((e) => e.startsWith('HOSTNAME=hello-cluster-')))
        found.push(`${pid}: ${readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ')}`);
    } catch {
      // gone meanwhile, or a kernel thread
    }
  }
  return found;
}

/** Waits (a few seconds at most: exiting processes linger in /proc briefly) until the run left nothing. */
async function expectNothingLeft(dir: string): Promise<void> {
  let procs: string[] = [];
  for (let i = 0; i < 50; i++) {
    procs = leftoverProcesses(dir);
    if (procs.length === 0) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  expect(procs).toEqual([]);
  expect(await readdir(dir)).toEqual([]);
  const mounts = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').filter((l) => l.includes(dir));
  expect(mounts).toEqual([]);
}

beforeAll(async () => {
  requireRoot();
  if (!existsSync(DRIVER))
    throw new Error(`${DRIVER} is missing: run the tests with \`npm test\` (it builds first)`);
  // demo.sh reinstalls npm packages when node_modules was not installed from this lock file: never under a test.
  const want = `${createHash('sha256')
    .update(readFileSync(join(ROOT, 'package-lock.json')))
    .digest('hex')}  -\n`;
  const stamp = join(ROOT, 'node_modules/.strata-lock.sha256');
  if (!existsSync(stamp) || readFileSync(stamp, 'utf8') !== want)
    throw new Error(`${stamp} does not match package-lock.json: run \`bash scripts/install-deps.sh\` first`);
  tmp = await mkdtemp(join(tmpdir(), 'strata-quickstart-'));
});

afterAll(async () => {
  if (current) {
    process.kill(-current.child.pid!, 'SIGINT');
    await current.done;
  }
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('the quickstart: bash scripts/demo.sh operator', () => {
  it(
    'builds the hello world in a cluster: Ready, the reproducible digest, nothing left behind',
    async () => {
      const dir = await mkdtemp(join(tmp, 'run-'));
      // The digest to expect: the same spec built locally from the directory (the cluster gets it as a ConfigMap).
      const spec = (await readFile(join(ROOT, 'examples/imagebuild-hello-cluster.yaml'), 'utf8'))
        .replace(/configMap:\n\s+name: hello\n/, `dir: ${join(ROOT, 'examples/hello')}\n`)
        .replace('push: true', 'push: false');
      await writeFile(join(tmp, 'local.yaml'), spec);
      const local = await runCli(['build', '--spec', join(tmp, 'local.yaml')], {
        STRATA_STORE: join(tmp, 'store'),
      });
      expect(local.code, local.stderr).toBe(0);
      // The status it prints (YAML): `status:` then `  digest: sha256:…`.
      const expected = /^ {2}digest: (sha256:[0-9a-f]{64})$/m.exec(local.stdout)?.[1];
      expect(expected, local.stdout).toBeDefined();

      const run = await runDemo(dir);
      expect(run.code, `${run.out}\n${run.err}`).toBe(0);
      const row =
        /^hello-cluster\s+(127\.0\.0\.1:\d+)\/examples\/hello:cluster\s+True\s+(sha256:[0-9a-f]{64})\s/m.exec(
          run.out,
        );
      expect(row, run.out).not.toBeNull();
      const [, host, digest] = row!;
      expect(digest).toBe(expected);
      expect(run.out).toContain(`the registry's digest for ${host}/examples/hello:cluster: ${expected}`);
      expect(run.out).toMatch(/pod\/hello-cluster-1-\S+ bound to node demo-node/);
      expect(run.out).toContain('demo done');
      await expectNothingLeft(dir);
    },
    RUN_TIMEOUT_MS + 60_000,
  );

  it(
    'a Ctrl-C mid-act stops everything and removes its files',
    async () => {
      const dir = await mkdtemp(join(tmp, 'run-'));
      const run = await runDemo(dir, 'created by strata controller');
      expect(run.out, run.err).toContain('created by strata controller');
      expect(run.out).toContain('interrupted: stopping the operator act');
      expect(run.out).not.toContain('demo done');
      // bash ends by SIGINT (its EXIT trap ran), or with the driver's 130.
      expect(run.signal === 'SIGINT' || run.code === 130, `code ${run.code}, signal ${run.signal}`).toBe(
        true,
      );
      await expectNothingLeft(dir);
    },
    RUN_TIMEOUT_MS + 60_000,
  );
});
