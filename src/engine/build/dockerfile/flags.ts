import type { InstructionFlag } from './types.js';

/** How a builder flag takes its value: one string, a boolean (bare or `=true|false`), or repeatable strings. */
export type FlagKind = 'string' | 'bool' | 'list';

/** The builder flags each instruction accepts (docker refuses any other). */
export const FLAG_SPECS: Readonly<Record<string, Readonly<Record<string, FlagKind>>>> = {
  FROM: { platform: 'string' },
  COPY: {
    from: 'string',
    chown: 'string',
    chmod: 'string',
    link: 'bool',
    parents: 'bool',
    exclude: 'list',
  },
  ADD: {
    chown: 'string',
    chmod: 'string',
    checksum: 'string',
    link: 'bool',
    'keep-git-dir': 'bool',
    unpack: 'bool',
    exclude: 'list',
  },
  RUN: { mount: 'list', network: 'string', security: 'string', device: 'list' },
  HEALTHCHECK: {
    interval: 'string',
    timeout: 'string',
    'start-period': 'string',
    'start-interval': 'string',
    retries: 'string',
  },
};

/**
 * Checks flag words (`--name=value`, `--name`) against what `keyword` accepts and returns them as flags in order.
 * Returns an error message (docker's wording) instead of throwing, so the caller can attach the line.
 */
export function parseFlags(keyword: string, words: readonly string[]): InstructionFlag[] | string {
  const spec = FLAG_SPECS[keyword] ?? {};
  const seen = new Set<string>();
  const flags: InstructionFlag[] = [];
  for (const word of words) {
    const body = word.slice(2);
    const eq = body.indexOf('=');
    const name = eq < 0 ? body : body.slice(0, eq);
    const value = eq < 0 ? undefined : body.slice(eq + 1);
    if (name === '') return `invalid flag: ${word}`;
    const kind = Object.hasOwn(spec, name) ? spec[name] : undefined;
    if (kind === undefined) return `unknown flag: ${name}`;
    if (kind !== 'list') {
      if (seen.has(name)) return `duplicate flag specified: ${name}`;
      seen.add(name);
    }
    if (kind === 'bool') {
      if (value !== undefined && !/^(true|false)$/iu.test(value)) {
        return `expecting boolean value for flag ${name}, not: ${value}`;
      }
    } else if (value === undefined) {
      return `missing a value on flag: ${name}`;
    }
    flags.push(value === undefined ? { name } : { name, value });
  }
  return flags;
}

const DURATION_UNITS: Readonly<Record<string, number>> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  μs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/** Parses a Go duration (`1m30s`, `500ms`, `0`) into milliseconds, or undefined if it is not one. */
export function parseGoDuration(text: string): number | undefined {
  const m = /^([-+]?)(.*)$/su.exec(text)!;
  const sign = m[1] === '-' ? -1 : 1;
  const rest = m[2]!;
  if (rest === '0') return 0;
  if (rest === '') return undefined;
  const part = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/uy;
  let total = 0;
  let pos = 0;
  while (pos < rest.length) {
    part.lastIndex = pos;
    const p = part.exec(rest);
    if (!p) return undefined;
    total += Number(p[1]) * DURATION_UNITS[p[2]!]!;
    pos = part.lastIndex;
  }
  return sign * total;
}
