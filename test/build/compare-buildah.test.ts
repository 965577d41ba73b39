/**
 * Interoperability proof: every Dockerfile under `fixtures/compare/` is built by `strata build` and by
 * `buildah bud` (Debian's buildah 1.28, vfs storage in a private root, chroot isolation, `--layers`, docker
 * format) FROM the same busybox base (strata imports it, saves it as a docker-archive, buildah pulls that), and
 * the two results are compared: the unpacked trees (strata `unpack`, `umoci unpack` for buildah's OCI layout) and
 * the configs. Every difference must be listed in `KNOWN` with the reason buildah is the odd one out; a listed
 * difference that no longer shows up fails too, so the table cannot go stale.
 */
import { execFile } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { chmod, cp, link, mkdir, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readDockerignore } from '../../src/engine/build/copy/context.js';
import { Engine } from '../../src/engine/engine.js';
import { findLocalRef, loadLocalImage } from '../../src/engine/image/local.js';
import type { ImageConfig } from '../../src/engine/oci/types.js';
import { RegistryClient } from '../../src/engine/registry/client.js';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { tempDir } from '../support/images.js';
import { requirePeer } from '../support/peers.js';
import { requireRootAndOverlay, unmountAllUnder } from '../support/root.js';
import { comparableConfig, diffConfigs, diffTrees, snapshotTree, type TreeEntry } from './compare-support.js';
import { layerEntries } from './layer-entries.js';
import { makeBusyboxRoot, requireRunc } from './run-support.js';

const run = promisify(execFile);
const FIXTURES = fileURLToPath(new URL('./fixtures/compare/', import.meta.url));
const BASE = 'localhost/cmp/busybox:1';
/** buildah is the slow side (vfs copies every step's root): its builds run in this many storage lanes at once. */
const LANES = [0, 1, 2];

/**
 * Where buildah 1.28 differs from docker/BuildKit and strata follows docker. `diff` matches one line of the
 * comparison (`path: field strata=… buildah=…` or `config.FIELD …`).
 */
const WITH_RUN = [
  'arg-env',
  'busybox-run',
  'config-inherit',
  'onbuild',
  'user-workdir-shell',
  'whiteout-opaque',
];
const KNOWN: ReadonlyArray<{ fixtures: readonly string[]; diff: RegExp; why: string }> = [
  {
    fixtures: WITH_RUN,
    diff: /^(dev|proc|sys|run|etc\/hostname|etc\/hosts|etc\/resolv\.conf): only in buildah/,
    why:
      'buildah 1.28 (chroot isolation) leaves the mount points and files it made for RUN in the layer; docker ' +
      "keeps them in the container's init layer and BuildKit removes its mount stubs, so neither commits them",
  },
  {
    fixtures: ['busybox-run'],
    diff: /^data\/(hard|one): (content|links) /,
    why:
      'appending to one name of a hard-linked pair from a lower layer breaks the link on overlayfs copy-up ' +
      '(index=off, as docker overlay2 and containerd mount it): strata and docker keep the old content under the ' +
      "other name; buildah's vfs storage copies whole trees, so the link survives",
  },
  {
    fixtures: ['user-workdir-shell'],
    diff: /^tmp\/id(-numeric)?\.txt: content /,
    why:
      "buildah 1.28 puts the user's primary gid into the supplementary groups; docker and BuildKit (libcontainer " +
      'GetExecUser) give only the /etc/group memberships for `USER name`, and none for `USER uid:gid`',
  },
  {
    fixtures: ['arg-env'],
    diff: /^config\.(historyCount|emptyLayers): /,
    why:
      'buildah records each ARG as an empty-layer history entry (the classic builder did); BuildKit adds none ' +
      'for ARG, and strata follows BuildKit',
  },
  {
    fixtures: ['arg-env', 'config-inherit', 'metadata', 'user-workdir-shell'],
    diff: /^config\.(emptyLayers|layers): /,
    why:
      'WORKDIR makes its directory at once, owned by the USER in effect (BuildKit: a mkdir file op with a ' +
      'layer); strata commits that layer when the directory is new. buildah 1.28 makes it only when a later ' +
      "step uses it, inside that step's layer, so its WORKDIR entries are empty",
  },
  {
    fixtures: ['config-inherit', 'metadata'],
    diff: /^(a\/b|data): only in strata \(dir\)$/,
    why:
      'a WORKDIR that no later step uses: BuildKit (and strata) still create it; buildah 1.28 never does ' +
      '(`WORKDIR /a` + `WORKDIR b` + `WORKDIR ../c` leaves no /a/b; a final `WORKDIR /data` no /data)',
  },
  {
    fixtures: ['metadata'],
    diff: /^config\.ExposedPorts: strata=\["443\/udp","80\/tcp","8000\/tcp","8001\/tcp","8002\/tcp"\]/,
    why: 'docker expands a port range into one entry per port (nat.ParsePortSpecs); buildah 1.28 keeps `8000-8002/tcp`',
  },
  {
    fixtures: ['copy-tree'],
    diff: /^(globbed|two)\/b\.txt: mode strata=4755 buildah=0755/,
    why:
      "buildah 1.28's copier drops the setuid bit of context files; docker's context tar and BuildKit's fsutil " +
      'transfer keep the full mode',
  },
  {
    fixtures: ['add-targz'],
    diff: /^owned\/app(\/[a-z./]+)?: (uid|gid) strata=[78] buildah=1000/,
    why:
      'ADD --chown of a local archive: current BuildKit applies the owner to every extracted entry ' +
      '(applyRootArchive with the chown user); buildah 1.28 keeps the owners stored in the archive',
  },
];

