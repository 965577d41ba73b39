import { spawn, type ChildProcess } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../support/cli.js';
import { makeTarball, tempDir } from '../support/images.js';

const CLI = fileURLToPath(new URL('../../bin/strata.js', import.meta.url));
let work: string;
let server: ChildProcess;
let host: string;

/** Starts `strata registry serve` on a free port and resolves with its `host:port` once it printed its URL. */
function serve(root: string): Promise<{ child: ChildProcess; host: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [CLI, 'registry', 'serve', '--listen', '127.0.0.1:0', '--root', root],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, STRATA_LOG_LEVEL: 'warn' } },
    );
    let out = '';
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /^http:\/\/(\S+)\n/.exec(out);
      if (m) resolve({ child, host: m[1]! });
    });
    child.on('exit', (code) => reject(new Error(`registry serve exited with ${code}: ${err}`)));
  });
}

beforeAll(async () => {
  work = await tempDir('strata-cli-');
  ({ child: server, host } = await serve(join(work, 'registry')));
});

afterAll(async () => {
  server?.kill('SIGTERM');
  await rm(work, { recursive: true, force: true });
});

const A = (): Record<string, string> => ({ STRATA_STORE: join(work, 'store-a') });
const B = (): Record<string, string> => ({ STRATA_STORE: join(work, 'store-b') });

describe('strata CLI on the embedded registry', () => {
  it('import → push → re-push → pull → images / inspect / history / tag / rmi / gc', async () => {
    const tar = await makeTarball({ 'etc/os-release': 'NAME=test', 'app/data.bin': 100_000 });
    const imported = await runCli(['import', '-m', 'first import', tar, 'demo/app:1'], A());
    expect(imported.stderr).toBe('');
    expect(imported.code).toBe(0);
    const digest = imported.stdout.trim();
    expect(digest).toMatch(/^sha256:[a-f0-9]{64}$/);

    const push = await runCli(['--json', 'push', 'demo/app:1', `${host}/demo/app:1`], A());
    expect(push.code).toBe(0);
    const lines = push.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { type: string; digest?: string; blobs?: Record<string, number> });
    expect(lines.some((l) => l.type === 'blob-done')).toBe(true);
    const result = lines.at(-1)!;
    expect(result).toMatchObject({ type: 'result', digest, blobs: { copied: 2 } });

    const again = await runCli(['push', 'demo/app:1', `${host}/demo/app:1`], A());
    expect(again.stdout).toContain('0 blobs sent, 2 already present');

    const pull = await runCli(['pull', `${host}/demo/app:1`], B());
    expect(pull.code).toBe(0);
    expect(pull.stdout).toContain(`Digest: ${digest}`);
    expect(pull.stdout).toContain('Downloaded newer image');
    expect((await runCli(['pull', `${host}/demo/app:1`], B())).stdout).toContain('Image is up to date');

    const images = await runCli(['images'], B());
    expect(images.stdout).toMatch(new RegExp(`^${host.replace(/\./g, '\\.')}/demo/app\\s+1\\s+sha256:`, 'm'));
    const rows = JSON.parse((await runCli(['--json', 'images'], B())).stdout) as Array<{
      name: string;
      digest: string;
      size: number;
    }>;
    expect(rows).toEqual([expect.objectContaining({ name: `${host}/demo/app:1`, digest })]);
    expect(rows[0]!.size).toBeGreaterThan(100_000);

    const inspect = JSON.parse((await runCli(['inspect', `${host}/demo/app:1`], B())).stdout) as Array<{
      RepoDigests: string[];
      Comment: string;
      RootFS: { Layers: string[] };
    }>;
    expect(inspect[0]!.RepoDigests).toEqual([`${host}/demo/app@${digest}`]);
    expect(inspect[0]!.Comment).toBe('first import');
    expect(inspect[0]!.RootFS.Layers).toHaveLength(1);

    const history = await runCli(['history', `${host}/demo/app:1`], B());
    expect(history.stdout).toMatch(/CREATED BY[\s\S]*strata import[\s\S]*first import/);

    expect((await runCli(['tag', `${host}/demo/app:1`, 'local/copy:2'], B())).code).toBe(0);
    expect((await runCli(['images'], B())).stdout).toContain('local/copy');

    const rmi = await runCli(['rmi', `${host}/demo/app:1`], B());
    expect(rmi.stdout).toContain(`Untagged: ${host}/demo/app:1`);
    expect((await runCli(['inspect', 'local/copy:2'], B())).code).toBe(0); // still tagged: blobs kept
    const rmi2 = await runCli(['rmi', 'local/copy:2'], B());
    expect(rmi2.stdout).toMatch(/Deleted: sha256:/);
    const gc = await runCli(['gc'], B());
    expect(gc.stdout).toMatch(/Deleted 0 blobs/);
  });

  it('fails with one clear line and a non-zero exit', async () => {
    const bad = await runCli(['pull', 'Not A Ref'], A());
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/^strata: pull: invalid reference "Not A Ref"/);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);

    const missing = await runCli(['inspect', 'nothing/here:1'], A());
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('no local image "nothing/here:1"');

    const unknown = await runCli(['pull', `${host}/nope/nope:1`], A());
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain(`${host}/nope/nope:1`);
    expect(unknown.stderr).toMatch(/MANIFEST_UNKNOWN|NAME_UNKNOWN|not found|unknown/i);

    const usage = await runCli(['pull'], A());
    expect(usage.code).toBe(2);
  });
});

