import { TerminalError } from '../engine/errors.js';

const UNITS: Readonly<Record<string, number>> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1024 ** 4,
  tib: 1024 ** 4,
};

/**
 * Parses a byte size as docker's flags take it: a whole or decimal number with an optional binary unit
 * (`65536`, `512k`, `1.5GiB`, `64g`; units are powers of 1024, case-insensitive). Throws INVALID_ARGUMENT naming
 * `what` (the flag or variable) on anything else, zero, or a size beyond 2^53.
 */
export function parseByteSize(text: string, what: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  const bytes = m && unit !== undefined ? Math.floor(Number(m[1]) * unit) : NaN;
  if (!Number.isSafeInteger(bytes) || bytes <= 0)
    throw new TerminalError(
      'INVALID_ARGUMENT',
      `${what}: ${JSON.stringify(text)} is not a size (a positive number of bytes, optionally with k, m, g or t: 512m, 64g)`,
    );
  return bytes;
}
