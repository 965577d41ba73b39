/**
 * `Engine.build` end to end: real Dockerfiles, real RUN steps through runc in overlay step containers, real
 * layers committed from the upper directories, the local build cache and reproducible digests.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir, readFile, readdir, rm, stat, writeFile, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { RegistryClient } from '../../src/engine/registry/client.js';
import { createRuncRunner } from '../../src/engine/build/run/runc.js';
import type { EngineEvent } from '../../src/engine/observe.js';
import { findLocalRef, loadLocalImage } from '../../src/engine/image/local.js';
import type { ImageConfig } from '../../src/engine/oci/types.js';
import { tempDir } from '../support/images.js';
import { requireRootAndOverlay, unmountAllUnder } from '../support/root.js';
import { mountTmpfs } from '../support/tmpfs.js';
import { makeBusyboxRoot, requireRunc } from './run-support.js';

let work: string;
let engine: Engine;
let events: EngineEvent[];

async function context(files: Record<string, string>): Promise<string> {
  const dir = await tempDir('strata-build-ctx-');
  for (const [name, content] of Object.entries(files)) {
    await mkdir(join(dir, name, '..'), { recursive: true });
    await writeFile(join(dir, name), content);
  }
  return dir;
}

async function newEngine(storeDir: string): Promise<Engine> {
  return new Engine({
    store: await FsStore.open(storeDir),
    registry: new RegistryClient(),
    listeners: [(e) => events.push(e)],
  });
}

/** The config of a local image. */
async function configOf(e: Engine, ref: string): Promise<ImageConfig> {
  return (await loadLocalImage(e.store, await findLocalRef(e.store, ref))).config;
}

