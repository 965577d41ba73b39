/** `images`, `history`, `commit` and `rmi` as a docker user expects them, through real CLI processes and stores. */
import { readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsStore } from '../../src/engine/store/fs-store.js';
import { runCli } from '../support/cli.js';
import { makeTarball, tempDir } from '../support/images.js';

let work: string;
let env: Record<string, string>;
let tarSize: number;

interface Row {
  name: string;
  id: string;
  digest: string;
  size: number;
  compressedSize: number;
}

async function json<T>(args: string[]): Promise<T> {
  const r = await runCli(['--json', ...args], env);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as T;
}

async function ok(args: string[]): Promise<string> {
  const r = await runCli(args, env);
  expect(r.code, r.stderr).toBe(0);
  return r.stdout;
}

beforeAll(async () => {
  work = await tempDir('strata-cli-images-');
  env = { STRATA_STORE: join(work, 'store') };
  // Compressible content: the uncompressed size is far above the stored (gzip) one.
  const tar = await makeTarball({
    'etc/os-release': 'NAME=test',
    'data/zeros': '0'.repeat(400_000),
    'data/rnd': 20_000,
  });
  tarSize = (await stat(tar)).size;
  await ok(['import', '-m', 'base layer', tar, 'demo/base:1']);
  await ok(['tag', 'demo/base:1', 'demo/base:2']);
  await ok(['import', await makeTarball({ 'x.txt': 'x' }), 'other/app:1']);
}, 120_000);

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('sizes as docker shows them', () => {
  it('images and inspect show the uncompressed size of the layers; the stored size is kept in --json', async () => {
    const rows = await json<Row[]>(['images']);
    const base = rows.find((r) => r.name === 'docker.io/demo/base:1')!;
    expect(base.size).toBe(tarSize); // the layer is the imported tar itself, uncompressed
    expect(base.compressedSize).toBeLessThan(tarSize / 4);
    const [doc] = await json<Array<{ Size: number; Manifest: { layers: Array<{ digest: string }> } }>>([
      'inspect',
      'demo/base:1',
    ]);
    expect(doc!.Size).toBe(tarSize);
    // The same number as decompressing the stored blob.
    const blob = join(env.STRATA_STORE!, 'blobs/sha256', doc!.Manifest.layers[0]!.digest.slice(7));
    expect(gunzipSync(readFileSync(blob)).length).toBe(tarSize);
  });

  it('measures a layer once: later calls read the record under strata/sizes', async () => {
    const [doc] = await json<Array<{ Manifest: { layers: Array<{ digest: string }> } }>>([
      'inspect',
      'demo/base:1',
    ]);
    const hex = doc!.Manifest.layers[0]!.digest.slice(7);
    const record = join(env.STRATA_STORE!, 'strata/sizes', hex);
    expect(Number(readFileSync(record, 'utf8'))).toBe(tarSize);
    // A different number in the record is what images then shows: it did not decompress the layer again.
    await writeFile(record, `${tarSize + 12345}\n`);
    const rows = await json<Row[]>(['images', 'demo/base:1']);
    expect(rows[0]!.size).toBe(tarSize + 12345);
    await writeFile(record, `${tarSize}\n`);
  });

  it('history shows the layer step with its uncompressed size', async () => {
    const rows = await json<Array<{ size: number; compressedSize: number; comment: string }>>([
      'history',
      'demo/base:1',
    ]);
    expect(rows[0]).toMatchObject({ size: tarSize, comment: 'base layer' });
    expect(rows[0]!.compressedSize).toBeLessThan(tarSize / 4);
    const text = await ok(['history', 'demo/base:1']);
    expect(text).toMatch(new RegExp(`${(tarSize / 1000).toFixed(0)}kB`));
  });
});