describe('pull status and archive output', () => {
  const C = (): Record<string, string> => ({ STRATA_STORE: join(work, 'store-c') });

  it('a re-pull that only adds a tag says "Downloaded newer image"; "up to date" only when nothing changed', async () => {
    const tar = await makeTarball({ 'tag.txt': 'tags' });
    expect((await runCli(['import', tar, 'tagtest/app:1'], A())).code).toBe(0);
    for (const t of ['1', '2'])
      expect((await runCli(['push', 'tagtest/app:1', `${host}/tagtest/app:${t}`], A())).code).toBe(0);
    const first = await runCli(['pull', `${host}/tagtest/app:1`], C());
    expect(first.stdout).toContain('Status: Downloaded newer image');
    // Same digest under a new tag: no blob moves, but the store changed (a new tag).
    const retag = await runCli(['pull', `${host}/tagtest/app:2`], C());
    expect(retag.code, retag.stderr).toBe(0);
    expect(retag.stdout).toContain(`Status: Downloaded newer image for ${host}/tagtest/app:2`);
    const again = await runCli(['pull', `${host}/tagtest/app:2`], C());
    expect(again.stdout).toContain(`Status: Image is up to date for ${host}/tagtest/app:2`);
  });

  it('--json save to standard output keeps the archive clean: events go to standard error', async () => {
    const r = await runCli(['--json', 'save', 'tagtest/app:1'], A());
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('manifest.json');
    expect(r.stdout).not.toContain('"type":"blob-done"');
    const events = r.stderr
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { type: string });
    expect(events.some((e) => e.type === 'blob-done')).toBe(true);
    expect(events.at(-1)).toMatchObject({ type: 'result', verb: 'save' });
  });
});

describe('inspect of several images', () => {
  it('prints the ones found and fails naming the missing one, like docker', async () => {
    const tar = await makeTarball({ 'a.txt': 'a' });
    expect((await runCli(['import', tar, 'several/one:1'], A())).code).toBe(0);
    const res = await runCli(['inspect', 'several/one:1', 'several/missing:1'], A());
    expect(res.code).toBe(1);
    const docs = JSON.parse(res.stdout) as Array<{ RepoTags: string[] }>;
    expect(docs.map((d) => d.RepoTags[0])).toEqual(['docker.io/several/one:1']);
    expect(res.stderr).toContain('several/missing:1');
  });
});