/** The text of a file in a built image (unpacked into a fresh dir). */
async function fileIn(e: Engine, ref: string, path: string): Promise<string> {
  const dir = await tempDir('strata-build-unpack-');
  await e.unpack(ref, join(dir, 'root'));
  try {
    return await readFile(join(dir, 'root', path), 'utf8');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

beforeAll(async () => {
  requireRootAndOverlay();
  requireRunc();
  work = await tempDir('strata-build-');
  events = [];
  engine = await newEngine(join(work, 'store'));
  const root = await makeBusyboxRoot(join(work, 'busybox-root'));
  await mkdir(join(root, 'etc'), { recursive: true });
  await mkdir(join(root, 'tmp'), { mode: 0o1777 });
  await chmod(join(root, 'tmp'), 0o1777);
  await writeFile(
    join(root, 'etc', 'passwd'),
    'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n',
  );
  await writeFile(join(root, 'etc', 'group'), 'root:x:0:\napp:x:1000:\nextra:x:2000:app\n');
  for (const a of ['touch', 'rm', 'cp', 'wc', 'test', 'true', 'false', 'stat', 'chmod'])
    await import('node:fs/promises').then((fs) => fs.symlink('busybox', join(root, 'bin', a)));
  await engine.importDirectory(root, 'test/busybox:1');
}, 60_000);

afterAll(async () => {
  if (work) {
    unmountAllUnder(work);
    await rm(work, { recursive: true, force: true });
  }
});

describe('strata build', () => {
  it('FROM scratch + COPY of a static binary + CMD: the image runs under runc and prints what CMD says', async () => {
    const ctx = await context({
      Dockerfile:
        'FROM scratch\nCOPY busybox /bin/busybox\nCMD ["/bin/busybox", "echo", "hello from strata"]\n',
    });
    execFileSync('cp', ['/usr/bin/busybox', join(ctx, 'busybox')]);
    const result = await engine.build({
      contextDir: ctx,
      dockerfile: await readFile(join(ctx, 'Dockerfile'), 'utf8'),
      tags: ['hello:1'],
    });
    expect(result.layers).toBe(1);
    const cmd = (await configOf(engine, 'hello:1')).config?.Cmd;
    expect(cmd).toEqual(['/bin/busybox', 'echo', 'hello from strata']);
    const run = await tempDir('strata-build-run-');
    await engine.unpack('hello:1', join(run, 'rootfs'));
    let out = '';
    const res = await createRuncRunner()({
      rootfs: join(run, 'rootfs'),
      args: cmd!,
      env: [],
      cwd: '/',
      user: { uid: 0, gid: 0, additionalGids: [] },
      network: 'none',
      onStdout: (c: Buffer) => (out += c.toString()),
    });
    expect(res.exitCode).toBe(0);
    expect(out).toBe('hello from strata\n');
    await rm(run, { recursive: true, force: true });
  }, 60_000);

  it('ARG/ENV substitution, USER/WORKDIR/SHELL inside RUN, multi-stage COPY --from, config-only steps as empty layers', async () => {
    const dockerfile = [
      'ARG BASE=test/busybox:1',
      'FROM ${BASE} AS builder',
      'ARG GREETING=hi',
      'ENV TARGET=world DIR=/work',
      'WORKDIR ${DIR}',
      'RUN echo "$GREETING $TARGET" > greeting.txt && pwd > where.txt',
      'USER app:extra',
      'RUN id -u > /tmp/uid && id -g > /tmp/gid',
      'SHELL ["/bin/sh", "-c", "echo shell-used >> /tmp/shell; sh -c \\"$0\\""]',
      'RUN true',
      '',
      'FROM scratch',
      'COPY --from=builder /work/greeting.txt /work/where.txt /out/',
      'COPY --from=builder /tmp/uid /tmp/gid /tmp/shell /out/',
      'LABEL stage=final',
      'EXPOSE 8080/tcp',
      'CMD ["run"]',
    ].join('\n');
    const ctx = await context({ Dockerfile: dockerfile });
    const result = await engine.build({
      contextDir: ctx,
      dockerfile,
      buildArgs: { GREETING: 'hello' },
      tags: ['multi:1'],
    });
    expect(await fileIn(engine, 'multi:1', 'out/greeting.txt')).toBe('hello world\n');
    expect(await fileIn(engine, 'multi:1', 'out/where.txt')).toBe('/work\n');
    expect(await fileIn(engine, 'multi:1', 'out/uid')).toBe('1000\n');
    expect(await fileIn(engine, 'multi:1', 'out/gid')).toBe('2000\n');
    expect(await fileIn(engine, 'multi:1', 'out/shell')).toBe('shell-used\n');
    const config = await configOf(engine, 'multi:1');
    expect(config.config?.Labels).toEqual({ stage: 'final' });
    expect(config.config?.ExposedPorts).toEqual({ '8080/tcp': {} });
    const history = config.history ?? [];
    expect(history.map((h) => h.empty_layer === true)).toEqual([false, false, true, true, true]);
    expect(result.layers).toBe(2);
  }, 120_000);

  it('a second build is fully cached; a changed COPY source rebuilds from that step; an ignored file rebuilds nothing', async () => {
    const dockerfile =
      'FROM test/busybox:1\nCOPY a.txt /a.txt\nRUN cat /a.txt > /copy.txt\nCOPY b.txt /b.txt\n';
    const ctx = await context({ Dockerfile: dockerfile, 'a.txt': 'A', 'b.txt': 'B', 'ignored.log': '1' });
    const build = () =>
      engine.build({ contextDir: ctx, dockerfile, ignorePatterns: ['*.log'], tags: ['cached:1'] });
    const first = await build();
    expect(first.cacheHits).toBe(0);
    const second = await build();
    expect(second.cacheHits).toBe(3);
    expect(second.digest).toBe(first.digest);
    await writeFile(join(ctx, 'ignored.log'), '2');
    const third = await build();
    expect(third.cacheHits).toBe(3);
    expect(third.digest).toBe(first.digest);
    await writeFile(join(ctx, 'b.txt'), 'B2');
    const fourth = await build();
    expect(fourth.cacheHits).toBe(2);
    expect(await fileIn(engine, 'cached:1', 'b.txt')).toBe('B2');
    await chmod(join(ctx, 'a.txt'), 0o600);
    const fifth = await build();
    expect(fifth.cacheHits).toBe(0);
  }, 120_000);

  it('a miss does not stop the lookups: a rebuilt step that gives the same image lets later steps hit', async () => {
    // --chmod makes the copied file's mode independent of the context's, so a mode change there misses the COPY
    // (its sources hash changed) but rebuilds the very same layer; with a fixed epoch the RUN after it hits again.
    const dockerfile = 'FROM test/busybox:1\nCOPY --chmod=644 a.txt /a.txt\nRUN cat /a.txt > /b.txt\n';
    const ctx = await context({ Dockerfile: dockerfile, 'a.txt': 'A' });
    const build = () => engine.build({ contextDir: ctx, dockerfile, sourceDateEpoch: 1_600_000_000 });
    const first = await build();
    await chmod(join(ctx, 'a.txt'), 0o600);
    const second = await build();
    expect(second.cacheHits).toBe(1); // the RUN; the COPY ran again
    expect(second.digest).toBe(first.digest);
  }, 60_000);

  it('SOURCE_DATE_EPOCH: two builds in two stores give identical digests', async () => {
    const dockerfile =
      'FROM test/busybox:1\nCOPY f /f\nRUN echo made > /made && mkdir -p /var/x\nENV A=1\nCMD ["sh"]\n';
    const ctx = await context({ Dockerfile: dockerfile, f: 'content' });
    const other = await newEngine(join(work, 'store-2'));
    const root = join(work, 'busybox-root');
    const fixed = { sourceDateEpoch: 1_700_000_000, now: () => new Date(1_700_000_000_000) };
    await other.importDirectory(root, 'test/busybox:epoch', fixed);
    await engine.importDirectory(root, 'test/busybox:epoch', fixed);
    const df2 = dockerfile.replace('test/busybox:1', 'test/busybox:epoch');
    const a = await engine.build({
      contextDir: ctx,
      dockerfile: df2,
      sourceDateEpoch: 1_700_000_000,
      noCache: true,
    });
    const b = await other.build({ contextDir: ctx, dockerfile: df2, sourceDateEpoch: 1_700_000_000 });
    expect(b.digest).toBe(a.digest);
    expect(b.config).toBe(a.config);
  }, 120_000);

  it('a failing RUN names the line, stage and exit code with the output tail; nothing is tagged and no container or mount remains', async () => {
    const dockerfile =
      'FROM test/busybox:1 AS broken\nRUN echo first\nRUN echo "it went wrong" >&2; exit 3\n';
    const ctx = await context({ Dockerfile: dockerfile });
    const err = await engine.build({ contextDir: ctx, dockerfile, tags: ['broken:1'] }).then(
      () => undefined,
      (e: unknown) => e as Error & { code?: string },
    );
    expect(err?.code).toBe('BUILD_STEP_FAILED');
    expect(err?.message).toMatch(
      /^Dockerfile:3: broken step 3\/3: RUN .*exited with code 3\n.*it went wrong/s,
    );
    await expect(engine.inspect('broken:1')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(await engine.ps()).toEqual([]);
    expect(await readFile('/proc/self/mountinfo', 'utf8')).not.toContain(join(work, 'store'));
  }, 60_000);

  it.each([
    ['an unknown instruction', 'FROM scratch\nFOO bar\n', 'DOCKERFILE_INVALID', /Dockerfile:2/],
    ['a missing COPY source', 'FROM scratch\nCOPY nothere /x\n', 'BUILD_CONTEXT_INVALID', /nothere/],
    ['a COPY source escaping the context', 'FROM scratch\nCOPY ../../etc/passwd /x\n', undefined, /passwd/],
    ['a bad FROM reference', 'FROM Not//Valid\n', undefined, /Dockerfile:1/],
    [
      'a --from naming a missing stage',
      'FROM scratch\nCOPY --from=nostage /a /b\n',
      undefined,
      /Dockerfile:2.*nostage/,
    ],
    [
      'an unsupported RUN --mount',
      'FROM test/busybox:1\nRUN --mount=type=cache,target=/c true\n',
      'DOCKERFILE_INVALID',
      /Dockerfile:2.*--mount/,
    ],
  ])(
    '%s is a clear error',
    async (_what, dockerfile, code, message) => {
      const ctx = await context({ Dockerfile: dockerfile });
      const err = await engine.build({ contextDir: ctx, dockerfile, tags: ['bad:1'] }).then(
        () => undefined,
        (e: unknown) => e as Error & { code?: string },
      );
      expect(err).toBeDefined();
      if (code) expect(err!.code).toBe(code);
      expect(err!.message).toMatch(message);
      await expect(engine.inspect('bad:1')).rejects.toMatchObject({ code: 'NOT_FOUND' });
      expect(await engine.ps()).toEqual([]);
    },
    60_000,
  );

  it('ADD extracts a local tar.gz and fetches a URL served on loopback (with --checksum)', async () => {
    const ctx = await context({ 'src/one.txt': 'one', 'src/sub/two.txt': 'two' });
    execFileSync('tar', ['-czf', join(ctx, 'bundle.tar.gz'), '-C', join(ctx, 'src'), '.']);
    const body = Buffer.from('served over http\n');
    const server = createServer((_req, res) => res.end(body));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    const sum = `sha256:${createHash('sha256').update(body).digest('hex')}`;
    try {
      const dockerfile = [
        'FROM test/busybox:1',
        'ADD bundle.tar.gz /opt/bundle/',
        `ADD --checksum=${sum} http://127.0.0.1:${port}/files/remote.txt /downloads/`,
        'RUN cat /opt/bundle/sub/two.txt /downloads/remote.txt > /seen.txt',
      ].join('\n');
      await engine.build({ contextDir: ctx, dockerfile, tags: ['add:1'] });
      expect(await fileIn(engine, 'add:1', 'opt/bundle/one.txt')).toBe('one');
      expect(await fileIn(engine, 'add:1', 'seen.txt')).toBe('twoserved over http\n');
      const wrong = dockerfile.replace(sum, `sha256:${'0'.repeat(64)}`);
      await expect(engine.build({ contextDir: ctx, dockerfile: wrong, tags: ['add:2'] })).rejects.toThrow(
        /checksum|digest/i,
      );
      await expect(engine.inspect('add:2')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    } finally {
      server.close();
    }
  }, 60_000);

  it("every stage's config gets docker's default PATH when its base has none, and keeps a base's own", async () => {
    const plain = 'FROM scratch\nENV A=1\n';
    const ctx = await context({ Dockerfile: plain });
    await engine.build({ contextDir: ctx, dockerfile: plain, tags: ['path-default:1'] });
    expect((await configOf(engine, 'path-default:1')).config?.Env).toEqual([
      'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      'A=1',
    ]);
    const own = 'FROM path-default:1 AS first\nENV PATH=/custom\nFROM first\nENV B=2\n';
    await engine.build({ contextDir: ctx, dockerfile: own, tags: ['path-own:1'] });
    expect((await configOf(engine, 'path-own:1')).config?.Env).toEqual(['PATH=/custom', 'A=1', 'B=2']);
  }, 60_000);

  it('WORKDIR makes its directory at once, owned by the USER in effect; an existing one adds no layer', async () => {
    const dockerfile = 'FROM test/busybox:1\nWORKDIR /srv\nUSER app\nWORKDIR data/sub\nWORKDIR /srv\n';
    const ctx = await context({ Dockerfile: dockerfile });
    const result = await engine.build({ contextDir: ctx, dockerfile, tags: ['workdir:1'] });
    const config = await configOf(engine, 'workdir:1');
    expect(config.config?.WorkingDir).toBe('/srv');
    expect(config.history?.slice(-4).map((h) => h.empty_layer === true)).toEqual([false, true, false, true]);
    expect(result.layers).toBe(3);
    const dir = await tempDir('strata-build-unpack-');
    await engine.unpack('workdir:1', join(dir, 'root'));
    const { stat } = await import('node:fs/promises');
    const owner = async (p: string) => {
      const st = await stat(join(dir, 'root', p));
      return [st.isDirectory(), st.uid, st.gid, st.mode & 0o7777];
    };
    expect(await owner('srv')).toEqual([true, 0, 0, 0o755]);
    expect(await owner('srv/data')).toEqual([true, 1000, 1000, 0o755]);
    expect(await owner('srv/data/sub')).toEqual([true, 1000, 1000, 0o755]);
    await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it('a full disk while a step is committed is STORAGE_FULL naming the step, and leaves nothing behind', async () => {
    const fs = mountTmpfs(48 * 1024 * 1024);
    try {
      const small = await newEngine(join(fs.dir, 'store'));
      await small.importDirectory(join(work, 'busybox-root'), 'test/busybox:1');
      const dockerfile = 'FROM test/busybox:1\nRUN head -c 30000000 /dev/urandom > /big\n';
      const ctx = await context({ Dockerfile: dockerfile });
      const err = await small.build({ contextDir: ctx, dockerfile, tags: ['full:1'] }).then(
        () => undefined,
        (e: unknown) => e as Error & { code?: string },
      );
      expect(err?.code).toBe('STORAGE_FULL');
      expect(err?.message).toMatch(/Dockerfile:2/);
      expect(await small.ps()).toEqual([]);
      expect(await readdir(join(fs.dir, 'store', 'ingest'))).toEqual([]);
      await expect(small.inspect('full:1')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    } finally {
      unmountAllUnder(join(fs.dir, 'store'));
      fs.unmount();
    }
  }, 60_000);

  it("keeps the store's strata/ directory private (0700): image content must not reach unprivileged users", async () => {
    const dir = await tempDir('strata-build-private-');
    const fresh = await newEngine(join(dir, 'store'));
    await mkdir(join(dir, 'store', 'strata'), { recursive: true, mode: 0o755 });
    await chmod(join(dir, 'store', 'strata'), 0o755);
    await fresh.importDirectory(join(work, 'busybox-root'), 'test/busybox:1');
    const dockerfile = 'FROM test/busybox:1\nRUN echo x > /x\n';
    await fresh.build({ contextDir: await context({ Dockerfile: dockerfile }), dockerfile });
    expect((await stat(join(dir, 'store', 'strata'))).mode & 0o777).toBe(0o700);
    unmountAllUnder(dir);
    await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it('a RUN that changes nothing adds no layer on overlay either (copied-up /etc for mount points is dropped), so overlay and vfs give the same digest', async () => {
    const dockerfile = 'FROM test/busybox:1\nRUN echo nothing\nRUN echo x > /x\nRUN true\n';
    const ctx = await context({ Dockerfile: dockerfile });
    const epoch = { sourceDateEpoch: 1_650_000_000, noCache: true };
    const overlay = await engine.build({ contextDir: ctx, dockerfile, driver: 'overlay', ...epoch });
    const vfs = await engine.build({ contextDir: ctx, dockerfile, driver: 'vfs', ...epoch });
    const base = (await configOf(engine, 'test/busybox:1')).rootfs.diff_ids.length;
    expect(overlay.layers).toBe(base + 1);
    expect(vfs.digest).toBe(overlay.digest);
  }, 60_000);

  it('--platform other than the host: a base of another platform is refused, RUN is refused, COPY-only builds work', async () => {
    const arm = { os: 'linux', architecture: 'arm64' };
    const fromBase = 'FROM test/busybox:1\nCOPY f /f\n';
    const ctx = await context({ f: 'x' });
    await expect(engine.build({ contextDir: ctx, dockerfile: fromBase, platform: arm })).rejects.toThrow(
      /test\/busybox:1 is linux\/amd64, not the build's platform linux\/arm64/,
    );
    await expect(
      engine.build({ contextDir: ctx, dockerfile: 'FROM scratch\nRUN true\n', platform: arm }),
    ).rejects.toMatchObject({ code: 'RUNTIME_UNAVAILABLE' });
    const ok = await engine.build({
      contextDir: ctx,
      dockerfile: 'FROM scratch\nCOPY f /f\n',
      platform: arm,
      tags: ['cross:arm64'],
    });
    expect(ok.layers).toBe(1);
    expect((await configOf(engine, 'cross:arm64')).architecture).toBe('arm64');
  }, 60_000);

  it('--compression zstd writes zstd layers that unpack', async () => {
    const dockerfile = 'FROM test/busybox:1\nRUN echo zstd > /z.txt\n';
    const ctx = await context({ Dockerfile: dockerfile });
    await engine.build({
      contextDir: ctx,
      dockerfile,
      compression: 'zstd',
      compressionLevel: 5,
      tags: ['zstd:1'],
    });
    const image = await loadLocalImage(engine.store, await findLocalRef(engine.store, 'zstd:1'));
    expect(image.manifest.manifest.layers.at(-1)?.mediaType).toBe(
      'application/vnd.oci.image.layer.v1.tar+zstd',
    );
    expect(await fileIn(engine, 'zstd:1', 'z.txt')).toBe('zstd\n');
  }, 60_000);

  it('ONBUILD triggers run when the image is used as a base, and are not inherited', async () => {
    const parent = 'FROM test/busybox:1\nONBUILD RUN echo triggered > /onbuild.txt\n';
    const ctx = await context({ Dockerfile: parent });
    await engine.build({ contextDir: ctx, dockerfile: parent, tags: ['onbuild-base:1'] });
    const child = 'FROM onbuild-base:1\nRUN cat /onbuild.txt > /seen.txt\n';
    await engine.build({ contextDir: ctx, dockerfile: child, tags: ['onbuild-child:1'] });
    expect(await fileIn(engine, 'onbuild-child:1', 'seen.txt')).toBe('triggered\n');
    expect((await configOf(engine, 'onbuild-child:1')).config?.['OnBuild']).toBeUndefined();
  }, 60_000);

  it('reports build-step events and live RUN output', async () => {
    events.length = 0;
    const dockerfile = 'FROM test/busybox:1\nRUN echo live-output-line\n';
    const ctx = await context({ Dockerfile: dockerfile });
    await engine.build({ contextDir: ctx, dockerfile, noCache: true });
    const steps = events.filter((e) => e.type === 'build-step');
    expect(steps.map((e) => e.type === 'build-step' && `${e.step}/${e.total} ${e.status}`)).toEqual([
      '1/2 start',
      '1/2 done',
      '2/2 start',
      '2/2 done',
    ]);
    const output = events
      .filter((e) => e.type === 'build-output')
      .map((e) => (e.type === 'build-output' ? e.text : ''));
    expect(output.join('')).toContain('live-output-line');
    const dirs = await readdir(join(work, 'store', 'strata', 'containers')).catch(() => []);
    expect(dirs).toEqual([]);
  }, 60_000);
});
