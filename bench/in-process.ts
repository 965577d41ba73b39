/**
 * The parent side of bench/engine-worker.ts: forks the worker and sends it one timed engine call at a time
 * (the "engine-level" rows: no CLI start-up in the measurement).
 */
import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { WorkerReply, WorkerRequest } from './engine-worker.js';
import { BenchError } from './util.js';

/** What `DistributiveOmit<WorkerRequest, 'id' | 'timeoutMs'>` would be: a request as the caller writes it. */
export type EngineCall = WorkerRequest extends infer R
  ? R extends WorkerRequest
    ? Omit<R, 'id' | 'timeoutMs'>
    : never
  : never;

/** Live workers, killed on process exit by {@link killWorkersSync}. */
const live = new Set<ChildProcess>();

/** A forked engine worker; one call at a time. */
export class InProcessEngine {
  private nextId = 1;
  private exited = false;

  private constructor(private readonly child: ChildProcess) {
    child.once('exit', () => {
      this.exited = true;
      live.delete(child);
    });
  }

  /** Forks dist/bench/engine-worker.js (next to this module) with this process's Node. */
  static start(): InProcessEngine {
    const here = path.dirname(fileURLToPath(import.meta.url));
    const child = fork(path.join(here, 'engine-worker.js'), [], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    live.add(child);
    return new InProcessEngine(child);
  }

  /**
   * Runs one engine call in the worker; resolves with its wall time and the worker's peak RSS. Fails (and ends
   * the worker) when it takes longer than `timeoutMs`; fails with the engine's error code when the call fails.
   */
  call(req: EngineCall, timeoutMs: number): Promise<{ seconds: number; rssKiB: number }> {
    if (this.exited) return Promise.reject(new BenchError('engine worker is not running'));
    const id = this.nextId++;
    const label = `engine ${req.op}`;
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        this.child.off('message', onMessage);
        this.child.off('exit', onExit);
      };
      const onMessage = (m: WorkerReply): void => {
        if (m.id !== id) return;
        done();
        if (m.ok) resolve({ seconds: m.seconds, rssKiB: m.rssKiB });
        else reject(new BenchError(`${label} failed: ${m.code}: ${m.message}`));
      };
      const onExit = (code: number | null, signal: string | null): void => {
        done();
        reject(new BenchError(`engine worker exited (${signal ?? `exit ${code}`}) during ${label}`));
      };
      // The worker's own signal aborts the call at timeoutMs; this is the backstop if the worker itself hangs.
      const timer = setTimeout(() => {
        done();
        this.child.kill('SIGKILL');
        reject(new BenchError(`${label} timed out after ${timeoutMs / 1000} s`));
      }, timeoutMs + 5_000);
      this.child.on('message', onMessage);
      this.child.once('exit', onExit);
      this.child.send({ ...req, id, timeoutMs } as WorkerRequest);
    });
  }

  /** Closes the channel (the worker releases its connections and exits), SIGKILL after 5 s. */
  async stop(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.disconnect();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
    await gone;
    clearTimeout(timer);
  }
}

/** Synchronous last resort on process exit: SIGKILL to every worker still running. */
export function killWorkersSync(): void {
  for (const c of live) c.kill('SIGKILL');
}
