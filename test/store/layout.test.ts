import { spawn, spawnSync } from 'node:child_process';
import { readdir, readFile, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { isAbsolute, join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { StrataError } from '../../src/engine/errors.js';
import { silentLogger } from '../../src/engine/observe.js';
import { digestOf } from '../../src/engine/oci/digest.js';
import { MediaType } from '../../src/engine/oci/media-types.js';
import type { Descriptor } from '../../src/engine/oci/types.js';
import { acquireLock, FsStore, LockTimeoutError, REF_NAME_ANNOTATION } from '../../src/engine/store/index.js';
import { selfIdentity } from '../../src/engine/store/proc-identity.js';
import { names, tempDir } from './helpers.js';

function desc(content: string, extra: Partial<Descriptor> = {}): Descriptor {
  return { mediaType: MediaType.OciManifest, digest: digestOf(content), size: content.length, ...extra };
}

/** Names and mtimes of a directory and its subdirectories' entries (one level down). */
async function snapshot(root: string): Promise<Record<string, number>> {
  const out: Record<string, number> = { '.': (await stat(root)).mtimeMs };
  for (const name of await readdir(root)) {
    out[name] = (await stat(join(root, name))).mtimeMs;
  }
  return out;
}

async function indexJson(
  root: string,
): Promise<{ manifests: Record<string, unknown>[]; [k: string]: unknown }> {
  return JSON.parse(await readFile(join(root, 'index.json'), 'utf8')) as {
    manifests: Record<string, unknown>[];
  };
}

describe('FsStore.open', () => {
  it('creates an OCI image layout in a missing directory, and reopens it', async () => {
    const root = join(await tempDir(), 'a', 'store');
    const store = await FsStore.open(root);
    expect(store.root).toBe(root);
    expect(JSON.parse(await readFile(join(root, 'oci-layout'), 'utf8'))).toEqual({
      imageLayoutVersion: '1.0.0',
    });
    expect(await indexJson(root)).toEqual({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] });
    expect(await names(join(root, 'blobs'))).toEqual(['sha256']);
    expect(await names(root)).toEqual(['blobs', 'index.json', 'ingest', 'oci-layout']);
    await store.setRef('example.com/a:1', desc('m'));
    const again = await FsStore.open(root);
    expect(await again.getRef('example.com/a:1')).toEqual(desc('m'));
  });

  it('resolves a relative root to an absolute path once', async () => {
    const root = await tempDir();
    const store = await FsStore.open(relative(process.cwd(), root));
    expect(isAbsolute(store.root)).toBe(true);
    expect(store.root).toBe(root);
    expect(store.blobPath(digestOf('x'))).toBe(join(root, 'blobs', 'sha256', digestOf('x').slice(7)));
  });

  it('opening and reading a complete layout writes nothing (no temp file, directories untouched)', async () => {
    const root = await tempDir();
    const first = await FsStore.open(root);
    await first.setRef('example.com/a:1', desc('m'));
    const before = await snapshot(root);
    const store = await FsStore.open(root);
    await store.listRefs();
    await store.getRef('example.com/a:1');
    // A created-then-removed temp file would still move the directory's mtime.
    expect(await snapshot(root)).toEqual(before);
  });

  it('completes a layout that has only oci-layout, and survives concurrent opens of an empty directory', async () => {
    const root = await tempDir();
    await Promise.all(Array.from({ length: 8 }, () => FsStore.open(root)));
    expect(await names(root)).toEqual(['blobs', 'index.json', 'ingest', 'oci-layout']);
    const other = await tempDir();
    await writeFile(join(other, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    await FsStore.open(other);
    expect((await indexJson(other)).manifests).toEqual([]);
  });

  it('separate processes opening one empty directory at once all succeed (no STORE_CORRUPT race)', async () => {
    const built = join(process.cwd(), 'dist', 'src', 'engine', 'store', 'index.js');
    const script = `const { FsStore } = await import(${JSON.stringify(built)}); await FsStore.open(process.argv[1]);`;
    for (let round = 0; round < 5; round++) {
      const root = join(await tempDir(), 'store');
      const codes = await Promise.all(
        Array.from(
          { length: 6 },
          () =>
            new Promise<string>((resolve) => {
              const child = spawn(process.execPath, ['--input-type=module', '-e', script, root], {
                stdio: ['ignore', 'ignore', 'pipe'],
              });
              let err = '';
              child.stderr.on('data', (d: Buffer) => (err += d.toString()));
              child.on('close', (code) => resolve(code === 0 ? 'ok' : `exit ${code}: ${err}`));
            }),
        ),
      );
      expect(codes).toEqual(Array(6).fill('ok'));
    }
  }, 60_000);

  it('refuses what is not an OCI layout, with a clear STORE_CORRUPT error', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'file'), 'x');
    await expect(FsStore.open(join(dir, 'file'))).rejects.toMatchObject({
      code: 'STORE_CORRUPT',
      message: /not a directory/,
    });
    await expect(FsStore.open(dir)).rejects.toMatchObject({
      code: 'STORE_CORRUPT',
      message: /is not an OCI image layout/,
    });

    const v2 = await tempDir();
    await writeFile(join(v2, 'oci-layout'), '{"imageLayoutVersion":"2.0.0"}');
    await expect(FsStore.open(v2)).rejects.toMatchObject({
      code: 'STORE_CORRUPT',
      message: /imageLayoutVersion "2.0.0"/,
    });

    const broken = await tempDir();
    await FsStore.open(broken);
    await writeFile(join(broken, 'index.json'), '{"manifests": [');
    await expect(FsStore.open(broken)).rejects.toMatchObject({
      code: 'STORE_CORRUPT',
      message: /index.json: not valid JSON/,
    });
  });
});

