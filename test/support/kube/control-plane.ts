/**
 * A real Kubernetes control plane for a test file: etcd and kube-apiserver (and, when asked, the
 * kube-controller-manager for Jobs, Pods, garbage collection and namespace deletion), from the envtest binaries,
 * on free loopback ports with their own certificates, in a temp dir that `stop()` removes. Start one per test
 * file (beforeAll/afterAll): it takes about 3–5 s. There is no scheduler and no kubelet: see test-node.ts.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { freePort } from '../docker-registry.js';
import { envtestBinary } from './assets.js';
import { makeClientCert, makeControlPlanePki, type ControlPlanePki } from './pki.js';

/** A running control plane. */
export interface ControlPlane {
  /** `https://127.0.0.1:PORT`. */
  readonly server: string;
  /** An admin (`system:masters`) kubeconfig file. */
  readonly kubeconfigPath: string;
  /** The run's temp dir (logs of each process are `<name>.log` in it). */
  readonly dir: string;
  /** A fresh client-node KubeConfig loaded from `kubeconfigPath`. */
  kubeConfig(): KubeConfig;
  /** Runs kubectl (admin unless another kubeconfig is given). */
  kubectl(args: string[], o?: KubectlOptions): Promise<{ stdout: string; stderr: string; code: number }>;
  /** Runs kubectl and returns its stdout; throws with its stderr on a non-zero exit. */
  kubectlOk(args: string[], o?: KubectlOptions): Promise<string>;
  /** A kubeconfig file authenticating as `user` in `groups` (a client certificate), for RBAC tests. */
  userKubeconfig(user: string, groups?: string[]): Promise<string>;
  /**
   * Stops kube-apiserver and starts it again on the same port; resolves when it is ready. By default it is killed
   * (SIGKILL: a crash, every watch connection cut at once); `{ graceful: true }` sends SIGTERM and waits (slow:
   * the apiserver drains its long-running requests first).
   */
  restartApiServer(o?: { graceful?: boolean }): Promise<void>;
  /** Compacts etcd at its current revision, so watches from older resourceVersions get 410 Gone. */
  compact(): Promise<void>;
  /** The apiserver's /metrics text (e.g. `apiserver_request_total{verb,resource,code}`). */
  apiserverMetrics(): Promise<string>;
  /** Stops everything (controller-manager, apiserver, etcd) and removes the temp dir. Idempotent. */
  stop(): Promise<void>;
}

/** Options of kubectl runs. */
export interface KubectlOptions {
  /** Written to kubectl's stdin (for `apply -f -`). */
  input?: string;
  /** A kubeconfig other than the admin one. */
  kubeconfig?: string;
}

/** Options of {@link startControlPlane}. */
export interface ControlPlaneOptions {
  /** Also run kube-controller-manager (Jobs → Pods, garbage collection, namespace deletion, service accounts). */
  controllerManager?: boolean;
  /** Extra kube-apiserver flags (`--flag=value`). */
  apiServerFlags?: string[];
  /** Extra kube-controller-manager flags (`--flag=value`; e.g. `--kube-api-qps` for a scale run). */
  controllerManagerFlags?: string[];
  /**
   * The Services' ClusterIP range (default 10.96.0.0/16). A test that makes ClusterIPs reachable (service-proxy.ts)
   * gives each control plane its own range: {@link randomServiceCidr}.
   */
  serviceCidr?: string;
}

/** A /24 in 10.96.0.0/12 (Kubernetes' customary service range) picked at random, for {@link ControlPlaneOptions}. */
export function randomServiceCidr(): string {
  const second = 96 + Math.floor(Math.random() * 16);
  const third = Math.floor(Math.random() * 256);
  return `10.${second}.${third}.0/24`;
}

const ADMIN_TOKEN = 'strata-envtest-admin-token';

interface Proc {
  readonly name: string;
  child: ChildProcess;
  exited: Promise<number | null>;
}

function startProcess(dir: string, name: string, bin: string, args: string[]): Proc {
  const log = createWriteStream(join(dir, `${name}.log`), { flags: 'a' });
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.pipe(log, { end: false });
  child.stderr!.pipe(log, { end: false });
  const exited = new Promise<number | null>((resolve) => {
    child.on('exit', (code) => resolve(code));
    child.on('error', () => resolve(-1));
  });
  return { name, child, exited };
}

async function stopProcess(p: Proc | undefined, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return;
  p.child.kill(signal);
  const timer = setTimeout(() => p.child.kill('SIGKILL'), 15_000);
  await p.exited;
  clearTimeout(timer);
}

