import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { digestOf } from '../../src/engine/oci/digest.js';
import { MediaType } from '../../src/engine/oci/media-types.js';
import type { Descriptor } from '../../src/engine/oci/types.js';
import { FsStore } from '../../src/engine/store/index.js';
import { requireRoot } from '../support/root.js';
import { child, childCommand, requireFreshStoreBuild } from './child.js';
import { names, tempDir } from './helpers.js';

// Each child runs in its own PID namespace (as pods on one node do), sharing the store directory and the hostname.
// `sh` is pid 1 there and runs `k` short programs first, so node's pid differs per namespace: a holder's pid
// names no process (or another one) in its neighbours' namespaces, which is what broke live locks before. The
// gaps are wide because node's own threads take the next ids (and `kill(tid, 0)` succeeds on a thread).
const inNamespace = (k: number): string[] => [
  'unshare',
  '--pid',
  '--fork',
  '--mount-proc',
  '--kill-child',
  'sh',
  '-c',
  `${'/bin/true; '.repeat(k)}"$0" "$@"`,
];

beforeAll(() => {
  requireRoot('the PID-namespace lock tests');
  requireFreshStoreBuild();
});

describe('store locks across PID namespaces', () => {
  it('never breaks a live lock: critical sections from 4 namespaces never overlap', async () => {
    const root = await tempDir();
    await FsStore.open(root);
    const goAt = Date.now() + 1500;
    const body = `
      const { appendFile } = await import('node:fs/promises');
      const lockPath = args.root + '/index.json.lock';
      for (let i = 0; i < 25; i++) {
        const held = await acquireLock(lockPath, { staleMs: 5000, timeoutMs: 60000 });
        await appendFile(args.log, 'enter ' + args.who + '\\n');
        await new Promise((r) => setTimeout(r, 3)); // hold a little so waiters really wait
        await appendFile(args.log, 'exit ' + args.who + '\\n');
        await held.release();
      }
    `;
    const log = join(root, 'sections.log');
    await Promise.all([0, 1, 2, 3].map((k) => child(body, { root, log, who: k, goAt }, inNamespace(k * 20))));
    const lines = (await readFile(log, 'utf8')).trim().split('\n');
    expect(lines).toHaveLength(4 * 25 * 2);
    for (let i = 0; i < lines.length; i += 2) {
      const who = lines[i]!.split(' ')[1];
      // An enter is always followed by the same holder's exit: nobody entered while another held the lock.
      expect([lines[i], lines[i + 1]]).toEqual([`enter ${who}`, `exit ${who}`]);
    }
  });

  it('loses no index update: 4 namespaces × 40 setRef all land', async () => {
    const root = await tempDir();
    await FsStore.open(root);
    const goAt = Date.now() + 1500;
    const body = `
      const store = await FsStore.open(args.root);
      for (let i = 0; i < 40; i++) {
        const hex = (args.who * 1000 + i).toString(16).padStart(64, '0');
        await store.setRef('example.com/ns' + args.who + '/img:' + i,
          { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: 'sha256:' + hex, size: i });
      }
    `;
    await Promise.all([1, 2, 3, 4].map((k) => child(body, { root, who: k, goAt }, inNamespace(k * 20))));
    const refs = await (await FsStore.open(root)).listRefs();
    expect(new Set(refs.map((r) => r.name)).size).toBe(160);
    expect(refs).toHaveLength(160);
    expect(await names(root)).toEqual(['blobs', 'index.json', 'ingest', 'oci-layout', 'strata']);
  });

  it('a holder SIGKILLed in another PID namespace frees the lock within the stale time', async () => {
    const root = await tempDir();
    const store = await FsStore.open(root, { staleLockMs: 1500, lockTimeoutMs: 20_000 });
    const [cmd, argv] = childCommand(
      `
      await acquireLock(args.root + '/index.json.lock', { staleMs: 1500 });
      process.stdout.write('held\\n');
      setInterval(() => undefined, 1000); // hold (and refresh) until killed
    `,
      inNamespace(30),
    );
    const holder = spawn(cmd, argv, {
      env: { ...process.env, STRATA_ARGS: JSON.stringify({ root }) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout.on('data', (d: Buffer) => {
          if (d.toString().includes('held')) resolve();
        });
        holder.on('exit', (code) => reject(new Error(`holder exited early (${code})`)));
      });
      // Alive and refreshing: a waiter gives up rather than break it, however long past the stale time it waits.
      const waiter = await FsStore.open(root, { staleLockMs: 1500, lockTimeoutMs: 3000 });
      await expect(waiter.setRef('ex.com/a:0', desc())).rejects.toMatchObject({ code: 'LOCK_TIMEOUT' });
    } finally {
      holder.kill('SIGKILL'); // unshare --kill-child takes node (pid 1 of its namespace tree) down with it
    }
    await new Promise((r) => holder.once('exit', r));
    const killedAt = Date.now();
    await store.setRef('ex.com/a:1', desc());
    expect(Date.now() - killedAt).toBeLessThan(1500 + 2000);
    expect((await store.listRefs()).map((r) => r.name)).toEqual(['ex.com/a:1']);
  });
});

function desc(): Descriptor {
  return { mediaType: MediaType.OciManifest, digest: digestOf('m'), size: 1 };
}
