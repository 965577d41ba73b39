/**
 * The StrataNode status: built from what the agent did (pure), and written by a coalescing writer — a merge patch
 * of `stratanodes/status` with field manager `strata-agent`, only when it differs from what was last written (no
 * write on resync or idle), at most one write per `minIntervalMs` (2 s) while warming moves bytes.
 */
import type { Logger } from 'pino';
import type { NodeMirrorState, StrataNodeSpec, StrataNodeStatus } from '../api/v1alpha1/stratanode.js';
import { API_VERSION } from '../api/v1alpha1/common.js';
import { STRATANODE_KIND, STRATANODE_PLURAL } from '../api/v1alpha1/stratanode.js';
import type { KubeClient } from '../kube/client.js';
import { PATCH } from '../kube/client.js';
import { setPhaseConditions, type Condition } from '../kube/conditions.js';
import { jsonEqual, mergePatch } from '../kube/json.js';
import { resourcePath, type ResourceType } from '../kube/resource.js';
import type { CacheProgress } from './warmer.js';
import type { MirrorOutcome } from './node-config.js';

/** StrataNodes as the kube machinery sees them (cluster-scoped). */
export const STRATANODES: ResourceType = {
  apiVersion: API_VERSION,
  kind: STRATANODE_KIND,
  plural: STRATANODE_PLURAL,
  namespaced: false,
};

/** The field manager of every status write the agent makes. */
export const AGENT_FIELD_MANAGER = 'strata-agent';

/** Inputs of {@link buildStatus}. */
export interface StatusInputs {
  readonly generation: number | undefined;
  readonly spec: StrataNodeSpec | undefined;
  readonly agentVersion: string;
  readonly platform: string;
  readonly endpoint: string;
  readonly storeBytes: number | undefined;
  readonly mirrors: ReadonlyMap<string, MirrorOutcome>;
  readonly caches: ReadonlyMap<string, CacheProgress>;
  readonly previous: StrataNodeStatus | undefined;
  readonly nowMs: number;
}

const clip = (s: string | undefined, n: number): string | undefined =>
  s === undefined ? undefined : s.slice(0, n);

/**
 * Every per-platform message together stays under this many characters, so a cache of 256 images × 16 platforms
 * all failing keeps the object far below etcd's 1.5 MiB request limit (a status that cannot be written is worse
 * than a short message): each message gets an equal share, between {@link MIN_MESSAGE} and {@link MAX_MESSAGE}.
 */
export const PLATFORM_MESSAGES_BUDGET = 256 * 1024;
const MAX_MESSAGE = 1024;
const MIN_MESSAGE = 64;

/** The length each of `count` per-platform messages may have within {@link PLATFORM_MESSAGES_BUDGET}. */
export function platformMessageLength(count: number): number {
  if (count <= 0) return MAX_MESSAGE;
  return Math.max(MIN_MESSAGE, Math.min(MAX_MESSAGE, Math.floor(PLATFORM_MESSAGES_BUDGET / count)));
}