function logTail(dir: string, name: string): string {
  try {
    return readFileSync(join(dir, `${name}.log`), 'utf8')
      .split('\n')
      .slice(-25)
      .join('\n');
  } catch {
    return '(no log)';
  }
}

/** GETs `url` until `ok(status, body)` holds, the process exits, or the deadline passes. */
async function waitReady(
  p: Proc,
  dir: string,
  url: string,
  ok: (status: number, body: string) => boolean,
  ca?: Buffer,
  timeoutMs = 60_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exited = false;
  void p.exited.then(() => (exited = true));
  while (Date.now() < deadline) {
    if (exited) throw new Error(`${p.name} exited while starting:\n${logTail(dir, p.name)}`);
    const r = await get(url, ca).catch(() => undefined);
    if (r && ok(r.status, r.body)) return;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`${p.name} not ready after ${timeoutMs} ms:\n${logTail(dir, p.name)}`);
}

function get(
  url: string,
  ca?: Buffer,
  token?: string,
  body?: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const headers: Record<string, string> = {};
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const opts = { method: body === undefined ? 'GET' : 'POST', headers, timeout: 5_000 };
    const req =
      u.protocol === 'https:'
        ? // Without a CA: the controller-manager's self-signed serving certificate, on loopback.
          request(url, { ...opts, ...(ca ? { ca } : { rejectUnauthorized: false }) })
        : httpRequest(url, opts);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
      );
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`timeout: ${url}`)));
    req.on('error', reject);
    req.end(body);
  });
}

function kubeconfigYaml(server: string, caCert: string, user: Record<string, string>): string {
  const ca = Buffer.from(caCert).toString('base64');
  const userLines = Object.entries(user)
    .map(([k, v]) => `    ${k}: ${v}`)
    .join('\n');
  return `apiVersion: v1
kind: Config
clusters:
- name: envtest
  cluster:
    server: ${server}
    certificate-authority-data: ${ca}
users:
- name: user
  user:
${userLines}
contexts:
- name: envtest
  context:
    cluster: envtest
    user: user
    namespace: default
current-context: envtest
`;
}