/** What one fixture needs besides its files: links and archives git cannot hold, build args, a parent image. */
interface Meta {
  buildArgs?: Record<string, string>;
  parent?: { dockerfile: string; tag: string };
}

/** Per-fixture context preparation (files git cannot carry). */
const PREPARE: Record<string, (ctx: string) => Promise<void>> = {
  'scratch-copy-cmd': async (ctx) => {
    await cp(requirePeer('busybox'), join(ctx, 'busybox'));
  },
  'copy-tree': async (ctx) => {
    await symlink('a.txt', join(ctx, 'link-to-a'));
    await mkdir(join(ctx, 'links'));
    await writeFile(join(ctx, 'links', 'file'), 'linked content\n');
    await link(join(ctx, 'links', 'file'), join(ctx, 'links', 'hard'));
    await mkdir(join(ctx, 'links', 'sub'));
    await link(join(ctx, 'links', 'file'), join(ctx, 'links', 'sub', 'hard2'));
    await symlink('file', join(ctx, 'links', 'rel'));
    await symlink('/etc/passwd', join(ctx, 'links', 'abs'));
    await symlink('nowhere', join(ctx, 'links', 'dangling'));
    await symlink('sub', join(ctx, 'links', 'dirlink'));
    await chmod(join(ctx, 'tree', 'nested'), 0o700);
    await chmod(join(ctx, 'b.txt'), 0o4755);
    await run(requirePeer('setfattr'), ['-n', 'user.strata.note', '-v', 'kept', join(ctx, 'a.txt')]);
    await run(requirePeer('setfattr'), ['-n', 'user.strata.dir', '-v', 'tree', join(ctx, 'tree', 'nested')]);
  },
  'add-targz': async (ctx) => {
    const src = join(ctx, '..', 'archive-src');
    await mkdir(join(src, 'app', 'bin'), { recursive: true });
    await writeFile(join(src, 'app', 'file'), 'in the archive\n');
    await writeFile(join(src, 'app', 'bin', 'run.sh'), '#!/bin/sh\necho run\n');
    await chmod(join(src, 'app', 'bin', 'run.sh'), 0o755);
    await chmod(join(src, 'app', 'file'), 0o640);
    await link(join(src, 'app', 'file'), join(src, 'app', 'hard'));
    await symlink('file', join(src, 'app', 'link'));
    await chmod(join(src, 'app'), 0o750);
    await run('tar', [
      '--sort=name',
      '--owner=1000',
      '--group=1000',
      '--numeric-owner',
      '-czf',
      join(ctx, 'archive.tar.gz'),
      '-C',
      src,
      'app',
    ]);
    await rm(src, { recursive: true, force: true });
  },
};

interface Side {
  tree: Map<string, TreeEntry>;
  config: ImageConfig;
  parentConfig?: ImageConfig;
}

let work: string;
let engine: Engine;
const results = new Map<string, Promise<{ strata: Side; buildah: Side }>>();

async function configOf(ref: string): Promise<ImageConfig> {
  return (await loadLocalImage(engine.store, await findLocalRef(engine.store, ref))).config;
}

async function readMeta(name: string): Promise<Meta> {
  return JSON.parse(await readFile(join(FIXTURES, name, 'meta.json'), 'utf8').catch(() => '{}')) as Meta;
}

async function prepareContext(name: string): Promise<string> {
  const ctx = join(work, 'ctx', name, 'context');
  await mkdir(join(ctx, '..'), { recursive: true });
  await cp(join(FIXTURES, name), ctx, { recursive: true });
  await rm(join(ctx, 'meta.json'), { force: true });
  await PREPARE[name]?.(ctx);
  return ctx;
}

