/**
 * A real containerd for tests: its own root, state, config and sockets under a directory the caller owns, with CRI
 * and the snapshotters that need extra setup disabled. Root and the `containerd`/`ctr` peers are required (a missing
 * one fails the test, never skips it).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'vitest';
import { runCli } from '../support/cli.js';
import { requirePeer } from '../support/peers.js';
import { requireRoot } from '../support/root.js';

const run = promisify(execFile);

/** A running containerd. */
export interface Containerd {
  /** The gRPC socket. */
  readonly address: string;
  /** Runs `ctr --address … --namespace strata-test ARGS` and returns stdout; a failure throws with ctr's stderr. */
  ctr(args: readonly string[], timeoutMs?: number): Promise<string>;
  /** SIGTERM, then SIGKILL after 5 s; resolves once it exited. Idempotent. */
  stop(): Promise<void>;
}

/** Starts containerd with everything under `dir` (created if missing) and waits (≤ 15 s) until `ctr version` answers. */
export async function startContainerd(dir: string): Promise<Containerd> {
  requireRoot('the containerd tests');
  const bin = requirePeer('containerd');
  const ctrBin = requirePeer('ctr');
  await mkdir(dir, { recursive: true });
  const address = join(dir, 'c.sock');
  const config = [
    'version = 2',
    `root = ${JSON.stringify(join(dir, 'root'))}`,
    `state = ${JSON.stringify(join(dir, 'state'))}`,
    // No CRI and no snapshotters needing their own filesystems: the content store, metadata and overlayfs suffice.
    'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]',
    '[grpc]',
    `  address = ${JSON.stringify(address)}`,
    '[ttrpc]',
    `  address = ${JSON.stringify(join(dir, 't.sock'))}`,
  ].join('\n');
  await writeFile(join(dir, 'config.toml'), `${config}\n`);
  const child: ChildProcess = spawn(bin, ['--config', join(dir, 'config.toml')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let logs = '';
  child.stderr?.on('data', (c: Buffer) => {
    logs = (logs + c.toString('utf8')).slice(-4000);
  });
  const ctr = async (args: readonly string[], timeoutMs = 60_000): Promise<string> => {
    try {
      const { stdout } = await run(ctrBin, ['--address', address, '--namespace', 'strata-test', ...args], {
        timeout: timeoutMs,
        maxBuffer: 16 * 1024 * 1024,
      });
      return stdout;
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(`ctr ${args.join(' ')} failed: ${e.stderr || e.message}`);
    }
  };
  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopped ??= (async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    })());
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`containerd exited with ${child.exitCode}: ${logs}`);
    try {
      await ctr(['version'], 5000);
      break;
    } catch (err) {
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`containerd did not answer within 15 s: ${String(err)}; ${logs}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return { address, ctr, stop };
}

/**
 * Makes the directory `certs` and has `strata mirror config --containerd` write into it the `hosts.toml` that sends
 * containerd's docker.io pulls to the mirror at `mirrorUrl` (dial timeout 2 s); the command must succeed quietly.
 */
export async function configureMirror(certs: string, mirrorUrl: string): Promise<void> {
  await mkdir(certs); // `mirror config` writes into an existing directory
  const cli = await runCli([
    'mirror',
    'config',
    '--containerd',
    certs,
    '--mirror',
    mirrorUrl,
    '--registry',
    'docker.io',
    '--dial-timeout',
    '2s',
  ]);
  expect(cli.stderr).toBe('');
  expect(cli.code).toBe(0);
}
