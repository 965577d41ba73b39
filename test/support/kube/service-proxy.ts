/**
 * kube-proxy for the test cluster: makes every ClusterIP Service reachable at `http://<ClusterIP>:<port>` from this
 * machine, as kube-proxy's iptables mode does on a node. The test nodes share this machine's network and every
 * pod's IP is 127.0.0.1 (see test-node.ts), so a Service's endpoints are its selected, Ready pods' container ports
 * on 127.0.0.1. For each Service the proxy adds the ClusterIP to `lo` (a /32, so the address is local and routed
 * over loopback) and a `DNAT` rule `<ClusterIP>:<port> → 127.0.0.1:<targetPort>` in a chain of its own in the nat
 * table's OUTPUT. A Service without a Ready endpoint gets no rule: connecting is refused (nothing listens on the
 * ClusterIP itself), as kube-proxy's REJECT answers. Endpoints
 * are computed from the pods (selector + Ready condition) rather than read from EndpointSlices: the API refuses
 * loopback addresses in Endpoints, and 127.0.0.1 is what our pods have. `stop()` removes the chain, its jump and
 * the addresses; what a killed process left behind (its chain, its addresses: labelled `lo:st<pid>`) is removed by
 * the next proxy that starts. Root and `iptables`/`ip` are required; control planes should use distinct service ranges
 * (`serviceCidr`) when several run at once, or two clusters' ClusterIPs would meet in one chain namespace.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { KubeConfig, V1Pod, V1Service, V1ServicePort } from '@kubernetes/client-node';
import { CoreV1Api } from '@kubernetes/client-node';
import { requirePeer } from '../peers.js';

const run = promisify(execFile);

/** A running service proxy. */
export interface ServiceProxy {
  /** Re-reads Services and pods now and rewrites the rules (it also does so every `periodMs`). */
  sync(): Promise<void>;
  /** Removes every rule and address it made. Idempotent. */
  stop(): Promise<void>;
}

/** Options of {@link startServiceProxy}. */
export interface ServiceProxyOptions {
  /** How often to re-read Services and pods (default 500 ms). */
  readonly periodMs?: number;
}

interface Rule {
  readonly ip: string;
  readonly port: number;
  /** undefined: no Ready endpoint (REJECT). */
  readonly target?: number;
}

