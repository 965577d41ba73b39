/**
 * The test node's readiness probes, as the kubelet's prober runs them: `httpGet` (2xx/3xx is success) and
 * `tcpSocket` (a connection is success) against the pod's IP, after `initialDelaySeconds`, every `periodSeconds`,
 * each attempt bounded by `timeoutSeconds`, flipping after `successThreshold` / `failureThreshold` results in a row.
 * `exec` and `grpc` probes are not played: such a container is Ready once it runs (said in test-node.ts).
 */
import { connect } from 'node:net';
import { request } from 'node:http';
import type { V1Container, V1Probe } from '@kubernetes/client-node';

/** Whether the test node can run this probe (httpGet or tcpSocket). */
export function playable(probe: V1Probe | undefined): probe is V1Probe {
  return !!probe && !!(probe.httpGet || probe.tcpSocket);
}

function portOf(port: number | string, c: V1Container): number | undefined {
  if (typeof port === 'number') return port;
  if (/^\d+$/.test(port)) return Number(port);
  return c.ports?.find((p) => p.name === port)?.containerPort;
}

/** One probe attempt: true on success. */
export function probeOnce(probe: V1Probe, c: V1Container, ip: string): Promise<boolean> {
  const timeoutMs = (probe.timeoutSeconds ?? 1) * 1000;
  const target = probe.httpGet ?? probe.tcpSocket!;
  const port = portOf(target.port as number | string, c);
  if (port === undefined) return Promise.resolve(false);
  return new Promise((resolve) => {
    if (probe.httpGet) {
      const req = request(
        {
          host: ip,
          port,
          path: probe.httpGet.path ?? '/',
          method: 'GET',
          timeout: timeoutMs,
          headers: Object.fromEntries((probe.httpGet.httpHeaders ?? []).map((h) => [h.name, h.value])),
        },
        (res) => {
          res.resume();
          const code = res.statusCode ?? 0;
          resolve(code >= 200 && code < 400);
        },
      );
      req.on('timeout', () => req.destroy());
      req.on('error', () => resolve(false));
      req.end();
      return;
    }
    const sock = connect({ host: ip, port, timeout: timeoutMs });
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('timeout', () => {
      sock.destroy();
      resolve(false);
    });
    sock.once('error', () => resolve(false));
  });
}

/**
 * Runs the readiness probe until `signal` fires, calling `onChange(ready)` each time the result flips (starting from
 * not ready). `periodScale` shortens the periods for tests (1 = the pod's own).
 */
export async function runReadinessProbe(
  probe: V1Probe,
  c: V1Container,
  ip: string,
  signal: AbortSignal,
  onChange: (ready: boolean) => Promise<void>,
  periodScale = 1,
): Promise<void> {
  const sleep = (ms: number) =>
    new Promise<void>((res) => {
      const done = () => {
        clearTimeout(t);
        signal.removeEventListener('abort', done);
        res();
      };
      const t = setTimeout(done, ms);
      signal.addEventListener('abort', done, { once: true });
    });
  const period = Math.max(100, (probe.periodSeconds ?? 10) * 1000 * periodScale);
  const successes = probe.successThreshold ?? 1;
  const failures = probe.failureThreshold ?? 3;
  let ready = false;
  let run = 0;
  let last: boolean | undefined;
  await sleep((probe.initialDelaySeconds ?? 0) * 1000 * periodScale);
  while (!signal.aborted) {
    const ok = await probeOnce(probe, c, ip);
    if (signal.aborted) return;
    run = ok === last ? run + 1 : 1;
    last = ok;
    if (!ready && ok && run >= successes) {
      ready = true;
      await onChange(true);
    } else if (ready && !ok && run >= failures) {
      ready = false;
      await onChange(false);
    }
    await sleep(period);
  }
}
