/**
 * The §7 mirror rows' parts: `strata mirror serve` as a bench process (restartable on an empty store, same port),
 * and an in-process registry client that pulls an image over plain HTTP the way a runtime does (manifest, then the
 * config and layers three at a time), hashing every byte against its digest and keeping none of it. Timing the
 * pulls in process leaves client start-up out: the rows compare the two servers, not two clients.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile, rm, mkdir } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { BenchError } from './util.js';
import { freePort } from './registry.js';

const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

/** Live mirrors, stopped by {@link stopAllMirrors} on the bench's exit paths. */
const live = new Set<MirrorProcess>();

/** One `strata mirror serve` process with its store under `dir/store` and its log in `dir/mirror.log`. */
export class MirrorProcess {
  private child: ChildProcess | undefined;

  private constructor(
    private readonly argv: string[],
    readonly dir: string,
    readonly port: number,
  ) {}

  /** `127.0.0.1:PORT`, the registry part of references through the mirror. */
  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  /**
   * Starts `PREFIX mirror serve` (PREFIX: the strata command, e.g. `node bin/strata.js`) on an empty store with
   * `upstream` (`http://host:port`) as its default upstream.
   */
  static async start(prefix: string[], dir: string, upstream: string): Promise<MirrorProcess> {
    const port = await freePort();
    const argv = [
      ...prefix,
      '--store',
      path.join(dir, 'store'),
      'mirror',
      'serve',
      '--listen',
      `127.0.0.1:${port}`,
      '--upstream',
      `hub=${upstream}`,
      '--default-upstream',
      'hub',
    ];
    const m = new MirrorProcess(argv, dir, port);
    await m.restartEmpty();
    live.add(m);
    return m;
  }

  /** Stops the process if running, empties its store, starts it again on the same port and waits for its URL. */
  async restartEmpty(): Promise<void> {
    await this.stop();
    await rm(path.join(this.dir, 'store'), { recursive: true, force: true });
    await mkdir(this.dir, { recursive: true });
    const [bin, ...args] = this.argv;
    const child = spawn(bin!, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, STRATA_LOG_LEVEL: 'warn' },
    });
    this.child = child;
    live.add(this);
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString('utf8')).slice(-4000)));
    await new Promise<void>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(
        () => reject(new BenchError(`strata mirror serve did not start within 20 s`, err)),
        20_000,
      );
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString('utf8');
        if (/^http:\/\/\S+\n/.test(out)) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new BenchError(`strata mirror serve exited with ${code}`, err));
      });
    });
    child.stdout!.resume();
  }

  /** Peak resident set of the running process since its (re)start, in KiB (`VmHWM`); 0 when unknown. */
  async peakRssKiB(): Promise<number> {
    return peakRssKiB(this.child?.pid);
  }

  /** SIGTERM, SIGKILL after 5 s; waits for the exit. */
  async stop(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    live.delete(this);
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await gone;
    clearTimeout(timer);
  }

  /** SIGTERM without waiting (process exit path). */
  killSync(): void {
    this.child?.kill('SIGTERM');
  }
}

/** Stops every mirror still running. */
export async function stopAllMirrors(): Promise<void> {
  await Promise.all([...live].map((m) => m.stop()));
}

/** Synchronous last resort on process exit. */
export function killAllMirrorsSync(): void {
  for (const m of live) m.killSync();
}

/** `VmHWM` of a process in KiB (0 when it is gone or unreadable). */
export async function peakRssKiB(pid: number | undefined): Promise<number> {
  if (!pid) return 0;
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  return Number(/^VmHWM:\s+(\d+) kB/m.exec(status)?.[1] ?? 0);
}

// Kept-alive connections, unbounded per host: 50 pulls at once must not queue behind Node's socket limit.
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });

/** GETs `url`, hashing the body; resolves with its bytes and sha256 digest. Rejects on a non-200 answer. */
function fetchHashed(
  url: string,
  accept: string | undefined,
  timeoutMs: number,
  keep: boolean,
): Promise<{ digest: string; size: number; body?: Buffer; contentDigest?: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent, timeout: timeoutMs, headers: accept ? { accept } : {} }, (res) => {
      if (res.statusCode === 307 || res.statusCode === 302) {
        res.resume();
        return reject(new BenchError(`GET ${url}: redirect ${res.statusCode} (not expected on loopback)`));
      }
      if (res.statusCode !== 200) {
        res.resume();
        return reject(new BenchError(`GET ${url}: HTTP ${res.statusCode}`));
      }
      const hash = createHash('sha256');
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        hash.update(c);
        size += c.length;
        if (keep) chunks.push(c);
      });
      res.once('error', reject);
      res.once('end', () =>
        resolve({
          digest: `sha256:${hash.digest('hex')}`,
          size,
          ...(keep ? { body: Buffer.concat(chunks) } : {}),
          ...(typeof res.headers['docker-content-digest'] === 'string'
            ? { contentDigest: res.headers['docker-content-digest'] }
            : {}),
        }),
      );
    });
    req.once('timeout', () => req.destroy(new BenchError(`GET ${url}: no data for ${timeoutMs} ms`)));
    req.once('error', reject);
  });
}

/** What {@link httpPull} fetched. */
export interface PullResult {
  manifestDigest: string;
  /** Config and layer bytes received. */
  blobBytes: number;
}

/**
 * Pulls `repo:tag` from `host` (plain HTTP) like a runtime: the manifest (its digest must equal `expectDigest`),
 * then the config and every layer, three at a time, each hashed against its descriptor. Nothing is kept.
 */
export async function httpPull(
  host: string,
  repo: string,
  tag: string,
  expectDigest: string,
  timeoutMs: number,
): Promise<PullResult> {
  const base = `http://${host}/v2/${repo}`;
  const m = await fetchHashed(`${base}/manifests/${tag}`, MANIFEST_ACCEPT, timeoutMs, true);
  if (m.digest !== expectDigest)
    throw new BenchError(`${host}/${repo}:${tag}: manifest ${m.digest}, expected ${expectDigest}`);
  const manifest = JSON.parse(m.body!.toString('utf8')) as {
    config: { digest: string; size: number };
    layers: { digest: string; size: number }[];
  };
  const todo = [manifest.config, ...manifest.layers];
  let blobBytes = 0;
  const worker = async (): Promise<void> => {
    for (let d = todo.shift(); d; d = todo.shift()) {
      const got = await fetchHashed(`${base}/blobs/${d.digest}`, undefined, timeoutMs, false);
      if (got.digest !== d.digest || got.size !== d.size)
        throw new BenchError(
          `${host}/${repo}: blob ${d.digest} arrived as ${got.digest} (${got.size} bytes)`,
        );
      blobBytes += got.size;
    }
  };
  await Promise.all([worker(), worker(), worker()]);
  return { manifestDigest: m.digest, blobBytes };
}

/** Runs `n` {@link httpPull}s at once; resolves when all are done (any failure fails the whole). */
export async function httpPullMany(
  n: number,
  host: string,
  repo: string,
  tag: string,
  expectDigest: string,
  timeoutMs: number,
): Promise<PullResult[]> {
  return Promise.all(Array.from({ length: n }, () => httpPull(host, repo, tag, expectDigest, timeoutMs)));
}
