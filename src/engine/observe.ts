/**
 * What the engine tells the world while it works, without importing a logging or metrics library: a logger
 * interface (a pino-compatible subset) and typed events. The CLI wires them to pino; the node agent and the
 * controller turn events into metrics. Listeners that throw never break the operation that emitted.
 */

/** The subset of pino's logger the engine calls: `(object, message)`; errors go in `{ err }`. */
export interface EngineLogger {
  debug(obj: Record<string, unknown>, msg?: string): void;
  info(obj: Record<string, unknown>, msg?: string): void;
  warn(obj: Record<string, unknown>, msg?: string): void;
  error(obj: Record<string, unknown>, msg?: string): void;
}

/** Something the engine did; every variant is safe to log (never credentials, never a query string). */
export type EngineEvent =
  | {
      /** One HTTP exchange with a registry or token server, when its response ended (or failed). */
      readonly type: 'http-request';
      readonly method: string;
      readonly host: string;
      /** URL path without query string. */
      readonly path: string;
      /** HTTP status, or 0 when no response arrived (network error, timeout). */
      readonly status: number;
      /** Body bytes received (GET) or sent (PUT/PATCH/POST). */
      readonly bytes: number;
      readonly durationMs: number;
      /** Set when the exchange failed without a status: a StrataError code such as NETWORK. */
      readonly error?: string;
    }
  | {
      /** A retryable failure that will be retried after `delayMs`. */
      readonly type: 'retry';
      /** What is retried, e.g. `GET blob sha256:… of localhost:5000/app`. */
      readonly what: string;
      /** 1-based attempt that failed. */
      readonly attempt: number;
      readonly maxAttempts: number;
      readonly delayMs: number;
      /** The failure's code and message. */
      readonly code: string;
      readonly reason: string;
    }
  | {
      /** A lock was busy: emitted once it is acquired (or the wait gave up), with how long it took. */
      readonly type: 'lock-wait';
      readonly lock: string;
      readonly waitedMs: number;
      readonly outcome: 'acquired' | 'timeout' | 'aborted';
    }
  | {
      /** A lease was created, extended, released or dropped as expired. */
      readonly type: 'lease';
      readonly action: 'create' | 'extend' | 'release' | 'expire';
      readonly id: string;
      readonly owner: string;
    }
  | {
      /** Progress of applying one layer (unpack, create). */
      readonly type: 'layer-apply';
      readonly layer: string;
      readonly index: number;
      readonly count: number;
      /** Compressed bytes of the layer blob read so far (out of `size`). */
      readonly bytes: number;
      /** Tar entries applied so far. */
      readonly entries: number;
      readonly done: boolean;
      /** Size of the (compressed) layer blob, when known: the total `bytes` counts towards. */
      readonly size?: number;
    }
  | {
      /** Progress of writing a committed (or imported, or exported) layer tar. */
      readonly type: 'commit-progress';
      /** Tar entries written so far. */
      readonly entries: number;
      /** Uncompressed tar bytes produced so far. */
      readonly bytes: number;
      readonly done: boolean;
      /** Entries the tar will hold, when known: the total `entries` counts towards. */
      readonly total?: number;
    }
  | {
      /** Progress of an archive verb: `load` (archive bytes read), `save` (written), `import` (tar bytes read). */
      readonly type: 'archive-progress';
      readonly operation: 'load' | 'save' | 'import';
      /** Tar entries seen (load, import) or written (save) so far. */
      readonly entries: number;
      readonly bytes: number;
      /** Total bytes when known in advance (save). */
      readonly total?: number;
      readonly done: boolean;
    }
  | {
      /** A build step started, was taken from the build cache, finished or failed. */
      readonly type: 'build-step';
      /** The stage's name (`AS name`), else `stage-N`. */
      readonly stage: string;
      /** 1-based number of the step in the whole build (FROM lines count), out of `total`. */
      readonly step: number;
      readonly total: number;
      /** The instruction after variable expansion, as history records it. */
      readonly instruction: string;
      readonly status: 'start' | 'cached' | 'done' | 'error';
      readonly durationMs?: number;
    }
  | {
      /** Output of a RUN step's process, as it arrives. */
      readonly type: 'build-output';
      readonly step: number;
      readonly stream: 'stdout' | 'stderr';
      readonly text: string;
    };

/** Receives engine events; may throw (the emitter swallows it). */
export type EngineEventListener = (event: EngineEvent) => void;

/** Logger and listeners an engine, store or client reports through. */
export interface Observer {
  readonly log: EngineLogger;
  emit(event: EngineEvent): void;
}

const noop = (): void => undefined;

/** A logger that discards everything. */
export const silentLogger: EngineLogger = { debug: noop, info: noop, warn: noop, error: noop };

/** An observer that reports nothing: the default of every constructor that takes one. */
export const silentObserver: Observer = { log: silentLogger, emit: noop };

/**
 * An {@link Observer} over an optional logger and listeners. Listener and logger exceptions are caught (and
 * reported once to the logger at debug) so an observer can never break the operation it watches.
 */
export function createObserver(
  options: { logger?: EngineLogger; listeners?: readonly EngineEventListener[] } = {},
): Observer {
  const listeners = [...(options.listeners ?? [])];
  const base = options.logger ?? silentLogger;
  const guard =
    (fn: (obj: Record<string, unknown>, msg?: string) => void) =>
    (obj: Record<string, unknown>, msg?: string): void => {
      try {
        fn.call(base, obj, msg);
      } catch {
        // a broken logger must not break the engine
      }
    };
  const log: EngineLogger = {
    debug: guard(base.debug),
    info: guard(base.info),
    warn: guard(base.warn),
    error: guard(base.error),
  };
  return {
    log,
    emit(event) {
      for (const l of listeners) {
        try {
          l(event);
        } catch (err) {
          log.debug({ err, event: event.type }, 'engine event listener threw; ignored');
        }
      }
    },
  };
}