describe('FsStore refs', () => {
  it('sets, gets, moves, lists and deletes refs with one entry per name', async () => {
    const store = await FsStore.open(await tempDir());
    const a = desc('a');
    const b = desc('b', { annotations: { 'org.opencontainers.image.created': '2024-01-01T00:00:00Z' } });
    await store.setRef('docker.io/library/nginx:latest', a);
    await store.setRef('example.com/x/y:2', b);
    expect(await store.getRef('docker.io/library/nginx:latest')).toEqual(a);
    expect(await store.getRef('example.com/x/y:2')).toEqual(b);
    expect(await store.getRef('nope:1')).toBeUndefined();

    await store.setRef('docker.io/library/nginx:latest', b); // move: replaced in place
    const refs = await store.listRefs();
    expect(refs).toEqual([
      { name: 'docker.io/library/nginx:latest', descriptor: b },
      { name: 'example.com/x/y:2', descriptor: b },
    ]);
    const raw = await indexJson(store.root);
    expect(raw.manifests).toHaveLength(2);
    expect(raw.manifests[0]).toEqual({
      ...b,
      annotations: { ...b.annotations, [REF_NAME_ANNOTATION]: 'docker.io/library/nginx:latest' },
    });

    expect(await store.deleteRef('docker.io/library/nginx:latest')).toBe(true);
    expect(await store.deleteRef('docker.io/library/nginx:latest')).toBe(false);
    expect((await store.listRefs()).map((r) => r.name)).toEqual(['example.com/x/y:2']);
  });

  it('preserves entries, annotations and fields it does not own, and collapses duplicate names', async () => {
    const store = await FsStore.open(await tempDir());
    const foreign = {
      schemaVersion: 2,
      mediaType: MediaType.OciIndex,
      annotations: { 'com.example.top': 'kept' },
      manifests: [
        { ...desc('untagged'), platform: { architecture: 'arm64', os: 'linux' } },
        { ...desc('umoci'), annotations: { [REF_NAME_ANNOTATION]: 'latest', 'com.example.other': 'x' } },
        { ...desc('dup1'), annotations: { [REF_NAME_ANNOTATION]: 'ex.com/dup:1' } },
        { ...desc('dup2'), annotations: { [REF_NAME_ANNOTATION]: 'ex.com/dup:1' } },
      ],
    };
    await writeFile(join(store.root, 'index.json'), JSON.stringify(foreign));
    expect((await store.listRefs()).map((r) => r.name)).toEqual(['latest', 'ex.com/dup:1', 'ex.com/dup:1']);
    expect(await store.getRef('latest')).toEqual({
      ...desc('umoci'),
      annotations: { 'com.example.other': 'x' },
    });

    await store.setRef('ex.com/dup:1', desc('new'));
    await store.setRef('ex.com/app:3', desc('app'));
    const raw = await indexJson(store.root);
    expect(raw.annotations).toEqual({ 'com.example.top': 'kept' });
    expect(raw.manifests).toEqual([
      foreign.manifests[0],
      foreign.manifests[1],
      { ...desc('new'), annotations: { [REF_NAME_ANNOTATION]: 'ex.com/dup:1' } },
      { ...desc('app'), annotations: { [REF_NAME_ANNOTATION]: 'ex.com/app:3' } },
    ]);
  });

  it('rejects bad names and descriptors, and leaves no temp files behind', async () => {
    const store = await FsStore.open(await tempDir());
    for (const bad of ['', 'a b', 'tab\\there', 'new\nline', 'ümlaut:1', 'quote"']) {
      await expect(store.setRef(bad, desc('a'))).rejects.toMatchObject({ code: 'INVALID_REFERENCE' });
    }
    await expect(
      store.setRef('ok:1', { mediaType: 'x', digest: 'sha256:zz', size: 1 } as unknown as Descriptor),
    ).rejects.toMatchObject({
      code: 'MANIFEST_INVALID',
    });
    await store.setRef('ex.com/a@sha256:' + 'a'.repeat(64), desc('a'));
    await store.setRef('ex.com/a__b/c:v1.0-', desc('a')); // legal Docker names outside the strict OCI grammar
    // strata/ holds the reserve that lets rmi and gc rewrite index.json on a full disk.
    expect(await names(store.root)).toEqual(['blobs', 'index.json', 'ingest', 'oci-layout', 'strata']);
  });
});

