/**
 * The mirror's operational endpoints, outside `/v2/` so that no repository name can clash with them:
 * `GET /healthz` (the process answers), `GET /readyz` (the store is usable: a probe file can be written and
 * removed; an unreachable upstream does not make the mirror unready — it still serves its cache) and
 * `GET /metrics` (Prometheus text). Served on the mirror's listener and, optionally, on a listener of their own.
 */
import { randomBytes } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { OpsEndpoints as Endpoints } from '../ops/endpoints.js';
import type { MirrorMetrics } from './metrics.js';

export { OPS_PATHS, startOpsServer, type OpsServer } from '../ops/endpoints.js';

/** A store readiness probe slower than this counts as failed (e.g. a hung network filesystem). */
const PROBE_TIMEOUT_MS = 5000;
/** Probe results are reused for this long: a busy prober must not turn into a write load. */
const PROBE_CACHE_MS = 1000;

/** The mirror's endpoints: ready while a probe file can be written and removed in the store. */
export class OpsEndpoints extends Endpoints {
  private probe: { at: number; result: Promise<string | undefined> } | undefined;

  constructor(
    private readonly storeRoot: string,
    metrics: MirrorMetrics,
  ) {
    super({
      notReady: async () => {
        const problem = await this.storeProblem();
        return problem === undefined ? undefined : `store unusable: ${problem}`;
      },
      metrics: () => metrics.render(),
    });
  }

  /** Why the store cannot be used (a probe write and removal in its root failed), or undefined when it can. */
  storeProblem(): Promise<string | undefined> {
    const now = performance.now();
    if (this.probe && now - this.probe.at < PROBE_CACHE_MS) return this.probe.result;
    const result = probeWritable(this.storeRoot);
    this.probe = { at: now, result };
    return result;
  }
}

async function probeWritable(root: string): Promise<string | undefined> {
  const file = join(root, `.readyz-${process.pid}-${randomBytes(4).toString('hex')}`);
  const signal = AbortSignal.timeout(PROBE_TIMEOUT_MS);
  try {
    await writeFile(file, 'ok', { signal, flag: 'wx' });
    await rm(file);
    return undefined;
  } catch (err) {
    await rm(file, { force: true }).catch(() => undefined);
    const e = err as NodeJS.ErrnoException;
    return e.name === 'AbortError'
      ? `probe write in ${root} timed out`
      : `${e.code ?? e.message} writing in ${root}`;
  }
}