describe('images selection and output', () => {
  it('-q prints each image ID once; --no-trunc the full ID', async () => {
    const rows = await json<Row[]>(['images']);
    const ids = [...new Set(rows.map((r) => r.id))];
    expect(ids).toHaveLength(2); // demo/base:1 and :2 are one image
    const q = (await ok(['images', '-q'])).trim().split('\n');
    expect(q.sort()).toEqual(ids.map((i) => i.slice(7, 19)).sort());
    const full = (await ok(['images', '-q', '--no-trunc'])).trim().split('\n');
    expect(full.sort()).toEqual([...ids].sort());
  });

  it('REPO lists every tag of a repository; REPO:TAG one tag', async () => {
    const repo = await ok(['images', '--format', '{{.Repository}}:{{.Tag}}', 'demo/base']);
    expect(repo.trim().split('\n')).toEqual(['demo/base:1', 'demo/base:2']);
    const tag = await ok(['images', '--format', '{{.Repository}}:{{.Tag}}', 'demo/base:2']);
    expect(tag.trim()).toBe('demo/base:2');
    expect((await ok(['images', '-q', 'nothing/here'])).trim()).toBe('');
  });

  it('--filter reference, dangling, before and since', async () => {
    const names = async (...args: string[]): Promise<string[]> =>
      (await ok(['images', '--format', '{{.Repository}}:{{.Tag}}', ...args]))
        .trim()
        .split('\n')
        .filter(Boolean);
    expect(await names('--filter', 'reference=demo/*')).toEqual(['demo/base:1', 'demo/base:2']);
    // As Go's path.Match: * stops at /, so '*:1' would only match one-component names (busybox:1).
    // As Go's path.Match: * stops at /, so '*:1' would only match one-component names (busybox:1).
    expect(await names('--filter', 'reference=*/*:1')).toEqual(['demo/base:1', 'other/app:1']);
    expect(await names('--filter', 'reference=other/*', '--filter', 'reference=demo/base:2')).toEqual([
      'demo/base:2',
      'other/app:1',
    ]);
    // A ref by digest only (as `pull repo@sha256:…` leaves) has no tag: docker's dangling <none>.
    const store = await FsStore.open(env.STRATA_STORE!);
    const desc = (await store.getRef('docker.io/other/app:1'))!;
    await store.setRef(`docker.io/other/app@${desc.digest}`, desc);
    expect(await names('--filter', 'dangling=true')).toEqual(['other/app:<none>']);
    expect(await names('--filter', 'dangling=false')).toHaveLength(3);
    await store.deleteRef(`docker.io/other/app@${desc.digest}`);
    expect(await names('--filter', 'since=demo/base:1')).toEqual(['other/app:1']);
    expect(await names('--filter', 'before=other/app:1')).toEqual(['demo/base:1', 'demo/base:2']);
    const bad = await runCli(['images', '--filter', 'label=x'], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--filter label=x/);
    const unknown = await runCli(['images', '--filter', 'since=nothing/here:1'], env);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('nothing/here:1');
  });

  it('--format templates, table and json', async () => {
    const rows = await json<Row[]>(['images', 'demo/base:1']);
    const line = (
      await ok(['images', '--format', '{{.Repository}}:{{.Tag}}\\t{{.ID}} {{ .Size }}', 'demo/base:1'])
    ).trim();
    expect(line).toBe(`demo/base:1\t${rows[0]!.id.slice(7, 19)} ${(tarSize / 1000).toFixed(0)}kB`);
    const table = (await ok(['images', '--format', 'table {{.Repository}}\\t{{.Digest}}', 'demo/base:1']))
      .trim()
      .split('\n');
    expect(table[0]).toMatch(/^REPOSITORY\s+DIGEST$/);
    expect(table[1]).toMatch(new RegExp(`^demo/base\\s+${rows[0]!.digest}$`));
    const objs = (await ok(['images', '--format', 'json']))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, string>);
    expect(objs).toHaveLength(3);
    expect(objs[0]).toMatchObject({ Repository: 'demo/base', Tag: '1', ID: rows[0]!.id.slice(7, 19) });
    const bad = await runCli(['images', '--format', '{{.Nope}}'], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/unknown field \.Nope/);
  });
});

describe('commit and rmi with a container', () => {
  it('commit prints the image ID; rmi of the image a container uses needs -f, and the container keeps working', async () => {
    const name = (await ok(['create', '--driver', 'vfs', '--name', 'box', 'other/app:1'])).trim();
    expect(name).toBe('box');
    const rec = JSON.parse(
      readFileSync(join(env.STRATA_STORE!, 'strata/containers/box/container.json'), 'utf8'),
    ) as {
      merged: string;
    };
    await writeFile(join(rec.merged, 'new.txt'), 'y'.repeat(5000));
    const id = (await ok(['commit', '-m', 'change', 'box', 'other/app:2'])).trim();
    const [doc] = await json<Array<{ Id: string; Size: number }>>(['inspect', 'other/app:2']);
    expect(id).toBe(doc!.Id);
    expect(id).toMatch(/^sha256:[a-f0-9]{64}$/);
    // commit recorded its layer's uncompressed size: history shows it with no measuring.
    expect(await readdir(join(env.STRATA_STORE!, 'strata/sizes'))).not.toHaveLength(0);

    const refused = await runCli(['rmi', 'other/app:1'], env);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/used by container box/);
    const stillThere = await runCli(['inspect', 'other/app:1'], env);
    expect(stillThere.code).toBe(0);

    // Another tag of the same image: untagging one is fine, the last one is refused.
    await ok(['tag', 'other/app:1', 'other/app:keep']);
    expect(await ok(['rmi', 'other/app:keep'])).toContain('Untagged: docker.io/other/app:keep');

    const forced = await runCli(['rmi', '-f', 'other/app:1'], env);
    expect(forced.code, forced.stderr).toBe(0);
    expect(forced.stdout).toContain('Untagged: docker.io/other/app:1');
    // The container's image stays in the store (gc roots), so a commit still works.
    const again = await runCli(['commit', 'box', 'other/app:3'], env);
    expect(again.code, again.stderr).toBe(0);
    expect(await ok(['rm', 'box'])).toContain('box');
  });
});
