/**
 * `Engine.build` regressions: heredoc and URL names that tried to leave the destination, ADD --checksum checks,
 * step errors that name their Dockerfile line (and are not usage errors), and in-image symlinks whose `..` climbs
 * above `/` (chroot keeps them at the root).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chmod, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { RegistryClient } from '../../src/engine/registry/client.js';
import { runCli } from '../support/cli.js';
import { tempDir } from '../support/images.js';
import { requireRootAndOverlay, unmountAllUnder } from '../support/root.js';
import { makeBusyboxRoot, requireRunc } from './run-support.js';

const PASSWD = 'root:x:0:0:root:/root:/bin/sh\n';
let work: string;
let engine: Engine;
let server: Server;
let base: string;

async function context(files: Record<string, string>): Promise<string> {
  const dir = await tempDir('strata-step-err-ctx-');
  for (const [name, content] of Object.entries(files)) await writeFile(join(dir, name), content);
  return dir;
}

/** The text of a file in a built image. */
async function fileIn(ref: string, path: string): Promise<string> {
  const dir = await tempDir('strata-step-err-unpack-');
  try {
    await engine.unpack(ref, join(dir, 'root'));
    return await readFile(join(dir, 'root', path), 'utf8');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function build(dockerfile: string, files: Record<string, string> = {}): Promise<string> {
  const tag = `step-err/t:${Math.random().toString(36).slice(2, 10)}`;
  await engine.build({ contextDir: await context(files), dockerfile, tags: [tag] });
  return tag;
}

async function failure(
  dockerfile: string,
  files: Record<string, string> = {},
): Promise<Error & { code?: string }> {
  const err = await build(dockerfile, files).then(
    () => undefined,
    (e: unknown) => e as Error & { code?: string },
  );
  if (!err) throw new Error(`expected the build to fail:\n${dockerfile}`);
  return err;
}

beforeAll(async () => {
  requireRootAndOverlay();
  requireRunc();
  work = await tempDir('strata-step-err-');
  engine = new Engine({ store: await FsStore.open(join(work, 'store')), registry: new RegistryClient() });
  const root = await makeBusyboxRoot(join(work, 'busybox-root'));
  await mkdir(join(root, 'etc'), { recursive: true });
  await mkdir(join(root, 'tmp'));
  await chmod(join(root, 'tmp'), 0o1777);
  await writeFile(join(root, 'etc', 'passwd'), PASSWD);
  await writeFile(join(root, 'etc', 'shadow'), 'root:*:1::::::\n');
  for (const a of ['touch', 'ln', 'pwd', 'cat', 'rm', 'test'])
    await symlink('busybox', join(root, 'bin', a)).catch(() => undefined);
  await engine.importDirectory(root, 'step-err/busybox:1');
  // A base whose resolv.conf climbs above / (RUN binds the host's over where it points, inside the root).
  await rm(join(root, 'etc', 'resolv.conf'), { force: true });
  await symlink('../../../../etc/shadow', join(root, 'etc', 'resolv.conf'));
  await engine.importDirectory(root, 'step-err/resolv:1');
  server = createServer((req, res) => res.end(`served ${req.url}`));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}, 60_000);

afterAll(async () => {
  server?.close();
  if (work) {
    unmountAllUnder(work);
    await rm(work, { recursive: true, force: true });
  }
});

describe('COPY/ADD names from heredocs and URLs stay in the destination', () => {
  it('COPY <<../etc/passwd /x/ writes /x/passwd; ADD .../..%2fetc%2fpasswd /y/ writes /y/passwd', async () => {
    const tag = await build(
      [
        'FROM step-err/busybox:1',
        'COPY <<../etc/passwd /x/',
        'from a heredoc',
        '../etc/passwd',
        `ADD ${base}/ok/..%2fetc%2fpasswd /y/`,
      ].join('\n'),
    );
    expect(await fileIn(tag, 'x/passwd')).toBe('from a heredoc\n');
    expect(await fileIn(tag, 'y/passwd')).toBe('served /ok/..%2fetc%2fpasswd');
    expect(await fileIn(tag, 'etc/passwd')).toBe(PASSWD);
  }, 60_000);
});

describe('step errors name their Dockerfile line', () => {
  it.each([
    [
      'a missing COPY source',
      'COPY nothere /x',
      'BUILD_CONTEXT_INVALID',
      /COPY failed: source "nothere" not found/,
    ],
    ['COPY --from its own stage', 'COPY --from=0 /nope /x', 'DOCKERFILE_INVALID', /stage 0 is not defined/],
    ['several sources to a file', 'COPY a b /file', 'DOCKERFILE_INVALID', /more than one source/],
    ['WORKDIR on a file', 'WORKDIR /etc/passwd', 'BUILD_STEP_FAILED', /not a directory/],
    ['a parent that is a file', 'RUN touch /d\nCOPY a /d/y', 'DOCKERFILE_INVALID', /"d" is not a directory/],
    [
      'a URL without a file name',
      'ADD http://HOST/slash/ /x/',
      'DOCKERFILE_INVALID',
      /cannot determine a file name/,
    ],
    [
      'an ADD checksum mismatch',
      `ADD --checksum=sha256:${'0'.repeat(64)} http://HOST/f /x`,
      'DIGEST_MISMATCH',
      /checksum mismatch/,
    ],
    [
      'ADD --checksum on a local file',
      `ADD --checksum=sha256:${'0'.repeat(64)} a /x`,
      'DOCKERFILE_INVALID',
      /checksum can't be specified for non-HTTP\(S\) sources: "a"/,
    ],
    [
      'a malformed ADD --checksum',
      'ADD --checksum=md5:abc http://HOST/f /x',
      'DOCKERFILE_INVALID',
      /md5:abc/,
    ],
  ])(
    '%s',
    async (_what, step, code, message) => {
      const steps = step.replaceAll('http://HOST', base);
      const line = 1 + steps.split('\n').length;
      const err = await failure(`FROM step-err/busybox:1\n${steps}\n`, { a: 'A', b: 'B' });
      expect(err.code).toBe(code);
      expect(err.message).toMatch(new RegExp(`^Dockerfile:${line}: `));
      expect(err.message).toMatch(message);
    },
    60_000,
  );

  it('the CLI exits 1 (not 2, a usage error) for a destination under a file, naming the line', async () => {
    const ctx = await context({ a: 'A', Dockerfile: 'FROM scratch\nCOPY a /d\nCOPY a /d/y\n' });
    const env = { STRATA_STORE: join(work, 'cli-store') };
    const res = await runCli(['build', ctx], env);
    expect(res.stderr).toMatch(/Dockerfile:3: .*"d" is not a directory/);
    expect(res.code).toBe(1);
  }, 60_000);
});

describe('in-image symlinks whose .. climbs above / stop at / (chroot)', () => {
  it('WORKDIR through /tmp/../../../tmp, COPY through ../../../../../tmp, RUN with resolv.conf -> ../../../../etc/shadow', async () => {
    const tag = await build(
      [
        'FROM step-err/busybox:1',
        'RUN ln -s /tmp/../../../tmp /w && ln -s ../../../../../tmp /rel',
        'WORKDIR /w',
        'RUN pwd > /pwd.txt',
        'COPY ok /rel/x',
      ].join('\n'),
      { ok: 'copied' },
    );
    expect(await fileIn(tag, 'pwd.txt')).toMatch(/^\/(w|tmp)\n$/);
    expect(await fileIn(tag, 'tmp/x')).toBe('copied');
    const resolv = await build('FROM step-err/resolv:1\nRUN cat /etc/resolv.conf > /seen.txt\n');
    expect(await fileIn(resolv, 'seen.txt')).toBe(await readFile('/etc/resolv.conf', 'utf8'));
    expect(await fileIn(resolv, 'etc/shadow')).toBe('root:*:1::::::\n');
  }, 60_000);
});