async function buildWithStrata(name: string, ctx: string, meta: Meta): Promise<Side> {
  const ignorePatterns = await readDockerignore(ctx);
  const build = async (file: string, tag: string): Promise<void> => {
    await engine.build({
      contextDir: ctx,
      dockerfile: await readFile(join(ctx, file), 'utf8'),
      ignorePatterns,
      ...(meta.buildArgs ? { buildArgs: meta.buildArgs } : {}),
      tags: [tag],
    });
  };
  if (meta.parent) await build(meta.parent.dockerfile, meta.parent.tag);
  const tag = `localhost/cmp/${name}:strata`;
  await build('Dockerfile', tag);
  const root = join(work, 'strata', name, 'rootfs');
  await engine.unpack(tag, root);
  return {
    tree: await snapshotTree(root),
    config: await configOf(tag),
    ...(meta.parent ? { parentConfig: await configOf(meta.parent.tag) } : {}),
  };
}

/** buildah's storage `lane` (its own root, vfs): several lanes build at once without sharing locks. */
function storageArgs(lane: number): string[] {
  const dir = join(work, `buildah-${lane}`);
  return ['--root', join(dir, 'root'), '--runroot', join(dir, 'runroot'), '--storage-driver', 'vfs'];
}

async function buildah(lane: number, args: readonly string[]): Promise<string> {
  const { stdout } = await run('buildah', [...storageArgs(lane), ...args], {
    maxBuffer: 64 * 1024 * 1024,
    timeout: 120_000,
  });
  return stdout;
}

async function buildWithBuildah(lane: number, name: string, ctx: string, meta: Meta): Promise<Side> {
  const bud = async (file: string, tag: string): Promise<void> => {
    const args = Object.entries(meta.buildArgs ?? {}).flatMap(([k, v]) => ['--build-arg', `${k}=${v}`]);
    await buildah(lane, [
      'bud',
      '--isolation',
      'chroot',
      '--layers',
      '--format',
      'docker',
      '--pull-never',
      ...args,
      '-f',
      join(ctx, file),
      '-t',
      tag,
      ctx,
    ]);
  };
  const out = join(work, 'buildah', name);
  await mkdir(out, { recursive: true });
  let parentConfig: ImageConfig | undefined;
  if (meta.parent) {
    await bud(meta.parent.dockerfile, meta.parent.tag);
    parentConfig = await dockerConfig(lane, meta.parent.tag);
  }
  const tag = `localhost/cmp/${name}:buildah`;
  await bud('Dockerfile', tag);
  await buildah(lane, ['push', tag, `oci:${join(out, 'oci')}:latest`]);
  await run(requirePeer('umoci'), ['unpack', '--image', `${join(out, 'oci')}:latest`, join(out, 'bundle')]);
  return {
    tree: await snapshotTree(join(out, 'bundle', 'rootfs')),
    config: await dockerConfig(lane, tag),
    ...(parentConfig ? { parentConfig } : {}),
  };
}

/**
 * The docker-format config buildah keeps for an image (`buildah inspect`): pushing to `oci:` hands out its OCI
 * twin, which has no Healthcheck, OnBuild or Shell.
 */
async function dockerConfig(lane: number, tag: string): Promise<ImageConfig> {
  return (JSON.parse(await buildah(lane, ['inspect', '--type', 'image', tag])) as { Docker: ImageConfig })
    .Docker;
}

/** Drops what only buildah adds by design (its version label), so the rest compares field by field. */
function withoutBuildahLabel(config: ImageConfig): ImageConfig {
  const labels = { ...((config.config?.Labels as Record<string, string> | undefined) ?? {}) };
  delete labels['io.buildah.version'];
  const { Labels: _l, ...rest } = config.config ?? {};
  return {
    ...config,
    config: { ...rest, ...(Object.keys(labels).length > 0 ? { Labels: labels } : {}) },
  };
}

const fixtures = (await readdir(FIXTURES)).sort();