/** The status for the current spec and progress (pure). Entries follow the spec's order. */
export function buildStatus(i: StatusInputs): StrataNodeStatus {
  const mirrors: NodeMirrorState[] = (i.spec?.mirrors ?? []).map((m) => {
    const o = i.mirrors.get(m.name) ?? {
      configured: false,
      reason: 'Pending',
      message: 'not configured yet',
    };
    return {
      name: m.name,
      generation: m.generation,
      configured: o.configured,
      ...(o.reason ? { reason: o.reason } : {}),
      ...(o.message ? { message: clip(o.message, 1024)! } : {}),
    };
  });
  const messageCount = (i.spec?.caches ?? []).reduce(
    (n, c) =>
      n +
      (i.caches.get(c.name)?.images ?? []).reduce(
        (m, img) => m + img.platforms.filter((s) => s.message).length,
        0,
      ),
    0,
  );
  const messageLength = platformMessageLength(messageCount);
  const caches = (i.spec?.caches ?? []).map((c) => {
    const p = i.caches.get(c.name);
    return {
      name: c.name,
      generation: p?.generation ?? c.generation,
      bytes: p?.bytes ?? 0,
      images: (p?.images ?? []).map((img) => ({
        image: img.image,
        digest: img.digest,
        platforms: img.platforms.map((s) => ({
          ...s,
          ...(s.message ? { message: clip(s.message, messageLength)! } : {}),
        })),
      })),
    };
  });
  const platforms = caches.flatMap((c) =>
    c.images.flatMap((img) => img.platforms.map((p) => ({ c, img, p }))),
  );
  const busy = platforms.filter(({ p }) => p.state === 'Pending' || p.state === 'Pulling');
  const failedPlatform = platforms.find(({ p }) => p.state === 'Failed');
  const failedMirror = mirrors.find((m) => !m.configured);
  const ready = platforms.filter(({ p }) => p.state === 'Ready').length;
  const pendingCache = (i.spec?.caches ?? []).some((c) => i.caches.get(c.name)?.generation !== c.generation);
  let conditions: Condition[];
  const generation = i.generation !== undefined ? { observedGeneration: i.generation } : {};
  const prev = i.previous?.conditions as Condition[] | undefined;
  if (busy.length > 0 || pendingCache || failedMirror?.reason === 'Pending') {
    conditions = setPhaseConditions(
      prev,
      'Progressing',
      {
        reason: busy.some(({ p }) => p.state === 'Pulling') ? 'Pulling' : 'Pending',
        message: `${ready} of ${platforms.length} image platforms ready`,
        ...generation,
      },
      i.nowMs,
    );
  } else if (failedMirror || failedPlatform) {
    const reason = failedMirror?.reason ?? failedPlatform!.p.reason ?? 'Failed';
    const message = failedMirror
      ? `mirror ${failedMirror.name}: ${failedMirror.message ?? 'not configured'}`
      : `cache ${failedPlatform!.c.name}: ${failedPlatform!.img.image} (${failedPlatform!.p.platform}): ${failedPlatform!.p.message ?? ''}`;
    conditions = setPhaseConditions(
      prev,
      'Failed',
      { reason, message: clip(message, 1024)!, ...generation },
      i.nowMs,
    );
  } else {
    conditions = setPhaseConditions(
      prev,
      'Ready',
      {
        reason: 'Converged',
        message: `${mirrors.length} mirrors configured, ${ready} image platforms ready`,
        ...generation,
      },
      i.nowMs,
    );
  }
  return {
    ...(i.generation !== undefined ? { observedGeneration: i.generation } : {}),
    agentVersion: i.agentVersion,
    platform: i.platform,
    endpoint: i.endpoint,
    ...(i.storeBytes !== undefined ? { storeBytes: i.storeBytes } : {}),
    ...(mirrors.length > 0 ? { mirrors } : {}),
    ...(caches.length > 0 ? { caches } : {}),
    conditions,
  } as StrataNodeStatus;
}

/** Options of {@link StatusWriter}. */
export interface StatusWriterOptions {
  readonly client: KubeClient;
  readonly nodeName: string;
  /** Shortest time between two writes (default 2000 ms). */
  readonly minIntervalMs?: number;
  readonly onWrite?: (ok: boolean) => void;
  readonly logger?: Logger;
}

/** Writes the status when it changed, coalescing bursts. */
export class StatusWriter {
  private written: StrataNodeStatus | undefined;
  private wanted: StrataNodeStatus | undefined;
  private lastWriteMs = 0;
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> | undefined;
  private readonly minIntervalMs: number;

  constructor(private readonly o: StatusWriterOptions) {
    this.minIntervalMs = o.minIntervalMs ?? 2000;
  }

  /** What the server holds (from the informer), when nothing was written by this process yet. */
  known(status: StrataNodeStatus | undefined): void {
    if (this.lastWriteMs === 0) this.written = status;
  }

  /** The last status written or known. */
  get current(): StrataNodeStatus | undefined {
    return this.wanted ?? this.written;
  }

  /** Asks for `status`; written now, or within the interval, unless it is what the server already holds. */
  desire(status: StrataNodeStatus): void {
    this.wanted = status;
    if (jsonEqual(status, this.written)) {
      this.wanted = undefined;
      return;
    }
    if (this.timer || this.writing) return;
    const wait = Math.max(0, this.lastWriteMs + this.minIntervalMs - Date.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.writing = this.flush().finally(() => {
        this.writing = undefined;
        if (this.wanted) this.desire(this.wanted);
      });
    }, wait);
    this.timer.unref();
  }

  /** Writes what is wanted now (waits for a write in flight). */
  async flush(): Promise<void> {
    const status = this.wanted;
    if (!status) return;
    this.wanted = undefined;
    const patch = mergePatch(this.written ?? {}, status);
    if (patch === undefined) return;
    this.lastWriteMs = Date.now();
    try {
      await this.o.client.request(
        'patch',
        'PATCH',
        resourcePath(STRATANODES, undefined, this.o.nodeName, 'status'),
        { body: { status: patch }, contentType: PATCH.merge, query: { fieldManager: AGENT_FIELD_MANAGER } },
      );
      this.written = status;
      this.o.onWrite?.(true);
    } catch (err) {
      this.o.onWrite?.(false);
      this.o.logger?.warn({ err }, 'status write failed; retrying');
      // Retried with the next desire, or by the timer below.
      if (!this.wanted) this.wanted = status;
      this.timer ??= setTimeout(() => {
        this.timer = undefined;
        if (this.wanted) {
          const w = this.wanted;
          this.wanted = undefined;
          this.desire(w);
        }
      }, 5000);
      this.timer.unref();
    }
  }

  /** Writes what is pending, then stops. */
  async close(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.writing;
    await this.flush().catch(() => undefined);
  }
}