/** Starts etcd, kube-apiserver and, when asked, kube-controller-manager; resolves when all are ready. */
export async function startControlPlane(options: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const dir = await mkdtemp(join(tmpdir(), 'strata-envtest-'));
  const procs: { etcd?: Proc; apiserver?: Proc; kcm?: Proc } = {};
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await stopProcess(procs.kcm);
    await stopProcess(procs.apiserver);
    await stopProcess(procs.etcd);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const pki: ControlPlanePki = await makeControlPlanePki(dir);
    const ca = await readFile(pki.caCert);
    await writeFile(join(dir, 'tokens.csv'), `${ADMIN_TOKEN},admin,admin-uid,"system:masters"\n`);

    // etcd
    const [etcdPort, peerPort, apiPort, kcmPort] = await Promise.all([
      freePort(),
      freePort(),
      freePort(),
      freePort(),
    ]);
    const etcdUrl = `http://127.0.0.1:${etcdPort}`;
    const peerUrl = `http://127.0.0.1:${peerPort}`;
    procs.etcd = startProcess(dir, 'etcd', envtestBinary('etcd'), [
      `--data-dir=${join(dir, 'etcd')}`,
      `--listen-client-urls=${etcdUrl}`,
      `--advertise-client-urls=${etcdUrl}`,
      `--listen-peer-urls=${peerUrl}`,
      `--initial-advertise-peer-urls=${peerUrl}`,
      `--initial-cluster=envtest=${peerUrl}`,
      '--name=envtest',
      '--unsafe-no-fsync',
    ]);
    await waitReady(procs.etcd, dir, `${etcdUrl}/health`, (s, b) => s === 200 && b.includes('true'));

    // kube-apiserver
    const server = `https://127.0.0.1:${apiPort}`;
    const apiArgs = [
      `--etcd-servers=${etcdUrl}`,
      `--secure-port=${apiPort}`,
      '--bind-address=127.0.0.1',
      '--advertise-address=127.0.0.1',
      `--cert-dir=${join(dir, 'apiserver-certs')}`,
      `--tls-cert-file=${pki.servingCert}`,
      `--tls-private-key-file=${pki.servingKey}`,
      `--client-ca-file=${pki.caCert}`,
      `--token-auth-file=${join(dir, 'tokens.csv')}`,
      '--authorization-mode=RBAC',
      '--service-account-issuer=https://kubernetes.default.svc',
      `--service-account-key-file=${pki.saPub}`,
      `--service-account-signing-key-file=${pki.saKey}`,
      `--service-cluster-ip-range=${options.serviceCidr ?? '10.96.0.0/16'}`,
      '--endpoint-reconciler-type=none',
      '--disable-admission-plugins=ServiceAccount',
      '--allow-privileged=true',
      ...(options.apiServerFlags ?? []),
    ];
    const startApiServer = async (): Promise<void> => {
      procs.apiserver = startProcess(dir, 'kube-apiserver', envtestBinary('kube-apiserver'), apiArgs);
      await waitReady(procs.apiserver, dir, `${server}/readyz`, (s, b) => s === 200 && b.trim() === 'ok', ca);
    };
    await startApiServer();

    const kubeconfigPath = join(dir, 'admin.kubeconfig');
    await writeFile(kubeconfigPath, kubeconfigYaml(server, ca.toString('utf8'), { token: ADMIN_TOKEN }));

    if (options.controllerManager) {
      const flexDir = join(dir, 'flex');
      await mkdir(flexDir);
      procs.kcm = startProcess(dir, 'kube-controller-manager', envtestBinary('kube-controller-manager'), [
        `--kubeconfig=${kubeconfigPath}`,
        `--authentication-kubeconfig=${kubeconfigPath}`,
        `--authorization-kubeconfig=${kubeconfigPath}`,
        '--bind-address=127.0.0.1',
        `--secure-port=${kcmPort}`,
        `--cert-dir=${join(dir, 'kcm-certs')}`,
        '--leader-elect=false',
        '--controllers=*',
        '--use-service-account-credentials=false',
        `--service-account-private-key-file=${pki.saKey}`,
        `--root-ca-file=${pki.caCert}`,
        `--cluster-signing-cert-file=${pki.caCert}`,
        `--cluster-signing-key-file=${pki.caKey}`,
        `--flex-volume-plugin-dir=${flexDir}`,
        ...(options.controllerManagerFlags ?? []),
      ]);
      await waitReady(procs.kcm, dir, `https://127.0.0.1:${kcmPort}/healthz`, (s) => s === 200, undefined);
    }

    const kubectl = (
      args: string[],
      o: KubectlOptions = {},
    ): Promise<{ stdout: string; stderr: string; code: number }> =>
      new Promise((resolve) => {
        const child = execFile(
          envtestBinary('kubectl'),
          args,
          {
            env: { ...process.env, KUBECONFIG: o.kubeconfig ?? kubeconfigPath },
            maxBuffer: 64 * 1024 * 1024,
            timeout: 120_000,
          },
          (err, stdout, stderr) => {
            const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
            resolve({ stdout, stderr, code });
          },
        );
        child.stdin?.end(o.input);
      });

    return {
      server,
      kubeconfigPath,
      dir,
      kubeConfig: () => {
        const kc = new KubeConfig();
        kc.loadFromFile(kubeconfigPath);
        return kc;
      },
      kubectl,
      kubectlOk: async (args, o) => {
        const r = await kubectl(args, o);
        if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
        return r.stdout;
      },
      userKubeconfig: async (user, groups = []) => {
        const { cert, key } = await makeClientCert(dir, user, groups);
        const file = join(dir, `${user.replace(/[^A-Za-z0-9_.-]/g, '_')}-${Date.now()}.kubeconfig`);
        await writeFile(
          file,
          kubeconfigYaml(server, ca.toString('utf8'), {
            'client-certificate-data': (await readFile(cert)).toString('base64'),
            'client-key-data': (await readFile(key)).toString('base64'),
          }),
        );
        return file;
      },
      restartApiServer: async (o = {}) => {
        await stopProcess(procs.apiserver, o.graceful ? 'SIGTERM' : 'SIGKILL');
        await startApiServer();
      },
      compact: async () => {
        const key = Buffer.from('/').toString('base64');
        const r = await get(
          `${etcdUrl}/v3/kv/range`,
          undefined,
          undefined,
          JSON.stringify({ key, limit: 1 }),
        );
        const revision = (JSON.parse(r.body) as { header: { revision: string } }).header.revision;
        const c = await get(
          `${etcdUrl}/v3/kv/compaction`,
          undefined,
          undefined,
          JSON.stringify({ revision, physical: true }),
        );
        if (c.status !== 200) throw new Error(`etcd compaction failed: HTTP ${c.status} ${c.body}`);
      },
      apiserverMetrics: async () => (await get(`${server}/metrics`, ca, ADMIN_TOKEN)).body,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