describe('index lock', () => {
  it('breaks at once a lock whose holder provably died: same PID namespace and boot, pid gone or reused', async () => {
    const store = await FsStore.open(await tempDir(), { lockTimeoutMs: 2000 });
    const me = selfIdentity();
    expect(me).toBeDefined(); // Linux with /proc: the tests run nowhere else
    const dead = spawnSync(process.execPath, ['-e', '0']).pid;
    const lock = join(store.root, 'index.json.lock');
    const started = Date.now();
    await writeFile(lock, JSON.stringify({ ...me, pid: dead, host: 'h', token: 't', created: 0 }));
    await store.setRef('ex.com/a:1', desc('a'));
    // Our own (live) pid with another start time: the pid was reused by us, so the holder is dead.
    await writeFile(lock, JSON.stringify({ ...me, startTime: '1', host: 'h', token: 'u', created: 0 }));
    await store.setRef('ex.com/a:2', desc('a'));
    expect(Date.now() - started).toBeLessThan(1500); // neither waited for the stale time
    expect((await store.listRefs()).length).toBe(2);
    expect(await names(store.root)).not.toContain('index.json.lock');
  });

  it('never breaks a fresh lock by pid when the holder is in another PID namespace, another boot, or a legacy file', async () => {
    const store = await FsStore.open(await tempDir(), { lockTimeoutMs: 300 });
    const me = selfIdentity()!;
    const dead = spawnSync(process.execPath, ['-e', '0']).pid;
    const lock = join(store.root, 'index.json.lock');
    for (const holder of [
      { ...me, pid: dead, pidNs: 'pid:[1]' }, // a pod: its pid means nothing here
      { ...me, pid: dead, bootId: 'another-boot' },
      { pid: dead, host: hostname() }, // written by an older strata: no namespace recorded
    ]) {
      await writeFile(lock, JSON.stringify({ host: 'h', token: 't', created: 0, ...holder }));
      await expect(store.setRef('ex.com/a:1', desc('a'))).rejects.toMatchObject({ code: 'LOCK_TIMEOUT' });
    }
    expect(await store.listRefs()).toEqual([]);
  });

  it('breaks a lock that was not refreshed for staleLockMs (another host, an empty file)', async () => {
    const store = await FsStore.open(await tempDir(), { lockTimeoutMs: 5000, staleLockMs: 1000 });
    const lock = join(store.root, 'index.json.lock');
    await writeFile(lock, JSON.stringify({ pid: 1, host: 'some-other-host', token: 't', created: 0 }));
    const old = new Date(Date.now() - 5000);
    await utimes(lock, old, old);
    await store.setRef('ex.com/a:1', desc('a'));
    await writeFile(lock, '');
    await utimes(lock, old, old);
    await store.setRef('ex.com/a:2', desc('a'));
    expect((await store.listRefs()).length).toBe(2);
  });

  it('a holder whose lock was broken and retaken learns it (verify) and leaves the new lock alone', async () => {
    const path = join(await tempDir(), 'x.lock');
    const events: unknown[] = [];
    const observer = { log: silentLogger, emit: (e: unknown) => events.push(e) };
    const first = await acquireLock(path, { observer });
    expect(await first.verify()).toBe(true);
    expect(events).toEqual([]); // no wait, no event
    await unlink(path); // as a waiter breaking it after a stall would
    const second = await acquireLock(path, { observer });
    expect(await first.verify()).toBe(false);
    await first.release();
    expect(await second.verify()).toBe(true); // still there: first did not remove it
    const third = acquireLock(path, { observer, timeoutMs: 2000 });
    setTimeout(() => void second.release(), 100);
    await (await third).release();
    expect(events).toEqual([
      { type: 'lock-wait', lock: path, waitedMs: expect.any(Number) as number, outcome: 'acquired' },
    ]);
    expect((events[0] as { waitedMs: number }).waitedMs).toBeGreaterThanOrEqual(90);
    const held = await acquireLock(path);
    await expect(acquireLock(path, { observer, timeoutMs: 50 })).rejects.toMatchObject({
      code: 'LOCK_TIMEOUT',
    });
    await expect(acquireLock(path, { observer, signal: AbortSignal.timeout(50) })).rejects.toMatchObject({
      code: 'ABORTED',
    });
    await held.release();
    expect(events.slice(1).map((e) => (e as { outcome: string }).outcome)).toEqual(['timeout', 'aborted']);
  });

  it('waits a bounded time for a live holder, then fails retryably; is abortable; refreshes a long hold', async () => {
    const root = await tempDir();
    const store = await FsStore.open(root, { lockTimeoutMs: 300, staleLockMs: 150 });
    const held = await acquireLock(join(root, 'index.json.lock'), { staleMs: 150 });
    try {
      const started = Date.now();
      // The holder is alive and refreshes its lock, so it is never judged stale however long it holds.
      const err = await store.setRef('ex.com/a:1', desc('a')).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(LockTimeoutError);
      expect((err as StrataError).retryable).toBe(true);
      expect((err as StrataError).message).toMatch(/still held by pid \d+/);
      expect(Date.now() - started).toBeGreaterThanOrEqual(290);

      const ac = new AbortController();
      setTimeout(() => ac.abort(), 50);
      await expect(store.deleteRef('x', { signal: ac.signal })).rejects.toMatchObject({ code: 'ABORTED' });
      await expect(store.gc({ signal: AbortSignal.abort() })).rejects.toMatchObject({ code: 'ABORTED' });
    } finally {
      await held.release();
    }
    await store.setRef('ex.com/a:1', desc('a'));
  });
});
