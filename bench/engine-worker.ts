/**
 * The benchmark's in-process side (issue 11, "engine-level" rows): a child process, forked by bench/run.ts, that
 * imports the BUILT engine (dist/src/engine) and times single engine calls on a warm engine, with no CLI
 * start-up. The only bench module that imports src/: it measures the engine, not the CLI.
 *
 * Protocol (IPC messages): the parent sends a {@link WorkerRequest}, the worker answers one
 * {@link WorkerReply} with the same id. Only the engine call is timed; opening the store and the registry client
 * happens once per store, on the first request for it.
 */
import { Engine } from '../src/engine/engine.js';
import { RegistryClient } from '../src/engine/registry/client.js';
import { FsStore } from '../src/engine/store/fs-store.js';

/** One operation for the worker; `timeoutMs` bounds the engine call (its AbortSignal). */
export type WorkerRequest = { id: number; store: string; timeoutMs: number } & (
  | { op: 'push'; source: string; destination: string }
  | { op: 'create'; reference: string; name: string; driver: 'overlay' | 'vfs' }
  | { op: 'rm'; name: string }
);

/** The answer: the engine call's wall time and the worker's peak RSS so far, or the error's code and message. */
export type WorkerReply =
  | { id: number; ok: true; seconds: number; rssKiB: number }
  | { id: number; ok: false; code: string; message: string };

interface Opened {
  engine: Engine;
  registry: RegistryClient;
}

const engines = new Map<string, Promise<Opened>>();

/** The engine of one store, opened once: later calls find a warm engine (kept connections, loaded modules). */
function engineFor(store: string): Promise<Opened> {
  let e = engines.get(store);
  if (!e) {
    e = (async () => {
      const registry = new RegistryClient({});
      return { engine: new Engine({ store: await FsStore.open(store), registry }), registry };
    })();
    engines.set(store, e);
  }
  return e;
}

async function handle(req: WorkerRequest): Promise<WorkerReply> {
  const { engine } = await engineFor(req.store);
  const signal = AbortSignal.timeout(req.timeoutMs);
  const t0 = process.hrtime.bigint();
  switch (req.op) {
    case 'push':
      await engine.push(req.source, req.destination, { signal });
      break;
    case 'create':
      await engine.create(req.reference, { name: req.name, driver: req.driver, signal });
      break;
    case 'rm':
      await engine.rm([req.name], { force: true });
      break;
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return { id: req.id, ok: true, seconds, rssKiB: process.resourceUsage().maxRSS };
}

process.on('message', (msg: WorkerRequest) => {
  handle(msg).then(
    (reply) => process.send?.(reply),
    (err: unknown) => {
      const e = err as { code?: unknown; message?: unknown };
      process.send?.({
        id: msg.id,
        ok: false,
        code: typeof e?.code === 'string' ? e.code : 'UNKNOWN',
        message: typeof e?.message === 'string' ? e.message : String(err),
      } satisfies WorkerReply);
    },
  );
});

// The parent closes the channel to end the worker: release kept-alive connections, then let the process exit.
process.on('disconnect', () => {
  void Promise.all(
    [...engines.values()].map(async (e) => (await e.catch(() => undefined))?.registry.close()),
  ).finally(() => process.exit(0));
});
