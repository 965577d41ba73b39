/** Kubernetes resource quantities as byte counts (`2Gi`, `500M`, `1e9`), for LayerCache size budgets. */
import { TerminalError } from '../engine/errors.js';

const SUFFIX: Readonly<Record<string, number>> = {
  '': 1,
  m: 1e-3,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};

/** Bytes of a quantity, rounded up (a budget of `1.5Ki` is 1536). INVALID_ARGUMENT when it is not one. */
export function quantityBytes(q: string): number {
  const m = /^([+-]?[0-9.]+)(?:([eE][+-]?[0-9]+)|([a-zA-Z]*))$/.exec(q.trim());
  const unit = m ? (m[2] ? 10 ** Number(m[2].slice(1)) : SUFFIX[m[3] ?? '']) : undefined;
  const n = m ? Number(m[1]) : NaN;
  if (unit === undefined || !Number.isFinite(n) || n < 0)
    throw new TerminalError('INVALID_ARGUMENT', `${JSON.stringify(q)} is not a quantity (e.g. 10Gi, 500M)`);
  return Math.ceil(n * unit);
}