beforeAll(async () => {
  requireRootAndOverlay();
  requireRunc();
  requirePeer('buildah');
  requirePeer('umoci');
  requirePeer('getfattr');
  requirePeer('setfattr');
  work = await tempDir('strata-compare-');
  engine = new Engine({ store: await FsStore.open(join(work, 'store')), registry: new RegistryClient() });
  // The shared base: busybox with users and groups, imported by strata and handed to buildah as a docker-archive.
  const root = await makeBusyboxRoot(join(work, 'busybox-root'));
  for (const a of ['touch', 'rm', 'cp', 'ln', 'chown', 'chmod', 'true', 'test', 'stat'])
    await symlink('busybox', join(root, 'bin', a));
  await mkdir(join(root, 'etc'));
  await mkdir(join(root, 'tmp'));
  await chmod(join(root, 'tmp'), 0o1777);
  await writeFile(
    join(root, 'etc', 'passwd'),
    'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n',
  );
  await writeFile(join(root, 'etc', 'group'), 'root:x:0:\napp:x:1000:\nextra:x:2000:app\n');
  await engine.importDirectory(root, BASE);
  const archive = join(work, 'base.tar');
  await engine.save([BASE], createWriteStream(archive));
  await Promise.all(LANES.map((lane) => buildah(lane, ['pull', '-q', `docker-archive:${archive}`])));

  // strata's chain and buildah's lanes run at once, each in fixture order; each test awaits its own result.
  let strataChain: Promise<unknown> = Promise.resolve();
  const buildahChains: Array<Promise<unknown>> = LANES.map(() => Promise.resolve());
  for (const [i, name] of fixtures.entries()) {
    const lane = i % LANES.length;
    const ready = Promise.all([prepareContext(name), readMeta(name)]);
    const s: Promise<Side> = strataChain
      .catch(() => undefined)
      .then(async () => {
        const [ctx, meta] = await ready;
        return buildWithStrata(name, ctx, meta);
      });
    const b: Promise<Side> = buildahChains[lane]!.catch(() => undefined).then(async () => {
      const [ctx, meta] = await ready;
      return buildWithBuildah(lane, name, ctx, meta);
    });
    strataChain = s;
    buildahChains[lane] = b;
    const both = Promise.all([s, b]).then(([strata, buildah]) => ({ strata, buildah }));
    both.catch(() => undefined); // awaited by its test; never an unhandled rejection meanwhile
    results.set(name, both);
  }
}, 60_000);

afterAll(async () => {
  await Promise.allSettled([...results.values()]);
  if (work && !process.env['STRATA_COMPARE_DUMP']) {
    unmountAllUnder(work);
    await rm(work, { recursive: true, force: true });
  }
});

describe('strata build against buildah bud', () => {
  it('has at least 12 fixtures', () => {
    expect(fixtures.length).toBeGreaterThanOrEqual(12);
  });

  it.each(fixtures)(
    '%s: same tree and config',
    async (name) => {
      const { strata, buildah } = await results.get(name)!;
      const diffs = [
        ...diffTrees(strata.tree, buildah.tree),
        ...diffConfigs(
          comparableConfig(strata.config),
          comparableConfig(withoutBuildahLabel(buildah.config)),
        ),
        ...(strata.parentConfig && buildah.parentConfig
          ? diffConfigs(
              comparableConfig(strata.parentConfig),
              comparableConfig(withoutBuildahLabel(buildah.parentConfig)),
            ).map((d) => `parent ${d}`)
          : []),
      ];
      // STRATA_COMPARE_DUMP=DIR writes every fixture's differences there, to study them.
      const dump = process.env['STRATA_COMPARE_DUMP'];
      if (dump) await writeFile(join(dump, `${name}.json`), JSON.stringify(diffs, null, 1));
      const known = KNOWN.filter((k) => k.fixtures.includes(name));
      const unexplained = diffs.filter((d) => !known.some((k) => k.diff.test(d)));
      expect(unexplained).toEqual([]);
      const stale = known.filter((k) => !diffs.some((d) => k.diff.test(d))).map((k) => String(k.diff));
      expect(stale).toEqual([]);
      // The trees are not trivially equal: the fixture made something.
      expect(strata.tree.size).toBeGreaterThan(1);
    },
    120_000,
  );

  it('whiteout-opaque: strata records the deletions as whiteouts and the replaced directory as opaque', async () => {
    await results.get('whiteout-opaque')!;
    const image = await loadLocalImage(
      engine.store,
      await findLocalRef(engine.store, 'localhost/cmp/whiteout-opaque:strata'),
    );
    const [, , deletes, replaces] = await Promise.all(
      image.manifest.manifest.layers.map((l) => layerEntries(engine.store, l.digest)),
    );
    expect(deletes).toEqual(expect.arrayContaining(['.wh.gone', 'keep/.wh.deleted', 'bin/.wh.rm']));
    expect(deletes!.filter((e) => e.startsWith('gone/'))).toEqual([]);
    expect(replaces).toEqual(expect.arrayContaining(['replaced', 'replaced/.wh..wh..opq', 'replaced/new']));
    expect(replaces!.filter((e) => /^replaced\/old/.test(e))).toEqual([]);
  });
});
