import { createRequire } from 'node:module';
import type { EngineLogger } from '../engine/observe.js';

/** The levels `--log-level` accepts, quietest last. */
export const LOG_LEVELS = ['debug', 'info', 'warn', 'error', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

type Method = 'debug' | 'info' | 'warn' | 'error';

/**
 * An {@link EngineLogger} writing pino JSON lines to standard error at `level` and above. pino itself is loaded
 * (synchronously: it is CommonJS) on the first line actually written, so a quiet run never pays its start-up cost.
 */
export function createCliLogger(
  level: LogLevel,
  stream: { write(s: string): unknown } = process.stderr,
): EngineLogger {
  const rank = (l: LogLevel): number => LOG_LEVELS.indexOf(l);
  let real: EngineLogger | undefined;
  const get = (): EngineLogger => {
    if (!real) {
      const { pino } = createRequire(import.meta.url)('pino') as typeof import('pino');
      // A sync destination: the CLI exits right after the verb, and buffered lines would be lost.
      real = pino({ level, base: { name: 'strata' } }, { write: (s: string) => void stream.write(s) });
    }
    return real;
  };
  const method =
    (m: Method) =>
    (obj: Record<string, unknown>, msg?: string): void => {
      if (rank(m) < rank(level)) return;
      get()[m](obj, msg);
    };
  return { debug: method('debug'), info: method('info'), warn: method('warn'), error: method('error') };
}
