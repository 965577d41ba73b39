/**
 * Starts a real CNCF distribution registry (Debian's `/usr/bin/docker-registry`) for tests: filesystem storage in a
 * temp dir, deletes enabled, optional htpasswd Basic auth, optional TLS, on a free 127.0.0.1 port. A missing peer fails
 * the test.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requirePeer } from './peers.js';

/** Options of {@link startDockerRegistry}. */
export interface DockerRegistryOptions {
  /** Require Basic auth with this user (htpasswd, bcrypt). */
  readonly auth?: { readonly username: string; readonly password: string };
  /** How long to wait for `/v2/` to answer. Default 20 s. */
  readonly startTimeoutMs?: number;
  /** Extra YAML appended under the top level of the config (advanced). */
  readonly extraConfig?: string;
  /**
   * Serve HTTPS with this certificate and key (PEM file paths). `ca` (PEM file) verifies the readiness check;
   * `clientCas` (PEM file) makes the registry require client certificates signed by it.
   */
  readonly tls?: {
    readonly cert: string;
    readonly key: string;
    readonly ca?: string;
    readonly clientCas?: string;
  };
}

/** A running registry. */
export interface DockerRegistry {
  /** `http://127.0.0.1:PORT` (`https://` with TLS) */
  readonly url: string;
  /** `127.0.0.1:PORT`, usable as the registry part of a reference. */
  readonly host: string;
  /** The storage root directory (under the temp dir). */
  readonly storageDir: string;
  /** Stops the process and removes its temp dir. Idempotent. */
  stop(): Promise<void>;
}

/** A free TCP port on 127.0.0.1 (bind to 0, read, close). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * One HTTPS readiness probe: true when `/v2/` answers 200/401, or when the TLS handshake is refused for want of a
 * client certificate (the server is up); false when not listening yet.
 */
function probeHttps(url: string, ca: string | undefined, clientCerts: boolean): Promise<boolean> {
  return new Promise((resolve) => {
    const req = httpsRequest(`${url}/v2/`, {
      ...(ca ? { ca: readFileSync(ca, 'utf8') } : { rejectUnauthorized: false }),
      agent: false,
    });
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode === 200 || res.statusCode === 401);
    });
    req.on('error', (err: Error & { code?: string }) =>
      resolve(clientCerts && err.code !== 'ECONNREFUSED' && /ERR_SSL|ECONNRESET/.test(err.code ?? '')),
    );
    req.end();
  });
}

async function waitReady(
  url: string,
  child: ChildProcess,
  timeoutMs: number,
  logs: () => string,
  tls?: DockerRegistryOptions['tls'],
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited with ${child.exitCode}: ${logs()}`);
    if (tls) {
      if (await probeHttps(url, tls.ca, tls.clientCas !== undefined)) return;
    } else {
      try {
        const res = await fetch(`${url}/v2/`);
        await res.arrayBuffer();
        if (res.status === 200 || res.status === 401) return;
      } catch {
        // not listening yet
      }
    }
    if (Date.now() > deadline)
      throw new Error(`docker-registry did not answer on ${url} within ${timeoutMs} ms: ${logs()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Starts `docker-registry serve CONFIG` and waits until `/v2/` answers (200, or 401 with auth).
 * Always call `stop()` (e.g. in `afterAll`).
 */
export async function startDockerRegistry(options: DockerRegistryOptions = {}): Promise<DockerRegistry> {
  const bin = requirePeer('docker-registry');
  const dir = await mkdtemp(join(tmpdir(), 'strata-registry-'));
  const storageDir = join(dir, 'storage');
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  let authYaml = '';
  if (options.auth) {
    const htpasswd = requirePeer('htpasswd');
    const line = execFileSync(htpasswd, ['-Bbn', options.auth.username, options.auth.password], {
      encoding: 'utf8',
    });
    const file = join(dir, 'htpasswd');
    await writeFile(file, line.trim() + '\n');
    authYaml = `auth:\n  htpasswd:\n    realm: strata-test\n    path: ${file}\n`;
  }
  const config = [
    'version: 0.1',
    'log:',
    '  level: error',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${storageDir}`,
    '  delete:',
    '    enabled: true',
    '  maintenance:',
    '    uploadpurging:',
    '      enabled: false',
    'http:',
    `  addr: ${host}`,
    `  secret: strata-test-${Math.random().toString(36).slice(2)}`,
    ...(options.tls
      ? [
          '  tls:',
          `    certificate: ${options.tls.cert}`,
          `    key: ${options.tls.key}`,
          ...(options.tls.clientCas ? ['    clientcas:', `      - ${options.tls.clientCas}`] : []),
        ]
      : []),
    authYaml,
    options.extraConfig ?? '',
  ].join('\n');
  const configPath = join(dir, 'config.yml');
  await writeFile(configPath, config);
  const child = spawn(bin, ['serve', configPath], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => {
    stderr = (stderr + c.toString('utf8')).slice(-4000);
  });
  const url = `${options.tls ? 'https' : 'http'}://${host}`;
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await waitReady(url, child, options.startTimeoutMs ?? 20_000, () => stderr, options.tls);
  } catch (err) {
    await stop();
    throw err;
  }
  return { url, host, storageDir, stop };
}
