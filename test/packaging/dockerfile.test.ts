/**
 * The Strata image (issue 15 §4, ADR 0027): the repository's Dockerfile builds with `strata build` and with
 * `buildah bud` from the same local base, and the image runs `strata --version` under runc.
 *
 * The base is made here, as no image hub is reachable: the cached debootstrap minbase root (test/support/debian.ts)
 * imported with `strata import`, plus this machine's node binary and npm (Debian bookworm's nodejs is 18, older than
 * the engine's `engines.node` of >= 20.18), built and tagged as the Dockerfile's default BASE. Needs root, runc,
 * buildah, debootstrap (first run only) and the npm registry and a Debian mirror (npm ci, apt-get in the build).
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { cp, copyFile, mkdir, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../support/cli.js';
import { debianBaseTar } from '../support/debian.js';
import { tempDir } from '../support/images.js';
import { requirePeer } from '../support/peers.js';
import { requireRootAndOverlay, unmountAllUnder } from '../support/root.js';
import { requireRunc } from '../build/run-support.js';

const exec = promisify(execFile);
const REPO = fileURLToPath(new URL('../..', import.meta.url));
const VERSION = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
/** The Dockerfile's default `ARG BASE`. */
const BASE = /^ARG BASE=(\S+)$/m.exec(readFileSync(join(REPO, 'Dockerfile'), 'utf8'))![1]!;
const MINBASE = 'localhost/strata-test/debian-minbase:bookworm';
/** Where the base keeps the machine's extra CAs (ca-certificates adds them to the system's bundle too). */
const EXTRA_CA = '/usr/local/share/ca-certificates/strata-test-extra.crt';

let work: string;
let env: Record<string, string>;

/** Runs the CLI on the test's store; a failure throws with the end of its standard error. */
async function strata(...args: string[]): Promise<string> {
  const r = await runCli(args, env);
  if (r.code !== 0) throw new Error(`strata ${args.join(' ')} exited ${r.code}:\n${r.stderr.slice(-4000)}`);
  return r.stdout;
}

/** Runs buildah on the test's own storage (never the machine's). */
async function buildah(...args: string[]): Promise<string> {
  const root = ['--root', join(work, 'buildah', 'root'), '--runroot', join(work, 'buildah', 'run')];
  try {
    return (await exec('buildah', [...root, ...args], { maxBuffer: 64 << 20 })).stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`buildah ${args.join(' ')}: ${(e.stderr ?? e.message).slice(-4000)}`);
  }
}

/** This machine's node and npm (npm from `<prefix>/lib/node_modules/npm`, next to `<prefix>/bin/node`). */
function hostNode(): { node: string; npm: string } {
  const npm = join(dirname(dirname(process.execPath)), 'lib', 'node_modules', 'npm');
  if (!existsSync(join(npm, 'bin', 'npm-cli.js')))
    throw new Error(`the packaging test copies this machine's npm into its base, and ${npm} holds none`);
  return { node: process.execPath, npm };
}

/**
 * The BASE image: the minbase root plus node and npm in /usr/local, as the official node images have them. The
 * machine's extra CAs (`NODE_EXTRA_CA_CERTS`: a TLS-intercepting proxy in front of the npm registry) go in too,
 * as a site's own base image would carry them.
 */
async function makeBase(): Promise<void> {
  await strata('import', await debianBaseTar(), MINBASE);
  const ctx = join(work, 'base-context');
  const { node, npm } = hostNode();
  await mkdir(ctx, { recursive: true });
  await copyFile(node, join(ctx, 'node'));
  await cp(npm, join(ctx, 'npm'), { recursive: true });
  const cas = process.env.NODE_EXTRA_CA_CERTS;
  const caLines: string[] = [];
  if (cas && existsSync(cas)) {
    await copyFile(cas, join(ctx, 'extra-ca.crt'));
    caLines.push(`COPY extra-ca.crt ${EXTRA_CA}`, `ENV NODE_EXTRA_CA_CERTS=${EXTRA_CA}`);
  }
  await writeFile(
    join(ctx, 'Dockerfile'),
    [
      `FROM ${MINBASE}`,
      ...caLines,
      'COPY node /usr/local/bin/node',
      'COPY npm /usr/local/lib/node_modules/npm',
      'RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \\',
      ' && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx && node --version && npm --version',
      '',
    ].join('\n'),
  );
  await strata('build', '-t', BASE, ctx);
}

/**
 * `strata --version` in a local image under runc; then its default user, the engine's tools, a store the default
 * user makes, and pino (the bundle's one external) from the pruned node_modules.
 */
async function runInImage(ref: string): Promise<void> {
  const inImage = (...cmd: string[]): Promise<string> => strata('run', '--rm', ref, '--', ...cmd);
  expect((await inImage('strata', '--version')).trim()).toBe(VERSION);
  expect((await inImage('id', '-u')).trim()).toBe('65532');
  const tools = ['runc', 'setfattr', 'getfattr', 'pigz', 'zstd', 'git', 'mount'];
  const found = await inImage('sh', '-c', 'for t; do command -v $t; done', 'sh', ...tools);
  expect(
    found
      .trim()
      .split('\n')
      .map((p) => p.replace(/.*\//, '')),
  ).toEqual(tools);
  expect(await inImage('strata', 'images', '-q')).toBe('');
  const log = await inImage('sh', '-c', 'cd /opt/strata && node -e \'require("pino")().info("from pino")\'');
  expect(JSON.parse(log)).toMatchObject({ msg: 'from pino' });
}

beforeAll(async () => {
  requireRootAndOverlay();
  requireRunc();
  requirePeer('buildah');
  work = await tempDir('strata-packaging-');
  env = { STRATA_STORE: join(work, 'store') };
  await makeBase();
}, 600_000);

afterAll(async () => {
  if (!work) return;
  await buildah('rm', '--all').catch(() => undefined);
  unmountAllUnder(work);
  await rm(work, { recursive: true, force: true });
});

describe('the Strata image', () => {
  it('builds with strata build from the default BASE and runs strata --version under runc', async () => {
    await strata('build', '-t', 'localhost/strata:test', REPO);
    await runInImage('localhost/strata:test');
  }, 900_000);

  it('builds with buildah bud from the same base, and runs the same way', async () => {
    const base = join(work, 'base.tar');
    await strata('save', '-o', base, BASE);
    await buildah('pull', `docker-archive:${base}`);
    await buildah('bud', '--pull=never', '--network', 'host', '-t', 'localhost/strata:buildah', REPO);
    const out = join(work, 'buildah.tar');
    await buildah('push', 'localhost/strata:buildah', `docker-archive:${out}:localhost/strata:buildah`);
    await strata('load', '-i', out);
    await runInImage('localhost/strata:buildah');
  }, 900_000);
});
