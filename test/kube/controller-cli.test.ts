import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../support/docker-registry.js';
import { startControlPlane, type ControlPlane } from '../support/kube/control-plane.js';
import { waitFor } from '../support/kube/wait.js';

const CLI = fileURLToPath(new URL('../../bin/strata.js', import.meta.url));
const BUILT = fileURLToPath(new URL('../../dist/bundle/strata.js', import.meta.url));
const CRDS = fileURLToPath(new URL('../../crds', import.meta.url));

interface Replica {
  child: ChildProcess;
  probes: string;
  metrics: string;
  stderr: () => string;
  exited: Promise<number | null>;
}

describe('strata controller against a real kube-apiserver', () => {
  let cp: ControlPlane;
  const replicas: Replica[] = [];

  async function replica(): Promise<Replica> {
    if (!existsSync(BUILT))
      throw new Error(`${BUILT} is missing: run the tests with \`npm test\` (it builds first)`);
    const [mp, pp] = [await freePort(), await freePort()];
    const child = spawn(
      process.execPath,
      [
        CLI,
        'controller',
        '--kubeconfig',
        cp.kubeconfigPath,
        '--leader-elect',
        '--leader-election-namespace',
        'default',
        '--leader-elect-lease-duration',
        '4s',
        '--leader-elect-renew-deadline',
        '3s',
        '--leader-elect-retry-period',
        '500ms',
        '--metrics-bind-address',
        `127.0.0.1:${mp}`,
        '--health-probe-bind-address',
        `127.0.0.1:${pp}`,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, STRATA_LOG_LEVEL: 'info' } },
    );
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-20_000)));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    const r = {
      child,
      probes: `http://127.0.0.1:${pp}`,
      metrics: `http://127.0.0.1:${mp}`,
      stderr: () => err,
      exited,
    };
    replicas.push(r);
    return r;
  }

  const fetchText = async (url: string): Promise<{ status: number; body: string }> => {
    const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
    return { status: res.status, body: await res.text() };
  };
  const leads = async (r: Replica): Promise<boolean> =>
    /^strata_leader 1$/m.test((await fetchText(`${r.metrics}/metrics`)).body);
  const holder = async (): Promise<string> =>
    (
      await cp.kubectlOk([
        'get',
        'lease',
        '-n',
        'default',
        'strata-controller.strata.dev',
        '-o',
        'jsonpath={.spec.holderIdentity}',
      ])
    ).trim();

  beforeAll(async () => {
    cp = await startControlPlane();
    // The registered controllers' kinds must exist, or their informers never sync and /readyz stays 503.
    await cp.kubectlOk(['apply', '-f', CRDS]);
    await cp.kubectlOk(['wait', '--for=condition=Established', '--timeout=60s', '-f', CRDS]);
  });
  afterAll(async () => {
    for (const r of replicas) r.child.kill('SIGKILL');
    await cp?.stop();
  });

  it('serves probes and metrics, stands by while another replica leads, takes over after a kill, releases on SIGTERM', async () => {
    const a = await replica();
    await waitFor('a to lead', () => leads(a), 30_000).catch((e: Error) => {
      throw new Error(`${e.message}\n${a.stderr()}`);
    });
    expect((await fetchText(`${a.probes}/healthz`)).body).toBe('ok\n');
    // Leadership can come before every informer has listed (seven kinds now): ready follows within seconds.
    await waitFor(
      'a to be ready',
      async () => (await fetchText(`${a.probes}/readyz`)).status === 200,
      30_000,
    );
    const metrics = (await fetchText(`${a.metrics}/metrics`)).body;
    expect(metrics).toMatch(/strata_kube_api_requests_total\{verb="(create|update)",code="20[01]"\} \d+/);
    expect(metrics).toContain('# TYPE strata_reconcile_total counter');
    expect(metrics).toContain('# TYPE strata_watch_restarts_total counter');
    const aIdentity = await holder();
    await waitFor('the leader to start the ImageBuild controller', () =>
      a.stderr().includes('"controller":"imagebuild","workers":1,"msg":"controller started"'),
    );
    expect(aIdentity).toMatch(/_[0-9a-f-]{36}$/);

    const b = await replica();
    await waitFor('b to answer', async () => (await fetchText(`${b.probes}/readyz`)).status === 200, 30_000);
    expect(await leads(b)).toBe(false); // ready, standing by

    a.child.kill('SIGKILL');
    const killedAt = Date.now();
    await waitFor('b to take over', () => leads(b), 20_000);
    expect(Date.now() - killedAt).toBeLessThan(4000 + 3000);
    expect(await holder()).not.toBe(aIdentity);

    b.child.kill('SIGTERM');
    expect(await b.exited).toBe(0);
    expect(await holder()).toBe(''); // released: the next replica need not wait for the lease to expire
    expect(b.stderr()).toContain('released the leader Lease');
  });

  it.each([
    [['--build-toleration', 'a=b:Never'], 'invalid --build-toleration: "a=b:Never" is not key[=value]'],
    [['--build-node-selector', 'pool'], 'invalid --build-node-selector: "pool" is not key=value'],
    [['--build-network', 'bridge'], 'invalid --build-network: "bridge" is not host or none'],
  ])('refuses a malformed build policy flag %j before connecting (exit 2)', async (args, message) => {
    const child = spawn(
      process.execPath,
      [CLI, 'controller', '--kubeconfig', '/nonexistent/kubeconfig', ...args],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    expect(code).toBe(2);
    expect(err).toContain(`strata: ${message}`);
  });

  it('fails clearly with a kubeconfig that does not exist', async () => {
    const child = spawn(process.execPath, [CLI, 'controller', '--kubeconfig', '/nonexistent/kubeconfig'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    expect(code).toBe(2); // a usage error: the flag names nothing usable
    expect(err).toMatch(
      /strata: controller: cannot load the kubeconfig: \/nonexistent\/kubeconfig does not exist/,
    );
  });
});