function isReady(p: V1Pod): boolean {
  return (
    p.status?.phase === 'Running' &&
    !p.metadata?.deletionTimestamp &&
    (p.status.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True')
  );
}

function selects(svc: V1Service, p: V1Pod): boolean {
  const sel = svc.spec?.selector;
  if (!sel || Object.keys(sel).length === 0) return false;
  return Object.entries(sel).every(([k, v]) => p.metadata?.labels?.[k] === v);
}

/** The port a pod serves a Service port on (numeric targetPort, or a named container port). */
function targetPortOf(port: V1ServicePort, p: V1Pod): number | undefined {
  const t = (port.targetPort as number | string | undefined) ?? port.port;
  if (typeof t === 'number') return t;
  if (/^\d+$/.test(t)) return Number(t);
  for (const c of p.spec?.containers ?? [])
    for (const cp of c.ports ?? []) if (cp.name === t) return cp.containerPort;
  return undefined;
}

/** The rules the cluster's Services and pods call for (one endpoint per port: the first Ready pod). */
export function desiredRules(services: readonly V1Service[], pods: readonly V1Pod[]): Rule[] {
  const rules: Rule[] = [];
  for (const svc of services) {
    const ip = svc.spec?.clusterIP;
    if (!ip || ip === 'None' || svc.spec?.type === 'ExternalName' || !/^\d+\.\d+\.\d+\.\d+$/.test(ip))
      continue;
    const ready = pods.filter(
      (p) => p.metadata?.namespace === svc.metadata?.namespace && selects(svc, p) && isReady(p),
    );
    for (const port of svc.spec?.ports ?? []) {
      if ((port.protocol ?? 'TCP') !== 'TCP') continue;
      const target = ready.map((p) => targetPortOf(port, p)).find((t) => t !== undefined);
      rules.push({ ip, port: port.port, ...(target !== undefined ? { target } : {}) });
    }
  }
  return rules.sort((a, b) => `${a.ip}:${a.port}`.localeCompare(`${b.ip}:${b.port}`));
}

/** The owner pid (base 36) in a chain name `STRATA-SVC-<pid>-<random>` or an address label `lo:st<pid>`. */
const CHAIN_RE = /^STRATA-SVC-([0-9A-Z]+)-[0-9A-Z]+$/;
const LABEL_RE = /^lo:st([0-9a-z]+)$/;

function alive(pid36: string): boolean {
  try {
    process.kill(parseInt(pid36, 36), 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes the chains and lo addresses of service proxies whose process is gone (killed before its `stop()`). */
async function sweepStale(iptables: string, ipBin: string): Promise<void> {
  const ipt = (args: string[]) => run(iptables, ['-w', '5', '-t', 'nat', ...args], { timeout: 15_000 });
  for (const line of (await ipt(['-S'])).stdout.split('\n')) {
    const chain = /^-N (\S+)$/.exec(line)?.[1];
    const owner = chain && CHAIN_RE.exec(chain)?.[1];
    if (!chain || !owner || alive(owner.toLowerCase())) continue;
    await ipt(['-D', 'OUTPUT', '-j', chain]).catch(() => undefined);
    await ipt(['-F', chain]).catch(() => undefined);
    await ipt(['-X', chain]).catch(() => undefined);
  }
  const addrs = (await run(ipBin, ['-o', '-4', 'addr', 'show', 'dev', 'lo'], { timeout: 15_000 })).stdout;
  for (const line of addrs.split('\n')) {
    const m = /inet (\S+) .*?(lo:st[0-9a-z]+)/.exec(line);
    const owner = m && LABEL_RE.exec(m[2]!)?.[1];
    if (m && owner && !alive(owner))
      await run(ipBin, ['addr', 'del', m[1]!, 'dev', 'lo'], { timeout: 15_000 }).catch(() => undefined);
  }
}

/** Starts proxying the cluster's Services; call `stop()` in afterAll. */
export async function startServiceProxy(
  kc: KubeConfig,
  options: ServiceProxyOptions = {},
): Promise<ServiceProxy> {
  if (process.getuid?.() !== 0) throw new Error('the service proxy needs root (iptables, ip addr)');
  const iptables = requirePeer('iptables');
  const ipBin = requirePeer('ip');
  const core = kc.makeApiClient(CoreV1Api);
  const pid36 = process.pid.toString(36);
  const chain = `STRATA-SVC-${pid36}-${Math.random().toString(36).slice(2, 6)}`.toUpperCase();
  await sweepStale(iptables, ipBin);
  const addresses = new Set<string>();
  let applied = '';
  let stopped = false;

  const ipt = (args: string[]) => run(iptables, ['-w', '5', '-t', 'nat', ...args], { timeout: 15_000 });
  await ipt(['-N', chain]);
  await ipt(['-I', 'OUTPUT', '1', '-j', chain]);

  const apply = async (rules: Rule[]): Promise<void> => {
    const text = JSON.stringify(rules);
    if (text === applied) return;
    for (const ip of new Set(rules.map((r) => r.ip)))
      if (!addresses.has(ip)) {
        await run(ipBin, ['addr', 'replace', `${ip}/32`, 'dev', 'lo', 'label', `lo:st${pid36}`], {
          timeout: 15_000,
        });
        addresses.add(ip);
      }
    // Rewritten whole: a few Services, and a flush-and-fill is what kube-proxy's iptables-restore does too.
    await ipt(['-F', chain]);
    for (const r of rules) {
      const match = ['-d', `${r.ip}/32`, '-p', 'tcp', '--dport', String(r.port)];
      if (r.target !== undefined)
        await ipt(['-A', chain, ...match, '-j', 'DNAT', '--to-destination', `127.0.0.1:${r.target}`]);
    }
    applied = text;
  };

  const sync = async (): Promise<void> => {
    if (stopped) return;
    const [services, pods] = await Promise.all([
      core.listServiceForAllNamespaces(),
      core.listPodForAllNamespaces(),
    ]);
    await apply(desiredRules(services.items, pods.items));
  };

  await sync();
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    sync()
      .catch(() => undefined) // the next period retries (the apiserver may be restarting)
      .finally(() => (busy = false));
  }, options.periodMs ?? 500);

  let stopping: Promise<void> | undefined;
  return {
    sync,
    stop: () =>
      (stopping ??= (async () => {
        stopped = true;
        clearInterval(timer);
        await ipt(['-D', 'OUTPUT', '-j', chain]).catch(() => undefined);
        await ipt(['-F', chain]).catch(() => undefined);
        await ipt(['-X', chain]).catch(() => undefined);
        for (const ip of addresses)
          await run(ipBin, ['addr', 'del', `${ip}/32`, 'dev', 'lo'], { timeout: 15_000 }).catch(
            () => undefined,
          );
      })()),
  };
}
